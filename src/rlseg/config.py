"""Configuration: schema validation (with defaults) and the checks a JSON schema cannot express.

Every check runs before any job and names the key or folder at fault.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from pathlib import Path

import yaml

# the package carries the schema (workflow/schemas/ links to it), so the library works outside a checkout
SCHEMA = Path(__file__).resolve().with_name("config.schema.yaml")

__all__ = ["ConfigError", "allowed", "check_choice", "check_config", "check_single_class", "defaults", "load_config",
           "photo_recipe_warning", "schema"]

log = logging.getLogger("rlseg")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""


@functools.cache
def _schema(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text())


def schema() -> dict:
    """The package's config schema, parsed once per process (do not modify it)."""
    return _schema(str(SCHEMA))


def defaults(section: str) -> dict:
    """The schema's default of every key of a config section: the one place a setting's default is written.

    The library's dataclasses and function defaults read theirs from here."""
    props = schema()["properties"][section]["properties"]
    return {k: copy.deepcopy(v["default"]) for k, v in props.items() if "default" in v}


def allowed(key: str) -> tuple:
    """The values the schema's enum allows for a dotted key (``precision``, ``single_class.encoder``)."""
    node = schema()
    for part in key.split("."):
        node = node["properties"][part]
    return tuple(node["enum"])


def check_choice(key: str, value: object) -> None:
    """Refuse a value outside the schema's enum of ``key``, naming it (for callers that bypass the schema)."""
    if value not in allowed(key):
        raise ConfigError(f"{key}: must be one of {list(allowed(key))}, not {value!r}")


def _fill_defaults(schema: dict, obj: dict) -> None:
    for key, sub in schema.get("properties", {}).items():
        if key not in obj and "default" in sub:
            obj[key] = copy.deepcopy(sub["default"])
        if isinstance(obj.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(sub, obj[key])


def load_config(*paths: str | os.PathLike, overrides: dict | None = None, schema: str | os.PathLike = SCHEMA) -> dict:
    """Merge YAML files (later ones win, dicts merged key by key), validate against the schema, fill defaults."""
    import jsonschema

    config: dict = {}
    for p in paths:
        _merge(config, yaml.safe_load(Path(p).read_text()) or {})
    if overrides:
        _merge(config, overrides)
    sch = _schema(str(schema))
    try:
        jsonschema.validate(config, sch)
    except jsonschema.ValidationError as err:
        where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        raise ConfigError(f"config key {where}: {err.message}") from None
    _fill_defaults(sch, config)
    check_config(config)
    return config


def _merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


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
        from rlseg.synthetic import SHAPES

        bad = [c for c in classes if c not in SHAPES]
        if bad:
            keys = " and ".join(f"{k}.source" for k in synthetic)
            raise ConfigError(f"classes: {bad} are not shapes of the synthetic world {list(SHAPES)}, which {keys} "
                              "= synthetic draws; set images.source and eval.source for your classes (e.g. "
                              "eval: {source: voc2012})")
    check_single_class(config["single_class"], config["pseudo_gt"]["resolution"])
    from rlseg.architectures import check_multiclass  # here: it imports this module

    mc = config["multiclass"]
    check_multiclass(mc)
    if mc["scale_min"] > mc["scale_max"]:
        raise ConfigError("multiclass.scale_min must not exceed multiclass.scale_max")
    from rlseg.sources import get_source

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
    if config["single_class"]["init"] == "base" and config["base_model"]["source"] == "folder":
        root = config["base_model"].get("root")
        if not root or not Path(root).is_dir():
            raise ConfigError(f"base_model.root: folder {root!r} is missing (base_model.source = folder)")


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
    from rlseg.architectures import check_unet  # here: it imports this module

    check_unet(sc)


def _check_eval_dir(root: str, split: str, classes: list[str]) -> None:
    """A VOC-layout evaluation folder, checked before any job: layout, ids, labels, sizes (the first fault named)."""
    from rlseg.imageio import BadImageError
    from rlseg.io import UnsafeNameError
    from rlseg.voc import check_samples, label_count, read_voc_dir

    try:
        check_samples(read_voc_dir(root, split), label_count(classes))
    except (FileNotFoundError, UnsafeNameError, BadImageError) as err:
        raise ConfigError(f"eval.root: {err}") from None


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def _check_results(config: dict) -> None:
    """The results folder holds only outputs: not empty, not the file system's root, not the working folder or a
    folder above it, and apart from every input folder (nothing inside one, none inside it)."""
    raw = config["results"]
    if not raw.strip():
        raise ConfigError("results: empty; name the folder every output goes to (e.g. results)")
    results = Path(raw).resolve()
    if _inside(Path.cwd().resolve(), results):
        raise ConfigError(f"results: {raw!r} is the working folder or a folder above it ({results}); outputs "
                          "need a folder of their own (e.g. results)")
    inputs = {"images.root": config["images"].get("root"), "eval.root": config["eval"].get("root"),
              "base_model.root": config["base_model"].get("root")}
    for key, root in inputs.items():
        if root and (_inside(results, Path(root).resolve()) or _inside(Path(root).resolve(), results)):
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
