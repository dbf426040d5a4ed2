"""Training the single-class U-Net with the regularized loss (or, for comparison, with ground truth).

Stages (Sec. 3.4): annealing (sigma rising, all weights 1), normal (lambda_reg = 100), the resolution
transfer (normal stage at the next resolution, starting from the previous weights), and the negative stage
(normal epochs over the class's images and its negatives, lambda_neg = 2). The CLI, the Snakemake rules and
the benchmarks all call :func:`train_single_class`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch
from tqdm import tqdm

from rlseg.checkpoint import load_weights, resume, save_checkpoint, save_weights
from rlseg.data import to_float
from rlseg.feature_cache import FeatureCache, batch_images, epoch_batches
from rlseg.inference import predict
from rlseg.losses import gt_loss
from rlseg.metrics import ConfusionMatrix, f_measure, jaccard
from rlseg.models import SingleClassUNet, build_unet
from rlseg.regularized_loss import RegularizedLoss
from rlseg.runtime import NonFiniteLossError, autocast, resolve_device
from rlseg.schedule import EpochPlan, SingleClassConfig, epoch_order, negative_sample, stage_plans, stage_sequence

log = logging.getLogger(__name__)

# SingleClassConfig and stage_plans are schedule's; here too, as what a caller of fit needs with it
__all__ = ["SingleClassConfig", "fit", "stage_plans", "train_single_class"]



def _forward(model: SingleClassUNet, x: torch.Tensor, cache: FeatureCache | None, keys: list | None,
             device: torch.device) -> torch.Tensor:
    """Object/background probabilities of a batch, in float32; the frozen encoder's features from ``cache``
    (``keys``: the batch's cache keys, needed with a cache only)."""
    with autocast(device):
        probs = model(x) if cache is None else model.decode(cache.features(model, x, keys))
    return probs.float()


def _batch_loss(cfg: SingleClassConfig, loss_fn: RegularizedLoss, probs: torch.Tensor, x: torch.Tensor,
                n_pos: int, masks: torch.Tensor | None, neg_flags: torch.Tensor | None,
                centres: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The batch's loss (regularized, or cross-entropy on true masks) and its terms for the history."""
    if cfg.supervision == "gt":
        total = gt_loss(probs[:n_pos], masks)
        return total, {"cross_entropy": float(total.detach())}
    return loss_fn(probs, x, neg_flags, centres)


def _batch_centres(centres: torch.Tensor | None, pos: torch.Tensor, flips: torch.Tensor) -> torch.Tensor | None:
    """The batch's positives' centre points, mirrored with their images."""
    if centres is None:
        return None
    c = centres[pos].clone()
    c[:, 1] = torch.where(flips, 1.0 - c[:, 1], c[:, 1])
    return c


def _epoch_row(plan: EpochPlan, epoch: int, sums: dict[str, float], batches: int, cm: ConfusionMatrix | None,
               t0: float) -> dict:
    row = {"stage": plan.stage, "epoch": epoch + 1, "sigma": round(plan.sigma, 6),
           **{k: v / max(batches, 1) for k, v in sums.items()}}
    if cm is not None:
        row["f_measure"] = f_measure(cm.matrix)
        row["jaccard"] = jaccard(cm.matrix)
    row["seconds"] = round(time.time() - t0, 3)
    return row


def fit(
    model: SingleClassUNet,
    images: torch.Tensor,
    plans: list[EpochPlan],
    cfg: SingleClassConfig,
    checkpoint: str | Path,
    run_config: dict,
    negatives: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    device: torch.device | None = None,
    tag: int = 0,
    on_epoch: Callable[[dict], None] | None = None,
    centres: torch.Tensor | None = None,
) -> list[dict]:
    """Train ``model`` through ``plans``, checkpointing after every epoch and resuming from ``checkpoint``.

    Args:
        images: uint8 [N, 3, H, W] positives.
        centres: [N, 2] where each positive's centre box goes (row, column as fractions of the image), or None for
            the middle (the paper).
        negatives: uint8 [M, 3, H, W] images pushed to background in epochs whose plan says so.
        masks: 0/1 (255 void) [N, H, W]: true masks, for monitoring (or the loss when ``supervision == "gt"``).
        run_config: everything that defines this run; a checkpoint made under another one is refused.
    Returns:
        One row per epoch (stage, sigma, each loss term, F-measure/Jaccard where masks exist, seconds).
    """
    device = device or resolve_device()
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    # the fused kernel: one pass over all parameters instead of one per tensor
    optimizer = torch.optim.Adam(params, lr=cfg.lr, fused=device.type in ("cpu", "cuda"))
    # the scheduler's epoch count is the plan index, so a resumed run picks up the same learning rate
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: plans[min(e, len(plans) - 1)].lr_scale)
    start, rows = resume(checkpoint, run_config, model, optimizer, scheduler)
    if cfg.supervision == "gt" and masks is None:
        raise ValueError("supervision 'gt' needs true masks")
    # only an encoder that gives each image the same features every epoch can be cached
    cache = FeatureCache(cfg.feature_cache_mb << 20) if model.fixed_encoder and cfg.feature_cache_mb > 0 else None
    n_pos = images.shape[0]
    for epoch in tqdm(range(start, len(plans)), desc="epochs", initial=start, total=len(plans), mininterval=10,
                      leave=False):
        plan = plans[epoch]
        t0 = time.time()
        if cache is not None and epoch == start:
            cache.fill(model, images, cfg.flip, device, cfg.batch_size)  # paid for by this run's first epoch
        if plan.restart:
            # the reference builds a new Adam here: no moments carried over from another sigma or weighting
            # (carried second moments of 1x-weighted gradients would let the 100x ones take steps far above lr)
            optimizer.state.clear()
        loss_fn = cfg.loss(plan.weights)
        pool_neg = negatives if (plan.negatives and negatives is not None and len(negatives)) else None
        # epoch position n_pos + j is negative neg_ids[j]: the cache keys stay the negatives' own indices
        neg_ids = (negative_sample(cfg.seed, tag, epoch, n_pos, len(pool_neg), cfg.negative_ratio)
                   if pool_neg is not None else torch.empty(0, dtype=torch.long))
        order, flips = epoch_order(cfg.seed, tag, epoch, n_pos + len(neg_ids), cfg.flip)
        model.train()
        sums: dict[str, float] = {}
        cm = ConfusionMatrix(2) if masks is not None else None
        batches = epoch_batches(order, flips, n_pos, neg_ids, cfg.batch_size)
        for b, batch in enumerate(batches):
            x_u8, neg_flags = batch_images(images, pool_neg, batch)
            x = to_float(x_u8, device)
            probs = _forward(model, x, cache, batch.keys(n_pos) if cache is not None else None, device)
            m = None
            if masks is not None:
                m = masks[batch.pos]
                m = torch.where(flips[batch.pos].view(-1, 1, 1), m.flip(-1), m).to(device)
            total, terms = _batch_loss(cfg, loss_fn, probs, x, len(batch.pos), m,
                                       neg_flags.to(device) if pool_neg is not None else None,
                                       _batch_centres(centres, batch.pos, flips[batch.pos]))
            if not torch.isfinite(total):
                raise NonFiniteLossError(
                    f"non-finite loss at stage {plan.stage}, epoch {epoch + 1}, batch {b + 1}: "
                    f"total={float(total.detach())}, terms={terms}; the last good checkpoint is {checkpoint}"
                )
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            sums["loss"] = sums.get("loss", 0.0) + float(total.detach())
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            if cm is not None and len(batch.pos):
                cm.update(m, probs[: len(batch.pos)].argmax(1).detach())
        scheduler.step()
        rows.append(_epoch_row(plan, epoch, sums, len(batches), cm, t0))
        save_checkpoint(checkpoint, model, optimizer, scheduler, epoch, run_config, extra={"rows": rows})
        if on_epoch:
            on_epoch(rows[-1])
    return rows



def _log_row(row: dict) -> None:
    terms = ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float) and k not in ("seconds",))
    log.info("%s epoch %d: %s (%.1fs)", row["stage"], row["epoch"], terms, row["seconds"])


def train_single_class(
    cfg: SingleClassConfig,
    load: Callable[[int], tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]],
    outdir: str | Path,
    init_weights: str | Path | None = None,
    device: str = "auto",
    with_negatives: bool = False,
    on_epoch: Callable[[dict], None] | None = _log_row,
    centres: torch.Tensor | None = None,
) -> dict:
    """Train one class through all its stages and save a model per resolution under ``outdir``.

    Args:
        load: ``load(resolution) -> (images, negatives or None, masks or None)`` as uint8 tensors; called once
            per resolution, so each image is decoded and resized once per resolution (with ``vol_target`` "auto",
            the last resolution's first).
        init_weights: start the normal stage from these weights (same architecture) and skip annealing.
        with_negatives: run the negative stage after the last resolution.
        centres: [N, 2] each image's centre point for the positional term (:func:`fit`), or None: the middle.
    Returns:
        {"models": {resolution: path}, "final": path, "history": rows, "seconds": float}.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    torch.manual_seed(cfg.seed)
    model = build_unet(cfg.arch, cpu_kernels=cfg.cpu_kernels)
    if init_weights is not None:
        load_weights(init_weights, model)
    if cfg.center == "imagenet" and centres is None:
        raise ValueError("center 'imagenet' places each photo's centre box: give centres (rlseg.cam.centre_points)")
    if cfg.vol_target == "auto" and init_weights is None:
        raise ValueError("vol_target 'auto' is estimated with a starting model: give init_weights")
    t0 = time.time()
    history: list[dict] = []
    models: dict[int, str] = {}
    final = None
    loaded: dict[int, tuple] = {}
    if cfg.vol_target == "auto":
        # the object size the class's photos show to the start, before any training (the same on a resumed run),
        # at the last resolution: the sharpest view of them (ECSSD's train fold: 0.36 at 128 px, 0.31 at 256, its
        # objects 0.23)
        last = cfg.resolutions[-1]
        loaded[last] = load(last)
        fraction = float(predict(model, loaded[last][0], cfg.batch_size, dev).mean())
        floor = 0.0 if cfg.vol_minimum == "auto" else cfg.vol_minimum
        cfg = replace(cfg, vol_target=round(max(fraction, floor), 4))
        log.info("vol_target auto: %.4f, floor %.4f (the start's mean object probability %.4f on %d images at %d px)",
                 cfg.vol_target, cfg.floor, fraction, len(loaded[last][0]), last)
    # the cache size and the CPU kernels are not part of what a checkpoint must match: they change speed and float
    # rounding, not the run
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("feature_cache_mb", "cpu_kernels")}
    base = {"single_class": settings, "init": str(init_weights) if init_weights else "anneal"}
    for ri, res in enumerate(cfg.resolutions):
        images, negatives, masks = loaded.pop(res) if res in loaded else load(res)
        stages = stage_sequence(cfg, ri, init_weights is not None, with_negatives)
        plans = [p for s in stages for p in stage_plans(cfg, s)]
        run_config = {**base, "resolution": res, "stages": stages}
        ckpt = outdir / f"checkpoint_{res}.pt"
        rows = fit(model, images, plans, cfg, ckpt, run_config, negatives=negatives, masks=masks, device=dev,
                   tag=ri, on_epoch=on_epoch, centres=centres)
        for r in rows:
            r["resolution"] = res
        history += rows
        path = outdir / f"model_{res}.pt"
        save_weights(path, model, meta={"resolution": res, "stages": stages, "vol_target": cfg.vol_target})
        models[res] = str(path)
        final = str(path)
    for res in cfg.resolutions:
        (outdir / f"checkpoint_{res}.pt").unlink(missing_ok=True)
    return {"models": models, "final": final, "history": history, "seconds": time.time() - t0}
