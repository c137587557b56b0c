"""Where an experiment lives: a folder (local or shared), or an object store such as `s3://bucket/path`.

Ray Tune writes trial folders and checkpoints to the storage itself, from whichever node a run is
on, through pyarrow's file systems as Ray does. The driver's own files (config, reports, lineage,
TensorBoard runs, plots) are written to a local folder: for a folder storage path that is the
experiment folder itself; for a URI it is a staging copy under the temporary folder, uploaded as it
changes (`sync_up`) and fetched again by every command that reads the experiment (`sync_down`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow
import pyarrow.fs as pafs
from ray import tune

from pbt.errors import PbtError
from pbt.storage.layout import ARM_FILES, TENSORBOARD

log = logging.getLogger(__name__)


def shown(path: Path) -> str:
    """A path relative to the working directory when it is below it; easier to copy."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def is_uri(storage_path: str) -> bool:
    return "://" in storage_path


def split_experiment(location: str) -> tuple[str, str]:
    """`s3://b/results/exp?region=x` -> (`s3://b/results?region=x`, `exp`); a folder -> (its parent, its name)."""
    if not is_uri(location):
        folder = Path(location).expanduser().resolve()
        return str(folder.parent), folder.name
    parts = urllib.parse.urlsplit(location)
    parent, _, name = parts.path.rstrip("/").rpartition("/")
    if not name:
        raise PbtError(f"{location!r} names no experiment folder; give storage_path/name, e.g. s3://bucket/results/mnist1d")
    return urllib.parse.urlunsplit(parts._replace(path=parent)), name


def _reaching_the_store(method):
    """A store that cannot be reached or refuses (down, no credentials) as one line naming it."""

    @functools.wraps(method)
    def call(self: Storage, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (OSError, pyarrow.ArrowException) as err:
            hint = "; check that it is up and the credentials in the environment" if self.remote else ""
            raise PbtError(f"cannot reach {self.uri!r} ({str(err).splitlines()[0][:200]}){hint}") from None

    return call


@functools.cache
def _file_system(storage_path: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's file system and path for a URI (cached: an S3 client may look up its bucket's region)."""
    try:
        return pafs.FileSystem.from_uri(storage_path)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, OSError, ValueError) as err:
        raise PbtError(
            f"storage_path: pyarrow cannot open {storage_path!r} ({str(err).splitlines()[0]}); give a folder or a URI "
            "such as s3://bucket/path, gs://bucket/path or file:///shared/path"
        ) from None


class Storage:
    """The experiment `name` under `storage_path`."""

    def __init__(self, storage_path: str, name: str) -> None:
        self.storage_path, self.name = storage_path, name
        self.remote = is_uri(storage_path)
        if self.remote:
            self.fs, base = _file_system(storage_path)
            self.uri = _join_uri(storage_path, name)
            # One staging folder per experiment URI, so experiments of the same name do not mix.
            digest = hashlib.sha1(self.uri.encode()).hexdigest()[:12]
            self.local = Path(tempfile.gettempdir()) / "pbt-staging" / digest / name
        else:
            self.fs, base = pafs.LocalFileSystem(), str(Path(storage_path).expanduser().resolve())
            self.local = Path(base) / name
            self.uri = str(self.local)
        self.path = f"{base.rstrip('/')}/{name}"  # the experiment folder on `fs`

    @property
    def tune_filesystem(self) -> pafs.FileSystem | None:
        """What Ray Tune's `storage_filesystem` should be: None for a folder, so Tune treats it as usual."""
        return self.fs if self.remote else None

    def shown(self, *parts: str) -> str:
        """Where a user finds a file of the experiment: a path, or the URI of the uploaded copy."""
        if not self.remote:
            return str(self.local.joinpath(*parts))
        return _join_uri(self.uri, "/".join(parts)) if parts else self.uri

    @_reaching_the_store
    def exists(self, relative: str) -> bool:
        return self._info(relative).type != pafs.FileType.NotFound

    @_reaching_the_store
    def names(self) -> list[str]:
        """The names of the files and folders at the top of the experiment (none before it exists)."""
        return sorted(info.base_name for info in self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True)))

    @_reaching_the_store
    def read_text(self, relative: str) -> str | None:
        if self._info(relative).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(f"{self.path}/{relative}") as stream:
            return stream.read().decode()

    @_reaching_the_store
    def delete(self, relative: str) -> None:
        """Remove a folder of the experiment from the storage and from the local copy."""
        if self.remote and self._info(relative).type == pafs.FileType.Directory:
            self.fs.delete_dir(f"{self.path}/{relative}")
        shutil.rmtree(self.local / relative, ignore_errors=True)

    def check_writable(self) -> None:
        """A real write (permission bits say nothing for root, read-only mounts or bucket policies)."""
        marker = f"{self.path}/.pbt-write-check"
        try:
            self.fs.create_dir(self.path)
            with self.fs.open_output_stream(marker) as stream:
                stream.write(b"ok")
            self.fs.delete_file(marker)
        except (OSError, pyarrow.ArrowException) as err:
            raise PbtError(
                f"storage_path: cannot write to {self.uri!r} ({str(err).splitlines()[0][:200]}); give a location "
                "you can write to (for s3://, check the bucket exists and the credentials in the environment)"
            ) from None

    @_reaching_the_store
    def latest_checkpoints(self, arm: str) -> list[str]:
        """The newest `checkpoint_*` folder of every trial of `arm`, as paths on `fs`."""
        latest = []
        for trial in self._list(f"{self.path}/{arm}", pafs.FileType.Directory):
            checkpoints = sorted(p for p in self._list(trial, pafs.FileType.Directory) if p.rsplit("/", 1)[-1].startswith("checkpoint_"))
            latest += checkpoints[-1:]
        return latest

    @contextlib.contextmanager
    def local_copy(self, fs_path: str) -> Iterator[Path]:
        """A folder on `fs` as a local folder (downloaded to a temporary one when the storage is remote)."""
        if not self.remote:
            yield Path(fs_path)
            return
        with tempfile.TemporaryDirectory(prefix="pbt-checkpoint-") as tmp:
            self._download(fs_path, tmp)
            yield Path(tmp)

    @_reaching_the_store
    def _download(self, fs_path: str, folder: str) -> None:
        pafs.copy_files(fs_path, folder, source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())

    @_reaching_the_store
    def sync_down(self) -> None:
        """Replace the local copy with the driver's files from the storage (Tune's trial folders stay there)."""
        if not self.remote:
            return
        shutil.rmtree(self.local, ignore_errors=True)
        self.local.mkdir(parents=True)
        for info in self._files():
            relative = info.path[len(self.path) + 1:]
            if _is_driver_file(relative):
                (self.local / relative).parent.mkdir(parents=True, exist_ok=True)
                self._download(info.path, str(self.local / relative))
                # The stored time, so `sync_up` sees the copy as unchanged and does not upload it back.
                os.utime(self.local / relative, ns=(info.mtime_ns, info.mtime_ns))

    def sync_up(self) -> None:
        """Upload the local files that are new or changed since their last upload."""
        if not self.remote or not self.local.is_dir():
            return
        try:
            self._upload_changed()
        except PbtError as err:
            raise PbtError(f"{err}; pbt's files are in {self.local}") from None

    @_reaching_the_store
    def _upload_changed(self) -> None:
        uploaded = {info.path[len(self.path) + 1:]: info for info in self._files()}
        folders = set()
        for file in sorted(p for p in self.local.rglob("*") if p.is_file()):
            relative = file.relative_to(self.local).as_posix()
            stat, remote = file.stat(), uploaded.get(relative)
            if remote is not None and remote.size == stat.st_size and remote.mtime_ns >= stat.st_mtime_ns:
                continue
            folder = f"{self.path}/{relative}".rpartition("/")[0]
            if folder not in folders:  # a real folder on file:// and shared mounts; a marker on object stores
                self.fs.create_dir(folder)
                folders.add(folder)
            pafs.copy_files(str(file), f"{self.path}/{relative}", source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.fs)

    def _info(self, relative: str) -> pafs.FileInfo:
        return self.fs.get_file_info(f"{self.path}/{relative}")

    def _files(self) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=True)
        return [info for info in self.fs.get_file_info(selector) if info.type == pafs.FileType.File]

    def _list(self, folder: str, kind: pafs.FileType) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        return sorted(info.path for info in infos if info.type == kind)


def _is_driver_file(relative: str) -> bool:
    """Top-level files, TensorBoard runs and our files in the arm folders; not Ray Tune's state or checkpoints."""
    parts = relative.split("/")
    return len(parts) == 1 or parts[0] == TENSORBOARD or (len(parts) == 2 and parts[1] in ARM_FILES)


def _join_uri(uri: str, relative: str) -> str:
    """`s3://b/results?region=x` + `exp` -> `s3://b/results/exp?region=x` (query parameters kept at the end)."""
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{relative}"))


class PeriodicUpload(tune.Callback):
    """Uploads the driver's files of a URI experiment while an arm runs, at most every `every` seconds,
    and once more at its end: a driver that dies loses at most that much of its reports."""

    def __init__(self, storage: Storage, every: float = 10.0) -> None:
        self.storage, self.every = storage, every
        self.last = time.monotonic()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if time.monotonic() - self.last >= self.every:
            self._upload()
            self.last = time.monotonic()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._upload()

    def _upload(self) -> None:
        try:
            self.storage.sync_up()
        except PbtError as err:  # the store may be back by the next upload; training goes on meanwhile
            log.warning("%s", err)
