"""Decoding images and masks safely: every failure is a :class:`BadImageError` naming the file and the problem."""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from rlseg.settings import defaults

MAX_PIXELS = defaults("images")["max_pixels"]
MIN_SIDE = defaults("images")["min_side"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# pixels of the photos labelled together: inference keeps each photo's full-size probability (and its decoded
# RGB), so 32 phone photos of 12 MP would hold ~5 GB where 32 VOC photos (6 MP in all) hold ~0.2 GB
BATCH_PIXELS = 16_000_000
T = TypeVar("T")

__all__ = ["BATCH_PIXELS", "IMAGE_SUFFIXES", "MAX_PIXELS", "MIN_SIDE", "BadImageError", "file_problem", "load_image",
           "last_image_pixels", "load_mask", "overlay", "pixel_batches", "regular_file", "to_rgb", "upright_size",
           "voc_palette", "voc_palette_array"]


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


class BadImageError(ValueError):
    """An image or mask that cannot be used; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as an image or mask file without opening it, or None for a regular file.

    Opening a FIFO blocks until a writer comes, a device may never end, and a link loop or a dangling link fails
    deep inside the decoder: each is found from ``stat`` alone."""
    try:
        st = os.stat(path)  # follows links: a link to a regular file is fine
    except FileNotFoundError as err:
        return "dangling symlink" if os.path.islink(path) else f"file not found ({err.strerror})"
    except OSError as err:  # ELOOP (a link loop), EACCES, ENAMETOOLONG, ...
        return f"cannot stat ({err.strerror or err})"
    if stat.S_ISREG(st.st_mode):
        return None
    kind = next((what for test, what in _KINDS if test(st.st_mode)), "not a regular file")
    return f"not a regular file ({kind})"


def regular_file(path: str | os.PathLike) -> Path:
    """``path`` if it is a regular file (or a link to one).

    Raises:
        BadImageError: naming the file and what it is instead (:func:`file_problem`).
    """
    problem = file_problem(path)
    if problem:
        raise BadImageError(path, problem)
    return Path(path)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: transparency composited onto white, 16-bit scaled to 8-bit, CMYK converted."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def upright_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the image :func:`load_image` returns (EXIF orientation applied), from the header alone.

    Raises:
        BadImageError: not a regular file, or a header that does not parse.
    """
    regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(path)
        with img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (*DECODER_ERRORS, Image.DecompressionBombError) as err:
        raise BadImageError(path, f"unreadable image header ({type(err).__name__}: {err})") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)  # these orientations turn the image a quarter


# what Pillow's decoders raise on a malformed file (its plugins parse headers with struct and index tables that a
# bad file makes short); a bug of ours (AttributeError, NameError, ...) still surfaces as itself
DECODER_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError,
                  ZeroDivisionError)


def load_image(
    path: str | os.PathLike, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE, data: bytes | None = None
) -> Image.Image:
    """Decode an image file (or its ``data`` already in memory) to an RGB PIL image, honouring EXIF orientation.

    Raises:
        BadImageError: empty, not an image, truncated or corrupt, larger than ``max_pixels`` (checked from the
            header, before decoding: a decompression bomb), or with a side shorter than ``min_side``.
    """
    path = Path(path)
    if data is None:
        regular_file(path)
    try:
        if (len(data) if data is not None else path.stat().st_size) == 0:
            raise BadImageError(path, "empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data) if data is not None else path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise BadImageError(path, f"too many pixels ({w}x{h} > {max_pixels}; decompression bomb?)")
                img.load()
                img = ImageOps.exif_transpose(img)
                rgb = to_rgb(img)
    except BadImageError:
        raise
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image") from None
    except Image.DecompressionBombError as err:  # PIL's own cap, left as PIL has it, is over twice its limit
        raise BadImageError(path, f"too many pixels; decompression bomb? ({err})") from None
    except DECODER_ERRORS as err:
        raise BadImageError(path, f"corrupt or truncated image ({type(err).__name__}: {err})") from None
    if min(rgb.size) < min_side:
        raise BadImageError(path, f"too small ({rgb.size[0]}x{rgb.size[1]}, shorter side < {min_side})")
    return rgb


def load_mask(path: str | os.PathLike, size: tuple[int, int] | None = None, num_classes: int = 21,
              palette: np.ndarray | None = None) -> np.ndarray:
    """Read a segmentation mask as class indices (uint8, 255 = void).

    Palette ('P') and single-channel PNGs are read as indices; an RGB mask is mapped through ``palette``
    (the VOC palette by default) and must use only its colours. ``size`` (width, height) must match when given.

    Raises:
        BadImageError: unreadable, wrong size, values that are neither a class index nor 255, or RGB colours
            outside the palette.
    """
    path = regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(path)
        with img:
            img.load()
            mode = img.mode
            arr = np.asarray(img)
    except FileNotFoundError:
        raise BadImageError(path, "mask file not found") from None
    except (*DECODER_ERRORS, Image.DecompressionBombError) as err:
        raise BadImageError(path, f"unreadable mask ({type(err).__name__}: {err})") from None
    if size is not None and (arr.shape[1], arr.shape[0]) != tuple(size):
        raise BadImageError(path, f"mask is {arr.shape[1]}x{arr.shape[0]}, expected {size[0]}x{size[1]}")
    if arr.ndim == 3:
        if palette is None:
            palette = voc_palette_array()
        rgb = arr[..., :3].astype(np.int64)
        codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        lut = {int(r) << 16 | int(g) << 8 | int(b): i for i, (r, g, b) in enumerate(palette[:num_classes])}
        lut[224 << 16 | 224 << 8 | 192] = 255  # VOC's void colour
        out = np.full(codes.shape, 254, dtype=np.uint8)
        for code, idx in lut.items():
            out[codes == code] = idx
        if (out == 254).any():
            bad = np.unique(codes[out == 254])[:3]
            colours = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in bad]
            raise BadImageError(path, f"RGB mask has colours outside the VOC palette, e.g. {colours}")
        return out
    if mode not in ("P", "L", "1"):
        arr = arr.astype(np.int64)
    values = np.unique(arr)
    bad = values[(values >= num_classes) & (values != 255)]
    if bad.size:
        raise BadImageError(path, f"mask values {bad[:5].tolist()} are neither a class index (< {num_classes}) nor 255")
    if mode == "1":
        arr = arr.astype(np.uint8)
    return arr.astype(np.uint8)


def overlay(image: Image.Image, label: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The image with each labelled pixel tinted by its palette colour (background left as it is)."""
    rgb = np.asarray(image, dtype=np.float32)
    colour = palette[label].astype(np.float32)
    mask = (label > 0) & (label != 255)
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colour[mask]
    return Image.fromarray(rgb.round().astype(np.uint8))


def last_image_pixels(item: tuple) -> int:
    """Pixels of the image that ends ``item`` (a ``(path, name, image)`` tuple of decoded photos), for
    :func:`pixel_batches`."""
    image = item[-1]
    return image.width * image.height


def pixel_batches(items: Iterable[T], pixels: Callable[[T], int], batch_size: int,
                  max_pixels: int | None = None) -> Iterator[list[T]]:
    """Consecutive ``items`` in lists of at most ``batch_size`` items and ``max_pixels`` pixels in all (by default
    :data:`BATCH_PIXELS`); an item larger than that alone is a list of one. ``items`` is read lazily, one ahead of
    the list it yields, so a generator of decoded images holds one batch of them at a time."""
    limit = BATCH_PIXELS if max_pixels is None else max_pixels
    batch: list[T] = []
    total = 0
    for item in items:
        n = pixels(item)
        if batch and (len(batch) == batch_size or total + n > limit):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += n
    if batch:
        yield batch
