"""Figures of a run for Snakemake's report, drawn with matplotlib from the files the workflow writes.

Plots are SVG with their text kept as text, so what a figure states can be read back and checked; the gallery,
made of photographs, is PNG.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rlseg.evaluate import read_confusion, read_per_class_iou
from rlseg.imageio import overlay, voc_palette_array
from rlseg.io import atomic_path, read_csv

__all__ = [
    "GalleryRow",
    "confusion_heatmap",
    "gallery",
    "iou_bars",
    "loss_accuracy_scatter",
    "manifest_summary",
    "pearson_r",
    "skip_kind",
    "training_curves",
]

# the columns of a training history that are not a loss: every other column (the total, each term of
# rlseg.regularized_loss.TERMS, cross_entropy) is plotted as one
NOT_LOSS = ("stage", "epoch", "sigma", "f_measure", "jaccard", "seconds", "resolution", "lr")


def _pyplot():
    # matplotlib: the figure jobs alone pay its import, and choose its backend before pyplot loads
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: the test reads the numbers back
    matplotlib.rcParams["svg.hashsalt"] = "rlseg"  # same figure -> same bytes
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | os.PathLike, dpi: int = 100) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Date": None} if out.suffix == ".svg" else None  # no timestamp: a rerun gives the same bytes
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip("."), bbox_inches="tight", metadata=metadata, dpi=dpi)
    _pyplot().close(fig)


def iou_bars(per_class: str | os.PathLike, miou: float, out: str | os.PathLike,
             upper_bound: str | os.PathLike | None = None, upper_bound_miou: float | None = None) -> dict:
    """Per-class IoU bars of the pipeline, next to the upper bound's where it exists; each bar labelled with its
    value, each mIoU in the title. Returns what was drawn: {series: {class: IoU}} and the mIoUs."""
    plt = _pyplot()
    series = {"pipeline": read_per_class_iou(per_class)}
    mious = {"pipeline": miou}
    if upper_bound is not None:
        series["upper bound"] = read_per_class_iou(upper_bound)
        mious["upper bound"] = upper_bound_miou
    names = list(series["pipeline"])
    x = np.arange(len(names))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(names) * len(series)), 4.2))
    for k, (label, values) in enumerate(series.items()):
        heights = [values.get(n, float("nan")) for n in names]
        offset = (k - (len(series) - 1) / 2) * width
        bars = ax.bar(x + offset, heights, width, label=f"{label} (mIoU {mious[label]:.2f})")
        ax.bar_label(bars, labels=[f"{h:.1f}" for h in heights], fontsize=7, rotation=90, padding=2)
    ax.set_xticks(x, names, rotation=35, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 112)
    ax.set_title(" · ".join(f"{label} mIoU {m:.2f}" for label, m in mious.items()))
    ax.legend(loc="upper right", fontsize=8)
    _save(fig, out)
    return {"series": series, "miou": mious}


def training_curves(history: str | os.PathLike, out: str | os.PathLike, title: str) -> list[str]:
    """Each loss term, sigma and (where true masks were monitored) F-measure and Jaccard over the epochs of one
    single-class training, each stage's start marked. Returns the stages in order, as ``stage@resolution``."""
    plt = _pyplot()
    rows = read_csv(history)
    if not rows:
        raise ValueError(f"{history}: no epochs recorded")
    x = np.arange(1, len(rows) + 1)

    def column(key: str) -> np.ndarray:
        return np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows])

    accuracy = [k for k in ("f_measure", "jaccard") if k in rows[0] and not np.isnan(column(k)).all()]
    panels = 2 + bool(accuracy)
    fig, axes = plt.subplots(panels, 1, figsize=(8, 2.4 * panels), sharex=True)
    for key in (k for k in rows[0] if k not in NOT_LOSS):
        if not np.isnan(column(key)).all():
            values = column(key)
            axes[0].plot(x, np.where(values > 0, values, np.nan), label=key, lw=1.2 if key != "loss" else 2,
                         gid=f"loss-{key}")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("loss (per batch)")
    axes[0].legend(fontsize=7, ncol=3)
    axes[1].plot(x, column("sigma"), color="black")
    axes[1].set_ylabel("sigma")
    if accuracy:
        for key in accuracy:
            axes[2].plot(x, column(key), label=key.replace("_", "-"))
        axes[2].set_ylim(0, 1)
        axes[2].set_ylabel("on true masks")
        axes[2].legend(fontsize=7)
    stages = []
    for i, r in enumerate(rows):
        name = f"{r['stage']}@{r.get('resolution', '')}".rstrip("@")
        if not stages or stages[-1] != name:
            stages.append(name)
            for ax in axes:
                ax.axvline(i + 0.5, color="grey", ls="--", lw=0.8)
            axes[0].annotate(name, (i + 0.5, 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                             xytext=(2, -10), textcoords="offset points")
    axes[-1].set_xlabel("epoch (all stages in order)")
    axes[0].set_title(title)
    _save(fig, out)
    return stages


def confusion_heatmap(confusion_csv: str | os.PathLike, out: str | os.PathLike, title: str) -> np.ndarray:
    """The evaluation's confusion matrix, each row normalised to the true class's pixels, as a heat map with the
    percentages written in. Returns the normalised matrix."""
    plt = _pyplot()
    names, matrix = read_confusion(confusion_csv)
    totals = matrix.sum(1, keepdims=True)
    norm = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    side = max(4.5, 0.55 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    im = ax.imshow(norm * 100, cmap="Blues", vmin=0, vmax=100)
    for i in range(len(names)):
        for j in range(len(names)):
            v = norm[i, j] * 100
            if v >= 0.5:
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if v > 60 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="% of the true class's pixels")
    _save(fig, out)
    return norm


def skip_kind(reason: str) -> str:
    """A manifest's skip reason without its details (sizes, the twin's path): what the summary counts by."""
    if reason.startswith("near-duplicate under"):
        return "near-duplicate under another class"
    for kind in ("near-duplicate", "duplicate"):
        if reason.startswith(kind):
            return kind
    return reason.split(" (")[0].split(":")[0].strip() or "skipped"


def manifest_summary(manifests: Mapping[str, str | os.PathLike], out: str | os.PathLike) -> dict[str, Counter]:
    """Per class, the collected images used and skipped by reason, as stacked bars with the counts written in.
    Returns {class: Counter({"used": n, <reason>: n, ...})}."""
    plt = _pyplot()
    counts = {}
    for cls, path in manifests.items():
        rows = read_csv(path)
        counts[cls] = Counter("used" if r["status"] == "used" else skip_kind(r.get("reason") or "") for r in rows)
    kinds = ["used", *sorted({k for c in counts.values() for k in c} - {"used"})]
    names = list(counts)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.6))
    left = np.zeros(len(names))
    for kind in kinds:
        widths = np.array([counts[c].get(kind, 0) for c in names], dtype=float)
        bars = ax.barh(names, widths, left=left, label=kind)
        ax.bar_label(bars, labels=[str(int(w)) if w else "" for w in widths], label_type="center", fontsize=7)
        left += widths
    ax.invert_yaxis()
    ax.set_xlabel("images collected")
    ax.set_title(f"images per class: {int(sum(c['used'] for c in counts.values()))} used, "
                 f"{int(sum(sum(c.values()) - c['used'] for c in counts.values()))} skipped")
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, out)
    return counts


@dataclass
class GalleryRow:
    """One gallery row: the photograph, the class CNN's label, the multi-class prediction and the true mask (label
    ids, each at the photograph's size; ``truth`` None where no mask exists)."""

    title: str
    image: Image.Image
    pseudo_label: np.ndarray
    prediction: np.ndarray
    truth: np.ndarray | None


def gallery(rows: Sequence[GalleryRow], out: str | os.PathLike, title: str, height: int = 160) -> None:
    """A grid: image | pseudo label (drawn over the image) | multi-class prediction | ground truth, one row per
    sample, each cell ``height`` px high."""
    plt = _pyplot()
    pal = voc_palette_array()
    heads = ["image", "pseudo label (class CNN)", "multi-class prediction", "ground truth"]
    fig, axes = plt.subplots(len(rows), 4, figsize=(4 * height / 60, len(rows) * height / 80 + 0.6), squeeze=False)
    for r, row in enumerate(rows):
        w, h = row.image.size
        size = (max(1, round(w * height / h)), height)
        cells = [row.image, overlay(row.image, row.pseudo_label, pal), overlay(row.image, row.prediction, pal),
                 overlay(row.image, row.truth, pal) if row.truth is not None else None]
        for c, cell in enumerate(cells):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if cell is None:
                ax.text(0.5, 0.5, "no mask", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(cell.resize(size, Image.BILINEAR))
            if r == 0:
                ax.set_title(heads[c], fontsize=9)
        axes[r, 0].set_ylabel(row.title, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_size_inches()[1]))  # room for the title above the heads
    _save(fig, out, dpi=72)


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation coefficient of two equally long sequences (nan when either is constant)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def loss_accuracy_scatter(study_csv: str | os.PathLike, out: str | os.PathLike) -> dict[str, dict[str, float]]:
    """The paper's Fig. 1: per set, each training step's mean loss (linearly normalised to 0-1 per set) against its
    F-measure, sparse-CRF left and dense-CRF right, the ground truth's own loss as a star; Pearson r per set in
    the legend (its Table 1). Returns {loss: {set: r}}."""
    plt = _pyplot()
    rows = read_csv(study_csv)
    sets = list(dict.fromkeys(r["set"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    table: dict[str, dict[str, float]] = {}
    for ax, loss in zip(axes, ("sparse_crf", "dense_crf"), strict=True):
        table[loss] = {}
        for k, name in enumerate(sets):
            steps = [r for r in rows if r["set"] == name and r["step"] != "truth"]
            truth = [r for r in rows if r["set"] == name and r["step"] == "truth"]
            values = np.array([float(r[loss]) for r in steps + truth])
            lo, hi = values.min(), values.max()
            norm = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
            f = [float(r["f_measure"]) for r in steps]
            r_value = pearson_r(values[: len(steps)], f)
            table[loss][name] = r_value
            colour = f"C{k % 10}"
            ax.scatter(norm[: len(steps)], f, s=14, color=colour, label=f"{name} (r = {r_value:.2f})")
            if truth:
                ax.scatter(norm[len(steps):], [float(r["f_measure"]) for r in truth], marker="*", s=120,
                           color=colour, edgecolor="black")
        ax.set_xlabel(f"{loss.replace('_', '-').replace('crf', 'CRF')} loss (normalised per set)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("F-measure")
    fig.suptitle("regularized loss against accuracy along training with ground truth (stars: the ground truth)")
    _save(fig, out)
    return table
