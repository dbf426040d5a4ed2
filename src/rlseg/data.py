"""Image sets in memory: each image decoded and resized once per resolution, kept as uint8 tensors."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from rlseg.imageio import load_image, load_mask

__all__ = ["load_binary_masks", "load_images", "load_label_masks", "resized_tensor", "to_float"]


def resized_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """An RGB image resized (bilinear, to size x size as the reference does) -> uint8 tensor [3, size, size]."""
    return torch.from_numpy(np.asarray(img.resize((size, size), Image.BILINEAR)).copy()).permute(2, 0, 1)


def load_images(paths: Sequence[str | os.PathLike], size: int, desc: str = "decode") -> torch.Tensor:
    """Decode and resize each image -> uint8 tensor [N, 3, size, size]."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, p in enumerate(tqdm(paths, desc=f"{desc} @{size}px", leave=False, mininterval=5)):
        out[i] = resized_tensor(load_image(p), size)
    return out


def _resize_nearest(arr: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.NEAREST))


def load_label_masks(paths: Sequence[str | os.PathLike], size: int, num_classes: int = 256) -> torch.Tensor:
    """Class-index masks resized with nearest neighbour -> uint8 tensor [N, size, size]."""
    return torch.stack([torch.from_numpy(_resize_nearest(load_mask(p, num_classes=num_classes), size).copy())
                        for p in paths])


def load_binary_masks(paths: Sequence[str | os.PathLike], size: int) -> torch.Tensor:
    """Saliency-style masks (0 / 255, or any greyscale) -> 0/1 uint8 tensor [N, size, size] (threshold 128)."""
    out = []
    for p in paths:
        with Image.open(p) as img:
            arr = (np.asarray(img.convert("L")) >= 128).astype(np.uint8)
        out.append(torch.from_numpy(_resize_nearest(arr, size).copy()))
    return torch.stack(out)


def to_float(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [.., 3, H, W] -> float 0-1 on ``device``."""
    return images.to(device, non_blocking=True).float().div_(255.0)
