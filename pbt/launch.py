"""Starting or joining Ray."""

from __future__ import annotations

import logging

import ray

log = logging.getLogger(__name__)


def ensure_ray(num_cpus: int | None = None) -> None:
    """Start a fresh local Ray instance unless this process is already connected to one.

    `address="local"` matters: a bare `ray.init()` would silently attach to whatever cluster
    `ray start` last left running on this machine.
    """
    if ray.is_initialized():
        return
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        configure_logging=False,
    )
