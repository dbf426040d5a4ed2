"""The paper's loss-accuracy study (Sec. 3.2, Table 1, Fig. 1): does a lower regularized loss mean a better
segmentation?

On a set with true masks, the single-class U-Net is trained with ground truth (cross-entropy); before the first
epoch and after each one, its output on the whole set is scored by its mean sparse-CRF loss, mean dense-CRF loss
and mean per-image F-measure. The ground truth's own losses are recorded too (the paper's asterisks).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from rlseg.data import load_images, load_label_masks, to_float
from rlseg.inference import predict
from rlseg.ingest import read_pairs, used_paths
from rlseg.io import write_csv
from rlseg.losses import normalise_colours, sparse_crf_loss
from rlseg.metrics import per_image_f_measure
from rlseg.models import build_unet
from rlseg.runtime import resolve_device
from rlseg.schedule import SingleClassConfig, single_class_settings, stage_plans
from rlseg.train import fit

log = logging.getLogger(__name__)

__all__ = ["loss_accuracy_study", "run_loss_study", "segmentation_losses"]


def dense_crf_loss(
    probs: torch.Tensor,
    image: torch.Tensor,
    sigma_rgb: float = 0.15,
    sigma_xy: float = 0.1,
    max_pixels: int = 4096,
) -> torch.Tensor:
    """Dense-CRF loss (Krähenbühl & Koltun kernel), for the paper's Table 1 study, not for training.

    Potts over all pixel pairs, relaxed as sum_pq k_pq |x_p - x_q| / |P|^2 with the Gaussian kernel
    k_pq = exp(-||C_p - C_q||^2 / 2 sigma_rgb^2 - ||p - q||^2 / 2 sigma_xy^2); colours normalised as in
    :func:`rlseg.losses.sparse_crf_loss`, positions in units of the image side. Exact: images with more than
    ``max_pixels`` pixels are area-downsampled to fit first.
    """
    b, _, h, w = probs.shape
    scale = min(1.0, math.sqrt(max_pixels / (h * w)))
    if scale < 1.0:
        size = (max(1, int(h * scale)), max(1, int(w * scale)))
        probs = F.interpolate(probs, size=size, mode="area")
        image = F.interpolate(image, size=size, mode="area")
        h, w = size
    c = normalise_colours(image).flatten(2).transpose(1, 2)  # B, N, 3
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=probs.dtype, device=probs.device) / max(h, w),
        torch.arange(w, dtype=probs.dtype, device=probs.device) / max(h, w),
        indexing="ij",
    )
    pos = torch.stack([ys.flatten(), xs.flatten()], 1)
    k_xy = torch.cdist(pos, pos).pow(2) / (2 * sigma_xy**2)
    x = probs[:, 1].flatten(1)
    total = probs.new_zeros(())
    for i in range(b):
        k = torch.exp(-torch.cdist(c[i], c[i]).pow(2) / (2 * sigma_rgb**2) - k_xy)
        total = total + (k * (x[i, :, None] - x[i, None, :]).abs()).mean()
    return total / b


@torch.no_grad()
def segmentation_losses(probs: torch.Tensor, images: torch.Tensor, sigma: float, batch_size: int = 16
                        ) -> tuple[float, float]:
    """Mean sparse-CRF and dense-CRF loss of object probabilities [N, H, W] on uint8 images [N, 3, H, W]."""
    sparse, dense = [], []
    for i in range(0, len(probs), batch_size):
        p = probs[i : i + batch_size].float()
        two = torch.stack([1 - p, p], 1)
        x = to_float(images[i : i + batch_size])
        sparse.append(float(sparse_crf_loss(two, x, sigma)) * len(p))
        dense.append(float(dense_crf_loss(two, x, sigma_rgb=sigma)) * len(p))
    return sum(sparse) / len(probs), sum(dense) / len(probs)


def _f_measure(probs: torch.Tensor, masks: torch.Tensor) -> float:
    truths, preds = [], []
    for p, m in zip(probs, masks, strict=True):
        keep = m != 255
        truths.append(m[keep].numpy())
        preds.append((p[keep] > 0.5).numpy().astype(np.uint8))
    return per_image_f_measure(truths, preds)


def loss_accuracy_study(
    name: str,
    images: torch.Tensor,
    masks: torch.Tensor,
    cfg: SingleClassConfig,
    steps: int,
    workdir: str | os.PathLike,
    sigma: float = 0.15,
    device: str = "auto",
) -> list[dict]:
    """Train with ground truth for ``steps`` epochs and score the output before and after each.

    Args:
        name: the set's name, written in every row.
        images: uint8 [N, 3, H, W]; masks: 0/1 (255 void) [N, H, W] at the same size.
        cfg: the U-Net's settings (its loss settings are unused: supervision is cross-entropy).
        workdir: where the training checkpoint lives while it runs (the study resumes from it).
        sigma: the colour-edge sigma both losses use (Eq. 2).
    Returns:
        Rows {set, step, sparse_crf, dense_crf, f_measure}: step 0..``steps`` and a last row with step ``truth``.
    """
    dev = resolve_device(device)
    cfg = replace(cfg, supervision="gt", normal_epochs=steps, resolutions=[int(images.shape[-1])])
    torch.manual_seed(cfg.seed)
    model = build_unet(cfg.arch)
    rows: list[dict] = []

    def score(step: int | str, probs: torch.Tensor) -> None:
        sparse, dense = segmentation_losses(probs, images, sigma)
        rows.append({"set": name, "step": step, "sparse_crf": sparse, "dense_crf": dense,
                     "f_measure": _f_measure(probs, masks)})
        log.info("%s step %s: sparse-CRF %.5f, dense-CRF %.5f, F-measure %.4f", name, step, sparse, dense,
                 rows[-1]["f_measure"])

    score(0, predict(model, images, device=dev))
    progress = tqdm(total=steps, desc=f"loss study {name}", mininterval=10, leave=False)

    def on_epoch(row: dict) -> None:
        score(row["epoch"], predict(model, images, device=dev))
        progress.update()

    checkpoint = Path(workdir) / f"checkpoint_{name}.pt"
    checkpoint.unlink(missing_ok=True)  # the scores of earlier steps are not in a checkpoint: always from step 0
    run_config = {"study": name, "single_class": str(cfg), "n": len(images)}
    fit(model, images, stage_plans(cfg, "normal"), cfg, checkpoint, run_config, masks=masks, device=dev,
        on_epoch=on_epoch)
    progress.close()
    checkpoint.unlink(missing_ok=True)
    score("truth", torch.where(masks == 255, 0, masks).float())
    return rows


def run_loss_study(
    truth_pairs: str | os.PathLike,
    manifests: dict[str, str | os.PathLike],
    ids: dict[str, int],
    settings: dict,
    single_class: dict,
    out_csv: str | os.PathLike,
    device: str = "auto",
) -> list[dict]:
    """The study on each class's used training images that have true masks (one set per class; at most
    ``settings["max_images"]`` each, the first by path), at ``settings["resolution"]`` px; rows to ``out_csv``."""
    cfg, _ = single_class_settings(single_class)
    truth_of = dict(read_pairs([str(truth_pairs)]))
    res = settings["resolution"]
    rows: list[dict] = []
    for cls, manifest in manifests.items():
        paths = sorted(p for p in used_paths(manifest) if p in truth_of)[: settings["max_images"]]
        if len(paths) < 2:
            log.warning("loss study: class %s has %d images with true masks; skipped", cls, len(paths))
            continue
        labels = load_label_masks([truth_of[p] for p in paths], res)
        masks = torch.where(labels == 255, 255, (labels == ids[cls]).to(torch.uint8))
        rows += loss_accuracy_study(cls, load_images(paths, res), masks, cfg, settings["steps"],
                                    Path(out_csv).parent, sigma=settings["sigma"], device=device)
    if not rows:
        raise ValueError(f"loss study: no class has two or more training images with true masks in {truth_pairs}")
    write_csv(out_csv, rows, ["set", "step", "sparse_crf", "dense_crf", "f_measure"])
    return rows
