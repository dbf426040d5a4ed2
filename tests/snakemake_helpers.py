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


def recomputed_scores(workdir: Path, variant: str = "pseudo_gt") -> tuple[float, dict[str, float]]:
    """mIoU and per-class IoU (percent) of a finished run, recomputed here from its prediction PNGs and the
    evaluation masks with numpy alone, so that a broken evaluation in the package cannot agree with itself.

    Classes are background and those of ``voc_per_class_iou.csv`` (its ids); other labels count as background,
    255 is void."""
    import numpy as np
    from PIL import Image

    r = workdir / "results"
    classes = rows(r / "voc_per_class_iou.csv")
    ids = [int(c["id"]) for c in classes]
    lut = np.zeros(256, dtype=np.int64)
    for j, cid in enumerate(ids):
        lut[cid] = j
    k = len(ids)
    cm = np.zeros((k, k), dtype=np.int64)
    masks = {x["id"]: workdir / x["mask"] for x in rows(r / "eval" / "index.csv")}
    preds = rows(r / "predictions" / variant / "pairs.csv")
    assert len(preds) == len(masks)
    for p in preds:
        truth = np.asarray(Image.open(masks[p["id"]]))
        pred = np.asarray(Image.open(workdir / p["prediction"]))
        assert pred.shape == truth.shape, p
        keep = truth != 255
        cm += np.bincount(lut[truth[keep]] * k + lut[pred[keep]], minlength=k * k).reshape(k, k)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    iou = np.where(union > 0, np.diag(cm) / np.maximum(union, 1), np.nan) * 100
    return float(np.nanmean(iou)), {c["class"]: float(v) for c, v in zip(classes, iou, strict=True)}
