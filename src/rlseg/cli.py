"""The ``rlseg`` command: train a single-class model on a folder of images, segment new images with a model.

    rlseg train FOLDER --out MODEL.pt [--negatives FOLDER] [--config YAML] [--normal-epochs 50 ...]
    rlseg predict MODEL INPUT... --out DIR [--truth DIR]

``train`` runs the workflow's own single-class step (the rules' code path) with the ``single_class`` settings of
``config.schema.yaml``: every key is a flag, a YAML file may set them too (``--config configs/photos.yaml``, the
photo recipe), flags win; the workflow's own checks apply.

Exit status: 0 every input done; 1 some inputs skipped (each named on stderr); 2 a usage, configuration or input
error (one line, no traceback); 3 an unexpected error (a bug: ``--debug`` shows its traceback).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import time
from pathlib import Path

import yaml

from rlseg.checkpoint import CheckpointMismatch
from rlseg.config import check_single_class
from rlseg.imageio import BadImageError
from rlseg.io import UnsafeNameError, unique_stems
from rlseg.settings import ConfigError, fill_defaults, schema, validate
from rlseg.voc import voc_palette, voc_palette_array

log = logging.getLogger("rlseg")

__all__ = ["InputError", "main"]

EXIT_DONE, EXIT_SKIPPED, EXIT_USER_ERROR, EXIT_BUG = 0, 1, 2, 3


class InputError(ValueError):
    """A command's inputs or outputs that cannot work (empty input set, an output over an input, ...)."""


# what a user's mistake raises: a one-line message and exit status 2, never a traceback
USER_ERRORS = (ConfigError, InputError, FileNotFoundError, NotADirectoryError, CheckpointMismatch, BadImageError,
               UnsafeNameError)


def _at_least(low: int, high: int | None = None, multiple: int = 1):
    """An argparse type: an integer in [low, high] and a multiple of ``multiple``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high) or value % multiple:
            rng = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(
                f"{value} must be {rng}" + (f" and a multiple of {multiple}" if multiple > 1 else ""))
        return value
    return parse


def _schema(block: str) -> dict:
    return schema()["properties"][block]


def _single_class_schema() -> dict:
    return _schema("single_class")


PALETTE = voc_palette()
PALETTE_ARRAY = voc_palette_array()
IMAGE_CHECKS = ("min_side", "max_pixels", "near_duplicate_bits")  # the images keys that decide which files train


def _flag_type(spec: dict):
    """The argparse type of a schema entry: numbers and strings as themselves, lists and unions as YAML
    (``--resolutions '[128, 256]'``, ``--decoder-convs 0``)."""
    types = spec.get("type")
    if "oneOf" in spec or isinstance(types, list) or types == "array":
        return yaml.safe_load
    return {"integer": int, "number": float}.get(types, str)


def _add_out_and_device(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("--out", type=Path, required=True, help=out_help)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a single-class model on a folder of one class's images",
                       description="Train a single-class U-Net with the regularized loss on a folder of one class's "
                       "images (no masks), through the same stages and code as the workflow's train_single_class "
                       "rule. Settings are the config's single_class keys.")
    p.add_argument("folder", type=Path, help="folder of the class's images (.jpg, .jpeg, .png)")
    _add_out_and_device(p, "the model file to write (e.g. horse.pt)")
    p.add_argument("--negatives", type=Path, help="folder of images without the class (runs the negative stage)")
    p.add_argument("--config", type=Path, help="YAML with single_class settings (a single_class: block, or its keys)")
    p.add_argument("--threads", type=_at_least(1), default=None, help="CPU threads (default: torch's)")
    images = _schema("images")["properties"]
    for key in IMAGE_CHECKS:
        p.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int, default=images[key]["default"],
                       help=f"images.{key}: {images[key]['description']} [{images[key]['default']}]")
    group = p.add_argument_group("single_class settings (config.schema.yaml; default in brackets)")
    for key, spec in _single_class_schema()["properties"].items():
        if key in ("init", "negatives"):
            continue  # the workflow's keys: --negatives FOLDER says both here
        kind = _flag_type(spec)
        default = spec.get("default")
        helptext = f"{spec.get('description', '')} [{default}]".strip()
        if spec.get("type") == "boolean":
            group.add_argument(f"--{key.replace('_', '-')}", dest=key, action=argparse.BooleanOptionalAction,
                               default=None, help=helptext)
        else:
            group.add_argument(f"--{key.replace('_', '-')}", dest=key, type=kind, default=None,
                               choices=spec.get("enum"), metavar=None if spec.get("enum") else key.upper(),
                               help=helptext)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="segment images with a single-class or multi-class model",
                       description="Segment images with a model the workflow (or rlseg train) wrote: VOC-palette PNG "
                       "masks at each input's size and overlay JPEGs. A file that cannot be read is named and "
                       "skipped; the others are still done (exit status 1 then).")
    p.add_argument("model", type=Path, help="a single-class model_final.pt or a multiclass/*/model.pt")
    p.add_argument("inputs", type=Path, nargs="+", help="image files or folders of images")
    _add_out_and_device(p, "folder for <name>.png masks and <name>_overlay.jpg")
    p.add_argument("--class-id", type=_at_least(1, 254), default=1,
                   help="label (1-254; 255 is void) a single-class model's object pixels get [1]")
    p.add_argument("--truth", type=Path, help="folder of true masks (<name>.png, object > 0 or 0/255): prints the "
                   "F-measure (beta^2 = 0.3, pooled) and Jaccard of the object")
    p.add_argument("--resolution", type=_at_least(32, multiple=32),
                   help="side (px, a multiple of 32) a single-class model sees the images at; default its "
                   "training resolution (the workflow's pseudo_gt.resolution)")
    p.add_argument("--batch-size", type=_at_least(1), default=16)


def train_settings(args: argparse.Namespace) -> dict:
    """The single_class settings: the schema's defaults, then the YAML file, then the flags; validated and checked
    as the workflow checks them."""
    block = _single_class_schema()
    settings: dict = {}
    if args.config:
        settings.update(_config_file(args.config))
    for key in block["properties"]:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    settings["negatives"] = args.negatives is not None
    validate(settings, block, prefix="single_class.")
    settings = copy.deepcopy(settings)
    fill_defaults(block, settings)
    check_single_class(settings)
    return settings


def _config_file(path: Path) -> dict:
    """The single_class settings of a YAML file: its ``single_class`` block, or the file itself as that block; the
    workflow's other blocks (a whole config such as configs/photos.yaml) are ignored, as they are for one folder."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the --config file ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    loaded = {} if loaded is None else loaded
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a --config file is a mapping of settings, not a {type(loaded).__name__}")
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
    from rlseg.ingest import check_files, finalize_manifests, folder_images, write_manifest

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
        if folder.resolve() in (path.resolve(), *path.resolve().parents):
            raise InputError(f"{what} {path} is inside the input folder {folder}; write it elsewhere")


def cmd_train(args: argparse.Namespace) -> int:
    from rlseg.pipeline import run_single_class, setup_job

    settings = train_settings(args)
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
    log.info("training on %d images of %s; checkpoints and history in %s", n, args.folder, work)
    run_single_class("object", str(manifest), manifests, classes, {c: i + 1 for i, c in enumerate(classes)},
                     settings, str(work), str(args.out), str(work / "history.csv"), device=args.device,
                     near_duplicate_bits=args.near_duplicate_bits)
    log.info("model -> %s", args.out)
    return EXIT_DONE


def _inputs(paths: list[Path]) -> list[Path]:
    """The image files named, and those in the folders named; a name that does not exist is an error, a folder
    without images too (its files of other kinds are not inputs)."""
    from rlseg.ingest import folder_images

    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = folder_images(p)
            if not found:
                raise InputError(f"{p}: no image (.jpg, .jpeg, .png) in this folder")
            out += found
        elif os.path.lexists(p):
            out.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    if not out:
        raise InputError("no input image")
    return list(dict.fromkeys(out))


def _output_names(files: list[Path], out: Path) -> list[str]:
    """Each input's output name (``<name>.png``, ``<name>_overlay.jpg``): its stem, made unique where two inputs
    share one (:func:`rlseg.io.unique_stems`). Refuses an ``--out`` that holds an input, since it would be
    written over or mixed with the outputs."""
    out_real = out.resolve()
    for f in files:
        if out_real in Path(os.path.realpath(f)).parents or out_real in f.absolute().parents:
            raise InputError(f"--out {out} holds the input {f}; write the masks to another folder")
    names = unique_stems(files)
    for f, name in zip(files, names, strict=True):
        if name != f.stem:
            log.info("%s -> %s.png (another input has the stem %s)", f, name, f.stem)
    return names


def _object_truth(path: Path, size: tuple[int, int]):
    """A true mask as object (1) / background (0) / void (255): a palette mask's non-zero labels are the object,
    a greyscale (saliency-style) mask's pixels >= 128.

    Raises:
        BadImageError: unreadable, or not of ``size`` (the image's width, height).
    """
    import numpy as np
    from PIL import Image

    from rlseg.imageio import DECODER_ERRORS, regular_file

    regular_file(path)
    try:
        with Image.open(path) as img:
            if img.size != size:
                raise BadImageError(path, f"true mask is {img.size[0]}x{img.size[1]}, its image {size[0]}x{size[1]}")
            if img.mode == "P":
                arr = np.asarray(img)
                return np.where(arr == 255, 255, arr > 0).astype(np.uint8)
            return (np.asarray(img.convert("L")) >= 128).astype(np.uint8)
    except DECODER_ERRORS as err:
        raise BadImageError(path, f"unreadable true mask ({type(err).__name__}: {err})") from None


def _predict_batch(files: list[Path], names: list[str], model, dev, args: argparse.Namespace, cm,
                   failed: list[Path]) -> int:
    """Masks and overlays of one batch of files (``names``: their output names); unreadable files, and true masks
    that cannot be scored, are logged and added to ``failed``."""
    import numpy as np

    from rlseg.imageio import BadImageError, load_image
    from rlseg.inference import overlay, segment
    from rlseg.io import atomic_path, child_path, save_png

    batch = []
    for f, name in zip(files, names, strict=True):
        try:
            batch.append((f, name, load_image(f, min_side=1)))
        except BadImageError as err:
            log.error("skipped %s: %s", f, err.reason)
            failed.append(f)
    if not batch:
        return 0
    labels = segment(model, [im for _, _, im in batch], dev, args.class_id, args.resolution)
    for (f, name, im), label in zip(batch, labels, strict=True):
        save_png(child_path(args.out, name, ".png"), label, palette=PALETTE)
        with atomic_path(child_path(args.out, name, "_overlay.jpg")) as tmp:
            overlay(im, label, PALETTE_ARRAY).save(tmp, format="JPEG", quality=90)
        if cm is not None:
            truth = args.truth / f"{f.stem}.png"
            if not os.path.lexists(truth):
                log.warning("no true mask for %s in %s", f.name, args.truth)
                continue
            try:
                cm.update(_object_truth(truth, im.size), (label > 0).astype(np.uint8))
            except BadImageError as err:
                log.error("not scored %s: %s", f, err)
                failed.append(f)
    return len(batch)


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from rlseg.inference import load_model
    from rlseg.metrics import ConfusionMatrix, f_measure, jaccard
    from rlseg.pipeline import setup_job
    from rlseg.runtime import resolve_device

    files = _inputs(args.inputs)
    names = _output_names(files, args.out)
    if args.truth is not None and not args.truth.is_dir():
        raise InputError(f"--truth {args.truth}: not a folder of true masks")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} is a file; name a folder for the masks")
    setup_job()
    dev = resolve_device(args.device)
    model = load_model(args.model, dev)
    if args.resolution is not None and model.kind != "single_class":
        raise InputError("--resolution applies to a single-class model; a multi-class model predicts at full size")
    args.out.mkdir(parents=True, exist_ok=True)
    cm = ConfusionMatrix(2) if args.truth else None
    failed: list[Path] = []
    done = 0
    t0 = time.time()
    with logging_redirect_tqdm():
        for i in tqdm(range(0, len(files), args.batch_size), desc="predict", mininterval=5):
            done += _predict_batch(files[i : i + args.batch_size], names[i : i + args.batch_size], model, dev, args,
                                   cm, failed)
    log.info("%d masks and overlays -> %s (%.1f s)%s", done, args.out, time.time() - t0,
             f"; {len(failed)} file(s) skipped: {', '.join(str(f) for f in failed)}" if failed else "")
    if cm is not None and cm.matrix.sum():
        print(f"F-measure {f_measure(cm.matrix):.4f}  Jaccard {jaccard(cm.matrix):.4f}  ({done} images)")
    return EXIT_SKIPPED if failed else EXIT_DONE


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rlseg", description="Segmentation without pixel labels (regularized loss, "
                                 "Veksler ECCV 2020). The whole workflow: snakemake --cores 8 results/voc_miou.txt")
    ap.add_argument("--debug", action="store_true", help="show the traceback of any error")
    sub = ap.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_predict(sub)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return {"train": cmd_train, "predict": cmd_predict}[args.command](args)
    except USER_ERRORS as err:
        if args.debug:
            raise
        log.error("%s", err)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line and the status of a bug
        if args.debug:
            raise
        log.error("unexpected error (%s: %s); rerun with --debug for the traceback", type(err).__name__, err)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
