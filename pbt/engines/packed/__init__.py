"""The packed engine: K members of one architecture as one vectorised model per device, and
synchronous PBT across packs."""
