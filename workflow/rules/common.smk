# Paths and config helpers shared by the rules.
import hashlib
from pathlib import Path

from rlseg.packaged import packaged_file
from rlseg.settings import labelling_of
from rlseg.sources import get_source
from rlseg.voc import class_ids, eval_voc_root

R = config["results"]
CLASSES = list(config["classes"])
IDS = class_ids(CLASSES)
SOURCE = config["images"]["source"]
SRC = get_source(SOURCE)
EVAL = config["eval"]["source"]
SYNTHETIC = SOURCE == "synthetic" or EVAL == "synthetic"
TRUE_MASKS = SRC.true_mask is not None
PACKAGED_STEM = packaged_file(config["single_class"]["encoder"], ".").stem


UPPER_BOUND = config["upper_bound"] and TRUE_MASKS


wildcard_constraints:
    cls="|".join(CLASSES),
    variant="pseudo_gt|ground_truth",
    model="|".join([*CLASSES, "base_model"]),
    scores="voc|upper_bound",


def final_targets():
    out = [f"{R}/voc_miou.txt", f"{R}/voc_per_class_iou.csv", *expand(f"{R}/models/{{cls}}.pt", cls=CLASSES)]
    if UPPER_BOUND:
        out.append(f"{R}/upper_bound_miou.txt")
    return out + figures()


def figures():
    """Every figure of the report but the optional loss study."""
    models = [*CLASSES, "base_model"] if config["single_class"]["init"] == "base" else CLASSES
    return [
        f"{R}/figures/iou_per_class.svg",
        f"{R}/figures/images_per_class.svg",
        *expand(f"{R}/figures/confusion_{{scores}}.svg", scores=["voc", "upper_bound"] if UPPER_BOUND else ["voc"]),
        *expand(f"{R}/figures/training/{{model}}.svg", model=models),
        *expand(f"{R}/figures/gallery/{{cls}}.png", cls=CLASSES),
    ]


def score_files(wildcards):
    out = {"miou": f"{R}/voc_miou.txt", "per_class": f"{R}/voc_per_class_iou.csv"}
    if UPPER_BOUND:
        out |= {"upper_miou": f"{R}/upper_bound_miou.txt", "upper_per_class": f"{R}/upper_bound_per_class_iou.csv"}
    return out


def history_file(wildcards):
    if wildcards.model == "base_model":
        return f"{R}/base_model/history.csv"
    return f"{R}/single_class/{wildcards.model}/history.csv"


def gallery_inputs(wildcards):
    out = {
        "class_model": f"{R}/single_class/{wildcards.cls}/model_final.pt",
        "pseudo_pairs": f"{R}/pseudo_gt/{wildcards.cls}/pairs.csv",
        "multiclass_model": f"{R}/multiclass/pseudo_gt/model.pt",
        "index": f"{R}/eval/index.csv",
        "predictions": f"{R}/predictions/pseudo_gt/pairs.csv",
    }
    if TRUE_MASKS:
        out["truth"] = f"{R}/ground_truth/pairs.csv"
    return out


def world_flag():
    return [f"{R}/world/summary.json"] if SYNTHETIC else []


def manifests(wildcards=None):
    return expand(f"{R}/images/{{cls}}/manifest.csv", cls=CLASSES)


def base_model(wildcards):
    return [f"{R}/base_model/model_final.pt"] if config["single_class"]["init"] == "base" else []


def base_manifests():
    return manifests() if config["base_model"]["source"] == "classes" else []


def _voc_roots():
    """Where each VOC consumer reads VOC 2012 (PascalSingle's images.root, the voc2012 evaluation's root), by a
    short id of the folder: consumers of one folder wait for one download."""
    roots = {}
    if SOURCE == "voc_single":
        roots["images"] = config["images"]["root"]
    if EVAL == "voc2012":
        roots["eval"] = str(eval_voc_root(config["eval"], R))
    return {k: (hashlib.sha1(str(Path(v).resolve()).encode()).hexdigest()[:10], v) for k, v in roots.items()}


VOC_ROOTS = _voc_roots()
VOC_ROOT_BY_ID = {i: root for i, root in VOC_ROOTS.values()}


def voc_download(consumer):
    """The download flag of the VOC folder that ``consumer`` (images or eval) reads, if it reads one."""
    return [f"{R}/voc/download/{VOC_ROOTS[consumer][0]}.done"] if consumer in VOC_ROOTS else []


def source_prepared():
    """The file a rule makes before the image source can list a class's images (the world, PascalSingle)."""
    return [f"{R}/{SRC.prepared_by}"] if SRC.prepared_by else []


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


def networks_trained():
    """How many multi-class networks this run trains side by side: the upper bound's beside the pipeline's when it
    is asked for (the default target, or a target of its own)."""
    if not UPPER_BOUND:
        return 1
    targets = getattr(workflow.dag_settings, "targets", None) or {"all"}
    return 2 if any(t == "all" or "upper_bound" in t or "ground_truth" in t for t in targets) else 1


def multiclass_threads(wildcards):
    """``multiclass.threads``, else the run's cores shared by the multi-class networks it trains (at least the
    top-level threads): on a laptop the two networks then train side by side instead of one after the other."""
    if config["multiclass"]["threads"]:
        return config["multiclass"]["threads"]
    return max(config["threads"], (workflow.resource_settings.cores or 0) // networks_trained())


def imagenet_threads(wildcards):
    """Where the class CNNs wait for every class's ImageNet scores (``single_class.center: imagenet``), each
    scoring job takes the run's cores: the CNNs then start together on all of them, and the upper bound's network
    takes no core from them in between."""
    if config["single_class"]["center"] != "imagenet":
        return config["threads"]
    return max(config["threads"], workflow.resource_settings.cores or 0)


def pipeline_first(wildcards):
    """The scheduler's priority: the jobs toward results/voc_miou.txt before the upper bound's."""
    return 0 if wildcards.get("variant") == "ground_truth" else 1


def base_model_params():
    """The base model's settings; an unset vol_target is left out, so that runs made before the key existed do not
    rerun for it."""
    return {k: v for k, v in config["base_model"].items() if k != "vol_target" or v is not None}


def multiclass_settings():
    """The multi-class network's settings; its thread count is the rule's, not a setting of the network."""
    return {k: v for k, v in config["multiclass"].items() if k != "threads"}
