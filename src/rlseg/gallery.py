"""The rows of a class's gallery figure: a fixed sample of its training and evaluation photos, each with the class
CNN's label, the multi-class network's output and the true mask (the figure itself is :func:`rlseg.report.gallery`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rlseg.imageio import load_image, load_mask
from rlseg.inference import load_model, segment
from rlseg.ingest import read_pairs
from rlseg.io import read_csv
from rlseg.report import GalleryRow
from rlseg.runtime import resolve_device

__all__ = ["class_gallery_rows"]


def class_gallery_rows(
    class_id: int,
    class_model: str | os.PathLike,
    multiclass_model: str | os.PathLike,
    pseudo_pairs: str | os.PathLike,
    eval_index: str | os.PathLike,
    predictions: str | os.PathLike,
    truth_pairs: str | os.PathLike | None,
    n: int,
    device: str = "auto",
    resolution: int | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> list[GalleryRow]:
    """A fixed sample for one class's gallery: its first ``n`` training images (by path) with their pseudo labels
    and the multi-class network's output on them, then the first ``n`` evaluation images (in index order) whose
    true mask holds the class, with the class CNN's label (at ``resolution``, ``scales`` and ``flip``, as the
    pseudo labels were made) and the evaluation's prediction. True masks come from ``truth_pairs`` (training) and
    the index (evaluation)."""
    dev = resolve_device(device)
    single, multi = load_model(class_model, dev), load_model(multiclass_model, dev)
    truth_of = dict(read_pairs([str(truth_pairs)])) if truth_pairs else {}
    rows = []
    for r in sorted(read_csv(pseudo_pairs), key=lambda r: r["image"])[:n]:
        im = load_image(r["image"], min_side=1)
        truth = truth_of.get(r["image"])
        rows.append(GalleryRow(f"train {Path(r['image']).stem}", im,
                               load_mask(r["label"], size=im.size, num_classes=256), segment(multi, [im], dev)[0],
                               load_mask(truth, size=im.size, num_classes=256) if truth else None))
    predicted = {r["id"]: r["prediction"] for r in read_csv(predictions)}
    for r in read_csv(eval_index):
        if len(rows) >= 2 * n:
            break
        truth = load_mask(r["mask"], num_classes=256)
        if not (truth == class_id).any():
            continue
        im = load_image(r["image"], min_side=1)
        label = segment(single, [im], dev, class_id, resolution, scales=scales, flip=flip)[0]
        rows.append(GalleryRow(f"eval {r['id']}", im, label, load_mask(predicted[r["id"]], size=im.size,
                                                                       num_classes=256), truth))
    return rows
