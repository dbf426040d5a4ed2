"""Evaluation: confusion matrix over background + the configured classes, 255 ignored -> mIoU and per-class IoU."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from rlseg.imageio import BadImageError, load_mask
from rlseg.io import read_csv, write_csv, write_text
from rlseg.metrics import ConfusionMatrix, iou_per_class

__all__ = [
    "confusion",
    "evaluate_predictions",
    "label_jaccard",
    "pseudo_label_jaccard",
    "read_confusion",
    "read_per_class_iou",
    "remap_truth",
    "scores",
    "write_confusion",
    "write_scores",
]


def remap_truth(mask: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """Map label ids to confusion-matrix rows: background 0, configured class j -> j+1, void stays 255.

    Pixels of classes outside the configured list count as background.
    """
    lut = np.zeros(256, dtype=np.uint8)
    for j, cid in enumerate(ids):
        lut[cid] = j + 1
    lut[255] = 255
    return lut[mask]


def confusion(
    pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
    ids: Sequence[int],
    num_labels: int = 256,
) -> np.ndarray:
    """Confusion matrix [K+1, K+1] (rows truth, columns prediction; background first, then the configured classes
    in order) of prediction PNGs against true masks.

    Args:
        pairs: (truth mask, prediction PNG) paths; both hold label ids (VOC ids or 1..K), truth 255 = void.
        ids: the configured classes' label ids.
    """
    cm = ConfusionMatrix(len(ids) + 1)
    for truth_path, pred_path in pairs:
        truth, pred = _same_size(truth_path, pred_path, num_labels, "prediction", "true mask")
        pred_rows = remap_truth(pred, ids)
        pred_rows[pred_rows == 255] = 0
        cm.update(remap_truth(truth, ids), pred_rows)
    return cm.matrix


def _same_size(truth_path: str | os.PathLike, label_path: str | os.PathLike, num_labels: int, what: str,
               against: str) -> tuple[np.ndarray, np.ndarray]:
    """(truth, label) read as label ids; a label whose size differs from its true mask is named as what it is."""
    truth = load_mask(truth_path, num_classes=num_labels)
    label = load_mask(label_path, num_classes=num_labels)
    if label.shape != truth.shape:
        raise BadImageError(label_path, f"{what} is {label.shape[1]}x{label.shape[0]}, its {against} {truth_path} "
                            f"is {truth.shape[1]}x{truth.shape[0]}")
    return truth, label


def scores(matrix: np.ndarray, class_names: Sequence[str], ids: Sequence[int]) -> tuple[float, list[dict]]:
    """(mIoU in percent over background + the classes, rows of {class, id, iou} in percent) of a confusion matrix."""
    ious = iou_per_class(matrix) * 100.0
    names = ["background", *class_names]
    rows = [{"class": n, "id": i, "iou": round(float(v), 4)} for n, i, v in zip(names, [0, *ids], ious, strict=True)]
    return float(np.nanmean(ious)), rows


def evaluate_predictions(
    pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
    class_names: Sequence[str],
    ids: Sequence[int],
    num_labels: int = 256,
) -> tuple[float, list[dict]]:
    """Score prediction PNGs (paired as in :func:`confusion`): mIoU and per-class IoU, as :func:`scores`."""
    return scores(confusion(pairs, ids, num_labels), class_names, ids)


def write_confusion(path: str | os.PathLike, matrix: np.ndarray, class_names: Sequence[str]) -> None:
    """The confusion matrix as CSV: one row per true class (pixel counts), one column per predicted class."""
    names = ["background", *class_names]
    write_csv(path, [{"truth": n, **{m: int(v) for m, v in zip(names, row, strict=True)}}
                     for n, row in zip(names, matrix, strict=True)], ["truth", *names])


def read_confusion(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """(class names, matrix) from a CSV that :func:`write_confusion` wrote."""
    table = pd.read_csv(path, index_col="truth")
    return list(table.index), table.loc[:, list(table.index)].to_numpy(dtype=np.int64)


def write_scores(
    miou: float, rows: list[dict], miou_path: str | os.PathLike, per_class_path: str | os.PathLike
) -> None:
    """mIoU as one number (percent, two decimals) and the per-class CSV."""
    write_text(Path(miou_path), f"{miou:.2f}\n")
    write_csv(per_class_path, rows, ["class", "id", "iou"])


def read_per_class_iou(per_class_path: str | os.PathLike) -> dict[str, float]:
    """{class: IoU in percent} from a per-class CSV that :func:`write_scores` wrote."""
    table = pd.read_csv(per_class_path, dtype={"class": str})
    return dict(zip(table["class"], table["iou"].astype(float), strict=True))


def label_jaccard(
    triples: Sequence[tuple[str | os.PathLike, str | os.PathLike, int]],
) -> dict[int, float]:
    """Per-class Jaccard of binary labels against true masks, as co-segmentation scores it (the paper's Table 5).

    Args:
        triples: (label PNG, true mask, class id): the label's pixels equal to the class id are the object, as are
            the true mask's; void (255) in the true mask is ignored. Both hold label ids (VOC ids or 1..K).
    Returns:
        {class id: mean over that class's images of each image's object Jaccard}; an image whose object is absent
        from both label and mask counts as 1.
    """
    scores: dict[int, list[float]] = {}
    for label_path, mask_path, cid in triples:
        truth, label = _same_size(mask_path, label_path, 256, "label", "true mask")
        keep = truth != 255
        t, p = truth[keep] == cid, label[keep] == cid
        union = int((t | p).sum())
        scores.setdefault(int(cid), []).append(float((t & p).sum()) / union if union else 1.0)
    return {c: float(np.mean(v)) for c, v in scores.items()}


def pseudo_label_jaccard(results: str | os.PathLike, masks: str | os.PathLike, classes: Sequence[str],
                         ids: dict[str, int]) -> dict[str, float]:
    """Each class's pseudo labels (``results/pseudo_gt/<class>/pairs.csv``) on its own training images against
    the true masks in ``masks`` (``<image stem>.png``): :func:`label_jaccard` per class, by class name.

    Scoring only: the workflow never reads these masks while training.
    """
    results, masks = Path(results), Path(masks)
    triples = [(results.parent / r["label"], masks / f"{Path(r['image']).stem}.png", ids[c])
               for c in classes for r in read_csv(results / "pseudo_gt" / c / "pairs.csv")]
    by_id = label_jaccard(triples)
    return {c: round(by_id[ids[c]], 4) for c in classes}
