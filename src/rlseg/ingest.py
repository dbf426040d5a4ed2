"""Ingest: check every image a class's training will use and list it in the class's manifest.

Manifest columns common to every source: ``path, sha1, width, height, status, reason`` (status = used |
skipped); the web source adds ``url, engine, query``. Downstream rules read manifests, never per-image
wildcards, so the whole workflow plans before any image exists.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from rlseg.imageio import IMAGE_SUFFIXES, MAX_PIXELS, MIN_SIDE, BadImageError, file_problem, load_image, regular_file
from rlseg.io import InputError, read_csv, within, write_csv

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["path", "sha1", "width", "height", "status", "reason", "dhash"]
WEB_COLUMNS = [*MANIFEST_COLUMNS, "url", "engine", "query"]

__all__ = [
    "MANIFEST_COLUMNS",
    "WEB_COLUMNS",
    "TooFewImagesError",
    "check_files",
    "dhash",
    "finalize_manifests",
    "folder_images",
    "negative_paths",
    "read_manifest",
    "read_pairs",
    "used_paths",
    "write_manifest",
]


class TooFewImagesError(InputError):
    """A class ended with fewer usable images than ``min_images``."""


def dhash(img: Image.Image, size: int = 8) -> int:
    """Difference hash (64 bits): near-duplicate images differ in few bits."""
    g = np.asarray(img.convert("L").resize((size + 1, size), Image.BILINEAR), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def folder_images(folder: str | os.PathLike) -> list[Path]:
    """Entries named like images (jpg, jpeg, png, any case) directly in ``folder``, sorted by name; hidden ones left
    out. Whether each is a regular file is for the reader to check (:func:`check_files` skips the others, naming
    what they are)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def read_image_list(path: str | os.PathLike) -> list[Path]:
    """Images named in a text file, one path a line (relative to the file's folder; blank lines and ``#`` comments
    skipped). Whether each is a readable image is for :func:`check_files`.

    Raises:
        FileNotFoundError: the list is missing or names nothing.
    """
    path = Path(path)
    problem = file_problem(path)
    if problem:
        raise FileNotFoundError(f"{path}: image list {problem}")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    files = [Path(os.path.normpath(path.parent / ln)) for ln in lines if ln and not ln.startswith("#")]
    if not files:
        raise FileNotFoundError(f"{path}: the image list names no image")
    return files


def check_files(
    files: Iterable[str | os.PathLike],
    root: str | os.PathLike | None = None,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
    on_bad_image: str = "skip",
) -> list[dict]:
    """Check each file and return candidate rows (used or skipped with the reason, and a difference hash).

    A file is skipped when it is not a regular file (a FIFO, socket, device or directory; a dangling link or a link
    loop), a symlink pointing outside ``root``, larger on disk than an image of ``max_pixels`` can be (never read),
    does not decode, is a decompression bomb (> ``max_pixels``), has a side shorter than ``min_side``, or has the
    same bytes as an earlier file.
    Near-duplicates are found later, across all classes (:func:`finalize_manifests`).

    Raises:
        BadImageError: on the first bad file when ``on_bad_image == "error"``.
    """
    rows: list[dict] = []
    seen_sha: dict[str, str] = {}
    for f in files:
        path = Path(f)
        row = {"path": str(path), "sha1": "", "width": "", "height": "", "status": "skipped", "reason": "",
               "dhash": ""}
        try:
            regular_file(path)
            if root is not None and path.is_symlink() and not within(path.resolve(), Path(root).resolve()):
                raise BadImageError(path, f"symlink pointing outside the data folder ({os.readlink(path)})")
            size = path.stat().st_size
            if size > 4 * max_pixels + (1 << 20):  # more bytes than 4 a pixel: no image of max_pixels, never read
                raise BadImageError(path, f"file of {size} bytes, larger than an image of {max_pixels} pixels can be")
            try:
                data = path.read_bytes()  # read once: decoded and hashed from memory
            except OSError as err:
                raise BadImageError(path, f"unreadable ({err.strerror or err})") from None
            img = load_image(path, max_pixels=max_pixels, min_side=min_side, data=data)
            digest = hashlib.sha1(data).hexdigest()
            row.update(sha1=digest, width=img.size[0], height=img.size[1], dhash=f"{dhash(img):016x}")
            if digest in seen_sha:
                raise BadImageError(path, f"duplicate of {seen_sha[digest]}")
            seen_sha[digest] = str(path)
            row.update(status="used", reason="")
        except BadImageError as err:
            if on_bad_image == "error":
                raise
            row["reason"] = err.reason
        rows.append(row)
    return rows


def finalize_manifests(
    candidates: dict[str, list[dict]], near_duplicate_bits: int = 4, min_images: int = 1, shared: str = "drop"
) -> dict[str, list[dict]]:
    """Turn each class's candidate rows into its manifest rows.

    Within a class, a near-duplicate (difference hash within ``near_duplicate_bits`` bits; -1 turns this off)
    of an earlier image is skipped. An image with a near-duplicate under another class is, with ``shared``
    ``"drop"``, dropped from both classes and logged (its label is ambiguous); with ``"keep"`` it stays under
    both, as a photo that holds both (it is then never a negative of either: :func:`negative_paths`).

    Raises:
        TooFewImagesError: naming every class left with fewer than ``min_images`` used images, and the counts.
    """
    out = {c: [dict(r) for r in rows] for c, rows in candidates.items()}
    if near_duplicate_bits >= 0:
        kept: dict[str, list[tuple[int, dict]]] = {}
        for cls, rows in out.items():
            kept[cls] = []
            for r in rows:
                if r["status"] != "used" or not r.get("dhash"):
                    continue
                h = int(r["dhash"], 16)
                twin = next((t for hh, t in kept[cls] if hamming(h, hh) <= near_duplicate_bits), None)
                if twin is not None:
                    r.update(status="skipped", reason=f"near-duplicate of {twin['path']}")
                else:
                    kept[cls].append((h, r))
        classes = list(kept) if shared == "drop" else []
        for i, a in enumerate(classes):
            for b in classes[i + 1 :]:
                for ha, ra in kept[a]:
                    for hb, rb in kept[b]:
                        if hamming(ha, hb) <= near_duplicate_bits:
                            ra.update(status="skipped", reason=f"near-duplicate under class {b}: {rb['path']}")
                            rb.update(status="skipped", reason=f"near-duplicate under class {a}: {ra['path']}")
                            log.warning("dropped near-duplicates %s (%s) and %s (%s)", ra["path"], a, rb["path"], b)
    short = []
    for cls, rows in out.items():
        used = sum(r["status"] == "used" for r in rows)
        if len(rows) - used:
            log.warning("class %s: skipped %d of %d images", cls, len(rows) - used, len(rows))
        if used < min_images:
            short.append(f"class {cls!r}: {used} usable of {len(rows)} ({len(rows) - used} skipped)")
    if short:
        raise TooFewImagesError("; ".join(short) + f"; fewer than images.min_images = {min_images}")
    return out


def write_manifest(path: str | os.PathLike, rows: list[dict], columns: Sequence[str] | None = None) -> None:
    """Write manifest (or candidate) rows as CSV."""
    if columns is None:
        columns = WEB_COLUMNS if rows and "url" in rows[0] else MANIFEST_COLUMNS
    write_csv(path, rows, columns)


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """A class's manifest (:func:`write_manifest`): its rows, every cell a string (:func:`rlseg.io.read_csv`)."""
    return read_csv(path)


def read_pairs(pair_files: Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """The (image, label) pairs that ``pairs.csv`` files list (pseudo labels, true masks), in order."""
    return [(r["image"], r["label"]) for f in pair_files for r in read_csv(f)]


def used_paths(path: str | os.PathLike) -> list[str]:
    """Paths of the used images of a manifest, in manifest order."""
    return [r["path"] for r in read_manifest(path) if r["status"] == "used"]


def negative_paths(own: str | os.PathLike, others: Sequence[str | os.PathLike], near_duplicate_bits: int = 4
                   ) -> list[str]:
    """The used images of the ``others`` manifests that may serve as a class's negatives: every one that is not
    the same file (SHA-1) as one of the class's own images in ``own``, nor a near-duplicate of one (difference
    hash within ``near_duplicate_bits``; -1 compares SHA-1 only), nor listed twice. A photo found under two
    classes holds both, so it must not push either to background."""
    mine = [r for r in read_manifest(own) if r["status"] == "used"]
    sha = {r["sha1"] for r in mine}
    hashes = [int(r["dhash"], 16) for r in mine if r.get("dhash")] if near_duplicate_bits >= 0 else []
    out: dict[str, None] = {}
    for m in others:
        for r in read_manifest(m):
            if r["status"] != "used" or r["sha1"] in sha:
                continue
            if r.get("dhash") and any(hamming(int(r["dhash"], 16), h) <= near_duplicate_bits for h in hashes):
                continue
            out[r["path"]] = None
    return list(out)
