"""Small MNIST-style and CIFAR-10 data sets written in the real on-disk formats, so tests never download.

The images are learnable but easy: each class has its own brightness (per colour channel for
CIFAR-10) under uniform noise, so a small model beats chance within a few steps.
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np

CLASSES = 10
CIFAR_LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_mnist(root: Path, train: int = 64, test: int = 32, folder: str = "MNIST", seed: int = 0) -> None:
    """The four uncompressed IDX files torchvision's MNIST reads, under `root/folder/raw`.

    `folder="FashionMNIST"` makes the files torchvision's FashionMNIST reads (same format).
    """
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, count in (("train", train), ("t10k", test)):
        images, labels = _images(rng, count, channels=1, size=28)
        # IDX: magic (0, 0, type 8 = uint8, number of dimensions), then each size as a big-endian uint32.
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, count, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, count) + labels.tobytes())


def write_cifar10(root: Path, per_batch: int = 20, test: int = 20, seed: int = 0) -> None:
    """`root/cifar-10-batches-py/`: data_batch_1..5, test_batch and batches.meta, as CIFAR-10's site ships them."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = [(f"data_batch_{i}", per_batch, f"training batch {i} of 5") for i in range(1, 6)]
    for name, count, label in batches + [("test_batch", test, "testing batch 1 of 1")]:
        images, labels = _images(rng, count, channels=3, size=32)
        batch = {
            b"batch_label": label.encode(),
            b"labels": labels.tolist(),
            # One row per image: the 1024 red values, then green, then blue, each plane row-major.
            b"data": images.reshape(count, 3 * 32 * 32),
            b"filenames": [f"{name}_{i:05d}.png".encode() for i in range(count)],
        }
        (folder / name).write_bytes(_python2_pickle(batch))
    # torchvision reads the class names from "label_names" (its CIFAR10.meta["key"]).
    names = [name.encode() for name in CIFAR_LABEL_NAMES]
    meta = {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(_python2_pickle(meta))


def _images(rng: np.random.Generator, count: int, channels: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, CLASSES, count).astype(np.uint8)
    # Each class a brightness per channel, spread over 40..215 so that noise of +-40 stays in 0..255.
    levels = 40 + (np.arange(CLASSES)[:, None] * (np.arange(channels) * 3 + 1)) % CLASSES * (175 / (CLASSES - 1))
    noise = rng.integers(-40, 41, (count, channels, size, size))
    images = np.clip(levels[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8)
    return (images[:, 0] if channels == 1 else images), labels


class _Python2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be extended
    """Pickles `bytes` as Python 2 `str` (opcodes U and T), as the CIFAR-10 files were written.

    Loaded with `encoding="latin1"` (as torchvision does) they become `str`, so the keys read as
    "data" and "labels"; with `encoding="bytes"` (as CIFAR-10's site suggests) as b"data". Python 3
    pickles `bytes` as a call to `_codecs.encode`, which would load as `bytes` under either encoding.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


def _python2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)  # protocol 2: the newest Python 2 wrote
    return buffer.getvalue()
