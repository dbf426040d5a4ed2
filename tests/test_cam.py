"""The ImageNet evidence that pseudo_gt.cam_filter reads (rlseg.cam)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlseg.cam import (
    CamFilter,
    ImageNetCam,
    cam_filter_of,
    centre_point,
    discriminative_classes,
    mean_scores,
    read_mean_scores,
    supported_components,
)
from rlseg.imageio import load_image

SORREL = 339  # ImageNet's horse


def _two_parts() -> np.ndarray:
    mask = np.zeros((40, 60), bool)
    mask[5:15, 5:15] = True
    mask[25:35, 40:55] = True
    return mask


def test_parts_under_the_ratio_of_the_best_part_go():
    mask = _two_parts()
    cam = np.zeros(mask.shape, np.float32)
    cam[10, 10] = 1.0  # the first part holds the peak
    cam[30, 45] = 0.2
    assert np.array_equal(supported_components(mask, cam, 0.3), mask & (np.arange(60) < 30)[None, :])
    assert np.array_equal(supported_components(mask, cam, 0.2), mask)  # at the ratio: kept
    assert np.array_equal(supported_components(mask, cam, 0.0), mask)


def test_one_part_or_none_is_kept_as_it_is():
    cam = np.zeros((40, 60), np.float32)
    one = np.zeros((40, 60), bool)
    one[5:15, 5:15] = True
    assert np.array_equal(supported_components(one, cam, 0.9), one)
    assert not supported_components(np.zeros((40, 60), bool), cam, 0.9).any()
    diagonal = np.zeros((4, 4), bool)
    diagonal[0, 0] = diagonal[1, 1] = True  # 8-neighbours: one part
    assert np.array_equal(supported_components(diagonal, np.eye(4, dtype=np.float32) * [1, 0, 0, 0], 0.5), diagonal)


def test_discriminative_classes_contrast_with_the_other_classes():
    own = np.zeros(1000, np.float32)
    own[[1, 2, 3]] = [5.0, 4.0, 3.0]
    other = np.zeros(1000, np.float32)
    other[1] = 5.0  # every class's photos score it: it does not tell this class apart
    assert discriminative_classes(own, [other], 2) == [2, 3]
    assert discriminative_classes(own, [], 2) == [1, 2]  # one class alone: its own top classes


def test_centre_point_is_the_middle_unless_the_map_is_weak_there():
    cam = np.zeros((64, 96))
    cam[10, 80] = 1.0  # the peak, off the middle
    cam[28:37, 42:54] = 0.5  # covers the middle box
    assert centre_point(cam, 0.35) == (0.5, 0.5)
    assert centre_point(cam, 0.6) == pytest.approx((10.5 / 64, 80.5 / 96))


def test_score_files_are_checked(tmp_path: Path):
    np.save(tmp_path / "a.npy", np.arange(1000, dtype=np.float32))
    np.save(tmp_path / "b.npy", np.zeros(1000, np.float32))
    np.save(tmp_path / "bad.npy", np.zeros(10, np.float32))
    f = cam_filter_of("a", ["a", "b"], [tmp_path / "a.npy", tmp_path / "b.npy"], top_classes=2, min_ratio=0.4)
    assert f == CamFilter((999, 998), 0.4)
    with pytest.raises(ValueError, match="bad.npy"):
        read_mean_scores(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match="2 classes"):
        cam_filter_of("a", ["a", "b"], [tmp_path / "a.npy"])


def _horses(horse_dir: Path, n: int) -> list[tuple[Image.Image, np.ndarray]]:
    files = sorted((horse_dir / "images").glob("*.jpg"))[:n]
    return [(load_image(f), np.asarray(Image.open(horse_dir / "masks" / f"{f.stem}.png")) > 0) for f in files]


def test_horse_activation_lies_on_the_horses(horse_dir: Path):
    cam = ImageNetCam.shared()
    horses = _horses(horse_dir, 8)
    assert SORREL in np.argsort(-mean_scores(im for im, _ in horses))[:5]
    maps = [(cam.activation(im, [SORREL]), m) for im, m in horses]
    assert sum(a[m].mean() > a[~m].mean() for a, m in maps) >= 7


def test_detached_parts_off_the_horse_go_and_the_horse_stays(horse_dir: Path):
    """The photo's corners, each marked as a part of its own: the sky or the ground beside a horse."""
    from scipy import ndimage

    removed, corners = 0, 0
    for image, horse in _horses(horse_dir, 10):
        h, w = horse.shape
        mask = horse.copy()
        blocks = []
        for ys in (slice(0, h // 8), slice(h - h // 8, h)):
            for xs in (slice(0, w // 8), slice(w - w // 8, w)):
                block = np.zeros_like(horse)
                block[ys, xs] = True
                if not (ndimage.binary_dilation(block, iterations=2) & horse).any():
                    blocks.append(block)
                    mask |= block
        out = CamFilter((SORREL,), 0.3).apply([image], [mask])[0]
        assert out[horse].all()
        corners += len(blocks)
        removed += sum(not out[b].any() for b in blocks)
    assert corners >= 30 and removed >= 0.8 * corners
