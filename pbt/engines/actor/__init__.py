"""The actor engine: one Ray actor per member (any Trainer), Ray's PBT scheduler, the one-cycle run."""
