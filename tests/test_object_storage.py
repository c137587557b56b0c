"""Experiments on an object store: a real S3 server (moto) on loopback, reached through pyarrow as Ray does.

The storage path is `s3://bucket/results?endpoint_override=...`: Ray Tune writes trial folders and
checkpoints there from the workers; pbt's own files are staged locally and uploaded. Each "machine"
below is a separate temporary folder for the staging copy, so nothing is read from a local disk
that another machine would not have.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from resumed import assert_resumed_to_completion

from pbt.cli import main
from pbt.storage.store import Storage, split_experiment

pytestmark = pytest.mark.slow

EPOCHS = 40
SNAPSHOT_SECONDS = 10  # Tune snapshots its experiment state at most this often; pbt uploads its reports as often


@pytest.fixture(scope="module")
def bucket(data_cache) -> str:
    """A fresh bucket on a local S3 server; returns the storage URI of its `results/` prefix."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's request log would mix into pbt's stderr
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1").create_bucket(Bucket="bucket")
    yield f"s3://bucket/results?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    server.stop()


def stored(uri: str, relative: str) -> str | None:
    """A file of the experiment at `uri` as the object store holds it."""
    return Storage(*split_experiment(uri)).read_text(relative)


def stored_reports(uri: str) -> list[dict]:
    return [json.loads(line) for line in (stored(uri, "pbt/reports.jsonl") or "").splitlines()]


def pbt_command(*args: str, machine: Path, **popen) -> subprocess.Popen:
    """`pbt ARGS` as a process on `machine`: its own temporary folder, hence its own staging copy."""
    machine.mkdir(exist_ok=True)
    # Each machine stages in its own folder; Ray keeps the usual one (its socket paths must stay short).
    env = {**os.environ, "RAY_ADDRESS": "", "TMPDIR": str(machine), "RAY_TMPDIR": tempfile.gettempdir()}
    return subprocess.Popen([sys.executable, "-m", "pbt", *args], env=env, cwd=machine, **popen)


def test_a_killed_run_on_s3_is_resumed_on_another_machine(bucket, tmp_path):
    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump({
        "name": "killed",
        "storage_path": bucket,
        "trainer": {"num_samples": 8000, "width": 0.5, "batch_size": 16},
        "search": {"lr": {"low": 0.01, "high": 0.05}},
        "population": {"size": 4, "epochs": EPOCHS, "perturbation_interval": 3, "quantile_fraction": 0.25},
    }))
    uri = bucket.replace("/results?", "/results/killed?")
    # Its own session, so the kill takes the driver and the local Ray it started, as a killed job would.
    driver = pbt_command("pbt", str(config), machine=tmp_path / "machine_a", start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not stored_reports(uri):  # the first upload of the reports, about 10 s into the run
        assert driver.poll() is None and time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.5)
    time.sleep(SNAPSHOT_SECONDS + 3)  # past Tune's snapshot of trials with checkpoints
    assert driver.poll() is None, "the run ended before it could be killed"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = stored_reports(uri)
    assert stored(uri, "lineage.json") is None

    resume = pbt_command("resume", uri, machine=tmp_path / "machine_b", stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    out, _ = resume.communicate(timeout=600)
    assert resume.returncode == 0, out
    assert f"Resuming {uri}" in out and "Best member" in out and f"Uploaded to {uri}" in out

    assert_resumed_to_completion(before, stored_reports(uri), members=4, epochs=EPOCHS)
    lineage = json.loads(stored(uri, "lineage.json"))
    assert [entry["epoch"] for entry in lineage["best"]["schedule"]] == list(range(1, EPOCHS + 1))
    assert lineage["best"]["checkpoint"].startswith("bucket/results/killed/pbt/")

    # A third machine reads the finished experiment back from the bucket alone.
    compare = pbt_command("compare", uri, machine=tmp_path / "machine_c", stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    out, _ = compare.communicate(timeout=120)
    assert compare.returncode == 0, out
    summary = json.loads(stored(uri, "summary.json"))
    assert summary["arms"]["pbt"]["chosen"]["val_acc"] == pytest.approx(lineage["best"]["final_val_acc"])
    assert Storage(*split_experiment(uri)).exists("tensorboard/pbt/member_00")


def test_a_second_run_into_the_same_uri_is_refused(bucket, tmp_path):
    uri = bucket.replace("/results?", "/results/taken?")
    storage = Storage(*split_experiment(uri))
    storage.fs.create_dir(f"{storage.path}/pbt")
    with storage.fs.open_output_stream(f"{storage.path}/pbt/reports.jsonl") as stream:
        stream.write(b"{}\n")
    config = tmp_path / "taken.yaml"
    config.write_text(yaml.safe_dump({"name": "taken", "storage_path": bucket, "search": {"lr": {"low": 0.01, "high": 0.05}}}))
    code, err = run_cli(["pbt", str(config)])
    assert code == 2
    assert f"pbt: error: {uri} already holds results of pbt; pass --overwrite" in err
    assert len(err.strip().splitlines()) == 1


def test_a_bucket_that_does_not_exist_is_refused_before_anything_runs(bucket, tmp_path):
    missing = bucket.replace("s3://bucket/", "s3://no-such-bucket/")
    config = tmp_path / "missing.yaml"
    config.write_text(yaml.safe_dump({"name": "lost", "storage_path": missing}))
    code, err = run_cli(["run", str(config)])
    assert code == 2
    assert "storage_path: cannot write to 's3://no-such-bucket/results/lost?" in err
    assert "check the bucket exists" in err and len(err.strip().splitlines()) == 1


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def test_a_store_that_cannot_be_reached_is_one_line_and_nothing_is_started(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the staging copy, if any, goes here
    nobody = "s3://bucket/results/gone?endpoint_override=127.0.0.1:1&scheme=http&region=us-east-1"
    code, err = run_cli(["resume", nobody])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"pbt: error: cannot reach {nobody!r} (")
    assert "check that it is up and the credentials in the environment" in err
