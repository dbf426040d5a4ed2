"""Every loss pinned to values worked out by hand, gradients checked in float64, and the Eq. 8 schedule."""

from __future__ import annotations

import math

import pytest
import torch

from rlseg.losses import (
    IMAGENET_STD,
    border_loss,
    centre_loss,
    centre_term,
    gt_loss,
    negative_loss,
    positional_loss,
    sparse_crf_loss,
    volumetric_loss,
)
from rlseg.regularized_loss import LossWeights, RegularizedLoss
from rlseg.schedule import anneal_sigmas
from rlseg.study import dense_crf_loss


def probs_from_object(x: torch.Tensor) -> torch.Tensor:
    """[B, H, W] object probabilities -> [B, 2, H, W]."""
    return torch.stack([1 - x, x], 1)


def test_sparse_crf_by_hand_with_the_normalised_sigma_convention():
    # 2x2 image, uniform except pixel (0, 1) whose red differs by d (0-1 colour scale)
    d, sigma = 0.034, 0.15
    image = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)
    image[0, 0, 0, 1] += d
    a, b, c, e = 0.9, 0.2, 0.6, 0.1
    x = torch.tensor([[[a, b], [c, e]]], dtype=torch.float64)
    # the colour difference is taken after ImageNet normalisation: d / std_red
    w = math.exp(-((d / IMAGENET_STD[0]) ** 2) / (2 * sigma**2))
    vertical = (abs(a - c) * 1.0 + abs(b - e) * w) / 2
    horizontal = (abs(a - b) * w + abs(c - e) * 1.0) / 2
    expected = (vertical + horizontal) / 2
    got = sparse_crf_loss(probs_from_object(x), image, sigma)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # sigma = 0.15 in normalised units is about 0.034 on the 0-1 scale: that difference is one sigma
    assert w == pytest.approx(math.exp(-0.5 * (0.034 / 0.229 / 0.15) ** 2))
    assert 0.55 < w < 0.65


def test_sparse_crf_diagonal_adds_weighted_diagonals():
    image = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    four = sparse_crf_loss(probs_from_object(x), image, 0.15)
    eight = sparse_crf_loss(probs_from_object(x), image, 0.15, diagonal=True)
    # 4-neighbours: every pair differs by 1 with w = 1 -> 1. Diagonals: (0,0)-(1,1) same, (0,1)-(1,0) same -> 0
    assert four.item() == pytest.approx(1.0)
    assert eight.item() == pytest.approx(1.0)
    x2 = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]], dtype=torch.float64)
    # vertical pairs differ (mean 1), horizontal same (0) -> 0.5; diagonals both differ -> +1/sqrt(2)
    assert sparse_crf_loss(probs_from_object(x2), image, 0.15, diagonal=True).item() == pytest.approx(
        0.5 + 1 / math.sqrt(2)
    )


def test_volumetric_by_hand_reference_and_printed():
    x = torch.zeros(2, 10, 10, dtype=torch.float64)
    x[0, :1, :] = 1.0  # fraction 0.1
    x[1, :6, :] = 1.0  # fraction 0.6
    p = probs_from_object(x)
    # (0.35 - 0.5)^2 + 5 * mean([(0.1 - 0.15)^2, 0])
    assert volumetric_loss(p).item() == pytest.approx(0.0225 + 5 * 0.0025 / 2)
    assert volumetric_loss(p, small_reduction="sum").item() == pytest.approx(0.0225 + 5 * 0.0025)
    assert volumetric_loss(p, target=0.35, minimum=0.05).item() == pytest.approx(0.0)


def test_positional_by_hand():
    c = 0.3
    x = torch.full((1, 16, 16), c, dtype=torch.float64)
    assert positional_loss(probs_from_object(x)).item() == pytest.approx(c**2 + (c - 1) ** 2)
    # object exactly on the reference's 4x4 centre box (middle +- 2): zero loss
    x = torch.zeros(1, 16, 16, dtype=torch.float64)
    x[0, 6:10, 6:10] = 1
    assert positional_loss(probs_from_object(x)).item() == pytest.approx(0.0)
    # the printed 3x3 box centred: rows 6..8 -> covered by the 4x4 object too
    assert positional_loss(probs_from_object(x), center_half=None, center_size=3).item() == pytest.approx(0.0)
    # object on the top three rows: sides vs one band
    x = torch.zeros(1, 16, 16, dtype=torch.float64)
    x[0, :3, :] = 1
    sides = (1.0 + 0.0 + (3 / 16) ** 2 * 2) / 4
    assert positional_loss(probs_from_object(x)).item() == pytest.approx(sides + 1.0)
    band = (48 / (256 - 100)) ** 2
    assert positional_loss(probs_from_object(x), border_mode="band").item() == pytest.approx(band + 1.0)


def test_border_sides_spares_the_sides_left_out():
    # an object filling the bottom three rows: all four sides see it, the three others only at their corners
    x = torch.zeros(1, 16, 16, dtype=torch.float64)
    x[0, -3:, :] = 1
    p = probs_from_object(x)
    assert border_loss(p).item() == pytest.approx((0.0 + 1.0 + (3 / 16) ** 2 * 2) / 4)
    assert border_loss(p, sides=("top", "left", "right")).item() == pytest.approx((3 / 16) ** 2 * 2 / 3)
    assert border_loss(p, border_mode="band", sides=("top",)).item() == pytest.approx(0.0)
    # the centre box is empty either way: the same centre term with or without the bottom
    full, spared = positional_loss(p), positional_loss(p, sides=("top", "left", "right"))
    assert full.item() - spared.item() == pytest.approx(border_loss(p).item() - (3 / 16) ** 2 * 2 / 3)
    for bad in ((), ("top", "middle")):
        with pytest.raises(ValueError, match="border sides"):
            border_loss(p, sides=bad)


def test_negative_by_hand():
    x = torch.tensor([[[0.2, 0.4], [0.6, 0.0]]], dtype=torch.float64)
    assert negative_loss(probs_from_object(x)).item() == pytest.approx(0.3**2)
    assert negative_loss(probs_from_object(x), printed=True).item() == pytest.approx(0.7**2)


def test_gt_loss_is_cross_entropy_ignoring_void():
    x = torch.tensor([[[0.8, 0.3]]], dtype=torch.float64)
    masks = torch.tensor([[[1, 255]]])
    assert gt_loss(probs_from_object(x), masks).item() == pytest.approx(-math.log(0.8))


def test_dense_crf_prefers_edge_aligned_segmentation():
    image = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    image[:, :, :, 4:] = 1.0
    aligned = torch.zeros(1, 8, 8, dtype=torch.float64)
    aligned[:, :, 4:] = 1
    misaligned = torch.zeros(1, 8, 8, dtype=torch.float64)
    misaligned[:, 4:, :] = 1
    la = dense_crf_loss(probs_from_object(aligned), image)
    lm = dense_crf_loss(probs_from_object(misaligned), image)
    assert la.item() < 1e-6 < lm.item()


def test_dense_crf_by_hand_two_pixels():
    image = torch.zeros(1, 3, 1, 2, dtype=torch.float64)
    x = torch.tensor([[[0.0, 1.0]]], dtype=torch.float64)
    sxy = 0.1
    k = math.exp(-((1 / 2) ** 2) / (2 * sxy**2))  # positions in units of the longer side
    assert dense_crf_loss(probs_from_object(x), image, sigma_xy=sxy).item() == pytest.approx(2 * k / 4)


@pytest.mark.parametrize(
    "fn",
    [
        lambda p, im: sparse_crf_loss(p, im, 0.15),
        lambda p, im: sparse_crf_loss(p, im, 0.1, diagonal=True),
        lambda p, im: volumetric_loss(p),
        lambda p, im: positional_loss(p),
        lambda p, im: positional_loss(p, border_mode="band"),
        lambda p, im: negative_loss(p),
        lambda p, im: dense_crf_loss(p, im),
    ],
)
def test_gradcheck(fn):
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    image = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    # nudge away from the kinks of |.| and min(., 0.15)
    assert torch.autograd.gradcheck(lambda z: fn(torch.softmax(z, 1), image), (logits,), eps=1e-6, atol=1e-5)


def test_anneal_schedule_equals_eq8():
    ref = anneal_sigmas(15)
    assert len(ref) == 15 and ref[0] == pytest.approx(0.05) and ref[-1] == pytest.approx(0.15)
    assert all(b - a == pytest.approx(0.1 / 14) for a, b in zip(ref, ref[1:], strict=False))
    printed = anneal_sigmas(15, printed=True)
    assert printed == pytest.approx([0.05 + i / 15 * 0.1 for i in range(1, 16)])
    assert printed[0] == pytest.approx(0.0567, abs=1e-4)


def test_regularized_loss_splits_positives_and_negatives():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(4, 2, 16, 16, dtype=torch.float64), 1)
    image = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    neg = torch.tensor([False, True, False, True])
    w = LossWeights(reg=100, vol=1, pos=1, neg=2, sigma=0.15)
    total, terms = RegularizedLoss(weights=w)(probs, image, neg)
    pos = probs[~neg]
    expected = (
        100 * sparse_crf_loss(pos, image[~neg], 0.15)
        + volumetric_loss(pos)
        + positional_loss(pos)
        + 2 * negative_loss(probs[neg])
    )
    assert total.item() == pytest.approx(expected.item())
    assert set(terms) == {"sparse_crf", "volumetric", "positional", "negative"}
    total_all, terms_all = RegularizedLoss(weights=w)(probs, image, None)
    assert "negative" not in terms_all


def test_reference_negative_terms_by_hand():
    """The reference lets negatives into the positional loss: the border over the whole batch, and the centre term
    plus (negatives' mean object probability)^2. Worked out on constant maps: a positive at 0.5 with its centre
    box at 1, a negative at 0.2."""
    pos = torch.full((16, 16), 0.5, dtype=torch.float64)
    pos[6:10, 6:10] = 1.0
    neg = torch.full((16, 16), 0.2, dtype=torch.float64)
    probs = probs_from_object(torch.stack([pos, neg]))
    image = torch.zeros(2, 3, 16, 16, dtype=torch.float64)  # flat: sparse-CRF weights 1, and pos has edges
    is_neg = torch.tensor([False, True])
    w = LossWeights(reg=0.0, vol=0.0, pos=1.0, neg=2.0, sigma=0.15)
    # every side of both images: mean object probability (0.5 + 0.2) / 2 = 0.35 -> border 0.35^2;
    # centre box all 1 -> 0; negatives' mean 0.2 -> 0.04
    total, terms = RegularizedLoss(weights=w, negatives_in_positional=True)(probs, image, is_neg)
    assert terms["positional"] == pytest.approx(0.35**2 + 0.0 + 0.2**2)
    assert terms["negative"] == pytest.approx(0.2**2)
    assert total.item() == pytest.approx(0.35**2 + 0.2**2 + 2 * 0.2**2)  # an effective negative weight of 3
    # as printed: the positional loss sees the positive only (border 0.5^2)
    total, terms = RegularizedLoss(weights=w)(probs, image, is_neg)
    assert terms["positional"] == pytest.approx(0.5**2)
    assert total.item() == pytest.approx(0.5**2 + 2 * 0.2**2)
    # a batch of negatives only: the border and the negatives' term, no centre
    _, terms = RegularizedLoss(weights=w, negatives_in_positional=True)(probs[1:], image[1:], is_neg[1:])
    assert terms["positional"] == pytest.approx(0.2**2 + 0.2**2)
    assert set(terms) == {"positional", "negative"}


def test_centre_box_goes_to_each_images_own_point():
    x = torch.zeros(2, 32, 32, dtype=torch.float64)
    x[0, 14:18, 14:18] = 1  # the first image's object in the middle
    x[1, :4, -4:] = 1  # the second's in the top right corner
    p = probs_from_object(x)
    middle = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    assert centre_loss(p, centres=middle).item() == pytest.approx(centre_loss(p).item()) == pytest.approx(0.25)
    # a point at the corner: the box stays inside the image, on the object
    own = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    assert centre_loss(p, centres=own).item() == pytest.approx(0.0)
    # the positional loss is its border term plus the moved centre term
    assert positional_loss(p, centres=own).item() == pytest.approx(border_loss(p).item())
    # the gradient lands on the boxes only
    xg = x.clone().requires_grad_()
    centre_term(xg, 2, 3, own).backward()
    boxes = {(r, c) for r in range(14, 18) for c in range(14, 18)} | {(r, c) for r in range(4) for c in range(28, 32)}
    assert set(map(tuple, xg.grad[0].nonzero().tolist())) | set(map(tuple, xg.grad[1].nonzero().tolist())) <= boxes
