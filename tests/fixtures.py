"""Image files good and bad, made in memory for the tests (nothing binary is committed)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo(seed: int = 0, size: tuple[int, int] = (96, 80)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize(size, Image.BICUBIC)


def good_jpeg(seed: int = 0) -> bytes:
    return _encode(photo(seed), "JPEG", quality=90)


def good_png(seed: int = 1) -> bytes:
    return _encode(photo(seed), "PNG")


def corrupt_jpeg() -> bytes:
    data = bytearray(good_jpeg(2))
    return bytes(data[: len(data) // 2])  # truncated mid-scan


def garbled_jpeg() -> bytes:
    """A JPEG's first bytes followed by noise."""
    data = good_jpeg(2)
    noise = np.random.default_rng(0).integers(0, 256, len(data) - 400, dtype=np.uint8).tobytes()
    return data[:300] + noise


def html_page() -> bytes:
    return b"<!doctype html><html><body>Not an image</body></html>"


def tiny() -> bytes:
    return _encode(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG")


def rgba_png() -> bytes:
    img = photo(3).convert("RGBA")
    a = np.asarray(img).copy()
    a[..., 3] = 128
    return _encode(Image.fromarray(a, "RGBA"), "PNG")


def la_png() -> bytes:
    return _encode(photo(4).convert("LA"), "PNG")


def palette_transparent_png() -> bytes:
    img = photo(5).convert("P")
    return _encode(img, "PNG", transparency=0)


def grey_jpeg() -> bytes:
    return _encode(photo(6).convert("L"), "JPEG")


def cmyk_jpeg() -> bytes:
    return _encode(photo(7).convert("CMYK"), "JPEG")


def png16() -> bytes:
    arr = (np.linspace(0, 65535, 96 * 80).reshape(80, 96)).astype(np.uint16)
    return _encode(Image.fromarray(arr), "PNG")  # PIL picks a 16-bit mode


def exif_rotated_jpeg() -> bytes:
    """A 96x80 JPEG whose EXIF says 'rotate 90': viewers (and we) show it 80x96."""
    img = photo(8)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(img, "JPEG", exif=exif.tobytes())


def bomb_png(side: int = 30000) -> bytes:
    """A valid PNG header claiming side x side pixels, with almost no data behind it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(
        b"IEND", b"")


BAD = {
    "zero.jpg": (b"", "empty file"),
    "truncated.jpg": (corrupt_jpeg(), "corrupt or truncated"),
    "garbled.jpg": (garbled_jpeg(), "not an image"),
    "page.jpg": (html_page(), "not an image"),
    "tiny.png": (tiny(), "too small"),
    "bomb.png": (bomb_png(), "too many pixels"),
}
GOOD = {
    "photo.jpg": good_jpeg(),
    "photo.png": good_png(),
    "alpha.png": rgba_png(),
    "la.png": la_png(),
    "palette.png": palette_transparent_png(),
    "grey.jpg": grey_jpeg(),
    "cmyk.jpg": cmyk_jpeg(),
    "sixteen.png": png16(),
    "rotated.jpg": exif_rotated_jpeg(),
}


def write_all(folder, files: dict[str, bytes]) -> None:
    """Write each ``{name: bytes}`` into ``folder`` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def make_voc(root, classes: dict[str, int], per_class: int = 10, val: int = 4, size: int = 64, seed: int = 0):
    """A tiny VOC 2012 layout: single-class and mixed train images (XML labels, class PNGs) and a val split.

    Pictures come from the synthetic world's renderer (class i drawn as shape i), so the pipeline can learn.
    Returns the VOC2012 directory.
    """
    from pathlib import Path

    from rlseg.io import save_png, write_text
    from rlseg.synthetic import SHAPES, render_image
    from rlseg.voc import voc_palette

    voc = Path(root) / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(seed)
    names = list(classes)
    shapes = tuple(SHAPES[: len(names)])
    pal = voc_palette()
    train, val_ids = [], []

    def write(image_id, objects):
        rgb, labels = render_image(rng, shapes, objects, size)
        mask = np.zeros_like(labels)
        for j, n in enumerate(names):
            mask[labels == j + 1] = classes[n]
        Image.fromarray(rgb).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
        save_png(voc / "SegmentationClass" / f"{image_id}.png", mask, palette=pal)
        objs = "".join(f"<object><name>{names[c]}</name></object>" for c, _ in objects)
        write_text(voc / "Annotations" / f"{image_id}.xml", f"<annotation>{objs}</annotation>")

    (voc / "JPEGImages").mkdir(parents=True)
    k = 0
    for ci in range(len(names)):
        for _ in range(per_class):
            k += 1
            write(f"2008_{k:06d}", [(ci, float(rng.uniform(0.1, 0.4)))])
            train.append(f"2008_{k:06d}")
    k += 1
    write(f"2008_{k:06d}", [(0, 0.1), (1, 0.2)])  # two classes: not single-class
    train.append(f"2008_{k:06d}")
    for _ in range(val):
        k += 1
        write(f"2009_{k:06d}", [(int(rng.integers(len(names))), 0.2), (int(rng.integers(len(names))), 0.1)])
        val_ids.append(f"2009_{k:06d}")
    # a val image also listed in train must never be used for training
    train.append(val_ids[0])
    write_text(voc / "ImageSets" / "Segmentation" / "train.txt", "\n".join(train) + "\n")
    write_text(voc / "ImageSets" / "Segmentation" / "val.txt", "\n".join(val_ids) + "\n")
    return voc
