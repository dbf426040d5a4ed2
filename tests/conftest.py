"""Shared fixtures: paths to the repo, the shared real-image data sets (skipped when absent), smoke config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RLSEG_SHARED_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(2)


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


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The whole workflow on the smoke config (every rule, about a minute), shared by the modules that inspect it."""
    from snakemake_helpers import snakemake

    work = tmp_path_factory.mktemp("smoke")
    snakemake(work)
    return work
