"""Segmentation metrics: confusion matrices, F-measure (beta^2 = 0.3), Jaccard and mIoU."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["ConfusionMatrix", "f_measure", "iou_per_class", "jaccard", "mean_iou", "per_image_f_measure"]


class ConfusionMatrix:
    """Confusion matrix accumulated over a whole test fold; rows = truth, columns = prediction.

    Truth values outside 0..num_classes-1 (255 = void) are ignored.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, truth: np.ndarray | torch.Tensor, pred: np.ndarray | torch.Tensor) -> None:
        truth, pred = (np.asarray(a.cpu() if hasattr(a, "cpu") else a).astype(np.int64).ravel() for a in (truth, pred))
        if truth.shape != pred.shape:
            raise ValueError(f"truth has {truth.size} pixels, prediction {pred.size}")
        keep = (truth >= 0) & (truth < self.num_classes)
        idx = truth[keep] * self.num_classes + np.clip(pred[keep], 0, self.num_classes - 1)
        self.matrix += np.bincount(idx, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)


def iou_per_class(matrix: np.ndarray) -> np.ndarray:
    """IoU of each class; NaN for a class absent from both truth and prediction."""
    inter = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def mean_iou(matrix: np.ndarray) -> float:
    """Mean IoU over the classes present in truth or prediction."""
    return float(np.nanmean(iou_per_class(matrix)))


def jaccard(matrix: np.ndarray) -> float:
    """Jaccard index of the object class (class 1) of a binary confusion matrix."""
    return float(iou_per_class(matrix)[1])


def f_measure(matrix: np.ndarray, beta_sq: float = 0.3) -> float:
    """F-measure of the object class from a pooled binary confusion matrix, as the reference computes it."""
    eps = 1e-12
    tp, fp, fn = float(matrix[1, 1]), float(matrix[0, 1]), float(matrix[1, 0])
    precision = tp / (tp + fp + eps)
    recall = tp / (tp + fn + eps)
    if precision + recall == 0:
        return 0.0
    return (1 + beta_sq) * precision * recall / (beta_sq * precision + recall)


def per_image_f_measure(truths: list[np.ndarray], preds: list[np.ndarray], beta_sq: float = 0.3) -> float:
    """Mean over images of each image's F-measure."""
    scores = []
    for t, p in zip(truths, preds, strict=True):
        cm = ConfusionMatrix(2)
        cm.update(t, p)
        scores.append(f_measure(cm.matrix, beta_sq))
    return float(np.mean(scores)) if scores else float("nan")
