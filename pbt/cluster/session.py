"""Starting a local Ray or joining a cluster, with the address checked first."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator

import ray

from pbt.errors import PbtError


def ensure_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    """Connect to the cluster at `address` (or `RAY_ADDRESS`); without one, start a fresh local Ray.

    `address="local"` matters for the local case: a bare `ray.init()` would silently attach to
    whatever cluster `ray start` last left running on this machine. Does nothing if this process
    is already connected.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        check_address(address)  # even when connected already: a bad address is always refused
    if ray.is_initialized():
        return
    if address is None:
        # Ray 2.60 turns token authentication on for a local instance and warns at every start that
        # it did; the run listens on loopback only, and the line would only puzzle (Ray's logger).
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **_QUIET)
        return
    with _stderr_captured() as captured:
        try:
            ray.init(address=address, **_QUIET)
            failure = None
        except ConnectionError as err:
            failure = str(err).splitlines()[0]
    if failure is None:
        sys.stderr.write(captured[0])  # nothing hidden when the connection worked
        return
    if "InvalidAuthToken" in captured[0]:
        raise PbtError(
            f"the Ray cluster at {address!r} requires an authentication token and this machine has none it accepts "
            "(Ray 2.60 turns token authentication on for `ray start --head`); copy the head node's "
            "~/.ray/auth_token to this machine's ~/.ray/auth_token, or set RAY_AUTH_TOKEN, and set RAY_AUTH_MODE=token"
        )
    raise PbtError(f"cannot connect to the Ray cluster at {address!r}: {failure}")


@contextlib.contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """Send this process's file descriptor 2 to a temporary file; its text is in the list after the block.

    Ray's C++ client retries for seconds and logs each attempt there, which would bury the one
    line that says what is wrong.
    """
    sys.stderr.flush()
    text: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text.append(sink.read())


_QUIET = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": False}


def check_address(address: str, timeout: float = 3.0) -> None:
    """Refuse addresses Tune cannot use, and fail fast (not after Ray's minute of retries) on a dead one."""
    if address.startswith("ray://"):
        raise PbtError(
            f"address {address!r} is a Ray Client address, which Ray Tune does not support well; "
            "run pbt on the cluster instead: ray job submit --address http://HEAD:8265 -- pbt run CONFIG"
        )
    if address == "auto":
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise PbtError(f"address must look like HOST:PORT (the head's GCS port, 6379 by default) or 'auto', but got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise PbtError(
            f"cannot reach a Ray cluster at {address!r} ({err.strerror or err}); start one with "
            "`ray start --head`, or check --address / RAY_ADDRESS"
        ) from None


def connect(address: str | None) -> int:
    """Join the cluster at `address` or `RAY_ADDRESS` now, if one is named (else Ray starts locally
    when needed); returns how many machines the cluster spans (1 without one)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        return 1
    ensure_ray(address=address)  # checks the address first: a bad or dead one is one line, at once
    return len({node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]})
