"""Reference points for a run: a per-pixel colour classifier fitted on true masks.

It shows how far colour alone goes on a data set: the synthetic world must need shape and texture.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from rlseg.evaluate import remap_truth
from rlseg.imageio import load_image, load_mask
from rlseg.metrics import ConfusionMatrix, mean_iou

__all__ = ["ColourClassifier", "colour_baseline_miou"]


class ColourClassifier:
    """Per-pixel Bayes classifier on quantised RGB: each colour bin predicts its most frequent training label;
    bins never seen in training take the label of the nearest seen bin (1-NN on bin centres)."""

    def __init__(self, num_labels: int, levels: int = 32) -> None:
        self.levels = levels
        self.num_labels = num_labels
        self.counts = np.zeros((levels**3, num_labels), dtype=np.int64)
        self.table: np.ndarray | None = None

    def _bins(self, rgb: np.ndarray) -> np.ndarray:
        q = (rgb.astype(np.int64) * self.levels) // 256
        return (q[..., 0] * self.levels + q[..., 1]) * self.levels + q[..., 2]

    def fit(self, rgb: np.ndarray, labels: np.ndarray) -> ColourClassifier:
        keep = labels < self.num_labels
        np.add.at(self.counts, (self._bins(rgb)[keep], labels[keep].astype(np.int64)), 1)
        return self

    def finish(self) -> None:
        seen = self.counts.sum(1) > 0
        table = self.counts.argmax(1)
        idx = np.arange(self.levels**3)
        centres = np.stack([idx // self.levels**2, (idx // self.levels) % self.levels, idx % self.levels], 1)
        seen_idx = np.flatnonzero(seen)
        for start in range(0, len(idx), 4096):
            chunk = idx[start : start + 4096]
            missing = chunk[~seen[chunk]]
            if missing.size:
                d = ((centres[missing, None, :] - centres[None, seen_idx, :]) ** 2).sum(-1)
                table[missing] = table[seen_idx[d.argmin(1)]]
        self.table = table

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        if self.table is None:
            self.finish()
        return self.table[self._bins(rgb)]


def colour_baseline_miou(
    train_pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
    eval_pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
    ids: Sequence[int],
) -> float:
    """mIoU (percent) of the colour classifier fitted on (image, true mask) training pairs, scored on the
    evaluation pairs exactly as :mod:`rlseg.evaluate` scores the networks."""
    clf = ColourClassifier(len(ids) + 1)
    for img, mask in train_pairs:
        clf.fit(np.asarray(load_image(img)), remap_truth(load_mask(mask, num_classes=256), ids))
    cm = ConfusionMatrix(len(ids) + 1)
    for img, mask in eval_pairs:
        truth = remap_truth(load_mask(mask, num_classes=256), ids)
        cm.update(truth, clf.predict(np.asarray(load_image(img, min_side=1))))
    return 100.0 * mean_iou(cm.matrix)
