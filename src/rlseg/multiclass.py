"""The multi-class stage: DeepLab trained on (pseudo) ground truth, and full-resolution inference."""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from rlseg.checkpoint import resume, save_checkpoint, save_weights
from rlseg.data import to_float
from rlseg.models import MultiClassNet, build_multiclass
from rlseg.multiclass_data import AugmentedCrops, DecodedPairs, EpochBatches, capped_size, epoch_batches
from rlseg.runtime import NonFiniteLossError, autocast, resolve_device
from rlseg.settings import defaults

log = logging.getLogger(__name__)

__all__ = ["MultiClassConfig", "predict_full", "train_multiclass"]


_MC = defaults("multiclass")


@dataclass
class MultiClassConfig:
    """Settings of the multi-class network; the defaults are the schema's (the paper's DeepLab setting)."""

    arch: str = _MC["arch"]
    encoder: str = _MC["encoder"]
    epochs: int = _MC["epochs"]
    batch_size: int = _MC["batch_size"]
    crop: int = _MC["crop"]
    lr: float = _MC["lr"]
    momentum: float = _MC["momentum"]
    weight_decay: float = _MC["weight_decay"]
    poly_power: float = _MC["poly_power"]
    scale_min: float = _MC["scale_min"]
    scale_max: float = _MC["scale_max"]
    blur_prob: float = _MC["blur_prob"]
    flip: bool = _MC["flip"]
    seed: int = _MC["seed"]
    max_short_side: int | None = _MC["max_short_side"]
    loader_workers: int = _MC["loader_workers"]

    @classmethod
    def from_dict(cls, d: dict) -> MultiClassConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown multiclass setting(s): {sorted(unknown)}")
        return cls(**d)


def train_multiclass(
    pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
    num_classes: int,
    cfg: MultiClassConfig,
    out_model: str | os.PathLike,
    checkpoint: str | os.PathLike,
    device: str = "auto",
    pretrained: bool = True,
) -> list[dict]:
    """Train the multi-class network on (image, label PNG) pairs; labels hold class ids, 255 = void.

    Checkpoints after every epoch and resumes from ``checkpoint`` (same configuration only); the finished
    model goes to ``out_model`` and the checkpoint is removed. Returns one row per epoch.
    """
    dev = resolve_device(device)
    torch.manual_seed(cfg.seed)
    model = build_multiclass({"arch": cfg.arch, "encoder": cfg.encoder, "num_classes": num_classes}, pretrained)
    model.to(dev)
    data = DecodedPairs([(str(a), str(b)) for a, b in pairs], num_classes, Path(checkpoint).parent / "decoded",
                        cfg.max_short_side)
    steps_per_epoch = max(1, len(data) // cfg.batch_size)
    batches = EpochBatches()
    loader = torch.utils.data.DataLoader(AugmentedCrops(data, cfg.crop), batch_sampler=batches,
                                         num_workers=cfg.loader_workers, persistent_workers=cfg.loader_workers > 0,
                                         pin_memory=dev.type == "cuda",
                                         # its seeds from its own generator: the global one (dropout) stays as is
                                         generator=torch.Generator().manual_seed(cfg.seed))
    total_steps = cfg.epochs * steps_per_epoch
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: (1 - step / max(total_steps, 1)) ** cfg.poly_power)
    # the workers change speed, not the crops: not part of what a checkpoint must match
    settings = {k: v for k, v in asdict(cfg).items() if k != "loader_workers"}
    run_config = {"multiclass": settings, "num_classes": num_classes, "pairs": [str(p[1]) for p in pairs]}
    start, rows = resume(checkpoint, run_config, model, opt, sched)
    for epoch in tqdm(range(start, cfg.epochs), desc="epochs", initial=start, total=cfg.epochs, mininterval=10,
                      leave=False):
        t0 = time.time()
        rng = random.Random(cfg.seed * 1_000_003 + epoch)  # data order and crops a pure function of (seed, epoch)
        batches.batches = epoch_batches(data.sizes, cfg.batch_size, steps_per_epoch, rng, cfg.crop, cfg.scale_min,
                                        cfg.scale_max, cfg.flip, cfg.blur_prob)
        model.train()
        loss_sum = 0.0
        for step, (images, labels) in enumerate(loader):
            x = to_float(images.permute(0, 3, 1, 2), dev)  # channels-last in memory, as decoded
            y = labels.long().to(dev)
            with autocast(dev):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, ignore_index=255)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"non-finite cross-entropy at epoch {epoch + 1}, batch {step + 1}: "
                                         f"{float(loss)}; the last good checkpoint is {checkpoint}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach())
        row = {"epoch": epoch + 1, "cross_entropy": loss_sum / steps_per_epoch, "lr": opt.param_groups[0]["lr"],
               "seconds": round(time.time() - t0, 3)}
        rows.append(row)
        log.info("multiclass epoch %d/%d: loss %.4f (%.1fs)", epoch + 1, cfg.epochs, row["cross_entropy"],
                 row["seconds"])
        save_checkpoint(checkpoint, model, opt, sched, epoch, run_config, extra={"rows": rows})
    save_weights(out_model, model, meta={"epochs": cfg.epochs, "max_short_side": cfg.max_short_side})
    Path(checkpoint).unlink(missing_ok=True)
    shutil.rmtree(data.dir, ignore_errors=True)
    return rows


@torch.no_grad()
def _logits(model: MultiClassNet, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The network's logits [1, C, h, w] for a float image [1, 3, h, w], its input padded to a multiple of 32."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % 32, (-w) % 32
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    with autocast(device):
        logits = model(x)
    return logits[:, :, :h, :w].float()


def predict_full(model: MultiClassNet, image: Image.Image, device: torch.device, scales: Sequence[float] = (1.0,),
                 flip: bool = False, max_short_side: int | None = None) -> np.ndarray:
    """The label map at full resolution: with one scale and no flip, the argmax of a single pass; otherwise the
    argmax of the class probabilities averaged over each scale (the image resized by it) and, with ``flip``, its
    mirror image. A photo whose shorter side is over ``max_short_side`` (the cap the network's training photos were
    decoded with) is seen as training saw it, shrunk to that side, and its probabilities upsampled to full size."""
    full = image.size
    seen = capped_size(*full, max_short_side)
    if seen != full:  # a 12 MP photo at full size is a scale the network never saw, and gigabytes of features
        image = image.resize(seen, Image.BILINEAR)
    x = to_float(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None], device)
    h, w = x.shape[-2:]
    if list(scales) == [1.0] and not flip and seen == full:
        return _logits(model, x, device)[0].argmax(0).to(torch.uint8).cpu().numpy()
    total = torch.zeros((), device=device)
    for s in scales:
        xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        for mirrored in (False, True) if flip else (False,):
            logits = _logits(model, xs.flip(-1) if mirrored else xs, device)
            logits = logits.flip(-1) if mirrored else logits
            if logits.shape[-2:] != (h, w):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            total = total + logits.softmax(1)
    if seen != full:
        total = F.interpolate(total, size=full[::-1], mode="bilinear", align_corners=False)
    return total[0].argmax(0).to(torch.uint8).cpu().numpy()
