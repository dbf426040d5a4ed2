"""``rlseg predict``: masks and overlays of new images with a saved model, never written over an input."""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from rlseg.imageio import (
    DECODER_ERRORS,
    BadImageError,
    last_image_pixels,
    load_image,
    overlay,
    pixel_batches,
    regular_file,
    voc_palette,
    voc_palette_array,
)
from rlseg.ingest import folder_images
from rlseg.io import InputError, atomic_path, child_path, save_png, unique_stems, within
from rlseg.metrics import ConfusionMatrix, f_measure, jaccard
from rlseg.pipeline import setup_job

# torch (rlseg.inference, rlseg.runtime) is imported inside the commands, after setup_job has set its OpenMP policy

log = logging.getLogger("rlseg")

__all__ = ["cmd_predict"]

PALETTE = voc_palette()
PALETTE_ARRAY = voc_palette_array()


def _inputs(paths: list[Path]) -> list[Path]:
    """The image files named, and those in the folders named; a name that does not exist is an error, a folder
    without images too (its files of other kinds are not inputs)."""
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
        if within(Path(os.path.realpath(f)), out_real) or within(f.absolute(), out_real):
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


def _decoded(files: list[Path], names: list[str], failed: list[Path],
             bar: tqdm) -> Iterator[tuple[Path, str, Image.Image]]:
    """(file, output name, image) of each file that decodes, one at a time; the rest are logged and added to
    ``failed``."""
    for f, name in zip(files, names, strict=True):
        try:
            yield f, name, load_image(f, min_side=1)
        except BadImageError as err:
            log.error("skipped %s: %s", f, err.reason)
            failed.append(f)
            bar.update(1)


def _predict_batch(batch: list[tuple[Path, str, Image.Image]], model, dev, args: argparse.Namespace, cm,
                   failed: list[Path]) -> int:
    """Masks and overlays of one batch of decoded files; true masks that cannot be scored are logged and added to
    ``failed``."""
    from rlseg.inference import segment  # torch: see the module's imports

    labels = segment(model, [im for _, _, im in batch], dev, args.class_id, args.resolution, scales=args.scales,
                     flip=args.flip, cam=args.cam)
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


def _labelling(args: argparse.Namespace, model) -> None:
    """Fill the labelling flags not given from what ``rlseg train``'s --config or the workflow's export recorded in
    the model (its pseudo_gt block: the recipe's labelling, and the ImageNet classes of a cam_filter), else one
    pass at the model's own resolution."""
    recorded = model.labelling or {}
    if args.resolution is None:
        args.resolution = recorded.get("resolution")
    if args.scales is None:
        args.scales = recorded.get("scales", [1.0])
    if args.flip is None:
        args.flip = recorded.get("flip", False)
    args.cam = None
    if model.kind == "single_class" and recorded.get("cam_classes"):  # the run's pseudo_gt.cam_filter
        from rlseg.cam import CamFilter

        args.cam = CamFilter(tuple(int(c) for c in recorded["cam_classes"]), float(recorded["cam_min_ratio"]))
    if model.kind == "single_class":
        log.info("labelling at %s px, scales %s%s%s", args.resolution or model.resolution, args.scales,
                 ", mirrored" if args.flip else "",
                 f", parts kept where ImageNet classes {list(args.cam.classes)} respond" if args.cam else "")


def cmd_predict(args: argparse.Namespace) -> int:
    from rlseg.inference import load_model  # torch: see the module's imports
    from rlseg.runtime import resolve_device

    files = _inputs(args.inputs)
    names = _output_names(files, args.out)
    if args.truth is not None and not args.truth.is_dir():
        raise InputError(f"--truth {args.truth}: not a folder of true masks")
    if args.truth is not None and args.truth.resolve() == args.out.resolve():
        raise InputError(f"--out {args.out} is the --truth folder: the masks would replace the true masks")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} is a file; name a folder for the masks")
    setup_job()
    dev = resolve_device(args.device)
    model = load_model(args.model, dev)
    if args.resolution is not None and model.kind != "single_class":
        raise InputError("--resolution applies to a single-class model; a multi-class model predicts at full size")
    _labelling(args, model)
    args.out.mkdir(parents=True, exist_ok=True)
    cm = ConfusionMatrix(2) if args.truth else None
    failed: list[Path] = []
    done = 0
    t0 = time.time()
    with logging_redirect_tqdm(), tqdm(total=len(files), desc="predict", mininterval=5) as bar:
        for batch in pixel_batches(_decoded(files, names, failed, bar), last_image_pixels,
                                   args.batch_size):
            done += _predict_batch(batch, model, dev, args, cm, failed)
            bar.update(len(batch))
    log.info("%d masks and overlays -> %s (%.1f s)%s", done, args.out, time.time() - t0,
             f"; {len(failed)} file(s) skipped: {', '.join(str(f) for f in failed)}" if failed else "")
    if cm is not None and cm.matrix.sum():
        print(f"F-measure {f_measure(cm.matrix):.4f}  Jaccard {jaccard(cm.matrix):.4f}  ({done} images)")
    return 1 if failed else 0  # 1: some inputs skipped, each named
