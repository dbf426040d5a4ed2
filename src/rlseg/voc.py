"""Pascal VOC: class names, palette, VOC-layout directories, the VOC 2012 download and PascalSingle."""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rlseg.imageio import BadImageError, load_mask, upright_size, voc_palette, voc_palette_array
from rlseg.io import UnsafeNameError, child_path, plain_name, write_csv, write_text

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

__all__ = [
    "VOC_CLASSES",
    "VocSample",
    "class_ids",
    "download_voc2012",
    "eval_voc_root",
    "read_ids",
    "read_voc_dir",
    "check_samples",
    "label_count",
    "voc_palette",
    "voc_palette_array",
    "write_voc_dir_index",
]


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


def read_ids(index: str | os.PathLike) -> list[str]:
    """The image ids of a VOC list file (one a line; blank lines skipped), each checked to be a plain file name
    (:func:`rlseg.io.plain_name`: no separator, no ``..``) and listed once.

    Raises:
        UnsafeNameError: naming the file, the line and the id.
    """
    ids: dict[str, int] = {}
    for n, line in enumerate(Path(index).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        image_id = plain_name(line.strip(), f"{index}, line {n}")
        if image_id in ids:
            raise UnsafeNameError(f"{index}, line {n}: id {image_id!r} listed again (first on line {ids[image_id]})")
        ids[image_id] = n
    return list(ids)


def read_voc_dir(root: str | os.PathLike, split: str = "val") -> list[VocSample]:
    """List the samples of a VOC-layout directory (``JPEGImages/``, ``SegmentationClass/``,
    ``ImageSets/Segmentation/<split>.txt``).

    Raises:
        FileNotFoundError: naming the missing part of the layout or the first missing image or mask.
        UnsafeNameError: an id that is not a plain file name, or listed twice (:func:`read_ids`).
    """
    root = Path(root)
    index = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    missing = [d for d in ("JPEGImages", "SegmentationClass") if not (root / d).is_dir()]
    if missing or not index.is_file():
        what = f"{', '.join(missing)} missing" if missing else f"split file {index} missing"
        raise FileNotFoundError(f"{root}: not a VOC-layout folder ({what}); it needs JPEGImages/, "
                                f"SegmentationClass/ and ImageSets/Segmentation/{split}.txt")
    samples = []
    for image_id in read_ids(index):
        image = child_path(root / "JPEGImages", image_id, ".jpg")
        if not os.path.lexists(image) and os.path.lexists(image.with_suffix(".png")):
            image = image.with_suffix(".png")
        mask = child_path(root / "SegmentationClass", image_id, ".png")
        for p in (image, mask):
            if not os.path.lexists(p):
                raise FileNotFoundError(f"{p}: listed in {index} but missing")
        samples.append(VocSample(image_id, image, mask))
    return samples


def label_count(classes: list[str]) -> int:
    """How many label values a mask of these classes may hold besides void (255): VOC's 21 when every class is a
    VOC name (the other VOC classes' pixels count as background), else background + the K classes."""
    return len(VOC_CLASSES) if all(c in VOC_CLASSES[1:] for c in classes) else len(classes) + 1


def check_samples(samples: list[VocSample], num_labels: int) -> None:
    """Check an evaluation set before anything is trained on its account: every image's header reads, every mask
    decodes, holds only labels 0 .. ``num_labels`` - 1 or 255, and has its image's size (EXIF orientation applied).

    Raises:
        BadImageError: naming the first file at fault and what is wrong.
    """
    for s in samples:
        w, h = upright_size(s.image)
        mask = load_mask(s.mask, num_classes=num_labels)
        if mask.shape != (h, w):
            raise BadImageError(s.mask, f"mask is {mask.shape[1]}x{mask.shape[0]}, its image {s.image} is {w}x{h}")


def write_voc_dir_index(root: str | os.PathLike, split: str, ids: list[str]) -> None:
    """Write ``ImageSets/Segmentation/<split>.txt``."""
    ids = [plain_name(i) for i in ids]
    write_text(Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt", "".join(f"{i}\n" for i in ids))


def eval_voc_root(eval_settings: dict, results: str | os.PathLike) -> Path:
    """Where a ``voc2012`` evaluation reads (or downloads) VOC 2012: ``eval.root``, else ``<results>/voc``."""
    return Path(eval_settings.get("root") or Path(results) / "voc")


def download_voc2012(root: str | os.PathLike, split: str = "val") -> Path:
    """VOC 2012 through torchvision's ``VOCSegmentation`` (md5-checked); returns the ``VOC2012`` directory.

    An existing ``VOCdevkit`` under ``root`` is used as it is.
    """
    from torchvision.datasets import VOCSegmentation  # torchvision's data sets: for this download only

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


def prepare_voc2012(root: str | os.PathLike, flag: str | os.PathLike) -> Path:
    """Download VOC 2012 (train and val come in one archive) into ``root`` unless it is there, then write ``flag``
    (the ``VOC2012`` path): the one download that PascalSingle and the evaluation set both wait for."""
    download_voc2012(root, "train")
    voc = download_voc2012(root, "val")  # present after the train download: a check, not a second download
    write_text(Path(flag), f"{voc}\n")
    return voc


def image_labels_from_xml(path: str | os.PathLike) -> set[str]:
    """Image-level labels (object names) of a VOC annotation XML file."""
    tree = ET.parse(path)
    return {obj.findtext("name", "").strip() for obj in tree.getroot().iter("object")} - {""}


def image_labels_from_mask(mask: np.ndarray) -> set[str]:
    """Image-level labels of a class-index mask (only which classes occur; the pixels are not used)."""
    return {VOC_CLASSES[v] for v in np.unique(mask) if 0 < v < len(VOC_CLASSES)}


def _read_ids(path: Path) -> list[str]:
    return read_ids(path) if path.is_file() else []


def pascal_single(voc: str | os.PathLike, sbd: str | os.PathLike | None = None) -> list[dict]:
    """PascalSingle: images of the augmented training set (VOC 2012 train + SBD train_noval, never an image of
    VOC 2012 val) whose image-level labels hold exactly one class.

    Image-level labels come from the XML annotations, else from SBD's class masks or VOC's class PNGs (only
    which classes occur is read; pixel masks are never used for training).

    Args:
        voc: the ``VOC2012`` directory. sbd: SBD's directory (``img/``, ``cls/``, ``train_noval.txt``).
    Returns:
        rows {id, class, path, labels_from}, one per single-class image.
    """
    voc = Path(voc)
    val = set(_read_ids(voc / "ImageSets" / "Segmentation" / "val.txt"))
    ids = _read_ids(voc / "ImageSets" / "Segmentation" / "train.txt")
    if sbd is not None:
        ids += _read_ids(Path(sbd) / "train_noval.txt")
    rows = []
    for image_id in dict.fromkeys(ids):
        if image_id in val:
            continue
        labels, source = _image_labels(voc, Path(sbd) if sbd else None, image_id)
        if len(labels) != 1:
            continue
        image = child_path(voc / "JPEGImages", image_id, ".jpg")
        if not image.is_file() and sbd is not None:
            image = child_path(Path(sbd) / "img", image_id, ".jpg")
        if image.is_file():
            rows.append({"id": image_id, "class": next(iter(labels)), "path": str(image), "labels_from": source})
    return rows


def _image_labels(voc: Path, sbd: Path | None, image_id: str) -> tuple[set[str], str]:
    xml = voc / "Annotations" / f"{image_id}.xml"
    if xml.is_file():
        return image_labels_from_xml(xml), "xml"
    if sbd is not None and (sbd / "cls" / f"{image_id}.mat").is_file():
        from scipy.io import loadmat  # scipy.io: only SBD's .mat masks need it

        seg = loadmat(sbd / "cls" / f"{image_id}.mat")["GTcls"][0]["Segmentation"][0]
        return image_labels_from_mask(np.asarray(seg)), "sbd_mask"
    png = voc / "SegmentationClass" / f"{image_id}.png"
    if png.is_file():
        return image_labels_from_mask(np.asarray(Image.open(png))), "voc_mask"
    return set(), "none"


def locate_voc(root: str | os.PathLike, download: bool = True, use_sbd: bool = True) -> tuple[Path, Path | None]:
    """The VOC2012 and SBD directories under ``root`` (downloaded through torchvision when missing).

    ``use_sbd=False`` uses VOC 2012 train alone (not the augmented set)."""
    root = Path(root)
    voc = root / "VOCdevkit" / "VOC2012"
    if not (voc / "ImageSets" / "Segmentation" / "train.txt").is_file():
        if not download:
            raise FileNotFoundError(f"{voc}: no VOC 2012 here")
        voc = download_voc2012(root, "train")
    sbd = root / "SBD"
    if not use_sbd:
        return voc, None
    if not (sbd / "train_noval.txt").is_file():
        if not download:
            return voc, None
        try:
            from torchvision.datasets import SBDataset  # torchvision's data sets: for this download only

            SBDataset(str(sbd), image_set="train_noval", mode="segmentation", download=True)
        except Exception as err:
            raise RuntimeError(f"could not download SBD into {sbd} ({type(err).__name__}: {err}); without "
                               "internet put an extracted SBD there (img/, cls/, train_noval.txt)") from err
    return voc, sbd


def write_pascal_single(root: str | os.PathLike, classes: list[str], out_csv: str | os.PathLike,
                        use_sbd: bool = True) -> None:
    """Write the PascalSingle index (id, class, path, labels_from) for the configured classes."""
    voc, sbd = locate_voc(root, use_sbd=use_sbd)
    rows = [r for r in pascal_single(voc, sbd) if r["class"] in classes]
    write_csv(out_csv, rows, ["id", "class", "path", "labels_from"])
    counts = {c: sum(r["class"] == c for r in rows) for c in classes}
    logging.getLogger(__name__).info("PascalSingle: %d images %s -> %s", len(rows), counts, out_csv)


def true_mask_for(image_path: str | os.PathLike) -> Path | None:
    """The class-index mask of a VOC training image (SegmentationClassAug, else SegmentationClass), if any."""
    p = Path(image_path)
    voc = p.parents[1]
    for folder in ("SegmentationClassAug", "SegmentationClass"):
        mask = voc / folder / f"{p.stem}.png"
        if mask.is_file():
            return mask
    return None
