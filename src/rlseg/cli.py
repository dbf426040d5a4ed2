"""The ``rlseg`` command: train a single-class model on a folder of images, segment new images with a model.

    rlseg train FOLDER --out MODEL.pt [--negatives FOLDER] [--config YAML] [--normal-epochs 50 ...]
    rlseg predict MODEL INPUT... --out DIR [--truth DIR]

``train`` runs the workflow's own single-class step (the rules' code path) with the ``single_class`` settings of
``config.schema.yaml``: every key is a flag, a YAML file may set them too (``--config configs/photos.yaml``, the
photo recipe), flags win; the workflow's own checks apply.

Exit status: 0 every input done; 1 some inputs skipped (each named on stderr); 2 a usage, configuration or input
error, or weights that cannot be fetched offline (one line, no traceback); 3 an unexpected error (a bug:
``--debug`` shows its traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import yaml

from rlseg.cli_predict import cmd_predict
from rlseg.cli_train import IMAGE_CHECKS, cmd_train
from rlseg.pipeline import USER_ERRORS
from rlseg.settings import schema

log = logging.getLogger("rlseg")

__all__ = ["main"]


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


def _scale(text: str) -> float:
    """An argparse type: a positive scale factor."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def _schema(block: str) -> dict:
    return schema()["properties"][block]




def _flag_type(spec: dict):
    """The argparse type of a schema entry: numbers and strings as themselves, lists and unions as YAML
    (``--resolutions '[128, 256]'``, ``--decoder-convs 0``)."""
    types = spec.get("type")
    if "oneOf" in spec or isinstance(types, list) or types == "array":
        return yaml.safe_load
    return {"integer": int, "number": float}.get(types, str)


def _model_file(text: str) -> Path:
    """An argparse type: a file to write, not a folder (a trailing separator says folder, which Path drops)."""
    if text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text} names a folder; name the model file to write (e.g. {text}model.pt)")
    return Path(text)


def _add_out_and_device(p: argparse.ArgumentParser, out_help: str, out_type=Path) -> None:
    p.add_argument("--out", type=out_type, required=True, help=out_help)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a single-class model on a folder of one class's images",
                       description="Train a single-class U-Net with the regularized loss on a folder of one class's "
                       "images (no masks), through the same stages and code as the workflow's train_single_class "
                       "rule. Settings are the config's single_class keys.")
    p.add_argument("folder", type=Path, help="folder of the class's images (.jpg, .jpeg, .png)")
    _add_out_and_device(p, "the model file to write (e.g. horse.pt)", _model_file)
    p.add_argument("--negatives", type=Path, help="folder of images without the class (runs the negative stage)")
    p.add_argument("--config", type=Path, help="YAML with single_class settings (a single_class: block, or its keys)")
    p.add_argument("--threads", type=_at_least(1), default=None, help="CPU threads (default: torch's)")
    images = _schema("images")["properties"]
    for key in IMAGE_CHECKS:
        p.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int, default=images[key]["default"],
                       help=f"images.{key}: {images[key]['description']} [{images[key]['default']}]")
    group = p.add_argument_group("single_class settings (config.schema.yaml; default in brackets)")
    for key, spec in _schema("single_class")["properties"].items():
        if key == "negatives":
            continue  # the workflow's key: --negatives FOLDER says it here
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
                   help="side (px, a multiple of 32) a single-class model sees the images at (the workflow's "
                   "pseudo_gt.resolution); default what rlseg train's --config said (its pseudo_gt block), else the "
                   "model's training resolution")
    p.add_argument("--scales", type=_scale, nargs="+", metavar="S",
                   help="predict at these scales (of --resolution for a single-class model, of the image for a "
                   "multi-class one) and average the probabilities, e.g. 0.75 1 1.25; default what rlseg train's "
                   "--config said, else 1")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction,
                   help="average with the mirrored image's probabilities too; default what rlseg train's --config "
                   "said, else no")
    p.add_argument("--batch-size", type=_at_least(1), default=16)


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
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line and the status of a bug
        if args.debug:
            raise
        log.error("unexpected error (%s: %s); rerun with --debug for the traceback", type(err).__name__, err)
        return 3


if __name__ == "__main__":
    sys.exit(main())
