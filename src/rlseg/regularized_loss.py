"""The complete loss of one batch (Eq. 6, plus Eq. 7 where negatives exist): the paper's terms of
:mod:`rlseg.losses`, weighted per stage by :class:`LossWeights`.

:data:`TERMS` declares the terms once: each term's name (its column in ``history.csv`` and its line in the
training-curve figure), the :class:`LossWeights` field that weighs it (``lambda_<weight>`` and, where annealing
weighs it otherwise, ``lambda_<weight>_anneal`` in the config) and how it is computed from a :class:`Batch`. A new
term is one more entry (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cached_property

import torch

from rlseg.losses import (
    SIDES,
    border_term,
    centre_term,
    negative_term,
    positional_term,
    sparse_crf_term,
    volumetric_term,
)

__all__ = ["TERMS", "Batch", "LossTerm", "LossWeights", "RegularizedLoss", "weight_names"]


@dataclass(kw_only=True)
class LossWeights:
    """Weights of one training stage (Eq. 6 plus Eq. 7), by keyword only: a new term cannot shift the others."""

    reg: float = 100.0
    vol: float = 1.0
    pos: float = 1.0
    neg: float = 2.0
    sigma: float = 0.15


def weight_names() -> list[str]:
    """The :class:`LossWeights` fields that weigh a term (all but ``sigma``)."""
    return [f.name for f in fields(LossWeights) if f.name != "sigma"]


class Batch:
    """One batch as the terms see it: the object channel ``x`` [B, H, W], the positives (with their images) and
    the negatives, each sliced once and only when a term asks."""

    def __init__(self, x: torch.Tensor, image: torch.Tensor, is_negative: torch.Tensor | None,
                 centres: torch.Tensor | None = None) -> None:
        self.x, self.image, self.is_negative = x, image, is_negative
        # the positives' centre points [P, 2] (row, column as fractions), or None: the middle of each image
        self.centres = centres
        self.has_negatives = is_negative is not None and bool(is_negative.any())

    @cached_property
    def positives(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(object maps, images) of the positives, or None when the batch has none."""
        x, im = self.x, self.image
        if self.is_negative is not None and bool(self.is_negative.any()):
            keep = ~self.is_negative
            x, im = x[keep], im[keep]
        return (x, im) if x.shape[0] > 0 else None

    @cached_property
    def negatives(self) -> torch.Tensor | None:
        """Object maps of the negatives, or None."""
        return self.x[self.is_negative] if self.has_negatives else None

    @cached_property
    def negatives_squared(self) -> torch.Tensor | None:
        """(mean object probability of the negatives)^2: Eq. 7 as the reference computes it, computed once for
        the terms that use it."""
        return negative_term(self.negatives, printed=False) if self.has_negatives else None


@dataclass(frozen=True)
class LossTerm:
    """One term of the complete loss: ``compute(loss, batch)`` returns it unweighted, or None when the batch has
    nothing it applies to; ``weight`` names the :class:`LossWeights` field that weighs it."""

    name: str
    weight: str
    compute: Callable[[RegularizedLoss, Batch], torch.Tensor | None]


def _sparse_crf(loss: RegularizedLoss, b: Batch) -> torch.Tensor | None:
    return None if b.positives is None else sparse_crf_term(*b.positives, loss.weights.sigma, loss.diagonal)


def _volumetric(loss: RegularizedLoss, b: Batch) -> torch.Tensor | None:
    if b.positives is None:
        return None
    return volumetric_term(b.positives[0], loss.vol_target, loss.vol_minimum, loss.lambda_s, loss.small_reduction)


def _positional(loss: RegularizedLoss, b: Batch) -> torch.Tensor | None:
    if loss.negatives_in_positional and b.has_negatives:
        # the reference: the border over the whole batch; the centre over the positives, plus the negatives'
        # mean object probability squared
        positional = border_term(b.x, loss.border_width, loss.border_mode, loss.border_sides) + b.negatives_squared
        if b.positives is not None:
            positional = positional + centre_term(b.positives[0], loss.center_half, loss.center_size, b.centres)
        return positional
    if b.positives is None:
        return None
    return positional_term(b.positives[0], loss.border_width, loss.center_half, loss.center_size, loss.border_mode,
                           loss.border_sides, b.centres)


def _negative(loss: RegularizedLoss, b: Batch) -> torch.Tensor | None:
    if not b.has_negatives:
        return None
    return negative_term(b.negatives, printed=True) if loss.negative_printed else b.negatives_squared


# the complete loss, in the order its weighted terms are summed
TERMS: list[LossTerm] = [
    LossTerm("sparse_crf", "reg", _sparse_crf),
    LossTerm("volumetric", "vol", _volumetric),
    LossTerm("positional", "pos", _positional),
    LossTerm("negative", "neg", _negative),
]


@dataclass
class RegularizedLoss:
    """The complete loss of Eq. 6 (+ Eq. 7 where negatives exist), computed once per batch.

    In a batch that mixes positives and negatives, sparse-CRF and volumetric losses see the positives only, the
    negative loss the negatives only, and the positional loss the positives only or, with
    ``negatives_in_positional`` (the reference), negatives too (see :mod:`rlseg.losses`). ``__call__`` returns the
    weighted total and each term of :data:`TERMS` that applies (unweighted) for logging.
    """

    weights: LossWeights = field(default_factory=LossWeights)
    diagonal: bool = False
    vol_target: float = 0.5
    vol_minimum: float = 0.15
    lambda_s: float = 5.0
    small_reduction: str = "mean"
    border_width: int = 3
    center_half: int | None = 2
    center_size: int = 3
    border_mode: str = "sides"
    border_sides: tuple[str, ...] = SIDES
    negative_printed: bool = False
    negatives_in_positional: bool = False

    def __call__(
        self, probs: torch.Tensor, image: torch.Tensor, is_negative: torch.Tensor | None = None,
        centres: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``centres`` [P, 2]: where each positive's centre box goes (row, column as fractions; None: the middle)."""
        # every term reads the object channel: sliced once, so its gradient is one map
        batch = Batch(probs[:, 1], image, is_negative, centres)
        total = probs.new_zeros(())
        terms: dict[str, torch.Tensor] = {}
        for term in TERMS:
            value = term.compute(self, batch)
            if value is not None:
                terms[term.name] = value
                total = total + getattr(self.weights, term.weight) * value
        return total, {k: float(v.detach()) for k, v in terms.items()}
