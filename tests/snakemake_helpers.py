"""Running the workflow through Snakemake itself from the tests, on the smoke config in a temporary directory."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "tests" / "smoke.yaml"
# the scores without the report's figures (rule all draws them too): for tests that look at the pipeline only
SCORES = ("results/voc_miou.txt", "results/upper_bound_miou.txt")


def snakemake(workdir: Path, *args: str, configs: tuple[Path, ...] = (REPO / "config.yaml", SMOKE),
              check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args, "--configfile", *map(str, configs)]  # targets before --configfile's list
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
