"""Atomic file output: every result is written to a temporary name in its folder, then renamed.

A killed job or a full disk therefore never leaves a truncated file that looks finished, and the
previous version of an output stays intact until the new one is complete.
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["atomic_path", "save_png", "save_torch", "write_csv", "write_text"]


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes it private; the output gets the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]], fieldnames: Sequence[str] | None = None) -> None:
    """Write dict rows as CSV atomically (columns: ``fieldnames`` or the union of the rows' keys in order)."""
    if fieldnames is None:
        fieldnames = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fieldnames), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def save_png(path: str | os.PathLike, array: np.ndarray, palette: Sequence[int] | None = None) -> None:
    """Save a uint8 array as PNG atomically; with ``palette`` as a palette ('P' mode) PNG, as VOC stores masks."""
    img = Image.fromarray(np.asarray(array, dtype=np.uint8))
    if palette is not None:
        img = img.convert("P") if img.mode != "L" else img
        img.putpalette(list(palette))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
