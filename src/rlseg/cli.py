"""The ``rlseg`` command: train a single-class model on a folder of images, segment new images with a model.

    rlseg train FOLDER --out MODEL.pt [--negatives FOLDER] [--config YAML] [--normal-epochs 50 ...]
    rlseg predict MODEL INPUT... --out DIR [--truth DIR]

``train`` runs the workflow's own single-class step (the rules' code path) with the ``single_class`` settings of
``config.schema.yaml``: every key is a flag, a YAML file may set them too, flags win.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from pathlib import Path

import yaml

from rlseg.config import ConfigError, schema
from rlseg.voc import voc_palette, voc_palette_array

log = logging.getLogger("rlseg")

__all__ = ["main"]


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
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
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
    p.add_argument("--class-id", type=int, default=1, help="label a single-class model's object pixels get [1]")
    p.add_argument("--truth", type=Path, help="folder of true masks (<name>.png, object > 0 or 0/255): prints the "
                   "F-measure (beta^2 = 0.3, pooled) and Jaccard of the object")
    p.add_argument("--resolution", type=int, help="side (px) a single-class model sees the images at; default its "
                   "training resolution (the workflow's pseudo_gt.resolution)")
    p.add_argument("--batch-size", type=int, default=16)


def train_settings(args: argparse.Namespace) -> dict:
    """The single_class settings: the schema's defaults, then the YAML file, then the flags; validated."""
    import jsonschema

    from rlseg.config import _fill_defaults

    schema = _single_class_schema()
    settings: dict = {}
    if args.config:
        loaded = yaml.safe_load(args.config.read_text()) or {}
        settings.update(loaded.get("single_class", loaded))
    for key in schema["properties"]:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    settings["negatives"] = args.negatives is not None
    try:
        jsonschema.validate(settings, schema)
    except jsonschema.ValidationError as err:
        where = ".".join(str(p) for p in err.absolute_path) or "single_class"
        raise ConfigError(f"{where}: {err.message}") from None
    full = {"properties": {"single_class": schema}}
    out = {"single_class": copy.deepcopy(settings)}
    _fill_defaults(full, out)
    return out["single_class"]


def _manifest(folder: Path, out: Path, args: argparse.Namespace) -> tuple[Path, int]:
    """Check a folder's images as the ingest and manifests rules do, and write its manifest."""
    from rlseg.ingest import check_files, finalize_manifests, folder_images, write_manifest

    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of images")
    rows = check_files(folder_images(folder), root=folder, max_pixels=args.max_pixels, min_side=args.min_side)
    rows = finalize_manifests({folder.name: rows}, near_duplicate_bits=args.near_duplicate_bits)[folder.name]
    write_manifest(out, rows)
    for r in rows:
        if r["status"] != "used":
            log.warning("skipped %s: %s", r["path"], r["reason"])
    return out, sum(r["status"] == "used" for r in rows)


def cmd_train(args: argparse.Namespace) -> int:
    from rlseg.pipeline import run_single_class, setup_job

    settings = train_settings(args)
    setup_job(args.threads)
    work = args.out.parent / f"{args.out.stem}.work"
    work.mkdir(parents=True, exist_ok=True)
    manifest, n = _manifest(args.folder, work / "manifest.csv", args)
    if n == 0:
        raise FileNotFoundError(f"{args.folder}: no usable image (see {manifest})")
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
    return 0


def _inputs(paths: list[Path]) -> list[Path]:
    from rlseg.ingest import folder_images

    out: list[Path] = []
    for p in paths:
        out += folder_images(p) if p.is_dir() else [p]
    return out


def _object_truth(path: Path):
    """A true mask as object (1) / background (0) / void (255): a palette mask's non-zero labels are the object,
    a greyscale (saliency-style) mask's pixels >= 128."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        if img.mode == "P":
            arr = np.asarray(img)
            return np.where(arr == 255, 255, arr > 0).astype(np.uint8)
        return (np.asarray(img.convert("L")) >= 128).astype(np.uint8)


def _predict_batch(files: list[Path], model, dev, args: argparse.Namespace, cm, failed: list[Path]) -> int:
    """Masks and overlays of one batch of files; unreadable files are logged and added to ``failed``."""
    import numpy as np

    from rlseg.imageio import BadImageError, load_image
    from rlseg.inference import overlay, segment
    from rlseg.io import atomic_path, save_png
    batch = []
    for f in files:
        try:
            batch.append((f, load_image(f, min_side=1)))
        except BadImageError as err:
            log.error("skipped %s: %s", f, err.reason)
            failed.append(f)
    if not batch:
        return 0
    for (f, im), label in zip(batch, segment(model, [im for _, im in batch], dev, args.class_id,
                                                  args.resolution), strict=True):
        save_png(args.out / f"{f.stem}.png", label, palette=PALETTE)
        with atomic_path(args.out / f"{f.stem}_overlay.jpg") as tmp:
            overlay(im, label, PALETTE_ARRAY).save(tmp, format="JPEG", quality=90)
        if cm is not None:
            truth = args.truth / f"{f.stem}.png"
            if truth.is_file():
                cm.update(_object_truth(truth), (label > 0).astype(np.uint8))
            else:
                log.warning("no true mask for %s in %s", f.name, args.truth)
    return len(batch)


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from rlseg.inference import load_model
    from rlseg.metrics import ConfusionMatrix, f_measure, jaccard
    from rlseg.pipeline import setup_job
    from rlseg.runtime import resolve_device

    setup_job()
    dev = resolve_device(args.device)
    model = load_model(args.model, dev)
    files = _inputs(args.inputs)
    args.out.mkdir(parents=True, exist_ok=True)
    cm = ConfusionMatrix(2) if args.truth else None
    failed: list[Path] = []
    done = 0
    t0 = time.time()
    with logging_redirect_tqdm():
        for i in tqdm(range(0, len(files), args.batch_size), desc="predict", mininterval=5):
            done += _predict_batch(files[i : i + args.batch_size], model, dev, args, cm, failed)
    log.info("%d masks and overlays -> %s (%.1f s)%s", done, args.out, time.time() - t0,
             f"; {len(failed)} file(s) skipped: {', '.join(str(f) for f in failed)}" if failed else "")
    if cm is not None and cm.matrix.sum():
        print(f"F-measure {f_measure(cm.matrix):.4f}  Jaccard {jaccard(cm.matrix):.4f}  ({done} images)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rlseg", description="Segmentation without pixel labels (regularized loss, "
                                 "Veksler ECCV 2020). The whole workflow: snakemake --cores 8 results/voc_miou.txt")
    sub = ap.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_predict(sub)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return {"train": cmd_train, "predict": cmd_predict}[args.command](args)
    except (ConfigError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
