"""The ImageNet classifier's class activation maps, as a check on a class's pseudo labels.

A class CNN trained from a class-agnostic start marks whatever stands out in a photo: beside a small boat, the
shore or a house. The frozen encoder's ImageNet classifier knows which of its 1,000 classes tell this class's
photos from the other classes' (boat: speedboat, fireboat, lifeboat), from image-level labels alone; where those
classes' activation map is weak over a whole connected part of the pseudo label, that part goes to background
(docs/real_photos.md, eighth sitting). No class names and no masks are used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from rlseg.architectures import OFFLINE_ENCODER
from rlseg.imageio import load_image
from rlseg.ingest import used_paths
from rlseg.io import atomic_path

__all__ = ["CAM_SIDE", "CamFilter", "ImageNetCam", "cam_filter_of", "centre_point", "centre_points",
           "class_centre_points", "class_names", "discriminative_classes", "mean_scores", "read_mean_scores",
           "supported_components", "write_mean_scores"]

CAM_SIDE = 384  # the photo's shorter side for the classifier's features: the labels' resolution in the photo preset
_NETS: dict[str, ImageNetCam] = {}
log = logging.getLogger(__name__)


class ImageNetCam:
    """EfficientNet-Lite0's ImageNet classifier (the packaged weights): its last feature map and class weights."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        from rlseg.models.lite import lite_model, lite_state_dict  # timm: only a run that asks for CAMs pays it

        self.device = torch.device(device)
        self.net = lite_model(OFFLINE_ENCODER, lite_state_dict()).to(self.device).eval()
        self.weight = self.net.classifier.weight.detach()  # [1000, 1280]

    @classmethod
    def shared(cls, device: torch.device | str = "cpu") -> ImageNetCam:
        """One classifier per device for the process: labelling batch after batch builds it once."""
        key = str(device)
        if key not in _NETS:
            _NETS[key] = cls(device)
        return _NETS[key]

    @torch.no_grad()
    def features(self, image: Image.Image, side: int = CAM_SIDE) -> torch.Tensor:
        """The classifier's last feature map [1280, h, w] of ``image``, its shorter side at ``side`` px."""
        x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float()[None] / 255.0
        h, w = x.shape[-2:]
        s = side / min(h, w)
        size = (max(32, round(h * s / 32) * 32), max(32, round(w * s / 32) * 32))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.net.forward_features(((x - 0.5) / 0.5).to(self.device))[0]  # the packaged weights' mean=std=0.5

    def scores(self, image: Image.Image) -> np.ndarray:
        """Class scores [1000] of the mean-pooled features (without the bias: only differences are used)."""
        return (self.weight @ self.features(image).mean((1, 2))).cpu().numpy()

    def activation(self, image: Image.Image, classes: Sequence[int]) -> np.ndarray:
        """The summed activation map of ``classes`` at the image's size, rectified and scaled to a maximum of 1."""
        f = self.features(image)
        cam = torch.einsum("kc,chw->hw", self.weight[list(classes)], f).relu()
        cam = F.interpolate(cam[None, None], size=(image.height, image.width), mode="bilinear",
                            align_corners=False)[0, 0]
        return (cam / cam.max().clamp_min(1e-6)).cpu().numpy()


def mean_scores(images: Iterable[Image.Image], device: torch.device | str = "cpu") -> np.ndarray:
    """The classifier's mean class scores [1000] over ``images``."""
    cam = ImageNetCam.shared(device)
    scores = [cam.scores(im) for im in images]
    if not scores:
        raise ValueError("no images to score")
    return np.mean(scores, axis=0).astype(np.float32)


def write_mean_scores(manifest: str | os.PathLike, out: str | os.PathLike, device: torch.device | str = "cpu") -> int:
    """Write the mean ImageNet class scores of a class's used images (its manifest) to ``out`` (.npy)."""
    paths = used_paths(manifest)
    if not paths:
        raise ValueError(f"{manifest}: no used images to score")
    images = (load_image(p) for p in tqdm(paths, desc="imagenet scores", mininterval=5))
    scores = mean_scores(images, device)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.save(fh, scores)
    return len(paths)


def read_mean_scores(path: str | os.PathLike) -> np.ndarray:
    """A class's mean ImageNet class scores, as :func:`write_mean_scores` wrote them."""
    scores = np.load(path, allow_pickle=False)
    if scores.shape != (1000,):
        raise ValueError(f"{path}: {scores.shape} ImageNet scores, expected (1000,)")
    return scores


def discriminative_classes(own: np.ndarray, others: Sequence[np.ndarray], k: int) -> list[int]:
    """The ``k`` ImageNet classes whose mean score on this class's photos most exceeds their mean over the other
    classes' (over nothing, with no other class: the class's own top ``k``)."""
    contrast = own - (np.mean(others, axis=0) if len(others) else 0.0)
    return [int(i) for i in np.argsort(-contrast, kind="stable")[:k]]


def _parts(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The connected parts (8-neighbours) of a boolean mask, numbered from 1, and how many there are."""
    return ndimage.label(mask, structure=np.ones((3, 3), bool))


def _supported(parts: np.ndarray, n: int, cam: np.ndarray, min_ratio: float) -> np.ndarray:
    peaks = np.asarray(ndimage.maximum(cam, parts, np.arange(1, n + 1)))
    keep = np.flatnonzero(peaks >= min_ratio * peaks.max()) + 1
    return np.isin(parts, keep)


def supported_components(mask: np.ndarray, cam: np.ndarray, min_ratio: float) -> np.ndarray:
    """``mask`` without its connected parts (8-neighbours) whose strongest activation is under ``min_ratio`` of the
    best-supported part's; a mask of one part (or none) is returned as it is."""
    parts, n = _parts(mask)
    return mask if n <= 1 else _supported(parts, n, cam, min_ratio)


@dataclass(frozen=True)
class CamFilter:
    """Which ImageNet classes speak for the class (``classes``), and the share of the best part's activation a
    connected part of a pseudo label needs to stay object (``min_ratio``)."""

    classes: tuple[int, ...]
    min_ratio: float = 0.3

    def apply(self, images: Sequence[Image.Image], masks: Sequence[np.ndarray],
              device: torch.device | str = "cpu") -> list[np.ndarray]:
        """Each boolean object mask with its unsupported parts removed."""
        cam = ImageNetCam.shared(device)
        out = []
        for im, mask in zip(images, masks, strict=True):
            parts, n = _parts(mask)
            # a mask of one part (or none) stays as it is: the classifier's pass is spent on masks it can change
            out.append(mask if n <= 1 else _supported(parts, n, cam.activation(im, self.classes), self.min_ratio))
        return out


def cam_filter_of(cls: str, classes: Sequence[str], score_paths: Sequence[str | os.PathLike], top_classes: int = 3,
                  min_ratio: float = 0.3) -> CamFilter:
    """The filter for class ``cls`` from every class's mean scores (``score_paths``, in the order of ``classes``)."""
    if len(score_paths) != len(classes):
        raise ValueError(f"{len(score_paths)} ImageNet score files for {len(classes)} classes")
    scores = dict(zip(classes, (read_mean_scores(p) for p in score_paths), strict=True))
    others = [v for c, v in scores.items() if c != cls]
    return CamFilter(tuple(discriminative_classes(scores[cls], others, top_classes)), float(min_ratio))


def centre_point(cam: np.ndarray, min_ratio: float) -> tuple[float, float]:
    """Where a photo's centre box goes (row, column as fractions): its middle, unless the activation map ``cam``
    (maximum 1) is under ``min_ratio`` there on average (a box of a 16th of each side), then the map's peak."""
    h, w = cam.shape
    middle = cam[h // 2 - h // 32 : h // 2 + h // 32 + 1, w // 2 - w // 32 : w // 2 + w // 32 + 1]
    if middle.mean() >= min_ratio:
        return 0.5, 0.5
    r, c = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return (r + 0.5) / h, (c + 0.5) / w


def centre_points(paths: Sequence[str | os.PathLike], classes: Sequence[int], min_ratio: float,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """:func:`centre_point` of each photo under the activation map of ``classes`` -> float32 [N, 2]."""
    cam = ImageNetCam.shared(device)
    points = [centre_point(cam.activation(load_image(p), classes), min_ratio)
              for p in tqdm(paths, desc="centre points", mininterval=5)]
    return torch.tensor(points, dtype=torch.float32).reshape(-1, 2)


def class_centre_points(cls: str, paths: Sequence[str | os.PathLike], classes: Sequence[str],
                        score_paths: Sequence[str | os.PathLike], top_classes: int, min_ratio: float,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """:func:`centre_points` of class ``cls``'s photos under its ``top_classes`` discriminative ImageNet classes,
    found from every class's mean scores (``score_paths``, in the order of ``classes``)."""
    imagenet = cam_filter_of(cls, classes, score_paths, top_classes).classes
    centres = centre_points(paths, imagenet, min_ratio, device)
    moved = int((centres != 0.5).any(1).sum())
    log.info("class %s: centre box on the map of %s; moved off the middle in %d of %d photos", cls,
             ", ".join(class_names(imagenet)), moved, len(paths))
    return centres


def class_names(classes: Sequence[int]) -> list[str]:
    """ImageNet's descriptions of ``classes`` (for the logs)."""
    from timm.data import ImageNetInfo  # timm: only a run that asks for CAMs pays its import

    info = ImageNetInfo()
    return [info.index_to_description(int(i)) for i in classes]
