"""``rlseg train``: one class's folder through the workflow's single-class stages, with the workflow's checks."""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path

import yaml

from rlseg.config import check_single_class
from rlseg.imageio import file_problem
from rlseg.ingest import check_files, finalize_manifests, folder_images, write_manifest
from rlseg.io import InputError, within
from rlseg.packaged import check_packaged
from rlseg.pipeline import run_base_model, run_single_class, setup_job
from rlseg.settings import ConfigError, fill_defaults, labelling_of, one_folder_settings, schema, validate

log = logging.getLogger("rlseg")

__all__ = ["IMAGE_CHECKS", "cmd_train", "labelling_settings", "read_config", "single_class_block",
           "train_settings"]

IMAGE_CHECKS = ("min_side", "max_pixels", "near_duplicate_bits")  # the images keys that decide which files train


def train_settings(args: argparse.Namespace, loaded: dict | None = None) -> dict:
    """The single_class settings: the schema's defaults, then the ``--config`` file (``loaded``: its mapping, read
    here when not given), then the flags; validated and checked as the workflow checks them."""
    block = schema()["properties"]["single_class"]
    settings: dict = {}
    if args.config:
        settings.update(single_class_block(read_config(args.config) if loaded is None else loaded, args.config))
    for key in block["properties"]:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    settings["negatives"] = args.negatives is not None
    validate(settings, block, prefix="single_class.")
    settings = copy.deepcopy(settings)
    fill_defaults(block, settings)
    check_single_class(settings)
    if settings["init"] == "base":
        check_packaged(settings)
    return settings


def pseudo_gt_settings(loaded: dict, config: Path | None) -> dict:
    """The ``pseudo_gt`` block of a whole ``--config`` file (``loaded``, read from ``config``; such as
    configs/photos.yaml), validated, the schema's defaults for the rest."""
    block = schema()["properties"]["pseudo_gt"]
    settings = copy.deepcopy(loaded.get("pseudo_gt") or {})
    if not isinstance(settings, dict):
        raise ConfigError(f"{config}: pseudo_gt must be a mapping of settings")
    validate(settings, block, prefix="pseudo_gt.")
    fill_defaults(block, settings)
    return settings


def labelling_settings(loaded: dict, config: Path | None) -> dict:
    """How the model labels photos (``resolution``, ``scales``, ``flip``: :func:`pseudo_gt_settings`); ``rlseg
    predict`` labels so unless told otherwise."""
    return labelling_of(pseudo_gt_settings(loaded, config))


def read_config(path: Path) -> dict:
    """A ``--config`` file's mapping; a file that cannot be read or is not a mapping is a :class:`ConfigError`."""
    problem = file_problem(path)
    if problem:  # a FIFO would block the read
        raise ConfigError(f"{path}: cannot read the --config file ({problem})")
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the --config file ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    loaded = {} if loaded is None else loaded
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a --config file is a mapping of settings, not a {type(loaded).__name__}")
    return loaded


def single_class_block(loaded: dict, path: Path) -> dict:
    """The single_class settings of a ``--config`` file's mapping (``loaded``, read from ``path``): its
    ``single_class`` block, or the file itself as that block; the workflow's other blocks (a whole config such as
    configs/photos.yaml) are ignored but for the labelling (:func:`labelling_settings`), as they are for one
    folder."""
    if "single_class" in loaded:
        block = loaded["single_class"]
        if not isinstance(block, dict):
            raise ConfigError(f"{path}: single_class must be a mapping of settings")
        return block
    workflow_blocks = set(schema()["properties"]) - {"single_class"}
    return {k: v for k, v in loaded.items() if k not in workflow_blocks}


def _folder(folder: Path, what: str) -> Path:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder ({what})")
    return folder


def _manifest(folder: Path, out: Path, args: argparse.Namespace) -> tuple[Path, int]:
    """Check a folder's images as the ingest and manifests rules do, and write its manifest; skipped files are
    named. Raises :class:`InputError` when no image is usable."""
    rows = check_files(folder_images(folder), root=folder, max_pixels=args.max_pixels, min_side=args.min_side)
    rows = finalize_manifests({folder.name: rows}, near_duplicate_bits=args.near_duplicate_bits,
                              min_images=0)[folder.name]
    for r in rows:
        if r["status"] != "used":
            log.warning("skipped %s: %s", r["path"], r["reason"])
    used = sum(r["status"] == "used" for r in rows)
    if not used:
        raise InputError(f"{folder}: no usable image ({len(rows)} named .jpg/.jpeg/.png, all skipped)" if rows else
                         f"{folder}: no image (.jpg, .jpeg, .png) in it")
    write_manifest(out, rows)
    return out, used


def _outside_inputs(path: Path, folders: list[Path], what: str) -> None:
    """Refuse an output path inside an input folder: outputs never land among (or over) the inputs."""
    for folder in folders:
        if within(path.resolve(), folder.resolve()):
            raise InputError(f"{what} {path} is inside the input folder {folder}; write it elsewhere")


def _imagenet_scores(manifests: list[str], classes: list[str], work: Path, device: str) -> list[str]:
    """single_class.center imagenet: the mean ImageNet scores of the folder (and of --negatives, to contrast with),
    written to the work folder."""
    # torch and the classifier: only a run that asks for ImageNet centres pays them
    from rlseg.cam import write_mean_scores
    from rlseg.runtime import resolve_device

    dev = resolve_device(device)
    paths = [str(work / f"imagenet_scores_{cls}.npy") for cls in classes]
    for manifest, path in zip(manifests, paths, strict=True):
        write_mean_scores(manifest, path, dev)
    return paths


def cmd_train(args: argparse.Namespace) -> int:
    loaded = read_config(args.config) if args.config else {}
    settings = train_settings(args, loaded)
    pseudo_gt = pseudo_gt_settings(loaded, args.config)
    labelling = labelling_of(pseudo_gt)
    folders = [_folder(args.folder, "the class's images")]
    if args.negatives:
        folders.append(_folder(args.negatives, "--negatives"))
    work = args.out.parent / f"{args.out.stem}.work"
    for path, what in ((args.out, "--out"), (work, "the work folder")):
        _outside_inputs(path, folders, what)
    if args.out.is_dir():
        raise InputError(f"--out {args.out} is a folder; name the model file to write (e.g. {args.out}/model.pt)")
    setup_job(args.threads)
    work.mkdir(parents=True, exist_ok=True)
    manifest, n = _manifest(args.folder, work / "manifest.csv", args)
    manifests, classes = [str(manifest)], ["object"]
    if args.negatives:
        neg, _ = _manifest(args.negatives, work / "negatives.csv", args)
        manifests.append(str(neg))
        classes.append("negatives")
    base = None
    if settings["init"] == "base":  # one folder has no classes to train a base model on: the packaged start
        base = str(work / "packaged_start.pt")
        run_base_model({"source": "packaged"}, settings, str(work), base, str(work / "packaged_start_history.csv"),
                       str(work))
    scores = []
    if settings["center"] == "imagenet" and len(classes) < 2:
        log.info("single_class.center imagenet needs --negatives to contrast with: the centre box stays in the middle")
        settings = one_folder_settings(settings)
    elif settings["center"] == "imagenet":
        scores = _imagenet_scores(manifests, classes, work, args.device)
    log.info("training on %d images of %s; checkpoints and history in %s", n, args.folder, work)
    run_single_class("object", str(manifest), manifests, classes, {c: i + 1 for i, c in enumerate(classes)},
                     settings, str(work), str(args.out), str(work / "history.csv"), base=base, device=args.device,
                     near_duplicate_bits=args.near_duplicate_bits, labelling=labelling, score_paths=scores,
                     top_classes=pseudo_gt["cam_params"]["top_classes"])
    log.info("model -> %s (rlseg predict labels at %s px, scales %s%s by default)", args.out,
             labelling["resolution"] or "its training resolution", labelling["scales"],
             ", mirrored" if labelling["flip"] else "")
    return 0


