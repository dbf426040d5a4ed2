"""Configuration: the checks a JSON schema cannot express, run before any job, each naming the key or folder at
fault; and :func:`load_config`, which reads, validates and checks a configuration.

The schema, the defaults and :class:`ConfigError` are :mod:`rlseg.settings`' (re-exported here): this module sits
above the sources, architectures and data checks it calls.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rlseg.architectures import check_multiclass, check_unet
from rlseg.imageio import BadImageError, file_problem
from rlseg.io import UnsafeNameError, within
from rlseg.packaged import check_packaged
from rlseg.settings import SCHEMA, ConfigError, allowed, check_choice, defaults, read_config, schema
from rlseg.sources import get_source
from rlseg.synthetic import SHAPES
from rlseg.voc import check_samples, label_count, read_voc_dir

__all__ = ["SCHEMA", "ConfigError", "allowed", "check_choice", "check_config", "check_single_class", "defaults",
           "load_config", "photo_recipe_warning", "schema"]

log = logging.getLogger("rlseg")


def load_config(*paths: str | os.PathLike, overrides: dict | None = None, schema: str | os.PathLike = SCHEMA) -> dict:
    """Merge YAML files (later ones win, dicts merged key by key), validate against the schema, fill defaults, and
    run :func:`check_config`."""
    config = read_config(*paths, overrides=overrides, schema=schema)
    check_config(config)
    return config


def check_config(config: dict) -> None:
    """Checks beyond the schema.

    Raises:
        ConfigError: duplicate class names, a U-Net resolution that is not a multiple of 32, a crop the chosen
            DeepLab cannot take, a folder source whose class folder is missing or empty, a missing root.
    """
    classes = config["classes"]
    dupes = sorted({c for c in classes if classes.count(c) > 1})
    if dupes:
        raise ConfigError(f"classes: duplicate class names {dupes}")
    synthetic = [k for k in ("images", "eval") if config[k]["source"] == "synthetic"]
    if synthetic:
        bad = [c for c in classes if c not in SHAPES]
        if bad:
            keys = " and ".join(f"{k}.source" for k in synthetic)
            raise ConfigError(f"classes: {bad} are not shapes of the synthetic world {list(SHAPES)}, which {keys} "
                              "= synthetic draws; set images.source and eval.source for your classes (e.g. "
                              "eval: {source: voc2012})")
    check_single_class(config["single_class"], config["pseudo_gt"]["resolution"])
    mc = config["multiclass"]
    check_multiclass(mc)
    if mc["scale_min"] > mc["scale_max"]:
        raise ConfigError("multiclass.scale_min must not exceed multiclass.scale_max")
    get_source(config["images"]["source"]).check(config)
    ev = config["eval"]
    if ev["source"] == "voc_dir":
        if not ev.get("root") or not Path(ev["root"]).is_dir():
            raise ConfigError(f"eval.root: VOC-layout folder {ev.get('root')!r} is missing (eval.source = voc_dir)")
        _check_eval_dir(ev["root"], ev["split"], classes)
    _check_results(config)
    warning = photo_recipe_warning(config)
    if warning:
        log.warning("%s", warning)
    if config["single_class"]["init"] == "base":
        _check_base_model(config["base_model"], config["single_class"])


def _check_base_model(base: dict, single_class: dict) -> None:
    """The base model's images (folder, list) or packaged start (fitting the U-Net) exist."""
    root = base.get("root")
    if base["source"] == "folder" and (not root or not Path(root).is_dir()):
        raise ConfigError(f"base_model.root: folder {root!r} is missing (base_model.source = folder)")
    if base["source"] == "list" and (not root or file_problem(root)):
        raise ConfigError(f"base_model.root: image list {root!r} is missing (base_model.source = list)")
    if base["source"] == "packaged":
        check_packaged(single_class)


def check_single_class(sc: dict, label_resolution: int | None = None) -> None:
    """Checks of the ``single_class`` settings beyond the schema, shared by the workflow and ``rlseg train``:
    resolutions (and the labelling resolution) multiples of 32, σ rising, a U-Net that can be built.

    Raises:
        ConfigError: naming the key.
    """
    sides = [("single_class.resolutions", r) for r in sc["resolutions"]]
    if label_resolution is not None:
        sides.append(("pseudo_gt.resolution", label_resolution))
    for key, r in sides:
        if r % 32:
            raise ConfigError(f"{key}: {r} is not a multiple of 32 (the U-Net downsamples 5x)")
    if sc["sigma_start"] > sc["sigma_end"]:
        raise ConfigError("single_class.sigma_start must not exceed single_class.sigma_end")
    if sc["vol_target"] == "auto" and sc.get("init") != "base":
        raise ConfigError("single_class.vol_target: auto estimates the object size with the base model, the start "
                          "of each class; it needs single_class.init: base")
    check_unet(sc)


def _check_eval_dir(root: str, split: str, classes: list[str]) -> None:
    """A VOC-layout evaluation folder, checked before any job: layout, ids, labels, sizes (the first fault named)."""
    try:
        check_samples(read_voc_dir(root, split), label_count(classes))
    except (FileNotFoundError, UnsafeNameError, BadImageError) as err:
        raise ConfigError(f"eval.root: {err}") from None


def _check_results(config: dict) -> None:
    """The results folder holds only outputs: not empty, not the file system's root, not the working folder or a
    folder above it, and apart from every input folder (nothing inside one, none inside it)."""
    raw = config["results"]
    if not raw.strip():
        raise ConfigError("results: empty; name the folder every output goes to (e.g. results)")
    results = Path(raw).resolve()
    if within(Path.cwd().resolve(), results):
        raise ConfigError(f"results: {raw!r} is the working folder or a folder above it ({results}); outputs "
                          "need a folder of their own (e.g. results)")
    inputs = {"images.root": config["images"].get("root"), "eval.root": config["eval"].get("root"),
              "base_model.root": config["base_model"].get("root")}
    for key, root in inputs.items():
        if root and (within(results, Path(root).resolve()) or within(Path(root).resolve(), results)):
            raise ConfigError(f"results: {raw!r} overlaps {key} {root!r}; outputs must not be written among inputs")


# what the synthetic world's recipe (config.yaml) leaves as it is and configs/photos.yaml changes
_SYNTHETIC_RECIPE = {("single_class", "init"): "anneal", ("single_class", "resolutions"): [128]}


def photo_recipe_warning(config: dict) -> str | None:
    """A warning when photographs (any source but the synthetic world) are trained with the synthetic world's
    recipe (annealing each class from scratch at 128 px only), or None."""
    if config["images"]["source"] == "synthetic":
        return None
    if all(config[block][key] == value for (block, key), value in _SYNTHETIC_RECIPE.items()):
        return ("images.source is {!r} but the method settings are the synthetic world's (single_class.init: anneal, "
                "resolutions: [128]); for photographs add configs/photos.yaml after config.yaml: "
                "--configfile config.yaml configs/photos.yaml <your file>").format(config["images"]["source"])
    return None
