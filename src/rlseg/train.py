"""Training the single-class U-Net with the regularized loss (or, for comparison, with ground truth).

Stages (Sec. 3.4): annealing (sigma rising, all weights 1), normal (lambda_reg = 100), the resolution
transfer (normal stage at the next resolution, starting from the previous weights), and the negative stage
(normal epochs over the class's images and its negatives, lambda_neg = 2). The CLI, the Snakemake rules and
the benchmarks all call :func:`train_single_class`.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from rlseg.checkpoint import load_weights, resume, save_checkpoint, save_weights
from rlseg.config import defaults
from rlseg.data import to_float
from rlseg.losses import LossWeights, RegularizedLoss, anneal_sigmas, gt_loss
from rlseg.metrics import ConfusionMatrix, f_measure, jaccard
from rlseg.models import SingleClassUNet, build_unet
from rlseg.runtime import NonFiniteLossError, autocast, resolve_device

log = logging.getLogger(__name__)

__all__ = [
    "EpochPlan",
    "FeatureCache",
    "SingleClassConfig",
    "fit",
    "negative_sample",
    "predict",
    "stage_plans",
    "train_single_class",
]


_SC = defaults("single_class")


@dataclass
class SingleClassConfig:
    """Every setting of single-class training; the defaults are the schema's (the paper's reference implementation),
    described there (``config.schema.yaml``)."""

    encoder: str = _SC["encoder"]
    decoder: str = _SC["decoder"]
    decoder_channels: list[int] = field(default_factory=lambda: copy.deepcopy(_SC["decoder_channels"]))
    freeze_encoder: bool = _SC["freeze_encoder"]
    # "train": the reference's frozen encoder normalises with batch statistics
    encoder_batchnorm: str = _SC["encoder_batchnorm"]
    encoder_head: bool = _SC["encoder_head"]
    encoder_features: str = _SC["encoder_features"]
    decoder_convs: int | list[int] | None = _SC["decoder_convs"]  # None: the decoder's own (LIGHT_DECODER_CONVS)
    resolutions: list[int] = field(default_factory=lambda: copy.deepcopy(_SC["resolutions"]))
    anneal_epochs: int = _SC["anneal_epochs"]
    sigma_start: float = _SC["sigma_start"]
    sigma_end: float = _SC["sigma_end"]
    normal_epochs: int = _SC["normal_epochs"]
    transfer_epochs: int = _SC["transfer_epochs"]
    negative_epochs: int = _SC["negative_epochs"]
    lambda_reg: float = _SC["lambda_reg"]
    lambda_reg_anneal: float = _SC["lambda_reg_anneal"]
    lambda_vol_anneal: float = _SC["lambda_vol_anneal"]
    lambda_pos_anneal: float = _SC["lambda_pos_anneal"]
    lambda_vol: float = _SC["lambda_vol"]
    lambda_pos: float = _SC["lambda_pos"]
    lambda_neg: float = _SC["lambda_neg"]
    negatives_in_positional: bool = _SC["negatives_in_positional"]
    negative_ratio: float = _SC["negative_ratio"]  # negatives per own image, drawn afresh; 0: all, every epoch
    lambda_s: float = _SC["lambda_s"]
    vol_target: float = _SC["vol_target"]
    vol_minimum: float = _SC["vol_minimum"]
    border_width: int = _SC["border_width"]
    diagonal: bool = _SC["diagonal"]
    loss_form: str = _SC["loss_form"]  # or "printed": the paper's equations as printed
    supervision: str = _SC["supervision"]  # or "gt": cross-entropy on true masks
    batch_size: int = _SC["batch_size"]
    lr: float = _SC["lr"]
    # True is the reference's training loop: each annealing step and each stage is its own train_normal call, with
    # a fresh Adam and a StepLR (x0.1 every 100 epochs) that only a stage longer than 100 epochs reaches. The paper
    # prints neither; one Adam through all stages (False) measured better here (README), so it is the default.
    optimizer_restart: bool = _SC["optimizer_restart"]
    lr_step_epochs: int = _SC["lr_step_epochs"]
    lr_gamma: float = _SC["lr_gamma"]
    flip: bool = _SC["flip"]
    seed: int = _SC["seed"]
    feature_cache_mb: int = _SC["feature_cache_mb"]  # frozen encoder's features; moves results by rounding only

    @classmethod
    def from_dict(cls, d: dict) -> SingleClassConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown single-class setting(s): {sorted(unknown)}")
        return cls(**d)

    @property
    def arch(self) -> dict:
        return {"encoder": self.encoder, "decoder": self.decoder, "decoder_channels": list(self.decoder_channels),
                "freeze_encoder": self.freeze_encoder, "encoder_batchnorm": self.encoder_batchnorm,
                "encoder_head": self.encoder_head,
                "encoder_features": self.encoder_features,
                "decoder_convs": self.decoder_convs}

    def loss(self, weights: LossWeights) -> RegularizedLoss:
        printed = self.loss_form == "printed"
        return RegularizedLoss(
            weights=weights, diagonal=self.diagonal, vol_target=self.vol_target, vol_minimum=self.vol_minimum,
            lambda_s=self.lambda_s, small_reduction="sum" if printed else "mean", border_width=self.border_width,
            center_half=None if printed else 2, center_size=3, border_mode="band" if printed else "sides",
            negative_printed=False, negatives_in_positional=self.negatives_in_positional,
        )


@dataclass
class EpochPlan:
    """What one epoch does: its stage, sigma and loss weights, whether negatives join, whether a fresh optimizer
    starts with it, and its learning rate as a multiple of ``lr``."""

    stage: str
    sigma: float
    weights: LossWeights
    negatives: bool = False
    restart: bool = False
    lr_scale: float = 1.0


def stage_plans(cfg: SingleClassConfig, stage: str) -> list[EpochPlan]:
    """Epoch plans of a stage: ``anneal``, ``normal``, ``transfer`` or ``negative``.

    With ``cfg.optimizer_restart`` (the reference) a fresh Adam starts every annealing epoch (one call per sigma
    step there) and the first epoch of every other stage, and the learning rate falls by ``lr_gamma`` every
    ``lr_step_epochs`` epochs of a stage.
    """
    normal = LossWeights(reg=cfg.lambda_reg, vol=cfg.lambda_vol, pos=cfg.lambda_pos, neg=cfg.lambda_neg,
                         sigma=cfg.sigma_end)
    if stage == "anneal":
        sigmas = anneal_sigmas(cfg.anneal_epochs, cfg.sigma_start, cfg.sigma_end, printed=cfg.loss_form == "printed")
        return [EpochPlan("anneal", s, LossWeights(reg=cfg.lambda_reg_anneal, vol=cfg.lambda_vol_anneal,
                                                   pos=cfg.lambda_pos_anneal, neg=cfg.lambda_neg, sigma=s),
                          restart=cfg.optimizer_restart)
                for s in sigmas]
    if stage in ("normal", "transfer", "negative"):
        n = {"normal": cfg.normal_epochs, "transfer": cfg.transfer_epochs, "negative": cfg.negative_epochs}[stage]
        return [EpochPlan(stage, cfg.sigma_end, normal, negatives=stage == "negative",
                          restart=cfg.optimizer_restart and i == 0,
                          lr_scale=cfg.lr_gamma ** (i // cfg.lr_step_epochs) if cfg.optimizer_restart else 1.0)
                for i in range(n)]
    raise ValueError(f"unknown stage {stage!r}")


def _epoch_order(seed: int, tag: int, epoch: int, n: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # A generator per epoch makes the data order a pure function of (seed, stage, epoch): a resumed run sees
    # exactly the batches an uninterrupted one would.
    g = torch.Generator().manual_seed(seed * 1_000_003 + tag * 10_007 + epoch)
    order = torch.randperm(n, generator=g)
    flips = torch.rand(n, generator=g) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return order, flips


def negative_sample(seed: int, tag: int, epoch: int, n_pos: int, n_neg: int, ratio: float) -> torch.Tensor:
    """Indices of the negatives one negative epoch uses: ``ceil(ratio * n_pos)`` of the ``n_neg`` drawn without
    replacement (all of them when ``ratio`` is 0 or asks for more), sorted. A pure function of (seed, stage,
    epoch), like the data order, so a resumed run draws the same sample; a fresh sample every epoch."""
    k = n_neg if ratio <= 0 else min(n_neg, math.ceil(ratio * n_pos))
    if k == n_neg:
        return torch.arange(n_neg)
    g = torch.Generator().manual_seed(seed * 1_000_003 + tag * 10_007 + epoch + 7_919 * 1_000_033)
    return torch.randperm(n_neg, generator=g)[:k].sort().values


class FeatureCache:
    """The frozen encoder's features of each (image, flip), computed on first use and reused every later epoch.

    A frozen encoder in eval mode gives an image the same features every epoch, so only the decoder needs to
    run again; a flipped image has its own entry (convolutions are not flip-equivariant). The encoder is in eval
    mode, so an image's features do not depend on the rest of its batch. :meth:`fill` encodes the class's own
    images up front; negatives, a fresh sample each epoch, are encoded when first drawn. Images past
    ``limit_bytes`` are not kept and go through the encoder each time.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.used = 0
        self.store: dict[tuple[int, bool], list[torch.Tensor]] = {}

    def fill(self, model: SingleClassUNet, images: torch.Tensor, flip: bool, device: torch.device,
             batch_size: int) -> None:
        """Encode every image (and its mirror image where ``flip``) up front, ``batch_size`` pairs at a time,
        until the limit. The batches are a pure function of the images, so a resumed run refills the same
        features bit for bit; a batch runs the encoder 2.7x faster per image than one image alone (128 px)."""
        n = len(images)
        ids = torch.arange(n).repeat_interleave(2) if flip else torch.arange(n)
        flips = torch.tensor([False, True]).repeat(n) if flip else torch.zeros(n, dtype=torch.bool)
        no_negatives = torch.empty(0, dtype=torch.long)
        t0 = time.time()
        for start in tqdm(range(0, len(ids), batch_size), desc="features", mininterval=10, leave=False):
            batch = _Batch(ids[start : start + batch_size], no_negatives, flips[start : start + batch_size])
            levels = model.features(to_float(_batch_images(images, None, batch)[0], device))
            for j, key in enumerate(batch.keys(n)):
                # its own storage: the limit counts what is kept
                if not self._keep(key, [level[j].clone() for level in levels]):
                    log.info("feature cache full (%d MiB) after %d of %d images and flips", self.limit >> 20,
                             len(self.store), len(ids))
                    return
        log.debug("features of %d images and flips cached (%d MiB) in %.1fs", len(ids), self.used >> 20,
                  time.time() - t0)

    def _keep(self, key: tuple[int, bool], entry: list[torch.Tensor]) -> bool:
        """Keep ``entry`` under ``key`` if it fits within the limit; whether it was kept."""
        size = sum(level.numel() * level.element_size() for level in entry)
        if self.used + size > self.limit:
            return False
        self.store[key] = entry
        self.used += size
        return True

    def features(self, model: SingleClassUNet, x: torch.Tensor, keys: list[tuple[int, bool]]) -> list[torch.Tensor]:
        """Features of the batch ``x`` whose images are ``keys``; only the images not kept go through the encoder."""
        per_image = [self.store.get(k) for k in keys]
        for i, f in enumerate(per_image):
            if f is None:
                # one image at a time: its features then never depend on which images shared its batch, so
                # a resumed run (whose cache starts empty) ends with the same weights, bit for bit
                per_image[i] = [level[0] for level in model.features(x[i : i + 1])]
                self._keep(keys[i], per_image[i])
        return [torch.stack(level) for level in zip(*per_image, strict=True)]


@dataclass
class _Batch:
    """One batch of an epoch: positives' and negatives' indices (into ``images`` and the negative pool), and
    whether each image (positives first) is flipped."""

    pos: torch.Tensor
    neg: torch.Tensor
    flips: torch.Tensor

    def keys(self, n_pos: int) -> list[tuple[int, bool]]:
        """Feature-cache keys: a positive's index, or ``n_pos`` + a negative's own index, with its flip."""
        return [(int(i), bool(f)) for i, f in zip(torch.cat([self.pos, n_pos + self.neg]), self.flips, strict=True)]


def _epoch_batches(order: torch.Tensor, flips: torch.Tensor, n_pos: int, neg_ids: torch.Tensor, batch_size: int
                   ) -> list[_Batch]:
    """Split an epoch's order (positions below ``n_pos`` are positives, position ``n_pos + j`` is negative
    ``neg_ids[j]``) into batches."""
    out = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        is_neg = idx >= n_pos
        out.append(_Batch(idx[~is_neg], neg_ids[idx[is_neg] - n_pos],
                          torch.cat([flips[idx[~is_neg]], flips[idx[is_neg]]])))
    return out


def _batch_images(images: torch.Tensor, negatives: torch.Tensor | None, batch: _Batch) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """The batch's uint8 images (positives, then negatives; flipped where drawn) and its negative flags."""
    parts = [images[batch.pos]]
    if len(batch.neg):
        parts.append(negatives[batch.neg])
    x = torch.cat(parts)
    neg_flags = torch.cat([torch.zeros(len(batch.pos), dtype=torch.bool),
                           torch.ones(len(x) - len(batch.pos), dtype=torch.bool)])
    return torch.where(batch.flips.view(-1, 1, 1, 1), x.flip(-1), x), neg_flags


def _forward(model: SingleClassUNet, x: torch.Tensor, cache: FeatureCache | None, keys: list | None,
             device: torch.device) -> torch.Tensor:
    """Object/background probabilities of a batch, in float32; the frozen encoder's features from ``cache``
    (``keys``: the batch's cache keys, needed with a cache only)."""
    with autocast(device):
        probs = model(x) if cache is None else model.decode(cache.features(model, x, keys))
    return probs.float()


def _batch_loss(cfg: SingleClassConfig, loss_fn: RegularizedLoss, probs: torch.Tensor, x: torch.Tensor,
                n_pos: int, masks: torch.Tensor | None, neg_flags: torch.Tensor | None
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """The batch's loss (regularized, or cross-entropy on true masks) and its terms for the history."""
    if cfg.supervision == "gt":
        total = gt_loss(probs[:n_pos], masks)
        return total, {"cross_entropy": float(total.detach())}
    return loss_fn(probs, x, neg_flags)


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
) -> list[dict]:
    """Train ``model`` through ``plans``, checkpointing after every epoch and resuming from ``checkpoint``.

    Args:
        images: uint8 [N, 3, H, W] positives.
        negatives: uint8 [M, 3, H, W] images pushed to background in epochs whose plan says so.
        masks: 0/1 (255 void) [N, H, W]: true masks, for monitoring (or the loss when ``supervision == "gt"``).
        run_config: everything that defines this run; a checkpoint made under another one is refused.
    Returns:
        One row per epoch (stage, sigma, each loss term, F-measure/Jaccard where masks exist, seconds).
    """
    device = device or resolve_device()
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    # the fused kernel: one pass over all parameters, 1.5 -> 0.4 ms a step for the default decoder on the CPU
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
        order, flips = _epoch_order(cfg.seed, tag, epoch, n_pos + len(neg_ids), cfg.flip)
        model.train()
        sums: dict[str, float] = {}
        cm = ConfusionMatrix(2) if masks is not None else None
        batches = _epoch_batches(order, flips, n_pos, neg_ids, cfg.batch_size)
        for b, batch in enumerate(batches):
            x_u8, neg_flags = _batch_images(images, pool_neg, batch)
            x = to_float(x_u8, device)
            probs = _forward(model, x, cache, batch.keys(n_pos) if cache is not None else None, device)
            m = None
            if masks is not None:
                m = masks[batch.pos]
                m = torch.where(flips[batch.pos].view(-1, 1, 1), m.flip(-1), m).to(device)
            total, terms = _batch_loss(cfg, loss_fn, probs, x, len(batch.pos), m,
                                       neg_flags.to(device) if pool_neg is not None else None)
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


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 32,
            device: torch.device | None = None) -> torch.Tensor:
    """Object probabilities [N, H, W] (float) for uint8 images [N, 3, H, W]."""
    device = device or resolve_device()
    model.to(device).eval()
    out = []
    for i in range(0, len(images), batch_size):
        with autocast(device):
            out.append(model(to_float(images[i : i + batch_size], device))[:, 1].float().cpu())
    return torch.cat(out) if out else torch.empty(0)


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
) -> dict:
    """Train one class through all its stages and save a model per resolution under ``outdir``.

    Args:
        load: ``load(resolution) -> (images, negatives or None, masks or None)`` as uint8 tensors; called once
            per resolution, so each image is decoded and resized once per resolution.
        init_weights: start the normal stage from these weights (same architecture) and skip annealing.
        with_negatives: run the negative stage after the last resolution.
    Returns:
        {"models": {resolution: path}, "final": path, "history": rows, "seconds": float}.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    torch.manual_seed(cfg.seed)
    model = build_unet(cfg.arch)
    if init_weights is not None:
        load_weights(init_weights, model)
    # the cache size is not part of what a checkpoint must match: it changes speed and float rounding, not the run
    settings = {k: v for k, v in asdict(cfg).items() if k != "feature_cache_mb"}
    base = {"single_class": settings, "init": str(init_weights) if init_weights else "anneal"}
    t0 = time.time()
    history: list[dict] = []
    models: dict[int, str] = {}
    final = None
    for ri, res in enumerate(cfg.resolutions):
        images, negatives, masks = load(res)
        stages = ["transfer"] if ri > 0 else (["normal"] if init_weights is not None else ["anneal", "normal"])
        if cfg.supervision == "gt":
            stages = ["transfer"] if ri > 0 else ["normal"]
        if ri == len(cfg.resolutions) - 1 and with_negatives and cfg.negative_epochs > 0:
            stages.append("negative")
        plans = [p for s in stages for p in stage_plans(cfg, s)]
        run_config = {**base, "resolution": res, "stages": stages}
        ckpt = outdir / f"checkpoint_{res}.pt"
        rows = fit(model, images, plans, cfg, ckpt, run_config, negatives=negatives, masks=masks, device=dev,
                   tag=ri, on_epoch=on_epoch)
        for r in rows:
            r["resolution"] = res
        history += rows
        path = outdir / f"model_{res}.pt"
        save_weights(path, model, meta={"resolution": res, "stages": stages})
        models[res] = str(path)
        final = str(path)
    for res in cfg.resolutions:
        (outdir / f"checkpoint_{res}.pt").unlink(missing_ok=True)
    return {"models": models, "final": final, "history": history, "seconds": time.time() - t0}
