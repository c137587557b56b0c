"""The two engines that train a population on Ray Tune, what they share (`common`), and the one
place that chooses between them (`tuner`)."""

# The logger both engines' schedulers print their exploits to; `pbt` attaches to it by this name
# before a command runs (here, not in `common`, so that attaching needs no torch).
EXPLOIT_LOGGER = "pbt.exploits"
