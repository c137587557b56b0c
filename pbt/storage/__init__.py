"""Where an experiment lives: the names of its files (`layout`), the folder or object store that
holds them (`store`), and the checks that it can be used (`checks`)."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Experiments written before this package had modules pickled `pbt.storage.PeriodicUpload`
    # into Tune's tuner.pkl. Looked up lazily: the file names need neither pyarrow nor Ray.
    if name in ("PeriodicUpload", "Storage"):
        from pbt.storage import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
