"""Built-in trainers, registered under the `pbt.trainables` entry-point group."""
