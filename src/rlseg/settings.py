"""Settings: the schema (every key's default and allowed values), merging YAML files, and the error a bad value raises.

The bottom layer of the package: it imports nothing from rlseg, so every module may read its defaults here. The
checks that relate one setting to another, or to the data, live above it in :mod:`rlseg.config`.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path

import yaml

# the package carries the schema (workflow/schemas/ links to it), so the library works outside a checkout
SCHEMA = Path(__file__).resolve().with_name("config.schema.yaml")

__all__ = ["LABELLING", "SCHEMA", "ConfigError", "allowed", "base_model_settings", "check_choice", "defaults",
           "fill_defaults", "labelling_of", "merge", "read_config", "schema", "validate"]

LABELLING = ("resolution", "scales", "flip")  # the pseudo_gt keys a single-class model records for rlseg predict


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
    out = {k: copy.deepcopy(v["default"]) for k, v in props.items() if "default" in v}
    for k, v in out.items():  # a nested block's own keys get their defaults too
        if isinstance(v, dict) and props[k].get("type") == "object":
            fill_defaults(props[k], v)
    return out


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


def fill_defaults(schema: dict, obj: dict) -> None:
    """Fill ``obj`` in place with the defaults of every key ``schema`` describes and ``obj`` lacks, nested."""
    for key, sub in schema.get("properties", {}).items():
        if key not in obj and "default" in sub:
            obj[key] = copy.deepcopy(sub["default"])
        if isinstance(obj.get(key), dict) and sub.get("type") == "object":
            fill_defaults(sub, obj[key])


def merge(into: dict, new: dict) -> None:
    """Merge ``new`` into ``into`` in place: dicts key by key, anything else replaced."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v


def validate(config: dict, schema: dict, prefix: str = "config key ") -> None:
    """Validate against a JSON schema.

    Raises:
        ConfigError: ``prefix`` and the dotted key at fault, and what is wrong.
    """
    import jsonschema  # its import takes a second: only the jobs that validate pay it

    try:
        jsonschema.validate(config, schema)
    except jsonschema.ValidationError as err:
        key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        raise ConfigError(f"{prefix}{key}: {err.message}") from None


def read_config(*paths: str | os.PathLike, overrides: dict | None = None,
                schema: str | os.PathLike = SCHEMA) -> dict:
    """Merge YAML files (later ones win, dicts merged key by key) and ``overrides``, validate against the schema,
    fill defaults. The checks beyond the schema are :func:`rlseg.config.check_config`'s.

    Raises:
        ConfigError: a file that is not a YAML mapping, or a value the schema refuses.
    """
    config: dict = {}
    for p in paths:
        try:
            loaded = yaml.safe_load(Path(p).read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: not valid YAML ({str(err).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: a config file is a mapping of settings, not a {type(loaded).__name__}")
        merge(config, loaded or {})
    if overrides:
        merge(config, overrides)
    sch = _schema(str(schema))
    validate(config, sch)
    fill_defaults(sch, config)
    return config


def labelling_of(pseudo_gt: dict) -> dict:
    """How a single-class model labels photos, from a complete ``pseudo_gt`` block: what the model records, so
    that ``rlseg predict`` labels as the workflow's pseudo labels were made."""
    return {k: pseudo_gt[k] for k in LABELLING}


def base_model_settings(base: dict, single_class: dict) -> dict:
    """The single-class settings the base model trains with: no negatives, and a number for the volumetric term's
    target, which ``auto`` cannot give a model that has no start to estimate it with (``base_model.vol_target``;
    unset: ``single_class.vol_target`` where that is a number, else the schema's, the paper's 0.5), and the centre
    box in the middle: a class-agnostic model has no ImageNet classes of its own to place it with."""
    target = base.get("vol_target")
    if target is None:
        target = single_class["vol_target"]
    if target == "auto":
        target = defaults("single_class")["vol_target"]
    return {**single_class, "negatives": False, "vol_target": target, "center": "middle"}


def one_folder_settings(single_class: dict) -> dict:
    """The single-class settings for one folder of photos with no other photos beside it (``rlseg train`` without
    ``--negatives``): the centre box in the middle, since the class's ImageNet classes are those its photos score
    above other photos, and a folder's own top classes say little of a varied class (ECSSD's salient objects)."""
    return {**single_class, "center": "middle"}
