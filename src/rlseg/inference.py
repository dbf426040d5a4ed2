"""Inference with a model the workflow wrote: single-class U-Nets and multi-class networks, masks at image size."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rlseg.cam import CamFilter
from rlseg.checkpoint import CheckpointMismatch, load_weights
from rlseg.crf import CrfParams, refine
from rlseg.data import resized_tensor, to_float
from rlseg.models import build_multiclass, build_unet
from rlseg.multiclass import predict_full
from rlseg.runtime import autocast, resolve_device

__all__ = ["LoadedModel", "load_model", "object_probability", "predict", "scaled_sides", "segment"]


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


@dataclass
class LoadedModel:
    """A model read back from its weights file: ``kind`` is ``single_class`` or ``multiclass``; a single-class
    model runs at ``resolution`` px, a multi-class one sees a photo with its shorter side at most
    ``max_short_side`` (that of its training photos; ``None`` in weights written before it was recorded).
    ``labelling``: how ``rlseg train`` was told to label photos (``resolution``, ``scales``, ``flip``), if it was."""

    net: torch.nn.Module
    kind: str
    resolution: int
    max_short_side: int | None = None
    labelling: dict | None = None


def load_model(path: str | os.PathLike, device: torch.device) -> LoadedModel:
    """Read a single-class (``model_final.pt``) or multi-class (``multiclass/*/model.pt``) weights file."""
    blob = load_weights(path)
    try:
        cap = None
        if "num_classes" in blob["arch"]:
            net, kind, res = build_multiclass(blob["arch"], pretrained=False), "multiclass", 0
            cap = blob["meta"].get("max_short_side")
        else:
            net, kind = build_unet(blob["arch"], pretrained=False), "single_class"
            res = int(blob["meta"].get("resolution", 128))
        net.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # an architecture or weights that do not fit
        what = " ".join(line.strip() for line in str(err).strip().splitlines()[:2])[:300] or type(err).__name__
        raise CheckpointMismatch(f"{path}: its weights do not fit the architecture it records ({what})") from None
    return LoadedModel(net.to(device).eval(), kind, res, cap, blob["meta"].get("labelling"))


def scaled_sides(side: int, scales: Sequence[float]) -> list[int]:
    """The sides (px, multiples of 32, at least 32) a single-class model sees an image at for each of ``scales``
    of ``side``."""
    return [max(32, round(side * s / 32) * 32) for s in scales]


def object_probability(model: LoadedModel, images: Sequence[Image.Image], device: torch.device,
                       resolution: int | None = None, scales: Sequence[float] = (1.0,),
                       flip: bool = False) -> list[np.ndarray]:
    """A single-class model's object probability (float32, at each image's size) for a batch of RGB images: its
    output at ``resolution`` px (by default the one it was trained at), upsampled bilinearly; with several
    ``scales`` (of that side, :func:`scaled_sides`) or ``flip``, the mean over each side and the mirror images."""
    sizes = [(im.height, im.width) for im in images]
    totals = [np.zeros(hw, np.float32) for hw in sizes]
    passes = 0
    for side in scaled_sides(resolution or model.resolution, scales):
        batch = torch.stack([resized_tensor(im, side) for im in images])  # resized once: the mirror is its flip
        for mirrored in (False, True) if flip else (False,):
            probs = predict(model.net, batch.flip(-1) if mirrored else batch, device=device)
            probs = probs.flip(-1) if mirrored else probs
            for total, hw, prob in zip(totals, sizes, probs, strict=True):
                total += F.interpolate(prob[None, None], size=hw, mode="bilinear", align_corners=False)[0, 0].numpy()
            passes += 1
    return [total / passes for total in totals]


def segment(model: LoadedModel, images: Sequence[Image.Image], device: torch.device, class_id: int = 1,
            resolution: int | None = None, crf: CrfParams | None = None, scales: Sequence[float] = (1.0,),
            flip: bool = False, cam: CamFilter | None = None) -> list[np.ndarray]:
    """Label maps (uint8, at each image's size) for a batch of RGB images: a single-class model's object pixels
    get ``class_id`` (:func:`object_probability` > 0.5 at ``scales`` of ``resolution`` and with ``flip``, refined
    by a dense CRF first with ``crf``; with ``cam``, only the parts its ImageNet evidence supports), a multi-class
    model's argmax its label ids (full resolution, at ``scales`` and with ``flip``, a large photo shrunk to the
    model's ``max_short_side``: :func:`predict_full`)."""
    if model.kind == "multiclass":
        return [predict_full(model.net, im, device, scales, flip, model.max_short_side) for im in images]
    probs = object_probability(model, images, device, resolution, scales, flip)
    if crf is not None:
        probs = [refine(np.asarray(im), prob, crf) for im, prob in zip(images, probs, strict=True)]
    masks = [prob > 0.5 for prob in probs]
    if cam is not None:
        masks = cam.apply(images, masks, device)
    return [np.where(mask, class_id, 0).astype(np.uint8) for mask in masks]
