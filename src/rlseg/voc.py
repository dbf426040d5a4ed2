"""Pascal VOC: class names, palette, VOC-layout directories, the VOC 2012 download and PascalSingle."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

__all__ = [
    "VOC_CLASSES",
    "VocSample",
    "class_ids",
    "download_voc2012",
    "read_voc_dir",
    "voc_palette",
    "voc_palette_array",
    "write_voc_dir_index",
]


def voc_palette(n: int = 256) -> list[int]:
    """The standard VOC colour map as a flat [r, g, b, ...] list of 256 colours (bit-interleaved)."""
    pal = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def voc_palette_array() -> np.ndarray:
    """The VOC colour map as a [256, 3] uint8 array."""
    return np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)


def class_ids(classes: list[str]) -> dict[str, int]:
    """Label id of each class: the VOC id when every class is a VOC name, else 1..K in config order."""
    if all(c in VOC_CLASSES[1:] for c in classes):
        return {c: VOC_CLASSES.index(c) for c in classes}
    return {c: i + 1 for i, c in enumerate(classes)}


@dataclass(frozen=True)
class VocSample:
    """One image of a VOC-layout directory and its mask."""

    image_id: str
    image: Path
    mask: Path


def read_voc_dir(root: str | os.PathLike, split: str = "val") -> list[VocSample]:
    """List the samples of a VOC-layout directory (``JPEGImages/``, ``SegmentationClass/``,
    ``ImageSets/Segmentation/<split>.txt``).

    Raises:
        FileNotFoundError: naming the missing part of the layout or the first missing image or mask.
    """
    root = Path(root)
    index = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: split file missing; a VOC-layout directory needs "
                                "JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/<split>.txt")
    samples = []
    for line in index.read_text().split():
        image = root / "JPEGImages" / f"{line}.jpg"
        if not image.is_file():
            alt = image.with_suffix(".png")
            image = alt if alt.is_file() else image
        mask = root / "SegmentationClass" / f"{line}.png"
        for p in (image, mask):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: listed in {index} but missing")
        samples.append(VocSample(line, image, mask))
    return samples


def write_voc_dir_index(root: str | os.PathLike, split: str, ids: list[str]) -> None:
    """Write ``ImageSets/Segmentation/<split>.txt``."""
    from rlseg.io import write_text

    write_text(Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt", "".join(f"{i}\n" for i in ids))


def download_voc2012(root: str | os.PathLike, split: str = "val") -> Path:
    """VOC 2012 through torchvision's ``VOCSegmentation`` (md5-checked); returns the ``VOC2012`` directory.

    An existing ``VOCdevkit`` under ``root`` is used as it is.
    """
    from torchvision.datasets import VOCSegmentation

    root = Path(root)
    voc = root / "VOCdevkit" / "VOC2012"
    if not (voc / "ImageSets" / "Segmentation" / f"{split}.txt").is_file():
        try:
            VOCSegmentation(str(root), year="2012", image_set=split, download=True)
        except Exception as err:
            raise RuntimeError(
                f"could not download Pascal VOC 2012 into {root} ({type(err).__name__}: {err}). Without "
                "internet, put an extracted VOCdevkit/VOC2012 there, or use eval.source: voc_dir."
            ) from err
    return voc


def image_labels_from_xml(path: str | os.PathLike) -> set[str]:
    """Image-level labels (object names) of a VOC annotation XML file."""
    tree = ET.parse(path)
    return {obj.findtext("name", "").strip() for obj in tree.getroot().iter("object")} - {""}


def image_labels_from_mask(mask: np.ndarray) -> set[str]:
    """Image-level labels of a class-index mask (only which classes occur; the pixels are not used)."""
    return {VOC_CLASSES[v] for v in np.unique(mask) if 0 < v < len(VOC_CLASSES)}
