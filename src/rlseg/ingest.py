"""Ingest: check every image a class's training will use and list it in the class's manifest.

Manifest columns common to every source: ``path, sha1, width, height, status, reason`` (status = used |
skipped); the web source adds ``url, engine, query``. Downstream rules read manifests, never per-image
wildcards, so the whole workflow plans before any image exists.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from rlseg.imageio import IMAGE_SUFFIXES, MAX_PIXELS, BadImageError, load_image
from rlseg.io import write_csv

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["path", "sha1", "width", "height", "status", "reason"]
WEB_COLUMNS = [*MANIFEST_COLUMNS, "url", "engine", "query"]

__all__ = [
    "MANIFEST_COLUMNS",
    "WEB_COLUMNS",
    "TooFewImagesError",
    "check_files",
    "dhash",
    "folder_images",
    "read_manifest",
    "used_paths",
    "write_manifest",
]


class TooFewImagesError(RuntimeError):
    """A class ended with fewer usable images than ``min_images``."""


def sha1_of(path: str | os.PathLike) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dhash(img: Image.Image, size: int = 8) -> int:
    """Difference hash (64 bits): near-duplicate images differ in few bits."""
    g = np.asarray(img.convert("L").resize((size + 1, size), Image.BILINEAR), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def folder_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (jpg, jpeg, png, any case) directly in ``folder``, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _outside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return False
    except ValueError:
        return True


def check_files(
    files: Iterable[str | os.PathLike],
    root: str | os.PathLike | None = None,
    max_pixels: int = MAX_PIXELS,
    min_side: int = 32,
    on_bad_image: str = "skip",
    near_duplicate_bits: int = -1,
    extra: Sequence[dict] | None = None,
) -> list[dict]:
    """Check each file and return manifest rows (used or skipped with the reason).

    A file is skipped when it is a symlink pointing outside ``root``, does not decode, is a decompression
    bomb (> ``max_pixels``), has a side shorter than ``min_side``, or duplicates an earlier file (same bytes;
    or, with ``near_duplicate_bits`` >= 0, a difference hash within that many bits).

    Raises:
        BadImageError: on the first bad file when ``on_bad_image == "error"``.
    """
    rows: list[dict] = []
    seen_sha: dict[str, str] = {}
    seen_hash: list[tuple[int, str]] = []
    for i, f in enumerate(files):
        path = Path(f)
        row = {"path": str(path), "sha1": "", "width": "", "height": "", "status": "skipped", "reason": ""}
        if extra is not None:
            row.update(extra[i])
        try:
            if root is not None and path.is_symlink() and _outside(path, Path(root)):
                raise BadImageError(path, f"symlink pointing outside the data folder ({os.readlink(path)})")
            img = load_image(path, max_pixels=max_pixels, min_side=min_side)
            digest = sha1_of(path)
            row.update(sha1=digest, width=img.size[0], height=img.size[1])
            if digest in seen_sha:
                raise BadImageError(path, f"duplicate of {seen_sha[digest]}")
            if near_duplicate_bits >= 0:
                h = dhash(img)
                twin = next((p for hh, p in seen_hash if hamming(h, hh) <= near_duplicate_bits), None)
                if twin is not None:
                    raise BadImageError(path, f"near-duplicate of {twin}")
                seen_hash.append((h, str(path)))
            seen_sha[digest] = str(path)
            row.update(status="used", reason="")
        except BadImageError as err:
            if on_bad_image == "error":
                raise
            row["reason"] = err.reason
        rows.append(row)
    return rows


def write_manifest(path: str | os.PathLike, rows: list[dict], cls: str, min_images: int = 1,
                   columns: Sequence[str] = MANIFEST_COLUMNS) -> None:
    """Write a class manifest; refuses (after writing it, so the reasons can be read) when too few are usable."""
    write_csv(path, rows, columns)
    used = sum(r["status"] == "used" for r in rows)
    skipped = len(rows) - used
    if skipped:
        log.warning("class %s: skipped %d of %d images (reasons in %s)", cls, skipped, len(rows), path)
    if used < min_images:
        raise TooFewImagesError(
            f"class {cls!r}: {used} usable images of {len(rows)} found ({skipped} skipped), "
            f"fewer than images.min_images = {min_images}; see {path}"
        )


def read_manifest(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def used_paths(path: str | os.PathLike) -> list[str]:
    """Paths of the used images of a manifest, in manifest order."""
    return [r["path"] for r in read_manifest(path) if r["status"] == "used"]
