"""A user's 1,000 photographs in 20 class folders, through the photo recipe to pseudo labels, timed.

The timing set is drawn from the shared photographs: all 591 MSRC-v2 photos, 328 Weizmann horses and ECSSD's first
images up to 1,000 in all, dealt in turn into 20 folders named after the VOC classes (the folders' contents are not
those classes: this measures time, not quality). The workflow runs with ``config.yaml``, ``configs/photos.yaml``
(or ``--preset``) and a folder source, to every class's pseudo labels (``results/pseudo_gt/<class>/pairs.csv``);
the evaluation set named for the config check is MSRC-v2's ``val``, which this target never reads.

Prints one JSON line: the wall time, the job seconds per rule, and the check of the speed issue (<= 1,800 s).

    python benchmarks/thousand_photos.py [--data ../shared/data] [--work results/benchmarks/thousand_photos]
        [--preset configs/photos.yaml] [--cores 2] [--images 1000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


def photos(data: Path, n: int) -> list[Path]:
    """MSRC-v2, then the horses, then ECSSD, up to ``n`` photos."""
    pools = [sorted((data / "msrc_v2" / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg")),
             sorted((data / "weizmann_horse" / "images").glob("*.jpg")),
             sorted((data / "ecssd" / "images").glob("*.jpg"))]
    out = [p for pool in pools for p in pool][:n]
    if len(out) < n:
        sys.exit(f"{data}: only {len(out)} shared photos, {n} asked")
    return out


def class_folders(files: list[Path], root: Path) -> Path:
    """``files`` dealt in turn into the 20 class folders, as copies (the ingest skips links leaving the folder)."""
    for i, f in enumerate(files):
        folder = root / VOC_CLASSES[i % len(VOC_CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / f"{f.parent.parent.name}_{f.name}"
        if not link.exists():
            shutil.copyfile(f, link)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("results/benchmarks/thousand_photos"))
    ap.add_argument("--preset", type=Path, default=REPO / "configs" / "photos.yaml")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--images", type=int, default=1000)
    args = ap.parse_args()
    data, work = args.data.resolve(), args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    folders = class_folders(photos(data, args.images), work / "photos")
    (work / "data.yaml").write_text(yaml.safe_dump({
        "classes": VOC_CLASSES,
        "images": {"source": "folder", "root": str(folders), "shared": "keep"},
        "eval": {"source": "voc_dir", "root": str(data / "msrc_v2" / "VOCdevkit" / "VOC2012"), "split": "val"},
        "upper_bound": False,
    }))
    targets = [f"results/pseudo_gt/{c}/pairs.csv" for c in VOC_CLASSES]
    t0 = time.time()
    with open(work / "snakemake.log", "w") as log:
        proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                               str(work), "--cores", str(args.cores), *targets, "--configfile",
                               str(REPO / "config.yaml"), str(args.preset), str(work / "data.yaml")],
                              stdout=log, stderr=subprocess.STDOUT)
    wall = time.time() - t0
    if proc.returncode:
        sys.exit(f"the run failed; see {work / 'snakemake.log'}")
    per_rule: dict[str, float] = {}
    for tsv in sorted((work / "results" / "benchmarks").rglob("*.tsv")):
        rule = tsv.relative_to(work / "results" / "benchmarks").parts[0].removesuffix(".tsv")
        per_rule[rule] = round(per_rule.get(rule, 0.0) + float(tsv.read_text().splitlines()[1].split("\t")[0]), 1)
    print(json.dumps({"figure": "thousand_photos_to_pseudo_labels_s", "value": round(wall, 1), "images": args.images,
                      "classes": len(VOC_CLASSES), "cores": args.cores, "per_rule_job_s": per_rule}))
    print(f"\n{'PASS' if wall <= 1800 else 'FAIL'}  {args.images} photos, 20 classes, to pseudo labels in "
          f"<= 1,800 s ({wall:.0f} s)")


if __name__ == "__main__":
    main()
