"""Running the workflow through Snakemake itself from the tests, on the smoke config in a temporary directory."""

from __future__ import annotations

import csv
import importlib.metadata as metadata
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "tests" / "smoke.yaml"
# the scores without the report's figures (rule all draws them too): for tests that look at the pipeline only
SCORES = ("results/voc_miou.txt", "results/upper_bound_miou.txt")


def snakemake(workdir: Path, *args: str, configs: tuple[Path, ...] = (REPO / "config.yaml", SMOKE),
              check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args, "--configfile", *map(str, configs)]  # targets before --configfile's list
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
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


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _install_closure(dist: str, seen: set[str]) -> set[str]:
    """``dist`` and every distribution it requires, transitively, leaving out what only an extra asks for."""
    if _key(dist) in seen:
        return seen
    seen.add(_key(dist))
    try:
        requires = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return seen
    for req in requires:
        if "extra ==" not in req:
            _install_closure(re.match(r"[A-Za-z0-9_.-]+", req).group(0), seen)
    return seen


def install_only_env(folder: Path) -> dict:
    """An environment for subprocesses in which only what ``pip install -e .`` brings can be imported: every
    top-level module of a distribution outside rlseg's own requirements (pytest, its plugins and what they pulled
    in, such as pygments) fails to import, as on a machine that followed the README's install alone."""
    allowed = _install_closure("rlseg", set())
    blocked = sorted(m for m, dists in metadata.packages_distributions().items()
                     if not any(_key(d) in allowed for d in dists))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        f"BLOCKED = {set(blocked)!r}\n"
        # every finder answers 'not found' for a blocked module, as when it is not installed at all
        "class _Hide:\n"
        "    def __init__(self, finder):\n"
        "        self.finder = finder\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            return None\n"
        "        find = getattr(self.finder, 'find_spec', None)\n"
        "        return find(name, path, target) if find else None\n"
        "    def __getattr__(self, attr):\n"
        "        return getattr(self.finder, attr)\n"
        "sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]\n"
        # plugin discovery (Snakemake's executors and storage) lists modules from disk: hide the blocked ones there
        "import pkgutil\n"
        "_iter_modules = pkgutil.iter_modules\n"
        "def _visible(path=None, prefix=''):\n"
        "    return (m for m in _iter_modules(path, prefix) if m.name.split('.')[0] not in BLOCKED)\n"
        "pkgutil.iter_modules = _visible\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]).rstrip(":")}
