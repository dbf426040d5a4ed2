"""Shared fixtures: paths to the repo, the shared real-image data sets (skipped when absent), smoke config."""

from __future__ import annotations

import os
from pathlib import Path

# the suite's workers (pytest-xdist) and their subprocesses share the machine's CPUs: OpenMP threads that wait
# sleep instead of spinning. Spinning, two 2-thread training processes on two cores ran a step 8-10x slower than
# alone (785-975 ms against 92 ms); sleeping, 2x (176 ms). Alone, sleeping costs 10-20 % (not the package default).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RLSEG_SHARED_DATA", REPO.parent / "shared" / "data"))

WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, len(os.sched_getaffinity(0)) // WORKERS)))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def _shared(name: str) -> Path:
    d = SHARED / name
    if not (d / "images").is_dir():
        pytest.skip(f"shared data set {name} not found at {d}")
    return d


@pytest.fixture(scope="session")
def horse_dir() -> Path:
    return _shared("weizmann_horse")


@pytest.fixture(scope="session")
def ecssd_dir() -> Path:
    return _shared("ecssd")


# the mark of every test that uses ``smoke_run``: they run on one worker, which computes it once
SMOKE_GROUP = pytest.mark.xdist_group("smoke_run")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The whole workflow on the smoke config (every rule, about a minute), shared by the modules that inspect it."""
    from snakemake_helpers import snakemake

    work = tmp_path_factory.mktemp("smoke")
    snakemake(work)
    return work


def pytest_collection_modifyitems(items):
    """The tests that use the shared smoke run of the whole workflow are slow (``pytest -m "not slow"`` skips them)."""
    for item in items:
        if "smoke_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
