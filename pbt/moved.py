"""The module paths pbt had before its package moved into layers, kept importable.

Ray Tune pickles an experiment's scheduler and callbacks into `tuner.pkl` by module path, so an
experiment stopped before the move names `pbt.scheduler.ClippedPBT` or `pbt.records.ReportRecorder`.
Each old path below is the module it became (the same module object, so classes compare equal);
`pbt.storage` is a package now and names its two pickled classes itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

OLD_PATHS = {
    "pbt.compare": "pbt.reporting.compare",
    "pbt.console": "pbt.reporting.console",
    "pbt.experiment": "pbt.stages.arms",
    "pbt.grid": "pbt.search.grid",
    "pbt.interrupts": "pbt.cluster.interrupts",
    "pbt.launch": "pbt.engines.tuner",
    "pbt.lineage": "pbt.stages.lineage",
    "pbt.lr_range": "pbt.range_test.finder",
    "pbt.lr_range_report": "pbt.range_test.report",
    "pbt.one_cycle": "pbt.engines.actor.one_cycle",
    "pbt.pack_scheduler": "pbt.engines.packed.scheduler",
    "pbt.pack_trial": "pbt.engines.packed.trainable",
    "pbt.packed": "pbt.engines.packed.model",
    "pbt.packed_layers": "pbt.engines.packed.layers",
    "pbt.packed_optim": "pbt.engines.packed.optim",
    "pbt.packing": "pbt.engines.packed.plan",
    "pbt.progress": "pbt.reporting.progress",
    "pbt.ray_adapter": "pbt.engines.actor.trainable",
    "pbt.records": "pbt.reporting.records",
    "pbt.report": "pbt.reporting.figures",
    "pbt.resources": "pbt.cluster.resources",
    "pbt.scheduler": "pbt.engines.actor.scheduler",
    "pbt.space": "pbt.search.space",
    "pbt.sweep": "pbt.stages.sweep_runs",
    "pbt.sweep_report": "pbt.stages.sweep_report",
    "pbt.sweep_stage": "pbt.stages.sweep",
}


class OldPathFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an import of an old path with the module it became, imported under its new name."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.machinery.ModuleSpec(name, self) if name in OLD_PATHS else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # a placeholder, replaced below

    def exec_module(self, module: ModuleType) -> None:
        # The import system returns whatever `sys.modules` holds under the name once this returns:
        # the module under its new name, whose own `__spec__` stays as it is.
        sys.modules[module.__name__] = importlib.import_module(OLD_PATHS[module.__name__])


def install() -> None:
    """Put the finder last on `sys.meta_path` (once): only names no real module has reach it."""
    if not any(isinstance(finder, OldPathFinder) for finder in sys.meta_path):
        sys.meta_path.append(OldPathFinder())
