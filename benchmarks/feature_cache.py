"""Speed of single-class training with and without the frozen encoder's feature cache, in one run.

Trains the same network twice from the same initialisation on the shared ECSSD training images at 128 px
(or, without the shared data, on the synthetic world's images): ``feature_cache_mb = 0`` (the encoder runs
every epoch) and the default (it runs until each image and flip has been seen). Prints seconds per epoch
after the first two epochs, the speed-up, and how far the two runs' losses and weights
drift apart (float rounding only; relative, per tensor).

    python benchmarks/feature_cache.py [--data ../shared/data] [--epochs 8] [--threads 2]
        [--decoder-convs N] [--encoder-features stage_ends|all_blocks]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rlseg.data import load_images
from rlseg.models import build_unet
from rlseg.synthetic import SHAPES, render_image
from rlseg.train import SingleClassConfig, fit, stage_plans


def train_images(data: Path, n: int) -> tuple[torch.Tensor, str]:
    paths = sorted((data / "ecssd" / "images").glob("*.jpg"))[:n]
    if paths:
        return load_images(paths, 128, desc="ecssd"), f"ECSSD 0001-{n:04d}"
    rng = np.random.default_rng(0)
    arrays = [render_image(rng, SHAPES, [(i % len(SHAPES), 0.3)], 128)[0] for i in range(n)]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), "synthetic world"


def timed_run(images: torch.Tensor, cfg: SingleClassConfig, epochs: int, workdir: Path) -> dict:
    torch.manual_seed(cfg.seed)
    model = build_unet(cfg.arch)
    plans = stage_plans(cfg, "normal")[:epochs]
    t0 = time.time()
    rows = fit(model, images, plans, cfg, workdir / f"ckpt_{cfg.feature_cache_mb}.pt", {"mb": cfg.feature_cache_mb},
               device=torch.device("cpu"), on_epoch=None)
    return {"wall": time.time() - t0, "rows": rows, "state": model.state_dict()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--images", type=int, default=320)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decoder-convs", type=int, default=0)
    ap.add_argument("--encoder-features", default="stage_ends", choices=["stage_ends", "all_blocks"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images, source = train_images(args.data, args.images)
    default_mb = SingleClassConfig().feature_cache_mb
    base = {"resolutions": [128], "decoder_convs": args.decoder_convs, "encoder_features": args.encoder_features}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mb in (0, default_mb):
            results[mb] = timed_run(images, SingleClassConfig(**base, feature_cache_mb=mb), args.epochs, Path(tmp))
    print(f"{len(images)} images of the {source} at 128 px, {args.epochs} normal epochs, batch 16, "
          f"{args.threads} threads, decoder_convs {args.decoder_convs}, encoder_features {args.encoder_features}")
    per_epoch = {}
    for mb, r in results.items():
        later = [row["seconds"] for row in r["rows"][2:]]
        per_epoch[mb] = sum(later) / len(later)
        print(f"feature_cache_mb {mb:>5}: {r['wall']:.1f} s in all, {per_epoch[mb]:.2f} s per epoch after epoch 2 "
              f"(epochs 1-2: {r['rows'][0]['seconds']:.2f}, {r['rows'][1]['seconds']:.2f} s)")
    plain, cached = results[0], results[default_mb]
    drift_w, drift_k = max((float((plain["state"][k].float() - cached["state"][k].float()).norm()
                                  / plain["state"][k].float().norm().clamp_min(1e-12)), k) for k in plain["state"])
    pairs = zip(plain["rows"], cached["rows"], strict=True)
    drift_l = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in pairs)
    print(f"speed-up after epoch 2: {per_epoch[0] / per_epoch[default_mb]:.2f}x; "
          f"largest relative weight difference (per tensor, L2) {drift_w:.2e} ({drift_k}), "
          f"largest relative loss difference {drift_l:.2e}")


if __name__ == "__main__":
    main()
