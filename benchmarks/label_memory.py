"""Peak memory of labelling large photographs: single-class batches with and without the pixel bound, and the
multi-class network with and without its training cap, in one run.

A user's own photos are often phone photos of 12 MP or more. Each labelling job keeps every photo of its batch
decoded and its full-size object probability, so a batch is bounded by pixels as well as by count
(``rlseg.imageio.BATCH_PIXELS``). This script writes ``--photos`` JPEGs of ``--megapixels`` each (the shared
ECSSD photos enlarged, or the synthetic world's images without the shared data), and labels them as the
``pseudo_gt`` rule does with the photo preset's labelling (``configs/photos.yaml``: resolution, scales, flip;
the packaged start as the class CNN, batch 32), once with the bound and once without it, each in a fresh process.
Then the multi-class network (DeepLabV3+ on EfficientNet-Lite0, 21 classes, untrained: memory does not depend on
the weights) labels ``--mc-photos`` of them as the preset's ``eval`` block does (its scales and mirroring), seen at its
training cap (``multiclass.max_short_side``) and at full size. Prints one JSON line per run (peak RSS in MB, wall
seconds) and whether the single-class labels are the same.

    python benchmarks/label_memory.py [--data ../shared/data] [--photos 32] [--megapixels 12] [--threads 2]
        [--mc-photos 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from rlseg.ingest import check_files, write_manifest
from rlseg.packaged import materialise_start, packaged_start
from rlseg.settings import defaults
from rlseg.synthetic import SHAPES, render_image

REPO = Path(__file__).resolve().parents[1]
JOB = """
import sys, torch, rlseg.imageio
from rlseg.pipeline import make_pseudo_gt
model, manifest, out, budget, threads, resolution, scales, flip = sys.argv[1:]
torch.set_num_threads(int(threads))
if budget != "default":
    rlseg.imageio.BATCH_PIXELS = int(budget)
make_pseudo_gt(model, manifest, 1, out, device="cpu", batch_size=32, resolution=int(resolution),
               scales=[float(s) for s in scales.split(",")], flip=flip == "1")
"""
PEAK = "\nimport resource\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
MC_JOB = """
import sys, torch
from PIL import Image
from rlseg.models import build_multiclass
from rlseg.multiclass import predict_full
cap, threads, scales, flip, *photos = sys.argv[1:]
torch.set_num_threads(int(threads))
net = build_multiclass({"arch": "deeplabv3plus", "num_classes": 21}, pretrained=False).eval()
for p in photos:
    predict_full(net, Image.open(p).convert("RGB"), torch.device("cpu"), [float(s) for s in scales.split(",")],
                 flip == "1", None if cap == "none" else int(cap))
"""


def large_photos(data: Path, n: int, megapixels: float, folder: Path) -> list[Path]:
    """``n`` JPEGs of about ``megapixels`` each, 4:3."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((data / "ecssd" / "images").glob("*.jpg"))[:n]
    w = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    size = (w, w * 3 // 4)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        if sources:
            with Image.open(sources[i]) as im:
                img = im.convert("RGB").resize(size, Image.BICUBIC)
        else:
            img = Image.fromarray(render_image(rng, SHAPES, [(i % len(SHAPES), 0.3)], 256)[0]).resize(size)
        paths.append(folder / f"{i:04d}.jpg")
        img.save(paths[-1], quality=90)
    return paths


def run_job(job: str, args: list[str]) -> tuple[float, float]:
    """Peak RSS (MB) and wall seconds of one labelling job in a fresh process (it prints its own peak last)."""
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", job + PEAK, *args], check=True, capture_output=True, text=True)
    return int(proc.stdout.split()[-1]) / 1024, time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--photos", type=int, default=32)
    ap.add_argument("--megapixels", type=float, default=12.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mc-photos", type=int, default=2)
    args = ap.parse_args()
    recipe = yaml.safe_load((REPO / "configs" / "photos.yaml").read_text())
    preset, evaluation = recipe["pseudo_gt"], recipe["eval"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = large_photos(args.data, args.photos, args.megapixels, tmp / "photos")
        manifest = tmp / "manifest.csv"
        write_manifest(manifest, check_files(paths))
        start = packaged_start("tu-tf_efficientnet_lite0")
        materialise_start(start["arch"], tmp / "model.pt", tmp / "history.csv")
        labels = {}
        for budget in ("default", str(10**12)):
            out = tmp / f"labels_{budget}" / "pairs.csv"
            peak, wall = run_job(JOB, [str(tmp / "model.pt"), str(manifest), str(out), budget, str(args.threads),
                                  str(preset["resolution"]), ",".join(map(str, preset["scales"])),
                                  "1" if preset["flip"] else "0"])
            labels[budget] = [np.array(Image.open(p)) for p in sorted(out.parent.glob("*.png"))]
            print(json.dumps({"figure": "label_peak_rss_mb", "bound": "BATCH_PIXELS" if budget == "default" else
                              "none (32 a batch)", "value": round(peak), "wall_s": round(wall, 1),
                              "photos": args.photos, "megapixels": args.megapixels}), flush=True)
        same = all(np.array_equal(a, b) for a, b in zip(*labels.values(), strict=True))
        print(json.dumps({"figure": "labels_identical", "value": same}), flush=True)
        mc_cap = defaults("multiclass")["max_short_side"]
        for cap in (str(mc_cap), "none"):
            peak, wall = run_job(MC_JOB, [cap, str(args.threads), ",".join(map(str, evaluation["scales"])),
                                          "1" if evaluation["flip"] else "0", *map(str, paths[: args.mc_photos])])
            print(json.dumps({"figure": "multiclass_peak_rss_mb", "max_short_side": cap, "value": round(peak),
                              "wall_s": round(wall, 1), "photos": args.mc_photos,
                              "megapixels": args.megapixels}), flush=True)


if __name__ == "__main__":
    main()
