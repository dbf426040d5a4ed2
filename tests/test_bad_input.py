"""Bad input: each is used correctly, skipped with its reason, or stopped with an error naming the file."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch
from fixtures import BAD, GOOD, good_jpeg, write_all
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from rlseg.imageio import BadImageError, load_image, load_mask
from rlseg.ingest import check_files
from rlseg.io import atomic_path, save_torch, write_text
from rlseg.voc import voc_palette


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_image_is_skipped_with_its_reason(tmp_path, name):
    data, reason = BAD[name]
    write_all(tmp_path, {name: data})
    [row] = check_files([tmp_path / name], min_side=32)
    assert row["status"] == "skipped" and reason in row["reason"]
    with pytest.raises(BadImageError, match=name):
        check_files([tmp_path / name], min_side=32, on_bad_image="error")


@pytest.mark.parametrize("name", sorted(GOOD))
def test_unusual_but_valid_image_is_used_as_rgb(tmp_path, name):
    write_all(tmp_path, {name: GOOD[name]})
    [row] = check_files([tmp_path / name], min_side=32)
    assert row["status"] == "used", row
    img = load_image(tmp_path / name)
    assert img.mode == "RGB"


def test_exif_orientation_is_honoured(tmp_path):
    write_all(tmp_path, {"rotated.jpg": GOOD["rotated.jpg"]})
    assert load_image(tmp_path / "rotated.jpg").size == (80, 96)  # stored 96x80, EXIF says rotate 90


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    assert np.asarray(load_image(tmp_path / "clear.png", min_side=1)).min() == 255


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    write_all(tmp_path, {"sixteen.png": GOOD["sixteen.png"]})
    arr = np.asarray(load_image(tmp_path / "sixteen.png"))
    assert arr.min() == 0 and arr.max() == 255 and len(np.unique(arr)) > 100


def test_odd_file_names_are_fine(tmp_path):
    name = "ein Pferd – café ü.jpg"
    write_all(tmp_path, {name: good_jpeg()})
    [row] = check_files([tmp_path / name])
    assert row["status"] == "used"


def test_symlink_outside_the_data_folder_is_skipped(tmp_path):
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(good_jpeg())
    data = tmp_path / "data"
    data.mkdir()
    (data / "link.jpg").symlink_to(outside)
    (data / "inside.jpg").write_bytes(good_jpeg(3))
    (data / "link_in.jpg").symlink_to(data / "inside.jpg")
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in check_files(sorted(data.iterdir()), root=data)}
    assert rows["link.jpg"]["status"] == "skipped" and "outside the data folder" in rows["link.jpg"]["reason"]
    assert rows["inside.jpg"]["status"] == "used"
    assert rows["link_in.jpg"]["reason"].startswith("duplicate of")


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.zeros((10, 12), dtype=np.uint8), "mask is 12x10, expected 16x16"),
        (np.full((16, 16), 37, dtype=np.uint8), "neither a class index"),
        (np.full((16, 16, 3), (10, 200, 30), dtype=np.uint8), "outside the VOC palette"),
    ],
)
def test_bad_masks_stop_with_the_file_named(tmp_path, mask, message):
    Image.fromarray(mask).save(tmp_path / "m.png")
    with pytest.raises(BadImageError, match=message) as err:
        load_mask(tmp_path / "m.png", size=(16, 16))
    assert str(tmp_path / "m.png") in str(err.value)


def test_rgb_mask_in_the_voc_palette_is_read_as_indices(tmp_path):
    pal = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)
    idx = np.array([[0, 8], [12, 0]], dtype=np.uint8)
    rgb = pal[idx]
    rgb[1, 1] = (224, 224, 192)  # VOC's void colour
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert load_mask(tmp_path / "rgb.png").tolist() == [[0, 8], [12, 255]]


def test_failed_write_leaves_the_previous_output_intact(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    save_torch({"w": torch.ones(2)}, target)
    write_text(tmp_path / "miou.txt", "50.00\n")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_torch({"w": torch.zeros(2)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(2))
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "miou.txt") as tmp:
        tmp.write_text("6")  # a killed writer: half a file
        raise RuntimeError("killed")
    assert (tmp_path / "miou.txt").read_text() == "50.00\n"
    assert sorted(os.listdir(tmp_path)) == ["miou.txt", "model.pt"]  # no temporary left behind


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=2048),
    st.tuples(st.sampled_from([good_jpeg(), GOOD["photo.png"], GOOD["cmyk.jpg"], BAD["bomb.png"][0]]),
              st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=8),
              st.integers(0, 6000)).map(lambda t: _mutate(*t)),
))
def test_fuzz_loader_returns_an_image_or_the_documented_error(tmp_path, data):
    path = tmp_path / "fuzz.bin"
    path.write_bytes(data)
    try:
        img = load_image(path, min_side=1)
    except BadImageError as err:
        assert err.path == str(path) and err.reason
    else:
        assert img.mode == "RGB" and min(img.size) >= 1


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    b = bytearray(data)
    for pos, val in edits:
        if b:
            b[pos % len(b)] = val
    return bytes(b[: max(cut, 1)]) if cut < len(b) else bytes(b)
