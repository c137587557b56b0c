"""The two engines that train a population on Ray Tune, what they share (`common`), and the one
place that chooses between them (`tuner`)."""
