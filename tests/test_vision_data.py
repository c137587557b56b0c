"""`trainables.vision_data`: torchvision's files to uint8 tensors, the tensor cache, and the offline errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from vision_files import write_cifar10, write_mnist

from pbt.errors import PbtError
from trainables import vision_data
from trainables.vision_data import DATASETS, load_images, split_validation

MNIST_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


@pytest.fixture(autouse=True)
def _fresh_memory() -> None:
    # The in-process copy would hide what these tests look at: the files.
    vision_data._load_cache_file.cache_clear()


def write(dataset: str, root: Path) -> None:
    if dataset == "cifar10":
        write_cifar10(root)
    else:
        write_mnist(root, folder=MNIST_FOLDERS[dataset])


def written(dataset: str, root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, C, H, W) and labels as the files hold them, parsed without torchvision."""
    if dataset == "cifar10":
        names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        batches = [pickle.loads((root / "cifar-10-batches-py" / name).read_bytes(), encoding="bytes") for name in names]
        rows = np.concatenate([batch[b"data"] for batch in batches])
        # A row is the red plane, then green, then blue: (N, 3072) -> (N, 3, 32, 32) is CHW.
        return rows.reshape(-1, 3, 32, 32), np.concatenate([batch[b"labels"] for batch in batches])
    raw = root / MNIST_FOLDERS[dataset] / "raw"
    prefix = "train" if train else "t10k"
    images = np.frombuffer((raw / f"{prefix}-images-idx3-ubyte").read_bytes(), np.uint8, offset=16)
    labels = np.frombuffer((raw / f"{prefix}-labels-idx1-ubyte").read_bytes(), np.uint8, offset=8)
    return images.reshape(-1, 1, 28, 28), labels


def expected_folder(dataset: str, root: Path) -> Path:
    return root / ("cifar-10-batches-py" if dataset == "cifar10" else f"{MNIST_FOLDERS[dataset]}/raw")


@pytest.mark.parametrize("dataset", DATASETS)
def test_each_dataset_loads_as_written(dataset: str, tmp_path: Path) -> None:
    write(dataset, tmp_path)
    data = load_images(dataset, tmp_path)
    channels, size = (3, 32) if dataset == "cifar10" else (1, 28)
    for x, y, train in ((data.x_train, data.y_train, True), (data.x_test, data.y_test, False)):
        images, labels = written(dataset, tmp_path, train)
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert x.shape == (len(labels), channels, size, size) and y.shape == (len(labels),)
        assert x.is_contiguous()
        assert torch.equal(x, torch.from_numpy(images.copy()))
        assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
    assert len(data.x_train) == (100 if dataset == "cifar10" else 64)
    assert len(data.mean) == len(data.std) == channels
    pixels = data.x_train.double() / 255
    assert data.mean == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist())
    assert data.std == pytest.approx(pixels.std(dim=(0, 2, 3), unbiased=False).tolist())
    assert all(0.2 < m < 0.8 for m in data.mean) and all(0.05 < s < 0.5 for s in data.std)


def test_cifar_rows_start_with_the_red_plane(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    batch = pickle.loads((tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes(), encoding="bytes")
    row = batch[b"data"][0]
    x = load_images("cifar10", tmp_path).x_train[0]
    for channel in range(3):
        plane = row[1024 * channel : 1024 * (channel + 1)].reshape(32, 32)
        assert torch.equal(x[channel], torch.from_numpy(plane.copy()))
    assert not torch.equal(x[0], x[2])  # the planes differ, so a swap would show


def test_cifar_files_read_like_the_real_ones(tmp_path: Path) -> None:
    """Python 2 pickles: str keys under torchvision's latin1 decoding, bytes keys under encoding="bytes"."""
    write_cifar10(tmp_path)
    raw = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    assert raw.startswith(b"\x80\x02}") and b"U\x04data" in raw
    assert set(pickle.loads(raw, encoding="latin1")) == {"batch_label", "labels", "data", "filenames"}
    assert set(pickle.loads(raw, encoding="bytes")) == {b"batch_label", b"labels", b"data", b"filenames"}
    meta = pickle.loads((tmp_path / "cifar-10-batches-py" / "batches.meta").read_bytes(), encoding="latin1")
    assert meta[tvd.CIFAR10.meta["key"]][0] == "airplane"


def test_expected_files_are_those_torchvision_reads() -> None:
    assert vision_data._MNIST_FILES == tuple(Path(url).stem for url, _md5 in tvd.MNIST.resources)
    assert vision_data._MNIST_FILES == tuple(Path(url).stem for url, _md5 in tvd.FashionMNIST.resources)
    cifar = [name for name, _md5 in tvd.CIFAR10.train_list + tvd.CIFAR10.test_list] + [tvd.CIFAR10.meta["filename"]]
    assert vision_data._CIFAR_FILES == tuple(cifar)


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_second_load_reads_the_cache_file(dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(dataset, tmp_path)
    first = load_images(dataset, tmp_path)
    assert (tmp_path / "pbt-cache" / f"{dataset}.pt").is_file()
    assert [p.name for p in (tmp_path / "pbt-cache").iterdir()] == [f"{dataset}.pt"]  # no temporary file left

    vision_data._load_cache_file.cache_clear()  # as in a fresh process
    for path in expected_folder(dataset, tmp_path).iterdir():
        path.unlink()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torchvision's data set class was constructed")

    for cls in (tvd.MNIST, tvd.CIFAR10):
        monkeypatch.setattr(cls, "__init__", refuse)
    second = load_images(dataset, tmp_path)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    assert (first.mean, first.std) == (second.mean, second.std)


def test_within_a_process_the_tensors_are_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mnist(tmp_path)
    load_images("mnist", tmp_path)
    first = load_images("mnist", tmp_path)  # read from the cache file
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: pytest.fail("the cache file was read again"))
    assert load_images("mnist", tmp_path).x_train is first.x_train


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated", "foreign"])
def test_a_damaged_cache_is_rebuilt(damage: str, tmp_path: Path) -> None:
    write_mnist(tmp_path)
    first = load_images("mnist", tmp_path)
    cache = tmp_path / "pbt-cache" / "mnist.pt"
    if damage == "foreign":
        torch.save({"something": torch.zeros(3)}, cache)
    else:
        content = {"garbage": b"not a tensor file" * 10, "empty": b"", "truncated": cache.read_bytes()[:500]}[damage]
        cache.write_bytes(content)
    vision_data._load_cache_file.cache_clear()

    again = load_images("mnist", tmp_path)
    assert torch.equal(again.x_train, first.x_train) and torch.equal(again.y_test, first.y_test)
    rebuilt = torch.load(cache, weights_only=True)
    assert torch.equal(rebuilt["x_train"], first.x_train)


@pytest.mark.parametrize("dataset", DATASETS)
def test_missing_files_name_folder_files_and_command(dataset: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with pytest.raises(PbtError) as raised:
        load_images(dataset, data_dir)
    message = str(raised.value)
    assert "\n" not in message
    assert repr(str(expected_folder(dataset, data_dir))) in message
    for name in vision_data._SOURCES[dataset].files:
        assert name in message
    assert f"trainer.download=true trainer.data_dir={data_dir}" in message
    assert list(data_dir.iterdir()) == []  # no pbt-cache/, no torchvision folders


def test_missing_files_message_format(tmp_path: Path) -> None:
    folder = tmp_path / "MNIST" / "raw"
    expected = (
        f"trainer.data_dir: {str(folder)!r} holds no MNIST files (expected train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte there); on a machine with "
        f"internet run: pbt lr-find configs/mnist.yaml trainer.download=true trainer.data_dir={tmp_path}"
    )
    with pytest.raises(PbtError) as raised:
        load_images("mnist", tmp_path)
    assert str(raised.value) == expected


def test_one_missing_file_is_missing_files(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(PbtError, match="holds no CIFAR-10 files"):
        load_images("cifar10", tmp_path)
    assert not (tmp_path / "pbt-cache").exists()


@pytest.mark.parametrize(
    ("dataset", "name"),
    [("mnist", "train-images-idx3-ubyte"), ("fashion_mnist", "t10k-labels-idx1-ubyte"), ("cifar10", "data_batch_3")],
)
def test_a_damaged_file_is_named(dataset: str, name: str, tmp_path: Path) -> None:
    write(dataset, tmp_path)
    path = expected_folder(dataset, tmp_path) / name
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])  # a download cut short
    with pytest.raises(PbtError) as raised:
        load_images(dataset, tmp_path)
    title = vision_data._SOURCES[dataset].title
    assert str(raised.value) == f"{str(path)!r} is damaged ({title}); delete it and download again"
    assert not (tmp_path / "pbt-cache").exists()


def test_files_that_do_not_fit_together_are_damaged(tmp_path: Path) -> None:
    write_mnist(tmp_path, train=64)
    other = tmp_path / "other"
    write_mnist(other, train=50)
    labels = "train-labels-idx1-ubyte"
    (tmp_path / "MNIST" / "raw" / labels).write_bytes((other / "MNIST" / "raw" / labels).read_bytes())
    with pytest.raises(PbtError, match=r"the MNIST files in .* are damaged .*64 images .* 50 labels"):
        load_images("mnist", tmp_path)


def test_a_failed_download_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(self: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://example/, got:\nno network\n")

    monkeypatch.setattr(tvd.MNIST, "download", offline)
    with pytest.raises(PbtError) as raised:
        load_images("mnist", tmp_path, download=True)
    assert str(raised.value).startswith("trainer.download: fetching MNIST into ")
    assert "\n" not in str(raised.value) and "no network" in str(raised.value)


def test_unknown_dataset_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(PbtError, match="mnist, fashion_mnist, cifar10"):
        load_images("imagenet", tmp_path)


def test_split_validation_is_fixed_disjoint_and_complete() -> None:
    x = torch.arange(100).view(100, 1).expand(100, 3)  # each row names its index
    y = torch.arange(100)
    (x_train, y_train), (x_val, y_val) = split_validation(x, y, 20)
    assert len(x_val) == len(y_val) == 20 and len(x_train) == len(y_train) == 80
    assert torch.equal(x_train[:, 0], y_train) and torch.equal(x_val[:, 0], y_val)  # rows and labels stay paired
    assert sorted(torch.cat([y_train, y_val]).tolist()) == list(range(100))

    torch.manual_seed(123)  # the global RNG changes nothing, and is not advanced
    state = torch.get_rng_state()
    (_, again_train), (_, again_val) = split_validation(x, y, 20)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(again_val, y_val) and torch.equal(again_train, y_train)
    (_, other_val) = split_validation(x, y, 20, seed=1)[1]
    assert not torch.equal(other_val, y_val)


@pytest.mark.parametrize("val_size", [0, 100, 101])
def test_split_validation_needs_both_parts(val_size: int) -> None:
    with pytest.raises(PbtError, match="trainer.val_size"):
        split_validation(torch.zeros(100, 1), torch.zeros(100), val_size)
