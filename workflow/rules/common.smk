# Paths and config helpers shared by the rules.
from pathlib import Path

from rlseg.voc import class_ids

R = config["results"]
CLASSES = list(config["classes"])
IDS = class_ids(CLASSES)
SOURCE = config["images"]["source"]
EVAL = config["eval"]["source"]
SYNTHETIC = SOURCE == "synthetic" or EVAL == "synthetic"
TRUE_MASKS = SOURCE in ("synthetic", "voc_single")


wildcard_constraints:
    cls="|".join(CLASSES),
    variant="pseudo_gt|ground_truth",


def final_targets():
    out = [f"{R}/voc_miou.txt", f"{R}/voc_per_class_iou.csv"]
    if config["upper_bound"] and TRUE_MASKS:
        out.append(f"{R}/upper_bound_miou.txt")
    return out


def world_flag():
    return [f"{R}/world/summary.json"] if SYNTHETIC else []


def manifests(wildcards=None):
    return expand(f"{R}/images/{{cls}}/manifest.csv", cls=CLASSES)


def base_model(wildcards):
    return [f"{R}/base_model/model_final.pt"] if config["single_class"]["init"] == "base" else []


def base_manifests():
    return manifests() if config["base_model"]["source"] == "classes" else []


def pascal_index():
    return [f"{R}/voc/pascal_single.csv"] if SOURCE == "voc_single" else []


def results_dir(output, depth):
    """The results folder, from an output path ``depth`` folders below it."""
    return str(Path(output).parents[depth])


def training_pairs(wildcards):
    if wildcards.variant == "pseudo_gt":
        return expand(f"{R}/pseudo_gt/{{cls}}/pairs.csv", cls=CLASSES)
    return [f"{R}/ground_truth/pairs.csv"]


def ingest_settings():
    keys = ("source", "root", "max_pixels", "min_side", "on_bad_image")
    return {k: config["images"][k] for k in keys}
