"""The multi-class network's streamed training data: decoded once to disk, memory flat in the number of images,
crops that do not depend on the workers."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rlseg.inference import load_model
from rlseg.multiclass import MultiClassConfig, train_multiclass
from rlseg.multiclass_data import AugmentedCrops, DecodedPairs, EpochBatches, capped_size, epoch_batches


def _pairs(root: Path, n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        w, h = int(rng.integers(70, 110)), int(rng.integers(70, 110))
        lab = np.zeros((h, w), np.uint8)
        lab[h // 4 : h // 2, w // 3 : w // 2] = 1 + i % 2
        lab[0] = 255
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(root / f"{i}.png")
        Image.fromarray(lab).save(root / f"{i}_label.png")
        out.append((str(root / f"{i}.png"), str(root / f"{i}_label.png")))
    return out


def test_capped_size_caps_the_shorter_side_only_downwards():
    assert capped_size(1000, 500, 250) == (500, 250)
    assert capped_size(300, 200, 512) == (300, 200)
    assert capped_size(300, 200, None) == (300, 200)


def test_decoded_pairs_hold_the_pixels_and_are_reused(tmp_path: Path):
    pairs = _pairs(tmp_path / "data", 5)
    data = DecodedPairs(pairs, 3, tmp_path / "cache")
    for i, (img_path, lab_path) in enumerate(pairs):
        img, lab = data.pair(i)
        assert np.array_equal(img, np.asarray(Image.open(img_path)))
        assert np.array_equal(lab, np.asarray(Image.open(lab_path)))
    stamp = (tmp_path / "cache" / "images.u8.npy").stat().st_mtime_ns
    DecodedPairs(pairs, 3, tmp_path / "cache")  # same pairs: nothing decoded again
    assert (tmp_path / "cache" / "images.u8.npy").stat().st_mtime_ns == stamp
    small = DecodedPairs(pairs, 3, tmp_path / "cache", max_short_side=40)  # another cap: rebuilt
    assert min(small.pair(0)[1].shape) == 40 and set(np.unique(small.pair(0)[1])) <= {0, 1, 2, 255}


def _peak_bytes(pairs, cache: Path) -> int:
    tracemalloc.start()
    data = DecodedPairs(pairs, 3, cache)
    batches = EpochBatches()
    batches.batches = epoch_batches(data.sizes, 8, len(data) // 8, random.Random(0), 64, 0.5, 1.5, True, 0.5)
    loader = torch.utils.data.DataLoader(AugmentedCrops(data, 64), batch_sampler=batches, num_workers=0)
    for images, labels in loader:
        assert images.shape[1:] == (64, 64, 3) and labels.shape[1:] == (64, 64)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path: Path):
    pairs = _pairs(tmp_path / "data", 500)
    few, many = _peak_bytes(pairs[:50], tmp_path / "c50"), _peak_bytes(pairs, tmp_path / "c500")
    pixels = sum(w * h * 4 for w, h in DecodedPairs(pairs, 3, tmp_path / "c500").sizes)  # what holding them costs
    # the index grows by a few hundred bytes an image; the pixels (~16 MB here) never enter memory
    assert many - few < 0.05 * pixels, (few, many, pixels)


@pytest.mark.parametrize("workers", [2])
def test_crops_and_weights_do_not_depend_on_the_workers(tmp_path: Path, workers: int):
    pairs = _pairs(tmp_path / "data", 12)
    weights = []
    for w in (0, workers):
        cfg = MultiClassConfig(arch="deeplabv3plus", epochs=2, batch_size=4, crop=64, lr=0.01, loader_workers=w)
        out = tmp_path / f"w{w}"
        train_multiclass(pairs, 3, cfg, out / "model.pt", out / "checkpoint.pt", device="cpu", pretrained=False)
        weights.append(torch.load(out / "model.pt", weights_only=False)["state_dict"])
        assert not (out / "decoded").exists() and not (out / "checkpoint.pt").exists()
    # the network's predictions see a photo as its training photos were decoded
    assert load_model(out / "model.pt", torch.device("cpu")).max_short_side == cfg.max_short_side == 512
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_photo_turned_by_its_exif_tag_is_decoded_upright(tmp_path: Path):
    from fixtures import exif_rotated_jpeg

    from rlseg.imageio import load_image

    img_path = tmp_path / "rotated.jpg"
    img_path.write_bytes(exif_rotated_jpeg())  # stored 96x80, its tag turns it to 80x96
    upright = load_image(img_path)
    Image.fromarray(np.ones((upright.size[1], upright.size[0]), np.uint8)).save(tmp_path / "label.png")
    data = DecodedPairs([(str(img_path), str(tmp_path / "label.png"))], 3, tmp_path / "cache")
    assert data.sizes == [upright.size] == [(80, 96)]
    assert np.array_equal(data.pair(0)[0], np.asarray(upright))
