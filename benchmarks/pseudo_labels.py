"""Pseudo-label levers that need no retraining, measured on a finished run's own models and training images.

For each class of a finished workflow run (``<work>/results``), its ``model_final.pt`` labels the class's used
training images again in memory, once per variant, and each variant's pseudo-label Jaccard (the paper's Table 5
measure) is scored against the true masks. ``--model`` labels every class with one model instead (a base model,
the packaged start). Variants: the labels as the run made them, and the dense CRF
(``pseudo_gt.crf``) with its default settings and with one setting changed at a time. One JSON line per variant.

    python benchmarks/pseudo_labels.py --work results/benchmarks/real_photos/main \\
        --masks ../shared/data/msrc_v2/VOCdevkit/VOC2012/SegmentationClass [--resolution 384]

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
from rlseg.inference import load_model, object_probability
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


def jaccard(prob: np.ndarray, truth: np.ndarray, cid: int) -> float:
    """One image's object Jaccard, void ignored, as :func:`rlseg.evaluate.label_jaccard` scores a label file."""
    keep = truth != 255
    t, p = truth[keep] == cid, prob[keep] > 0.5
    union = int((t | p).sum())
    return float((t & p).sum()) / union if union else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="a finished run's folder (holding results/)")
    ap.add_argument("--masks", type=Path, required=True, help="true masks, <image stem>.png, VOC ids")
    ap.add_argument("--resolution", type=int, default=384, help="labelling side (the photo recipe's pseudo_gt)")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", type=Path, help="label every class with this single-class model instead of its own "
                    "(e.g. the base model or the packaged start: what a class gets without training on its images)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = args.work / "results"
    classes = sorted(p.name for p in (results / "single_class").iterdir() if (p / "model_final.pt").is_file())
    ids = class_ids(classes)
    resolution = args.resolution
    scores: dict[str, dict[str, list[float]]] = {v: {} for v in args.variants}
    seconds = dict.fromkeys(args.variants, 0.0)
    for cls in classes:
        model = load_model(args.model or results / "single_class" / cls / "model_final.pt", torch.device("cpu"))
        for path in used_paths(results / "images" / cls / "manifest.csv"):
            mask = args.masks / f"{Path(path).stem}.png"
            if not mask.is_file():
                continue
            image = load_image(path)
            truth = load_mask(mask, num_classes=256)
            prob = object_probability(model, [image], torch.device("cpu"), resolution)[0]
            for name in args.variants:
                t0 = time.time()
                setting = VARIANTS[name]
                out = prob if setting is None else refine(np.asarray(image), prob, replace(CrfParams(), **setting))
                seconds[name] += time.time() - t0
                scores[name].setdefault(cls, []).append(jaccard(out, truth, ids[cls]))
    for name in args.variants:
        per_class = {c: round(float(np.mean(v)), 4) for c, v in scores[name].items()}
        source = str(args.model or "each class's own")
        print(json.dumps({"figure": "pseudo_label_jaccard", "variant": name, "setting": VARIANTS[name],
                          "resolution": resolution, "model": source,
                          "value": round(float(np.mean(list(per_class.values()))), 4),
                          "lowest": min(per_class.items(), key=lambda kv: kv[1]), "per_class": per_class,
                          "seconds": round(seconds[name], 1)}), flush=True)


if __name__ == "__main__":
    main()
