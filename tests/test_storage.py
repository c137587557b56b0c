"""`pbt.storage.store` on a `file://` URI: pyarrow's local file system behind the same code path as s3://."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from pbt.errors import PbtError
from pbt.storage.store import Storage, split_experiment


@pytest.fixture
def store(tmp_path, monkeypatch) -> Storage:
    (tmp_path / "machine_a").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "machine_a"))  # this machine's staging copy
    return Storage(f"file://{tmp_path}/bucket", "exp")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def remote_files(store: Storage) -> dict[str, int]:
    infos = store.fs.get_file_info(pafs.FileSelector(store.path, recursive=True))
    return {i.path[len(store.path) + 1:]: i.mtime_ns for i in infos if i.type == pafs.FileType.File}


def test_experiment_locations_split_into_storage_path_and_name(tmp_path):
    assert split_experiment("s3://b/results/exp?region=x&scheme=http") == ("s3://b/results?region=x&scheme=http", "exp")
    assert split_experiment("gs://b/exp/") == ("gs://b", "exp")
    assert split_experiment(str(tmp_path / "results" / "exp")) == (str(tmp_path / "results"), "exp")
    with pytest.raises(PbtError, match="names no experiment folder"):
        split_experiment("s3://b")


def test_a_uri_experiment_is_staged_locally_and_shown_by_its_uri(store, tmp_path):
    assert store.remote and store.path == f"{tmp_path}/bucket/exp"
    assert store.local.is_relative_to(tmp_path / "machine_a") and store.local.name == "exp"
    assert store.shown("pbt", "reports.jsonl") == f"file://{tmp_path}/bucket/exp/pbt/reports.jsonl"
    assert store.tune_filesystem is store.fs
    local = Storage(str(tmp_path / "results"), "exp")
    assert not local.remote and local.local == tmp_path / "results" / "exp" and local.tune_filesystem is None


def test_only_the_drivers_files_travel_and_unchanged_files_are_not_uploaded_again(store, tmp_path, monkeypatch):
    for relative in ("config.json", "pbt/reports.jsonl", "grid/axes.json", "tensorboard/pbt/member_00/events.x"):
        write(store.local / relative, relative)
    store.sync_up()
    # What Ray Tune writes to the storage itself: its state and the trial folders.
    for relative in ("pbt/tuner.pkl", "pbt/pbt_global.txt", "pbt/trial_0/checkpoint_000001/member.pt"):
        write(Path(store.path) / relative, "tune")
    uploaded = remote_files(store)
    assert set(uploaded) >= {"config.json", "pbt/reports.jsonl", "grid/axes.json", "tensorboard/pbt/member_00/events.x"}

    (tmp_path / "machine_b").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "machine_b"))
    other = Storage(f"file://{tmp_path}/bucket", "exp")
    other.sync_down()
    fetched = sorted(p.relative_to(other.local).as_posix() for p in other.local.rglob("*") if p.is_file())
    assert fetched == ["config.json", "grid/axes.json", "pbt/reports.jsonl", "tensorboard/pbt/member_00/events.x"]

    other.sync_up()  # nothing changed: nothing is written, Tune's files least of all
    assert remote_files(other) == uploaded
    with (other.local / "pbt" / "reports.jsonl").open("a") as stream:
        stream.write("\nmore")
    other.sync_up()
    assert Path(store.path, "pbt", "reports.jsonl").read_text() == "pbt/reports.jsonl\nmore"
    assert Path(store.path, "pbt", "tuner.pkl").read_text() == "tune"


def test_latest_checkpoints_are_found_and_copied_for_reading(store):
    for trial, numbers in (("trial_0", (0, 2, 1)), ("trial_1", (0,)), ("trial_2", ())):
        for n in numbers:
            write(Path(store.path) / "pbt" / trial / f"checkpoint_{n:06d}" / "member.pt", f"{trial} {n}")
        write(Path(store.path) / "pbt" / trial / "result.json", "{}")
    latest = store.latest_checkpoints("pbt")
    assert latest == [f"{store.path}/pbt/trial_0/checkpoint_000002", f"{store.path}/pbt/trial_1/checkpoint_000000"]
    with store.local_copy(latest[0]) as folder:
        assert not str(folder).startswith(store.path)  # a downloaded copy, as from a bucket
        assert (folder / "member.pt").read_text() == "trial_0 2"
    assert store.latest_checkpoints("grid") == []


def test_delete_removes_a_folder_from_the_storage_and_the_local_copy(store):
    write(Path(store.path) / "pbt" / "trial_0" / "result.json", "{}")
    write(store.local / "pbt" / "reports.jsonl", "{}")
    assert store.exists("pbt")
    store.delete("pbt")
    assert not store.exists("pbt") and not (store.local / "pbt").exists()


def test_a_storage_path_pyarrow_cannot_open_is_one_clear_error():
    with pytest.raises(PbtError, match=r"pyarrow cannot open 's4://bucket/x' \(Unrecognized filesystem type"):
        Storage("s4://bucket/x", "exp")
