"""Shared fixtures: a data cache per test session and one Ray instance for the whole session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))  # `import synthetic` from any test


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated data sets go to a fresh folder, so tests never depend on a user's cache."""
    folder = tmp_path_factory.mktemp("cache")
    os.environ["PBT_CACHE_DIR"] = str(folder)  # set before Ray starts, so workers inherit it
    # Object-storage tests talk to a local S3 server only: fake credentials, no cloud metadata lookups.
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_EC2_METADATA_DISABLED="true")
    return folder


@pytest.fixture(scope="session")
def ray_session(data_cache: Path):
    """One local Ray instance for every test that needs one (starting Ray takes seconds)."""
    import ray

    from pbt.cluster.session import ensure_ray

    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture
def tiny_mnist1d() -> dict:
    """A `trainer:` section for a fast MNIST-1D trainer (1000 samples, narrow CNN)."""
    return {"num_samples": 1000, "width": 0.5, "batch_size": 16}
