"""What an object-store storage path costs: the same `pbt pbt` job on a folder and on S3, side by side.

S3 here is moto's server on loopback (a real S3 protocol endpoint, without a network's latency), so
the figure is the cost of pbt's and Tune's uploads on the driver and the workers, not of a slow
link. Runs alternate (folder, S3, folder, S3, ...) so that the machine's load hits both alike.

    python scripts/bench_storage.py                      # 2 rounds, about 4 minutes on 2 cores
    python scripts/bench_storage.py --rounds 3 population.size=16
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs

REPO = Path(__file__).resolve().parents[1]
JOB = ["population.size=8", "population.epochs=20", "search.lr.low=0.01", "search.lr.high=0.03"]


def start_s3() -> tuple[object, str]:
    """A local S3 server with a bucket; returns it and the storage URI of the bucket's `bench/` prefix."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1").create_bucket(Bucket="bench")
    return server, f"s3://bench/runs?endpoint_override={host}:{port}&scheme=http&region=us-east-1"


def timed_run(storage: str, name: str, overrides: list[str], log: Path) -> float:
    command = [sys.executable, "-m", "pbt", "pbt", str(REPO / "configs" / "mnist1d.yaml"), f"name={name}",
               f"storage_path={storage}", *JOB, *overrides]
    started = time.perf_counter()
    with log.open("w") as stream:
        done = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, env={**os.environ, "RAY_ADDRESS": ""})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - started


def stored_bytes(uri: str) -> tuple[int, float]:
    fs, path = pafs.FileSystem.from_uri(uri)
    files = [i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if i.type == pafs.FileType.File]
    return len(files), sum(i.size for i in files) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. population.size=16")
    args = parser.parse_args()
    # Fake credentials for the local server, set before any run starts Ray (its workers inherit them).
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="true")
    server, bucket = start_s3()
    folder = Path(tempfile.mkdtemp(prefix="bench_storage_"))
    print(f"pbt pbt configs/mnist1d.yaml {' '.join(JOB + args.overrides)}; folder runs in {folder}", flush=True)
    seconds: dict[str, list[float]] = {"folder": [], "s3": []}
    try:
        for n in range(args.rounds):
            for kind, storage in (("folder", str(folder)), ("s3", bucket)):
                seconds[kind].append(timed_run(storage, f"{kind}{n}", args.overrides, folder / f"{kind}{n}.log"))
                print(f"  round {n + 1}: {kind:<6} {seconds[kind][-1]:6.1f} s", flush=True)
        objects, megabytes = stored_bytes(bucket.replace("/runs?", "/runs/s30?"))
    finally:
        server.stop()
    median = {kind: statistics.median(values) for kind, values in seconds.items()}
    print(f"median wall time: folder {median['folder']:.1f} s, s3 {median['s3']:.1f} s; "
          f"s3 / folder = {median['s3'] / median['folder']:.3f}")
    print(f"one S3 experiment: {objects} objects, {megabytes:.1f} MB")


if __name__ == "__main__":
    main()
