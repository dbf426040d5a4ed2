"""The paper's losses (Veksler, ECCV 2020, Sec. 3), on softmax probabilities.

Every ``*_loss`` function takes ``probs`` of shape [B, 2, H, W] (channel 1 = object) and returns a scalar tensor;
its ``*_term`` twin takes the object channel ``x`` [B, H, W] itself, as :mod:`rlseg.regularized_loss` slices it
once per batch.
Where the printed equations and the reference implementation (morduspordus/SingleClassRL, which produced
the paper's numbers) differ, the reference is the default and the printed form is an option:

* Eq. 4, second term: the reference takes the *mean* over the images, the paper a *sum*
  (``volumetric_loss(..., small_reduction="sum")``).
* Eq. 5: the reference's centre box is 4x4 px (middle +- 2) and its border term is the mean over the four
  sides of (mean object probability on that side)^2; the paper prints c = 3 and one band
  (``positional_loss(..., center_half=None, center_size=3, border_mode="band")``).
* Eq. 7: printed as (mean - 1)^2, the reference pushes the object probability of negatives to 0:
  (mean)^2 (``negative_loss(..., printed=True)`` gives the printed form).
* Eq. 8: the reference's sigma runs from 0.05 to 0.15 inclusive over the steps
  (:func:`rlseg.schedule.anneal_sigmas`); the printed schedule starts at 0.05 + 0.1/n.

Negatives (Eq. 7) in a batch with positives: as printed, sparse-CRF, volumetric and positional losses see the
positives only and the negative loss the negatives only (``negatives_in_positional=False`` of
:class:`rlseg.regularized_loss.RegularizedLoss`, the default). The reference also lets them into the positional
loss: its border term averages over every image of the batch, negatives included, and its centre term adds (mean
object probability of the negatives)^2, weighted like the positional loss -- with lambda_pos = 1 and lambda_neg = 2
an effective negative weight of 3 (``negatives_in_positional=True``, config ``single_class.negatives_in_positional``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Eq. 5 lives in its own module; its names are the losses' too
from rlseg.positional import (
    SIDES,
    border_loss,
    border_term,
    centre_loss,
    centre_term,
    positional_loss,
    positional_term,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SIDES",
    "border_loss",
    "border_term",
    "centre_loss",
    "centre_term",
    "edge_weights",
    "gt_loss",
    "normalise_colours",
    "negative_loss",
    "negative_term",
    "positional_loss",
    "positional_term",
    "sparse_crf_loss",
    "sparse_crf_term",
    "volumetric_loss",
    "volumetric_term",
]


def normalise_colours(image: torch.Tensor) -> torch.Tensor:
    mean = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (image - mean) / std


# the exponent of Eq. 2 is floored here: exp() of a float32 below about -87 has no normal result, and the CPU's
# vectorised exp takes a much slower path there (docs/performance.md); a weight of e^-87 ~ 1.6e-38 is zero to the loss
_MIN_EXPONENT = -87.0

# neighbour directions: (row offset, column offset, factor) with q = p + offset
_FOUR = [(1, 0, 1.0), (0, 1, 1.0)]  # vertical, horizontal pairs
_DIAGONALS = [(1, 1, 1.0 / math.sqrt(2.0)), (1, -1, 1.0 / math.sqrt(2.0))]


def _pair_slices(dr: int, dc: int) -> tuple[slice, slice, slice, slice]:
    """(rows of p, cols of p, rows of q, cols of q) of the pairs q = p + (dr, dc), dr in {0, 1}, dc in {-1, 0, 1}."""
    full = slice(None)
    rp, rq = (slice(None, -1), slice(1, None)) if dr else (full, full)
    cp, cq = {1: (slice(None, -1), slice(1, None)), -1: (slice(1, None), slice(None, -1)), 0: (full, full)}[dc]
    return rp, cp, rq, cq


def edge_weights(
    image: torch.Tensor, sigma: float, diagonal: bool = False
) -> list[tuple[torch.Tensor, slice, slice, slice, slice, float]]:
    """Eq. 2 weights ``w_pq = exp(-||C_p - C_q||^2 / 2 sigma^2)`` for each neighbour direction.

    ``C`` is the image normalised with the ImageNet mean and std, as in the reference implementation, so
    sigma = 0.15 is about 0.034 on a 0-1 colour scale. The weights are constants of the loss (no gradient flows
    to the image).

    Returns:
        One entry per direction: (weights [B, H', W'], rows of p, cols of p, rows of q, cols of q, factor),
        where factor is 1 for the 4-neighbours and 1/sqrt(2) for diagonals.
    """
    out = []
    with torch.no_grad():
        # C_p - C_q = (I_p - I_q) / std: the mean cancels; the 1 / (sqrt(2) sigma) of the exponent is folded in
        std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        scaled = image / (std * (math.sqrt(2.0) * sigma))
        for dr, dc, factor in _FOUR + (_DIAGONALS if diagonal else []):
            rp, cp, rq, cq = _pair_slices(dr, dc)
            diff = scaled[:, :, rp, cp] - scaled[:, :, rq, cq]
            w = diff.square_().sum(1).neg_().clamp_(min=_MIN_EXPONENT).exp_()
            out.append((w, rp, cp, rq, cq, factor))
    return out


class _WeightedAbsDifferences(torch.autograd.Function):
    """``sum_d coef_d * mean over the pairs of direction d of w_pq |x_p - x_q|`` for object maps x [B, H, W].

    One backward writes every direction's gradient into one map, where autograd's slicing would allocate and
    add a map per slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, directions: list[tuple[slice, slice, slice, slice, float]],
                *weights: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(())
        diffs = []
        for (rp, cp, rq, cq, coef), w in zip(directions, weights, strict=True):
            d = x[:, rp, cp] - x[:, rq, cq]
            total += torch.dot(w.reshape(-1), d.abs().reshape(-1)) * (coef / d.numel())
            diffs.append(d)
        ctx.directions = directions
        ctx.save_for_backward(*diffs, *weights)
        ctx.shape = x.shape
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        n = len(ctx.directions)
        diffs, weights = ctx.saved_tensors[:n], ctx.saved_tensors[n:]
        grad_x = grad.new_zeros(ctx.shape)
        for (rp, cp, rq, cq, coef), d, w in zip(ctx.directions, diffs, weights, strict=True):
            g = torch.sign(d).mul_(w).mul_(grad * (coef / d.numel()))
            grad_x[:, rp, cp] += g
            grad_x[:, rq, cq] -= g
        return (grad_x, None, *([None] * n))


def sparse_crf_term(x: torch.Tensor, image: torch.Tensor, sigma: float, diagonal: bool) -> torch.Tensor:
    edges = edge_weights(image, sigma, diagonal=diagonal)
    # each group of two directions (4-neighbours, diagonals) is averaged, then the groups are added
    directions = [(rp, cp, rq, cq, f / 2.0) for _, rp, cp, rq, cq, f in edges]
    return _WeightedAbsDifferences.apply(x, directions, *(e[0] for e in edges))


def sparse_crf_loss(
    probs: torch.Tensor, image: torch.Tensor, sigma: float, diagonal: bool = False
) -> torch.Tensor:
    """Sparse-CRF loss, Eq. 1-3: colour-edge Potts on neighbouring pixels, absolute-value relaxation.

    For each direction the mean of ``w_pq |x_p - x_q|`` over its pairs (x = object probability); the result
    is the average over the directions (two for the 4-neighbourhood; with ``diagonal`` the two diagonal
    directions, weighted 1/sqrt(2), are added as the reference adds them).

    Args:
        probs: softmax output [B, 2, H, W].
        image: RGB in 0-1 [B, 3, H, W]; normalised here with the ImageNet statistics.
        sigma: edge sensitivity of Eq. 2 (in normalised units).
        diagonal: also use the diagonal neighbours (8-connectivity).
    """
    return sparse_crf_term(probs[:, 1], image, sigma, diagonal)


def volumetric_term(x: torch.Tensor, target: float, minimum: float, lambda_s: float, small_reduction: str
                ) -> torch.Tensor:
    fractions = x.mean(dim=(1, 2))
    small = (torch.clamp(fractions, max=minimum) - minimum).pow(2)
    small = small.sum() if small_reduction == "sum" else small.mean()
    return (fractions.mean() - target).pow(2) + lambda_s * small


def volumetric_loss(
    probs: torch.Tensor,
    target: float = 0.5,
    minimum: float = 0.15,
    lambda_s: float = 5.0,
    small_reduction: str = "mean",
) -> torch.Tensor:
    """Volumetric loss, Eq. 4: (batch mean of the object fractions - target)^2 + lambda_s * small-object term.

    The small-object term is [x_i < minimum] (x_i - minimum)^2, averaged over the images of the batch as in
    the reference (``small_reduction="mean"``) or summed as printed in the paper (``"sum"``).
    """
    return volumetric_term(probs[:, 1], target, minimum, lambda_s, small_reduction)


def negative_term(x: torch.Tensor, printed: bool) -> torch.Tensor:
    m = x.mean()
    return (m - 1.0).pow(2) if printed else m.pow(2)


def negative_loss(probs: torch.Tensor, printed: bool = False) -> torch.Tensor:
    """Negative loss, Eq. 7 (without lambda_neg): negatives' object probability pushed to 0.

    Reference form (default): (mean object probability over all negative pixels of the batch)^2.
    ``printed=True`` evaluates Eq. 7 literally on the object channel, (mean - 1)^2; it is kept for
    fidelity studies only, since read that way it pulls negatives towards the object.
    """
    return negative_term(probs[:, 1], printed)


def gt_loss(probs: torch.Tensor, masks: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy on true masks (the 'gt' networks of the paper's Table 2)."""
    return F.nll_loss(torch.log(probs.clamp_min(1e-8)), masks.long(), ignore_index=ignore_index)
