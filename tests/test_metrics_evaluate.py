"""Metrics and the evaluate step, against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rlseg.evaluate import evaluate_predictions, label_jaccard, write_scores
from rlseg.io import save_png
from rlseg.metrics import ConfusionMatrix, f_measure, iou_per_class, jaccard, mean_iou, per_image_f_measure
from rlseg.voc import voc_palette


def test_confusion_ignores_void_and_scores_by_hand():
    truth = np.array([[0, 0, 1, 1], [1, 255, 255, 0]])
    pred = np.array([[0, 1, 1, 1], [0, 1, 0, 0]])
    cm = ConfusionMatrix(2)
    cm.update(truth, pred)
    # rows truth, cols pred: t0: p0,p1,p0 -> [2,1]; t1: p1,p1,p0 -> [1,2]
    assert cm.matrix.tolist() == [[2, 1], [1, 2]]
    assert iou_per_class(cm.matrix).tolist() == pytest.approx([2 / 4, 2 / 4])
    assert mean_iou(cm.matrix) == pytest.approx(0.5)
    assert jaccard(cm.matrix) == pytest.approx(0.5)
    p, r = 2 / 3, 2 / 3
    assert f_measure(cm.matrix) == pytest.approx(1.3 * p * r / (0.3 * p + r))


def test_f_measure_pooled_differs_from_per_image_mean():
    truths = [np.array([1, 1, 1, 1]), np.array([1, 0, 0, 0])]
    preds = [np.array([1, 1, 1, 1]), np.array([0, 1, 0, 0])]
    cm = ConfusionMatrix(2)
    for t, p in zip(truths, preds, strict=True):
        cm.update(t, p)
    # pooled: tp 4, fp 1, fn 1 -> P = R = 0.8 -> F = 0.8; per image: 1.0 and 0.0 -> 0.5
    assert f_measure(cm.matrix) == pytest.approx(0.8)
    assert per_image_f_measure(truths, preds) == pytest.approx(0.5)


def test_evaluate_fixed_predictions_exact_miou(tmp_path):
    pal = voc_palette()
    # classes cat (8) and dog (12) configured; a person (15) pixel counts as background; 255 is void
    truth1 = np.array([[0, 0, 8, 8], [0, 15, 8, 255]], dtype=np.uint8)
    pred1 = np.array([[0, 8, 8, 8], [0, 0, 12, 12]], dtype=np.uint8)
    truth2 = np.array([[12, 12, 0, 0], [12, 12, 0, 0]], dtype=np.uint8)
    pred2 = np.array([[12, 12, 12, 0], [8, 12, 0, 0]], dtype=np.uint8)
    pairs = []
    for i, (t, p) in enumerate([(truth1, pred1), (truth2, pred2)]):
        save_png(tmp_path / f"t{i}.png", t, palette=pal)
        save_png(tmp_path / f"p{i}.png", p, palette=pal)
        pairs.append((tmp_path / f"t{i}.png", tmp_path / f"p{i}.png"))
    miou, rows = evaluate_predictions(pairs, ["cat", "dog"], [8, 12])
    # image 1 (void excluded): bg truth {(0,0),(0,1),(1,0),(1,1 person)} -> preds 0,8,0,0; cat truth {(0,2),(0,3),
    # (1,2)} -> 8,8,12. image 2: bg truth 4 px -> 12,0,0,0; dog truth 4 px -> 12,12,8,12.
    # matrix rows bg, cat, dog: bg [6, 1, 1]; cat [0, 2, 1]; dog [0, 1, 3]
    iou_bg = 6 / (8 + 6 - 6)
    iou_cat = 2 / (3 + 4 - 2)
    iou_dog = 3 / (4 + 5 - 3)
    expected = 100 * (iou_bg + iou_cat + iou_dog) / 3
    assert miou == pytest.approx(expected)
    assert [r["class"] for r in rows] == ["background", "cat", "dog"]
    assert rows[1]["iou"] == pytest.approx(100 * iou_cat, abs=1e-4)
    write_scores(miou, rows, tmp_path / "miou.txt", tmp_path / "per_class.csv")
    assert (tmp_path / "miou.txt").read_text() == f"{expected:.2f}\n"
    assert "cat,8," in (tmp_path / "per_class.csv").read_text()


def test_label_jaccard_per_image_mean_by_hand(tmp_path):
    pal = voc_palette()
    truth_a = np.array([[8, 8, 0, 0], [8, 255, 15, 0]], dtype=np.uint8)  # cat (8), a person (15), void
    label_a = np.array([[8, 0, 8, 0], [8, 8, 8, 0]], dtype=np.uint8)
    truth_b = np.zeros((2, 4), dtype=np.uint8)  # no cat at all, and none labelled: counts as 1
    for name, arr in {"ta": truth_a, "la": label_a, "tb": truth_b, "lb": truth_b}.items():
        save_png(tmp_path / f"{name}.png", arr, palette=pal)
    # image a, void ignored: truth cat at 3 px, label cat at 4 of the 7 others, 2 shared -> 2 / 5
    got = label_jaccard([(tmp_path / "la.png", tmp_path / "ta.png", 8), (tmp_path / "lb.png", tmp_path / "tb.png", 8)])
    assert got == {8: pytest.approx((2 / 5 + 1.0) / 2)}
