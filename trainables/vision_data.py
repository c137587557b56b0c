"""MNIST, FashionMNIST and CIFAR-10 as whole uint8 tensors, read once and cached as a tensor file.

Why tensors and not a `DataLoader`: these images are small (CIFAR-10's training split is 150 MB
as uint8), so the whole split fits in device memory, and the models trained on them are small
enough that a loader's per-batch cost (collating, pinning, copying to the device) would take
longer than the step itself. Trainers index the tensors by `randperm` instead.

Why the cache (`<data_dir>/pbt-cache/<dataset>.pt`): every population member builds its own
trainer, often in a fresh worker process. torchvision parses IDX files or unpickles CIFAR batches
(and MD5-hashes the CIFAR files) each time; one `torch.load` of the finished tensors is cheaper.
Within a process the loaded tensors are also kept in memory, so they are shared by the trainers
of that process: never modify them in place.

Why the integrity override: torchvision's `CIFAR10` MD5-hashes all six batch files (about
180 MB) in every constructor, and `batches.meta` once more. That costs seconds per member, and it
rejects the small files that tests write in the real format. Only whether the files exist is
checked; files that exist but cannot be read are reported as damaged.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import shlex
import struct
import tempfile
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from pbt.errors import PbtError

DATASETS = ("mnist", "fashion_mnist", "cifar10")
CACHE_FOLDER = "pbt-cache"
_CACHE_VERSION = 1  # bump when ImageData or its preparation changes: old caches are then rebuilt
_CLASSES = 10
# The files torchvision reads: MNIST's `_check_exists`, CIFAR10's `train_list`, `test_list` and `meta`.
_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")


@dataclass
class ImageData:
    """A data set's splits as uint8 images (N, C, H, W) and int64 labels, with the training split's statistics."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: tuple[float, ...]  # per channel, of x_train / 255
    std: tuple[float, ...]


@dataclass(frozen=True)
class _Source:
    title: str  # as the error messages name it
    folder: str  # where torchvision looks, relative to data_dir
    files: tuple[str, ...]  # the files torchvision reads there
    shape: tuple[int, int, int]  # of one image, (C, H, W)
    config: str  # the shipped config that uses it, for the download hint


_SOURCES = {
    "mnist": _Source("MNIST", "MNIST/raw", _MNIST_FILES, (1, 28, 28), "configs/mnist.yaml"),
    "fashion_mnist": _Source(
        "FashionMNIST", "FashionMNIST/raw", _MNIST_FILES, (1, 28, 28), "configs/fashion_mnist.yaml"
    ),
    "cifar10": _Source("CIFAR-10", "cifar-10-batches-py", _CIFAR_FILES, (3, 32, 32), "configs/cifar10_resnet20.yaml"),
}


def load_images(dataset: str, data_dir: str | Path, download: bool = False) -> ImageData:
    """The data set from `<data_dir>/pbt-cache/`, or from torchvision's files (then cached).

    With `download=False` and the files absent, a `PbtError` says where they belong and which
    command fetches them; nothing is written to `data_dir` then.
    """
    _source(dataset)
    root = Path(data_dir).expanduser().absolute()
    cache = root / CACHE_FOLDER / f"{dataset}.pt"
    data = _read_cache(cache)
    if data is None:  # absent, damaged or of an older layout
        data = _read_files(dataset, root, data_dir, download)
        _write_cache(data, cache)
    return data


def split_validation(
    x: torch.Tensor, y: torch.Tensor, val_size: int, seed: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """`(x_train, y_train), (x_val, y_val)`: `val_size` examples held out, the same ones for every member.

    The permutation has its own generator, so the global RNG (seeded per member) neither changes
    the split nor is advanced by it.
    """
    if not 0 < val_size < len(x):
        raise PbtError(f"trainer.val_size: {val_size} must be at least 1 and below the {len(x)} training images")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val, train = order[:val_size], order[val_size:]
    return (x[train], y[train]), (x[val], y[val])


def _read_cache(path: Path) -> ImageData | None:
    try:
        stamp = path.stat()
    except FileNotFoundError:
        return None
    # The file's identity is part of the key: a rebuilt or replaced cache is read afresh.
    return _load_cache_file(str(path), stamp.st_ino, stamp.st_mtime_ns, stamp.st_size)


@functools.lru_cache(maxsize=2)
def _load_cache_file(path: str, inode: int, mtime_ns: int, size: int) -> ImageData | None:
    try:
        saved = torch.load(path, weights_only=True)
        if saved.pop("version") != _CACHE_VERSION:
            return None
        return ImageData(**saved)
    # A half-written or foreign file: rebuilt from the raw files by the caller.
    except (pickle.UnpicklingError, EOFError, RuntimeError, AttributeError, KeyError, TypeError):
        return None


def _write_cache(data: ImageData, path: Path) -> None:
    saved: dict[str, Any] = {field.name: getattr(data, field.name) for field in fields(data)}
    saved["version"] = _CACHE_VERSION
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename: members may build the cache at once; readers never see half a file.
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
            try:
                torch.save(saved, tmp)
            except BaseException:
                os.unlink(tmp.name)
                raise
        os.replace(tmp.name, path)
    except OSError as error:  # a read-only data folder still works, only slower
        warnings.warn(f"could not cache {path.name} in {path.parent}: {error}", stacklevel=3)


def _read_files(dataset: str, root: Path, data_dir: str | Path, download: bool) -> ImageData:
    source = _SOURCES[dataset]
    folder = root / source.folder
    if not _has_files(source, folder):
        if not download:
            raise _missing(source, folder, data_dir)
        _download(dataset, root, folder)
    try:
        x_train, y_train = _read_split(dataset, root, train=True)
        x_test, y_test = _read_split(dataset, root, train=False)
        for x, y in ((x_train, y_train), (x_test, y_test)):
            _check(x, y, source)
    except (AssertionError, ValueError, TypeError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as error:
        raise _damaged(source, folder, error) from error
    mean, std = _channel_stats(x_train)
    return ImageData(x_train, y_train, x_test, y_test, mean, std)


def require_files(dataset: str, data_dir: str | Path) -> None:
    """Raise the missing-files `PbtError` now unless the cache or every file is there: the driver
    checks before anything runs, rather than each member failing when it loads."""
    source = _source(dataset)
    root = Path(data_dir).expanduser().absolute()
    folder = root / source.folder
    if (root / CACHE_FOLDER / f"{dataset}.pt").is_file() or _has_files(source, folder):
        return
    raise _missing(source, folder, data_dir)


def _source(dataset: str) -> _Source:
    if dataset not in _SOURCES:
        raise PbtError(f"trainer.dataset: unknown data set {dataset!r}; expected one of {', '.join(DATASETS)}")
    return _SOURCES[dataset]


def _has_files(source: _Source, folder: Path) -> bool:
    return all((folder / name).is_file() for name in source.files)


def _missing(source: _Source, folder: Path, data_dir: str | Path) -> PbtError:
    # Checked by pbt, not left to torchvision: its message names neither the folder nor the files.
    hint = f"pbt lr-find {source.config} trainer.download=true trainer.data_dir={shlex.quote(str(data_dir))}"
    return PbtError(
        f"trainer.data_dir: {str(folder)!r} holds no {source.title} files "
        f"(expected {', '.join(source.files)} there); on a machine with internet run: {hint}"
    )


def _download(dataset: str, root: Path, folder: Path) -> None:
    try:
        _dataset_class(dataset)(root, train=True, download=True)  # fetches both splits
    except (OSError, RuntimeError) as error:  # no network, a mirror down, a checksum mismatch
        detail = " ".join(str(error).split())  # torchvision's MNIST message spans lines
        title = _SOURCES[dataset].title
        raise PbtError(f"trainer.download: fetching {title} into {str(folder)!r} failed: {detail}") from error


def _read_split(dataset: str, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    split = _dataset_class(dataset)(root, train=train, download=False)
    if dataset == "cifar10":
        # torchvision stores HWC as a transposed view of CHW data: permuting back copies nothing.
        x = torch.from_numpy(split.data).permute(0, 3, 1, 2).contiguous()
    else:
        x = split.data.unsqueeze(1)
    return x, torch.as_tensor(split.targets, dtype=torch.int64)


def _dataset_class(dataset: str) -> type:
    import torchvision.datasets as tvd  # only when building the cache: the import takes over a second

    return {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST}.get(dataset) or _existing_cifar10()


def _check(x: torch.Tensor, y: torch.Tensor, source: _Source) -> None:
    # torchvision reads whatever the files hold; a truncated or mismatched pair must not become a cache.
    if x.dtype != torch.uint8 or tuple(x.shape[1:]) != source.shape or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{len(x)} images of {tuple(x.shape[1:])} ({x.dtype}) and {len(y)} labels")
    if y.min() < 0 or y.max() >= _CLASSES:
        raise ValueError(f"labels outside 0..{_CLASSES - 1}")


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # From a histogram of the 256 values: exact, and no float copy of the whole split.
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in range(x.shape[1]):
        counts = torch.bincount(x[:, channel].flatten(), minlength=256).double()
        mean = (counts * values).sum() / counts.sum()
        means.append(mean.item())
        stds.append(((counts * (values - mean) ** 2).sum() / counts.sum()).sqrt().item())
    return tuple(means), tuple(stds)


def _damaged(source: _Source, folder: Path, error: Exception) -> PbtError:
    for name in source.files:
        path = folder / name
        if not _readable(path):
            return PbtError(f"{str(path)!r} is damaged ({source.title}); delete it and download again")
    # Each file reads on its own, yet they do not fit together (e.g. images and labels differ in number).
    return PbtError(
        f"the {source.title} files in {str(folder)!r} are damaged ({error}); delete them and download again"
    )


def _readable(path: Path) -> bool:
    """Whether one file parses as what torchvision expects of it: an IDX file or a pickled dict."""
    try:
        with path.open("rb") as file:
            if path.name.endswith("ubyte"):
                return _idx_complete(file.read())
            return isinstance(pickle.load(file, encoding="latin1"), dict)
    except Exception:  # whatever the reason, it does not read
        return False


def _idx_complete(data: bytes) -> bool:
    # Header: two zero bytes, the type (8: uint8), the number of dimensions, then big-endian sizes.
    if len(data) < 8 or data[:3] != b"\x00\x00\x08" or not 1 <= data[3] <= 3:
        return False
    dims = struct.unpack(f">{data[3]}I", data[4 : 4 + 4 * data[3]])
    return len(data) == 4 + 4 * len(dims) + math.prod(dims)


@functools.cache
def _existing_cifar10() -> type:
    # Defined on first use: importing torchvision takes over a second, which a cache hit never pays.
    import torchvision.datasets as tvd

    class ExistingCIFAR10(tvd.CIFAR10):
        """CIFAR-10 that checks that its files exist, not their MD5 (see the module docstring)."""

        # `_load_meta` checks `batches.meta` against this MD5 outside `_check_integrity`;
        # with None, torchvision's `check_integrity` checks only that the file exists.
        meta = {**tvd.CIFAR10.meta, "md5": None}

        def _check_integrity(self) -> bool:
            # batches.meta too: torchvision leaves it out, so `download()` would not fetch it when missing.
            names = [name for name, _md5 in self.train_list + self.test_list] + [self.meta["filename"]]
            return all((Path(self.root) / self.base_folder / name).is_file() for name in names)

    return ExistingCIFAR10
