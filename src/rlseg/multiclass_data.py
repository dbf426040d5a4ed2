"""The multi-class network's training data, streamed: (image, label) pairs decoded once into a uint8 file on disk
and read back memory-mapped, augmented on the fly by DataLoader workers.

Peak memory does not grow with the number of images: only the index (a few numbers per image) is in memory.
The augmentation's random draws are made in the training process, in the order a single loop would make them,
so the crops do not depend on the number of workers.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from tqdm import tqdm

from rlseg.imageio import load_image, load_mask, upright_size
from rlseg.io import write_text

__all__ = ["AugmentedCrops", "CropParams", "DecodedPairs", "EpochBatches", "apply_augment", "capped_size",
           "draw_augment", "epoch_batches"]


def capped_size(w: int, h: int, max_short_side: int | None) -> tuple[int, int]:
    """(w, h) scaled down so that the shorter side is at most ``max_short_side`` (never scaled up)."""
    if not max_short_side or min(w, h) <= max_short_side:
        return w, h
    s = max_short_side / min(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


class DecodedPairs:
    """(image, label) pairs decoded once (shorter side capped at ``max_short_side``) into ``cache_dir``.

    ``images.u8`` and ``labels.u8`` hold the pixels back to back; ``index.json`` their shapes and offsets and
    the pairs they came from. A cache made from the same pairs and cap is reused (a resumed run decodes nothing).
    """

    def __init__(self, pairs: Sequence[tuple[str, str]], num_classes: int, cache_dir: str | os.PathLike,
                 max_short_side: int | None = None) -> None:
        self.dir = Path(cache_dir)
        key = {"pairs": [list(map(str, p)) for p in pairs], "max_short_side": max_short_side,
               "num_classes": num_classes}
        index_path = self.dir / "index.json"
        index = json.loads(index_path.read_text()) if index_path.is_file() else None
        if index is None or index["key"] != key:
            index = self._build(pairs, num_classes, max_short_side, key)
        self.sizes = [tuple(s) for s in index["sizes"]]  # (w, h)
        self.offsets = index["offsets"]
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    def _build(self, pairs, num_classes, max_short_side, key) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True)
        sizes, offsets, total = [], [], 0
        for img_path, _ in pairs:  # header pass: sizes before any pixel is decoded
            w, h = capped_size(*upright_size(img_path), max_short_side)
            sizes.append((w, h))
            offsets.append(total)
            total += w * h
        images = np.lib.format.open_memmap(self.dir / "images.u8.npy", mode="w+", dtype=np.uint8, shape=(total * 3,))
        labels = np.lib.format.open_memmap(self.dir / "labels.u8.npy", mode="w+", dtype=np.uint8, shape=(total,))
        for (img_path, lab_path), (w, h), off in tqdm(list(zip(pairs, sizes, offsets, strict=True)), desc="decode",
                                                      leave=False, mininterval=5):
            img = load_image(img_path)
            lab = load_mask(lab_path, size=img.size, num_classes=num_classes)
            if img.size != (w, h):
                img = img.resize((w, h), Image.BILINEAR)
                lab = np.asarray(Image.fromarray(lab).resize((w, h), Image.NEAREST))
            images[off * 3 : (off + w * h) * 3] = np.asarray(img).reshape(-1)
            labels[off : off + w * h] = np.asarray(lab).reshape(-1)
        images.flush()
        labels.flush()
        del images, labels
        index = {"key": key, "sizes": sizes, "offsets": offsets}
        write_text(self.dir / "index.json", json.dumps(index))  # written last: a half-built cache has no index
        return index

    def _maps(self) -> tuple[np.ndarray, np.ndarray]:
        # opened lazily, so each DataLoader worker maps the files itself
        if self._images is None:
            self._images = np.load(self.dir / "images.u8.npy", mmap_mode="r")
            self._labels = np.load(self.dir / "labels.u8.npy", mmap_mode="r")
        return self._images, self._labels

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None, "_labels": None}

    def __len__(self) -> int:
        return len(self.sizes)

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image [H, W, 3] and label [H, W] of pair ``i`` (read-only views of the files)."""
        images, labels = self._maps()
        (w, h), off = self.sizes[i], self.offsets[i]
        return images[off * 3 : (off + w * h) * 3].reshape(h, w, 3), labels[off : off + w * h].reshape(h, w)


@dataclass(frozen=True)
class CropParams:
    """One crop's random draws: scale, flip, blur radius (0: none) and the crop's corner after padding."""

    scale: float
    flip: bool
    blur: float
    y: int
    x: int


def draw_augment(rng: random.Random, size: tuple[int, int], crop: int, scale_min: float, scale_max: float,
                 flip: bool, blur_prob: float) -> CropParams:
    """The random draws of one crop of an image of ``size`` (w, h), in the order :func:`apply_augment` uses them."""
    s = rng.uniform(scale_min, scale_max)
    w, h = size
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    flipped = flip and rng.random() < 0.5
    radius = rng.uniform(0.1, 2.0) if rng.random() < blur_prob else 0.0
    y = rng.randint(0, max(nh, crop) - crop)
    x = rng.randint(0, max(nw, crop) - crop)
    return CropParams(s, flipped, radius, y, x)


def apply_augment(image: np.ndarray, label: np.ndarray, p: CropParams, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """Rescale, flip, blur, then the ``crop`` x ``crop`` window (padded with grey / void where the image ends)."""
    h, w = label.shape
    nw, nh = max(1, round(w * p.scale)), max(1, round(h * p.scale))
    img = Image.fromarray(np.ascontiguousarray(image)).resize((nw, nh), Image.BILINEAR)
    lab = Image.fromarray(np.ascontiguousarray(label)).resize((nw, nh), Image.NEAREST)
    if p.flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
        lab = lab.transpose(Image.FLIP_LEFT_RIGHT)
    if p.blur:
        img = img.filter(ImageFilter.GaussianBlur(radius=p.blur))
    img_a, lab_a = np.asarray(img), np.asarray(lab)
    ph, pw = max(crop - nh, 0), max(crop - nw, 0)
    if ph or pw:
        img_a = np.pad(img_a, ((0, ph), (0, pw), (0, 0)), constant_values=124)
        lab_a = np.pad(lab_a, ((0, ph), (0, pw)), constant_values=255)
    return img_a[p.y : p.y + crop, p.x : p.x + crop], lab_a[p.y : p.y + crop, p.x : p.x + crop]


class AugmentedCrops(torch.utils.data.Dataset):
    """Crops of decoded pairs: item ``(i, params)`` is pair i augmented with ``params``, as uint8 tensors (image
    [crop, crop, 3], label [crop, crop]). The items come from a :class:`EpochBatches` sampler."""

    def __init__(self, data: DecodedPairs, crop: int) -> None:
        self.data, self.crop = data, crop

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item: tuple[int, CropParams]) -> tuple[torch.Tensor, torch.Tensor]:
        i, params = item
        img, lab = apply_augment(*self.data.pair(i), params, self.crop)
        return torch.from_numpy(np.array(img)), torch.from_numpy(np.array(lab))  # writable copies of the crop


class EpochBatches(torch.utils.data.Sampler):
    """The current epoch's batches of ``(pair index, crop params)``; set anew each epoch in the training process
    (so persistent workers serve every epoch)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, CropParams]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def epoch_batches(sizes: Sequence[tuple[int, int]], batch_size: int, steps: int, rng: random.Random, crop: int,
                  scale_min: float, scale_max: float, flip: bool, blur_prob: float
                  ) -> list[list[tuple[int, CropParams]]]:
    """One epoch: the pairs shuffled by ``rng``, then each step's crops drawn in order from the same ``rng``."""
    order = list(range(len(sizes)))
    rng.shuffle(order)
    return [[(i, draw_augment(rng, sizes[i], crop, scale_min, scale_max, flip, blur_prob))
             for i in order[step * batch_size : (step + 1) * batch_size]] for step in range(steps)]
