"""Atomic file output: every result is written to a temporary name in its folder, then renamed.

A killed job or a full disk therefore never leaves a truncated file that looks finished, and the
previous version of an output stays intact until the new one is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

__all__ = ["CheckpointMismatch", "EncoderWeightsUnavailable", "InputError", "NetworkUnavailable", "UnsafeNameError",
           "atomic_path", "child_path", "plain_name", "read_csv", "save_png", "save_torch", "unique_stems", "within",
           "write_csv", "write_json", "write_text"]


class InputError(ValueError):
    """A command's inputs or outputs that cannot work together (no input, an output over an input, ...)."""


class CheckpointMismatch(RuntimeError):
    """A checkpoint or weights file that does not fit the run asking for it (raised by :mod:`rlseg.checkpoint`;
    declared here, without torch, for the command line's error contract)."""


class EncoderWeightsUnavailable(RuntimeError):
    """Pretrained weights could not be loaded (typically: no internet). Raised by the model builders; declared
    here, without torch, for the error contract of the command line and the workflow's jobs."""


class NetworkUnavailable(RuntimeError):
    """The search engine cannot be reached (raised by :mod:`rlseg.crawl`; declared here like the one above)."""


class UnsafeNameError(ValueError):
    """A name read from data (a list file, a folder) that cannot be used as one file name."""


def plain_name(name: str, where: str = "") -> str:
    """``name`` if it is usable as one file name inside a folder: not empty, no path separator, not ``.``/``..``,
    no NUL or line break. ``where`` (a file and line) goes into the error.

    Raises:
        UnsafeNameError: naming ``where`` and the name.
    """
    seps = {"/", "\\", "\0", "\n", "\r"} | ({os.sep, os.altsep} - {None})
    if not name or name.strip() != name or name in (".", "..") or any(c in name for c in seps):
        raise UnsafeNameError(f"{where + ': ' if where else ''}{name!r} is not a plain file name (empty, "
                              "surrounded by spaces, '.', '..', or holding a path separator)")
    return name


def within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it, compared as given (resolve both first to follow links)."""
    return path == folder or folder in path.parents


def child_path(folder: str | os.PathLike, name: str, suffix: str = "") -> Path:
    """``folder / (name + suffix)`` after checking that ``name`` is a plain name, so the path stays in ``folder``."""
    path = Path(folder) / (plain_name(name) + suffix)
    if path.parent != Path(folder):
        raise UnsafeNameError(f"{name!r} would leave {folder}")
    return path


def unique_stems(paths: Sequence[str | os.PathLike]) -> list[str]:
    """One output name per input file, never shared: the file's stem where no other input has it (``x.jpg`` ->
    ``x``), else its name with the suffix kept (``x.jpg`` -> ``x_jpg``, ``x.png`` -> ``x_png``), and, for the same
    file name in two folders, a running number after it (``x_jpg_2``). Case is ignored when comparing, as on
    case-insensitive file systems."""
    stems = [Path(p).stem for p in paths]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s.lower()] = counts.get(s.lower(), 0) + 1
    out: list[str] = []
    taken: set[str] = {s.lower() for s in stems if counts[s.lower()] == 1}
    for p, s in zip(paths, stems, strict=True):
        if counts[s.lower()] == 1:
            out.append(s)
            continue
        name = Path(p).name.replace(".", "_")
        cand, k = name, 1
        while cand.lower() in taken:
            k += 1
            cand = f"{name}_{k}"
        taken.add(cand.lower())
        out.append(cand)
    return out


def _remove_stale_temps(path: Path) -> None:
    """Temp files an interrupted (killed) write of ``path`` left beside it: the next write of ``path`` removes them."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp")
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Temp files that a killed earlier write of ``path`` left behind are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
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
    import torch  # the seconds-long jobs import io and never save tensors: torch's import stays out of them

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (keys sorted) atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]], fieldnames: Sequence[str] | None = None) -> None:
    """Write dict rows as CSV atomically (columns: ``fieldnames`` or the union of the rows' keys in order; a key a
    row lacks is an empty cell, a key not among the columns is left out)."""
    if fieldnames is None:
        fieldnames = list(dict.fromkeys(k for r in rows for k in r))
    # object columns, a missing key or None an empty cell: every value is written as str() gives it (an int
    # stays "3" beside an empty cell, a NaN stays "nan"), as the csv module writes them
    table = pd.DataFrame([{c: "" if r.get(c) is None else r[c] for c in fieldnames} for r in rows],
                         columns=list(fieldnames), dtype=object)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\r\n", na_rep="nan")


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, every cell a string ("" where empty); a file without even a header
    has none."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return []
    return table.to_dict("records")


def save_png(path: str | os.PathLike, array: np.ndarray, palette: Sequence[int] | None = None) -> None:
    """Save a uint8 array as PNG atomically; with ``palette`` as a palette ('P' mode) PNG, as VOC stores masks."""
    img = Image.fromarray(np.asarray(array, dtype=np.uint8))
    if palette is not None:
        img = img.convert("P") if img.mode != "L" else img
        img.putpalette(list(palette))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
