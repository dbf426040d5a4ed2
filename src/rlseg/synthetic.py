"""The embedded synthetic world: the offline default's data, generated deterministically from a seed.

Each class is a shape with its own texture (disc: stripes, box: checks, triangle: spots, star: rings), painted
in colours drawn from one palette shared with the backgrounds, so colour alone says neither "object" nor which
class. Backgrounds are smooth two-colour fields with their own irregular texture and hard-edged clutter
(lines, blobs, bars). Objects cover 5-60 % of the image, sit anywhere (some touch the border), and now and
then a smaller object of another class (a confuser) shares the image.

Layout written by :func:`write_world`::

    <root>/images/<class>/<class>_0001.jpg     per-class training images (one object of the class each)
    <root>/masks/<class>/<class>_0001.png      their true masks (class ids) -- monitoring and upper bound only
    <root>/negatives/neg_0001.jpg              images with clutter only
    <root>/eval/JPEGImages, SegmentationClass, ImageSets/Segmentation/val.txt   VOC layout, 255 void band
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from rlseg.io import atomic_path, save_png
from rlseg.settings import defaults
from rlseg.voc import voc_palette, write_voc_dir_index

SHAPES = ("disc", "box", "triangle", "star")
PALETTE = np.array(
    [
        [0.85, 0.25, 0.20], [0.20, 0.55, 0.85], [0.25, 0.70, 0.30], [0.90, 0.80, 0.25], [0.60, 0.30, 0.70],
        [0.95, 0.55, 0.15], [0.30, 0.30, 0.35], [0.80, 0.80, 0.82], [0.55, 0.40, 0.25], [0.20, 0.70, 0.70],
        [0.90, 0.50, 0.65], [0.45, 0.60, 0.20],
    ]
)

__all__ = ["SHAPES", "WorldSpec", "render_image", "write_world"]


_W = defaults("synthetic")


@dataclass
class WorldSpec:
    """Size and seeds of a synthetic world (defaults: the schema's ``synthetic`` section)."""

    classes: tuple[str, ...] = SHAPES
    images_per_class: int = _W["images_per_class"]
    negatives: int = _W["negatives"]
    eval_images: int = _W["eval_images"]
    size: int = _W["size"]
    seed: int = _W["seed"]
    eval_seed: int = _W["eval_seed"]
    confuser_rate: float = _W["confuser_rate"]
    min_area: float = 0.05
    max_area: float = 0.6


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    grid = rng.random((cells + 1, cells + 1))
    img = Image.fromarray((grid * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    f = np.asarray(img, dtype=np.float64) / 255.0
    return (f - f.min()) / max(f.max() - f.min(), 1e-6)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    c1, c2 = PALETTE[rng.choice(len(PALETTE), 2, replace=False)]
    t = _smooth_field(rng, size, int(rng.integers(2, 5)))[..., None]
    img = c1 * (1 - t) + c2 * t
    fabric = _smooth_field(rng, size, int(rng.integers(10, 20))) - 0.5
    img = img + 0.05 * fabric[..., None]
    # hard-edged clutter: lines, blobs and bars in palette colours
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    for _ in range(int(rng.integers(6, 14))):
        colour = PALETTE[rng.integers(len(PALETTE))]
        kind = rng.integers(3)
        cy, cx = rng.random(2) * size
        if kind == 0:  # a thin line
            ang = rng.random() * np.pi
            length = size * rng.uniform(0.15, 0.5)
            u = (xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)
            v = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
            m = (np.abs(u) < length / 2) & (np.abs(v) < rng.uniform(0.5, 1.5))
        elif kind == 1:  # a small blob
            r = size * rng.uniform(0.03, 0.07)
            m = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
        else:  # a small bar
            h, w = size * rng.uniform(0.02, 0.06), size * rng.uniform(0.06, 0.15)
            m = (np.abs(yy - cy) < h) & (np.abs(xx - cx) < w)
        img[m] = colour
    return img


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shape of unit size in object coordinates (u, v)."""
    if shape == "disc":
        return u**2 + (v / 0.8) ** 2 <= 1.0
    if shape == "box":
        return (np.abs(u) <= 0.9) & (np.abs(v) <= 0.65)
    if shape == "triangle":
        return (v <= 0.75) & (v >= -0.95 + 2.3 * np.abs(u))
    if shape == "star":
        r, phi = np.hypot(u, v), np.arctan2(v, u)
        return r <= 0.8 + 0.2 * np.cos(5 * phi)
    raise ValueError(f"unknown shape {shape!r}; shapes: {SHAPES}")


def _texture(shape: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Class texture in -1..1, in object coordinates (so it turns with the object)."""
    k = 2 * np.pi / period
    if shape == "disc":
        return np.sin(k * u)
    if shape == "box":
        return np.sin(k * u) * np.sin(k * v) * 1.6
    if shape == "triangle":
        return np.clip((np.cos(k * u) + np.cos(k * v)) * 1.5 - 1.5, -1, 1)
    return np.sin(k * np.hypot(u, v))


def _place(rng: np.random.Generator, shape: str, size: int, area: float, allow_border: bool):
    """Sample pose; returns (mask, u, v in pixels)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    ang = rng.random() * 2 * np.pi
    scale = size * np.sqrt(area) * 0.6
    anywhere = allow_border and rng.random() < 0.25
    # like photographs, mostly near the centre; a quarter anywhere, touching the border or not
    cy, cx = (rng.uniform(0, size, 2) if anywhere else size / 2 + rng.uniform(-0.15, 0.15, 2) * size)
    for _ in range(2):  # rescale once so the visible area is close to the target
        u = ((xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)) / scale
        v = (-(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)) / scale
        mask = _shape_mask(shape, u, v)
        got = mask.mean()
        if got > 0:
            scale *= np.sqrt(area / got)
    return mask, u * scale, v * scale


def _paint(rng: np.random.Generator, img: np.ndarray, shape: str, mask: np.ndarray, u: np.ndarray, v: np.ndarray):
    local = img[mask].mean(0) if mask.any() else np.full(3, 0.5)
    dist = np.linalg.norm(PALETTE - local, axis=1)
    choices = np.flatnonzero(dist > 0.35)
    base = PALETTE[rng.choice(choices) if choices.size else int(np.argmax(dist))]
    tex = _texture(shape, u, v, period=rng.uniform(5.0, 8.0))
    img[mask] = base + 0.06 * tex[mask][:, None]


def render_image(
    rng: np.random.Generator, classes: tuple[str, ...], objects: list[tuple[int, float]], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render one image with the given objects (class index, area fraction), later ones on top.

    Returns:
        (uint8 RGB [H, W, 3], labels uint8 [H, W] with 0 = background, i+1 = classes[i]).
    """
    img = _background(rng, size)
    labels = np.zeros((size, size), dtype=np.uint8)
    for cls, area in objects:
        mask, u, v = _place(rng, classes[cls], size, area, allow_border=True)
        _paint(rng, img, classes[cls], mask, u, v)
        labels[mask] = cls + 1
    img = ndimage.uniform_filter(img, size=(2, 2, 1))
    img = img + rng.normal(0, 0.012, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), labels


def _save_jpeg(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="JPEG", quality=95)


def _void_band(labels: np.ndarray, width: int = 1) -> np.ndarray:
    edges = np.zeros(labels.shape, dtype=bool)
    edges[:-1] |= labels[:-1] != labels[1:]
    edges[1:] |= labels[:-1] != labels[1:]
    edges[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edges[:, 1:] |= labels[:, :-1] != labels[:, 1:]
    if width > 1:
        edges = ndimage.binary_dilation(edges, iterations=width - 1)
    out = labels.copy()
    out[edges] = 255
    return out


def write_world(root: str | os.PathLike, spec: WorldSpec, class_ids: dict[str, int] | None = None) -> dict:
    """Generate the world under ``root``; returns a summary (counts per part).

    ``class_ids`` maps each class to its label id in the evaluation masks (default 1..K in order).
    """
    root = Path(root)
    ids = class_ids or {c: i + 1 for i, c in enumerate(spec.classes)}
    k = len(spec.classes)
    rng = np.random.default_rng(spec.seed)
    pal = voc_palette()
    summary: dict[str, int] = {}
    for ci, cls in enumerate(spec.classes):
        for n in range(spec.images_per_class):
            objects = []
            if k > 1 and rng.random() < spec.confuser_rate:
                other = int(rng.choice([j for j in range(k) if j != ci]))
                objects.append((other, rng.uniform(spec.min_area, 0.12)))
            objects.append((ci, float(np.exp(rng.uniform(np.log(spec.min_area), np.log(spec.max_area))))))
            rgb, labels = render_image(rng, spec.classes, objects, spec.size)
            mapped = np.zeros_like(labels)
            for j, c in enumerate(spec.classes):
                mapped[labels == j + 1] = ids[c]
            _save_jpeg(root / "images" / cls / f"{cls}_{n + 1:04d}.jpg", rgb)
            save_png(root / "masks" / cls / f"{cls}_{n + 1:04d}.png", mapped, palette=pal)
        summary[cls] = spec.images_per_class
    for n in range(spec.negatives):
        rgb, _ = render_image(rng, spec.classes, [], spec.size)
        _save_jpeg(root / "negatives" / f"neg_{n + 1:04d}.jpg", rgb)
    summary["negatives"] = spec.negatives
    erng = np.random.default_rng(spec.eval_seed)
    names = []
    for n in range(spec.eval_images):
        count = int(erng.integers(1, 4))
        objects = [(int(erng.integers(k)), float(erng.uniform(spec.min_area, 0.35))) for _ in range(count)]
        rgb, labels = render_image(erng, spec.classes, objects, spec.size)
        mapped = np.zeros_like(labels)
        for j, c in enumerate(spec.classes):
            mapped[labels == j + 1] = ids[c]
        name = f"eval_{n + 1:04d}"
        _save_jpeg(root / "eval" / "JPEGImages" / f"{name}.jpg", rgb)
        save_png(root / "eval" / "SegmentationClass" / f"{name}.png", _void_band(mapped), palette=pal)
        names.append(name)
    write_voc_dir_index(root / "eval", "val", names)
    summary["eval"] = spec.eval_images
    return summary
