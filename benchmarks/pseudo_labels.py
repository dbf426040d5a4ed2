"""Pseudo-label levers that need no retraining, measured on a finished run's own models and training images.

For each class of a finished workflow run (``<work>/results``), its ``model_final.pt`` labels the class's used
training images again in memory (at ``--resolution``, ``--scales`` of it and ``--flip``, as ``pseudo_gt`` does),
once per variant, and each variant's pseudo-label Jaccard (the paper's Table 5 measure) is scored against the true
masks. ``--model`` labels every class with one model instead (a base model, the packaged start). Variants: the
labels as the run made them; the dense CRF (``pseudo_gt.crf``) with its default settings and with one setting
changed at a time; the object threshold on the probability (0.5 is the workflow's); and, with ``--multiclass``
(the run's multi-class network), that network's own labels of the photos (at ``--scales`` of full size,
``--flip``), and their intersection and union with the class CNN's; with ``--mix-with`` (another single-class
model, e.g. the packaged start), the class CNN's probability averaged with that model's at weights 0.25 / 0.5 / 1.
One JSON line per variant.

    python benchmarks/pseudo_labels.py --work results/benchmarks/real_photos/main \\
        --masks ../shared/data/msrc_v2/VOCdevkit/VOC2012/SegmentationClass [--resolution 384]
        [--scales 0.75 1 1.25 --flip] [--variants no_crf threshold_0.4 ...]
        [--multiclass results/benchmarks/real_photos/main/results/multiclass/pseudo_gt/model.pt]
        [--mix-with results/benchmarks/real_photos/main/results/base_model/model_final.pt]

Choose settings on training images only: the masks here are those of the images the models were trained on.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from rlseg.crf import CrfParams, refine
from rlseg.imageio import load_image, load_mask
from rlseg.inference import load_model, object_probability, segment
from rlseg.ingest import used_paths
from rlseg.voc import class_ids

VARIANTS = {
    "no_crf": None,
    "crf_default": {},
    "crf_w_bilateral_2": {"w_bilateral": 2},
    "crf_w_bilateral_8": {"w_bilateral": 8},
    "crf_theta_beta_8": {"theta_beta": 8},
    "crf_theta_beta_20": {"theta_beta": 20},
    "crf_w_bilateral_16": {"w_bilateral": 16},
    "crf_w_bilateral_32_radius_8": {"w_bilateral": 32, "radius": 8, "iterations": 10},
}
THRESHOLDS = {f"threshold_{t}": t for t in (0.3, 0.4, 0.6, 0.7, 0.8)}
MULTICLASS = ("multiclass", "multiclass_and_class_cnn", "multiclass_or_class_cnn")
MIXES = {f"mix_{w}": w for w in (0.25, 0.5, 1.0)}


def jaccard(obj: np.ndarray, truth: np.ndarray, cid: int) -> float:
    """One image's object (bool) Jaccard, void ignored, as :func:`rlseg.evaluate.label_jaccard` scores a label
    file."""
    keep = truth != 255
    t, p = truth[keep] == cid, obj[keep]
    union = int((t | p).sum())
    return float((t & p).sum()) / union if union else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="a finished run's folder (holding results/)")
    ap.add_argument("--masks", type=Path, required=True, help="true masks, <image stem>.png, VOC ids")
    ap.add_argument("--resolution", type=int, default=384, help="labelling side (the photo recipe's pseudo_gt)")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0], help="of --resolution (pseudo_gt.scales)")
    ap.add_argument("--flip", action="store_true", help="also the mirror image (pseudo_gt.flip)")
    choices = [*VARIANTS, *THRESHOLDS, *MULTICLASS, *MIXES]
    ap.add_argument("--variants", nargs="+", choices=choices, default=[*VARIANTS, *THRESHOLDS])
    ap.add_argument("--multiclass", type=Path, help="the run's multi-class model, for the multiclass variants")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", type=Path, help="label every class with this single-class model instead of its own "
                    "(e.g. the base model or the packaged start: what a class gets without training on its images)")
    ap.add_argument("--mix-with", type=Path, help="a single-class model whose object probability is averaged "
                    "with each class CNN's, for the mix variants (e.g. the run's base_model/model_final.pt)")
    args = ap.parse_args()
    if args.multiclass is None and set(args.variants) & set(MULTICLASS):
        ap.error("the multiclass variants need --multiclass MODEL")
    if args.mix_with is None and set(args.variants) & set(MIXES):
        ap.error("the mix variants need --mix-with MODEL")
    if args.multiclass is not None:
        args.variants = list(dict.fromkeys([*args.variants, *MULTICLASS]))
    if args.mix_with is not None:
        args.variants = list(dict.fromkeys([*args.variants, *MIXES]))
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    multi = load_model(args.multiclass, cpu) if args.multiclass is not None else None
    other = load_model(args.mix_with, cpu) if args.mix_with is not None else None
    results = args.work / "results"
    classes = sorted(p.name for p in (results / "single_class").iterdir() if (p / "model_final.pt").is_file())
    ids = class_ids(classes)
    resolution = args.resolution
    scores: dict[str, dict[str, list[float]]] = {v: {} for v in args.variants}
    seconds = dict.fromkeys(args.variants, 0.0)
    for cls in classes:
        model = load_model(args.model or results / "single_class" / cls / "model_final.pt", cpu)
        for path in used_paths(results / "images" / cls / "manifest.csv"):
            mask = args.masks / f"{Path(path).stem}.png"
            if not mask.is_file():
                continue
            image = load_image(path)
            truth = load_mask(mask, num_classes=256)
            prob = object_probability(model, [image], cpu, resolution, args.scales, args.flip)[0]
            theirs = segment(multi, [image], cpu, scales=args.scales, flip=args.flip)[0] == ids[cls] if multi else None
            mixed = (object_probability(other, [image], cpu, resolution, args.scales, args.flip)[0]
                     if other is not None else None)
            for name in args.variants:
                t0 = time.time()
                setting = VARIANTS.get(name)
                if name in THRESHOLDS:
                    obj = prob > THRESHOLDS[name]
                elif name in MIXES:
                    obj = (1 - MIXES[name]) * prob + MIXES[name] * mixed > 0.5
                elif name in MULTICLASS:
                    obj = {"multiclass": theirs, "multiclass_and_class_cnn": theirs & (prob > 0.5),
                           "multiclass_or_class_cnn": theirs | (prob > 0.5)}[name]
                else:
                    obj = (prob if setting is None else
                           refine(np.asarray(image), prob, replace(CrfParams(), **setting))) > 0.5
                seconds[name] += time.time() - t0
                scores[name].setdefault(cls, []).append(jaccard(obj, truth, ids[cls]))
    for name in args.variants:
        per_class = {c: round(float(np.mean(v)), 4) for c, v in scores[name].items()}
        source = str(args.model or "each class's own")
        print(json.dumps({"figure": "pseudo_label_jaccard", "variant": name,
                          "setting": VARIANTS.get(name, THRESHOLDS.get(name, MIXES.get(name))),
                          "resolution": resolution,
                          "scales": args.scales, "flip": args.flip, "model": source,
                          **({"mixed_with": str(args.mix_with)} if name in MIXES else {}),
                          "value": round(float(np.mean(list(per_class.values()))), 4),
                          "lowest": min(per_class.items(), key=lambda kv: kv[1]), "per_class": per_class,
                          "seconds": round(seconds[name], 1)}), flush=True)


if __name__ == "__main__":
    main()
