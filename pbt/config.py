"""The experiment schema: typed pydantic models, YAML loading and `a.b=value` overrides.

Unknown keys are rejected everywhere, so a misspelt key fails loudly instead of being ignored.
Every validation failure becomes one `PbtError` line naming the dotted key and the bad value.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from pbt.errors import PbtError
from pbt.schedule import ScheduleConfig
from pbt.storage.layout import CONFIG_FILE

if TYPE_CHECKING:
    from pbt.storage.store import Storage


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Resources(StrictModel):
    """What one trainer (a range test, a population member, a grid point) asks Ray for."""

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class LRRangeConfig(StrictModel):
    """The LR range test: an exponential sweep from `lr_min` to `lr_max` over one epoch (or `max_steps`)."""

    lr_min: float = Field(1e-6, gt=0)
    lr_max: float = Field(10.0, gt=0)
    max_steps: int | None = Field(
        None,
        ge=10,
        description="Steps of the sweep (it stops sooner when the loss diverges); default: one epoch, "
        "or min_steps when an epoch is shorter. More than an epoch continues over fresh epochs.",
    )
    min_steps: int = Field(
        100,
        ge=10,
        description="A shorter epoch is extended over fresh epochs to this many steps: a sweep across 7 "
        "decades needs about this many for the loss to fall clearly (37 steps did not on a small data set).",
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum (or Adam beta1) during the test.")
    weight_decays: list[float] = Field(
        default_factory=lambda: [0.0],
        min_length=1,
        description="One test per weight decay; the largest that keeps a high LR is chosen.",
    )
    seeds: int = Field(3, ge=1, le=16, description="Repeats with different seeds; the median curve is analysed.")
    smooth_window: int = Field(5, ge=1, description="Width (steps) of the median filter on the loss.")
    diverge_factor: float = Field(
        1.0,
        gt=0,
        description="Stop when the smoothed loss rises above its best by this many times the drop seen so far.",
    )
    low_divisor: float = Field(
        20.0, gt=1, description="lr_low is the curve's basis (divergence^0.75 x minimum^0.25) divided by this, "
        "for SGD with momentum; other optimizers read it higher (pbt.range_test.finder.RANGE_SHIFT)."
    )
    high_divisor: float = Field(10.0, gt=1, description="lr_high is the basis divided by this (see low_divisor).")
    ceiling_divisor: float = Field(
        3.0, gt=0, description="Exploration may raise the lr above lr_high up to the basis divided by this "
        "(never above the divergence point, never below lr_high); at high_divisor or above, the walls are the range."
    )

    @model_validator(mode="after")
    def _check_order(self) -> LRRangeConfig:
        if self.lr_min >= self.lr_max:
            raise ValueError(f"lr_min must be below lr_max, but got lr_min={self.lr_min} and lr_max={self.lr_max}")
        if self.low_divisor <= self.high_divisor:
            raise ValueError(
                f"low_divisor must be above high_divisor, but got low_divisor={self.low_divisor} "
                f"and high_divisor={self.high_divisor}"
            )
        if any(wd < 0 for wd in self.weight_decays):
            raise ValueError(f"weight decays must be >= 0, but got {self.weight_decays}")
        return self


class Bounds(StrictModel):
    """A closed interval for one hyperparameter: where the population starts and the walls of exploration."""

    low: float = Field(ge=0)
    high: float = Field(ge=0)

    @model_validator(mode="after")
    def _check_order(self) -> Bounds:
        if self.low > self.high:
            raise ValueError(f"low must not exceed high, but got low={self.low} and high={self.high}")
        return self


class SearchConfig(StrictModel):
    """The hyperparameter space. `lr` left out: the LR range test provides it."""

    lr: Bounds | None = Field(None, description="Skip the range test by giving the range here.")
    lr_anneal_factor: float = Field(
        10.0,
        ge=1,
        description="Members start in [lr.low, lr.high] (widened by lr_start_span); exploration may lower the lr to lr.low / this "
        "(PBT anneals by copying members that lowered it). 1 keeps exploration inside the range.",
    )
    lr_start_span: float = Field(
        1.0,
        ge=1,
        le=10,
        description="PBT's members start (and resample) in the lr range widened this factor each way, up to the "
        "exploration ceiling: 2 starts them over the same learning rates as the grid's default points "
        "(grid.lr_span 2). 1: inside the range. The grid and the one-cycle run keep the range.",
    )
    momentum: Bounds = Field(default_factory=lambda: Bounds(low=0.85, high=0.95))
    weight_decay: Bounds | None = Field(
        None, description="Log range; default: around the weight-decay test's choice, else [1e-5, 1e-3]."
    )

    @field_validator("lr")
    @classmethod
    def _positive_lr(cls, bounds: Bounds | None) -> Bounds | None:
        if bounds is not None and bounds.low <= 0:
            raise ValueError(f"learning rates must be positive, but got low={bounds.low}")
        return bounds

    @field_validator("momentum")
    @classmethod
    def _momentum_below_one(cls, bounds: Bounds) -> Bounds:
        if bounds.high >= 1:
            raise ValueError(f"momentum must stay below 1, but got high={bounds.high}")
        return bounds

    @field_validator("weight_decay")
    @classmethod
    def _positive_weight_decay(cls, bounds: Bounds | None) -> Bounds | None:
        if bounds is not None and bounds.low <= 0:
            raise ValueError(f"the weight decay range is log-scaled, so low must be > 0, but got low={bounds.low}")
        return bounds


class PopulationConfig(StrictModel):
    """PBT on Ray Tune: population size, budget, and how often and how far members explore."""

    size: int = Field(16, ge=2, description="Members of the population.")
    epochs: int = Field(30, ge=1, description="Epochs each member trains (its lineage's epochs).")
    perturbation_interval: int = Field(4, ge=1, description="Epochs between exploit/explore steps.")
    quantile_fraction: float = Field(0.2, gt=0, le=0.5, description="Bottom share copies the top share.")
    resample_probability: float = Field(0.25, ge=0, le=1)
    perturbation_factors: tuple[float, float] = (0.8, 1.2)
    synch: Literal["auto"] | bool = Field(
        "auto",
        description="Actor engine: true ranks and exploits only when every member has reached the perturbation epoch "
        "(Ray's synchronous PBT; every member ranked at the same epoch); false: each member at its own perturbation "
        "(it never copies a donor behind it); auto: true when members must take turns (more members than slots), "
        "false when every member has a slot (no barrier, no pauses). Packed PBT is synchronous.",
    )
    pack: Literal["auto"] | int = Field(
        "auto",
        description="Members trained as one vectorised model per slot (a CPU slot or a whole GPU): a number, "
        "1 for one member per process, or auto (the population spread over the slots the machine or "
        "cluster has, when the trainer packs). Packed PBT is synchronous.",
    )
    interval_growth: float = Field(
        1.0, ge=1, le=4,
        description="Each interval between perturbations is this many times the one before (1: every "
        "perturbation_interval epochs). Later rankings then compare members over longer stretches, which weighs "
        "short-term gains (a lower rate's quick progress) less as training goes on.",
    )
    probe: float = Field(
        0.0, ge=0, le=1,
        description="Share of an epoch each member spends, at each perturbation, on a cooldown probe: a copy of it "
        "trains that long with its rate falling linearly to zero, and members are ranked by the copy's validation "
        "accuracy (what each would reach if annealed now), not by their own; the copy is then dropped. 0: no probe, "
        "members ranked by their validation accuracy. The probe's epochs and seconds count in PBT's compute.",
    )
    improvement_weight: float = Field(
        0.0, ge=0, le=10,
        description="Rank members at a perturbation by validation accuracy + this x its rise since the previous "
        "perturbation (its lineage's validation accuracy then): 1 ranks by where a member would be one interval on "
        "if it kept improving at its rate (ranking by improvement rate, as FIRE-PBT does in its own way). "
        "0: by validation accuracy. Not with `probe`.",
    )
    exploit_until: float = Field(
        1.0, gt=0, le=1,
        description="Share of the epochs after which no member is exploited: the members then train side by side "
        "to the end (e.g. through the schedule's cooldown, each at its own rate), and the best is chosen at the end.",
    )
    checkpoints_to_keep: int = Field(
        8, ge=2, description="Per member; a donor's checkpoint must outlive the moment its clone loads it."
    )
    capture: Literal["auto", "on", "off"] = Field(
        "auto",
        description="On CUDA, capture a pack's training step once as a CUDA graph and replay it: on, off, or "
        "auto (off until a GPU measurement shows it faster).",
    )

    @model_validator(mode="after")
    def _one_ranking(self) -> PopulationConfig:
        if self.probe and self.improvement_weight:
            raise ValueError("probe and improvement_weight are two ways to rank members: set one of them")
        return self

    @property
    def last_exploit_epoch(self) -> int:
        """The last epoch at which members may be exploited (`exploit_until` of the epochs)."""
        return int(self.exploit_until * self.epochs + 1e-9)

    def perturbation_epochs(self) -> tuple[int, ...]:
        """The epochs after which members are ranked, exploited and explored: every
        `perturbation_interval` epochs, each interval `interval_growth` times the one before, before
        the last epoch and up to `last_exploit_epoch`."""
        epochs: list[int] = []
        interval, epoch = float(self.perturbation_interval), self.perturbation_interval
        while epoch < self.epochs and epoch <= self.last_exploit_epoch:
            epochs.append(epoch)
            interval *= self.interval_growth
            epoch += max(1, round(interval))
        return tuple(epochs)

    def previous_perturbation(self, epoch: int) -> int:
        """The perturbation before `epoch` (1 before the first): where a member's rise is measured from."""
        return max((e for e in self.perturbation_epochs() if e < epoch), default=1)

    def describe_ranking(self) -> str:
        """How members are ranked at a perturbation, in words."""
        if self.improvement_weight:
            return f"ranked by validation accuracy + {self.improvement_weight:g} x its rise since the last ranking"
        if not self.probe:
            return "ranked by validation accuracy"
        return (f"ranked by validation accuracy after a cooldown probe of {self.probe:.0%} of an epoch "
                "(counted in PBT's compute)")

    def describe_perturbations(self) -> str:
        """`every 4 epochs`, `every 4 epochs up to epoch 48` or `after epochs 4, 9, 15 and 23`."""
        epochs = self.perturbation_epochs()
        if self.interval_growth == 1:
            every = f"every {self.perturbation_interval} epochs"
            return every if self.last_exploit_epoch >= self.epochs - 1 or not epochs else f"{every} up to epoch {epochs[-1]}"
        if not epochs:
            return "never"
        listed = ", ".join(str(epoch) for epoch in epochs[:-1])
        return f"after epochs {listed} and {epochs[-1]}" if listed else f"after epoch {epochs[0]}"

    @field_validator("capture", mode="before")
    @classmethod
    def _capture_words(cls, value: Any) -> Any:
        # YAML reads a bare on/off as a boolean.
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("pack", mode="before")
    @classmethod
    def _pack_size(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f"pack must be auto or a number of members >= 1 (1: one member per process), but got {value!r}")

    @field_validator("perturbation_factors")
    @classmethod
    def _positive_factors(cls, factors: tuple[float, float]) -> tuple[float, float]:
        if min(factors) <= 0:
            raise ValueError(f"perturbation factors must be positive, but got {list(factors)}")
        return factors


class GridConfig(StrictModel):
    """The grid-search baseline: every combination of the values, each point trained `population.epochs`.

    Values left out come from the search space: learning rates log-spaced across the range test's
    range widened by `lr_span` on each side, momentum and weight decay at the ends of their bounds.
    By default the grid has as many points as the population has members (same compute).
    """

    lr: list[float] | None = Field(None, min_length=1, description="Learning rates; default from the range test.")
    momentum: list[float] | None = Field(None, min_length=1)
    weight_decay: list[float] | None = Field(None, min_length=1)
    optimizer: list[str] | None = Field(
        None, min_length=1, description="Also grid over the trainer's `optimizer` setting (e.g. [sgd, adam])."
    )
    lr_span: float = Field(2.0, ge=1, description="Default lr points reach this factor beyond the range's ends.")

    @field_validator("lr")
    @classmethod
    def _positive_lrs(cls, values: list[float] | None) -> list[float] | None:
        if values is not None and min(values) <= 0:
            raise ValueError(f"learning rates must be positive, but got {values}")
        return values

    @field_validator("momentum")
    @classmethod
    def _momentum_range(cls, values: list[float] | None) -> list[float] | None:
        if values is not None and not all(0 <= v < 1 for v in values):
            raise ValueError(f"momentum values must be in [0, 1), but got {values}")
        return values

    @field_validator("weight_decay")
    @classmethod
    def _non_negative_decay(cls, values: list[float] | None) -> list[float] | None:
        if values is not None and min(values) < 0:
            raise ValueError(f"weight decays must be >= 0, but got {values}")
        return values


class OneCycleConfig(StrictModel):
    """The one-cycle baseline (Smith): one run of `population.epochs` with `OneCycleLR`."""

    enabled: bool = True
    max_lr: float | None = Field(None, gt=0, description="Peak learning rate; default the range test's lr_high.")
    base_momentum: float = Field(0.85, ge=0, lt=1, description="Momentum at the peak learning rate.")
    max_momentum: float = Field(0.95, ge=0, lt=1, description="Momentum at the start and the end.")
    pct_start: float = Field(0.3, gt=0, lt=1, description="Share of the run spent raising the learning rate.")
    div_factor: float = Field(25.0, gt=1, description="The run starts at max_lr / div_factor.")
    final_div_factor: float = Field(1e4, gt=1, description="It ends at the start lr / final_div_factor.")

    @model_validator(mode="after")
    def _check_order(self) -> OneCycleConfig:
        if self.base_momentum > self.max_momentum:
            raise ValueError(
                f"base_momentum must not exceed max_momentum, but got base_momentum={self.base_momentum} "
                f"and max_momentum={self.max_momentum}"
            )
        return self


class CompareConfig(StrictModel):
    """How `pbt compare` reads the arms."""

    target_val_acc: float | None = Field(
        None, gt=0, le=1, description="Accuracy whose time-to-reach is reported; default: the grid's best."
    )


# `pbt sweep`'s optimizers: the names it knows, and the optimizer (trainer.optimizer) and momentum
# (Adam: beta1) each trains with; `None` takes `sweep.momentum`. torch's defaults otherwise.
# `own` is whatever optimizer the trainer builds, for trainers that do not choose it by name.
SWEEP_OPTIMIZERS: dict[str, tuple[str | None, float | None]] = {
    "sgd": ("sgd", 0.0), "sgd+momentum": ("sgd", None), "adam": ("adam", 0.9), "adamw": ("adamw", 0.9),
    "rmsprop": ("rmsprop", 0.0), "adagrad": ("adagrad", 0.0), "adadelta": ("adadelta", 0.0), "own": (None, None),
}


class SweepConfig(StrictModel):
    """`pbt sweep`: each optimizer trained at many fixed learning rates until a target accuracy.

    A run ends when it reaches `target` (on the `split` accuracy), diverges, or has trained
    `max_epochs` epochs or `max_seconds` of compute, whichever comes first.
    """

    optimizers: list[str] = Field(
        default_factory=lambda: ["sgd", "sgd+momentum", "adam", "adagrad", "adadelta", "rmsprop"], min_length=1,
        description=f"Any of {', '.join(SWEEP_OPTIMIZERS)}.")
    lr_min: float = Field(1e-6, gt=0)
    lr_max: float = Field(100.0, gt=0)
    rates: int = Field(48, ge=2, description="Log-spaced learning rates from lr_min to lr_max.")
    target: float = Field(0.85, gt=0, le=1, description="Accuracy a run must reach.")
    split: Literal["train", "val"] = Field(
        "val", description="val: val_acc; train: running accuracy on the epoch's training batches (train_acc).")
    max_epochs: int = Field(30, ge=1)
    max_seconds: float = Field(120.0, gt=0, description="Compute seconds a run may spend (a pack's split evenly).")
    momentum: float = Field(0.9, ge=0, lt=1, description="The momentum of sgd+momentum and of own (Adam-style: beta1).")
    weight_decay: float = Field(0.0, ge=0)
    width_setting: str = Field("width", min_length=1, description="The trainer setting `--widths` varies.")

    @field_validator("optimizers")
    @classmethod
    def _known_optimizers(cls, names: list[str]) -> list[str]:
        unknown = [name for name in names if name not in SWEEP_OPTIMIZERS]
        if unknown:
            raise ValueError(f"unknown optimizer(s) {unknown}; choose from {', '.join(SWEEP_OPTIMIZERS)}")
        if len(set(names)) != len(names):
            raise ValueError(f"optimizers are listed twice: {names}")
        if "own" in names and len(names) > 1:
            raise ValueError(f"own (the trainer's own optimizer) is swept alone, but got {names}")
        return names

    @model_validator(mode="after")
    def _check_rates(self) -> SweepConfig:
        if self.lr_min >= self.lr_max:
            raise ValueError(f"lr_min must be below lr_max, but got lr_min={self.lr_min} and lr_max={self.lr_max}")
        return self


class ExperimentConfig(StrictModel):
    """One experiment: which trainer, its settings, and how to search its hyperparameters."""

    name: str = Field("experiment", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    trainable: str = Field("mnist1d", min_length=1, description="Registry name, module:Class or file.py:Class.")
    python_path: list[str] = Field(
        default_factory=list, validate_default=True,
        description="Folders put first on the import path of the driver and of every worker; the directory pbt "
        "was started in is added for a module:Class trainer, as `python -m` does (a file's own folder always is).",
    )
    trainer: dict[str, Any] = Field(default_factory=dict, description="Passed to the trainer; validated by its schema.")
    seed: int = 0
    storage_path: str = Field(
        "results", description="Experiments are written to storage_path/name: a folder, or a URI such as s3://bucket/path."
    )
    resources: Resources = Field(default_factory=Resources)
    lr_range: LRRangeConfig = Field(default_factory=LRRangeConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    population: PopulationConfig = Field(default_factory=PopulationConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    grid: GridConfig = Field(default_factory=GridConfig)
    one_cycle: OneCycleConfig = Field(default_factory=OneCycleConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)

    @model_validator(mode="after")
    def _interval_within_run(self) -> ExperimentConfig:
        if self.population.perturbation_interval > self.population.epochs:
            raise ValueError(
                f"population.perturbation_interval must not exceed population.epochs, but got "
                f"perturbation_interval={self.population.perturbation_interval} and epochs={self.population.epochs}"
            )
        return self

    @model_validator(mode="after")
    def _capture_needs_a_gpu(self) -> ExperimentConfig:
        if self.population.capture == "on" and self.resources.gpu == 0:
            raise ValueError(
                "population.capture=on captures a pack's step as a CUDA graph, which needs a GPU, but got "
                "resources.gpu=0; set resources.gpu > 0 or population.capture=auto"
            )
        return self

    @field_validator("trainable")
    @classmethod
    def _absolute_trainer_file(cls, spec: str) -> str:
        # Ray workers run in other folders: pin a relative path/to/file.py to where pbt was started.
        target, sep, name = spec.rpartition(":")
        if sep and target.endswith(".py"):
            return f"{Path(target).expanduser().resolve()}:{name}"
        return spec

    @field_validator("python_path")
    @classmethod
    def _absolute_python_path(cls, folders: list[str], info: ValidationInfo) -> list[str]:
        # Workers run in other folders, on other machines: pin each folder, and the current one for a module:Class.
        pinned = [str(Path(folder).expanduser().resolve()) for folder in folders]
        target, sep, _ = str(info.data.get("trainable", "")).rpartition(":")
        if sep and not target.endswith(".py") and str(Path.cwd()) not in pinned:
            pinned.append(str(Path.cwd()))
        return pinned

    @property
    def storage(self) -> Storage:
        """Where the experiment lives (a folder or a URI); its driver files are in `experiment_dir`."""
        from pbt.storage.store import Storage  # here, not above: `import pbt` need not load pyarrow and Ray

        return Storage(self.storage_path, self.name)

    @property
    def experiment_dir(self) -> Path:
        """The local folder of the driver's files: the experiment folder, or the staging copy of a URI's."""
        return self.storage.local


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML experiment file, apply `a.b=value` overrides, and validate the result."""
    path = Path(path)
    if not path.is_file():
        raise PbtError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise PbtError(f"config file {str(path)!r} is not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise PbtError(f"config file {str(path)!r} must hold a mapping of keys, but holds a {type(raw).__name__}")
    for override in overrides:
        apply_override(raw, override)
    return validate_config(raw)


def foreign_trainer_note(path: str | Path, overrides: list[str] | tuple[str, ...], config: ExperimentConfig) -> str | None:
    """One line when the file's `trainer:` section, written for the trainable the file names, goes to
    another trainable named on the command line (`trainable=...`); None when nothing foreign is passed on.

    `pbt run configs/mnist1d.yaml trainable=my.py:Mine` would hand MNIST-1D's batch size and width
    to `Mine` without a word. Keys set on the command line (`trainer.x=...`) are the user's own.
    """
    raw = yaml.safe_load(Path(path).read_text()) or {}
    written_for = raw.get("trainable", ExperimentConfig.model_fields["trainable"].default)
    named = [word.partition("=")[2].strip() for word in overrides if word.partition("=")[0].strip() == "trainable"]
    section = raw.get("trainer") or {}
    if not named or named[-1] == written_for or not isinstance(section, dict):
        return None
    own = {word.partition("=")[0].strip().split(".")[1] for word in overrides if word.strip().startswith("trainer.")}
    foreign = sorted(set(section) - own)
    if not foreign:
        return None
    return (f"the trainer: section of {str(path)!r} was written for {written_for!r} and goes to {config.trainable!r} "
            f"as it is ({', '.join(foreign)}); configs/own_trainer.yaml is a config made for your own trainer")


def read_json(path: Path) -> Any:
    """A JSON file of an experiment folder; a one-line `PbtError` when it is missing or damaged."""
    if not path.is_file():
        raise PbtError(f"{str(path)!r} does not exist; give a folder written by `pbt run`, `pbt pbt` or `pbt grid`")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PbtError(f"{str(path)!r} is damaged, it is not JSON ({err}); run the experiment again") from None


def load_saved_config(folder: Path) -> ExperimentConfig:
    """The `config.json` an experiment folder was run with."""
    raw = read_json(folder / CONFIG_FILE)
    try:
        return validate_config(raw if isinstance(raw, dict) else {CONFIG_FILE: raw})
    except PbtError as err:
        raise PbtError(f"{str(folder / CONFIG_FILE)!r} is not a pbt experiment config: {err}") from None


def validate_config(raw: dict[str, Any]) -> ExperimentConfig:
    """Validate a plain dict into an `ExperimentConfig`, turning pydantic's report into one line."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise PbtError(describe_validation_error(err, ExperimentConfig)) from None


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (`3`, `1e-3`, `[1, 2]`, `true`)."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise PbtError(f"override must look like key.subkey=value, but got {override!r}")
    parts = key.strip().split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise PbtError(f"override {override!r}: {'.'.join(parts[: depth + 1])} is a value, not a section")
        node = child
    try:
        node[parts[-1]] = _parse_scalar(text)
    except yaml.YAMLError:
        raise PbtError(f"override {override!r}: the value is not valid YAML") from None


def _parse_scalar(text: str) -> Any:
    value = yaml.safe_load(text) if text.strip() else ""
    if isinstance(value, str):
        # YAML 1.1 reads "1e-3" as a string; users mean a number.
        try:
            return float(value)
        except ValueError:
            return value
    return value


def describe_validation_error(err: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """One line for the first problem: `dotted.key: what is wrong, but got value`."""
    first = err.errors()[0]
    loc = [str(part) for part in first["loc"]]
    key = prefix + ".".join(loc) if loc else prefix.rstrip(".") or "config"
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        hint = difflib.get_close_matches(loc[-1], allowed, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; allowed keys: {', '.join(allowed)}"
        message = f"{key}: unknown key{suggestion}"
    else:
        msg = first["msg"].removeprefix("Value error, ")
        message = msg if not loc and not prefix else f"{key}: {msg}"  # a whole-config check names its keys
        message += "" if " but got " in msg else f", but got {first['input']!r}"
    more = len(err.errors()) - 1
    return message + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def _allowed_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The field names of the (sub)model at `loc`, for a did-you-mean hint."""
    for part in loc:
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
