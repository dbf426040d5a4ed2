"""The frozen encoder's features, computed once per image and flip and kept (``single_class.feature_cache_mb``), and
the batches an epoch is cut into: with the encoder frozen, every epoch after the first runs the decoder only."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from rlseg.data import to_float
from rlseg.models import SingleClassUNet

log = logging.getLogger(__name__)

__all__ = ["Batch", "FeatureCache", "batch_images", "epoch_batches"]



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
        features bit for bit; a batch runs the encoder faster per image than one image alone."""
        n = len(images)
        ids = torch.arange(n).repeat_interleave(2) if flip else torch.arange(n)
        flips = torch.tensor([False, True]).repeat(n) if flip else torch.zeros(n, dtype=torch.bool)
        no_negatives = torch.empty(0, dtype=torch.long)
        t0 = time.time()
        for start in tqdm(range(0, len(ids), batch_size), desc="features", mininterval=10, leave=False):
            batch = Batch(ids[start : start + batch_size], no_negatives, flips[start : start + batch_size])
            levels = model.features(to_float(batch_images(images, None, batch)[0], device))
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
class Batch:
    """One batch of an epoch: positives' and negatives' indices (into ``images`` and the negative pool), and
    whether each image (positives first) is flipped."""

    pos: torch.Tensor
    neg: torch.Tensor
    flips: torch.Tensor

    def keys(self, n_pos: int) -> list[tuple[int, bool]]:
        """Feature-cache keys: a positive's index, or ``n_pos`` + a negative's own index, with its flip."""
        return [(int(i), bool(f)) for i, f in zip(torch.cat([self.pos, n_pos + self.neg]), self.flips, strict=True)]


def epoch_batches(order: torch.Tensor, flips: torch.Tensor, n_pos: int, neg_ids: torch.Tensor, batch_size: int
                   ) -> list[Batch]:
    """Split an epoch's order (positions below ``n_pos`` are positives, position ``n_pos + j`` is negative
    ``neg_ids[j]``) into batches."""
    out = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        is_neg = idx >= n_pos
        out.append(Batch(idx[~is_neg], neg_ids[idx[is_neg] - n_pos],
                          torch.cat([flips[idx[~is_neg]], flips[idx[is_neg]]])))
    return out


def batch_images(images: torch.Tensor, negatives: torch.Tensor | None, batch: Batch) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """The batch's uint8 images (positives, then negatives; flipped where drawn) and its negative flags."""
    parts = [images[batch.pos]]
    if len(batch.neg):
        parts.append(negatives[batch.neg])
    x = torch.cat(parts)
    neg_flags = torch.cat([torch.zeros(len(batch.pos), dtype=torch.bool),
                           torch.ones(len(x) - len(batch.pos), dtype=torch.bool)])
    return torch.where(batch.flips.view(-1, 1, 1, 1), x.flip(-1), x), neg_flags

