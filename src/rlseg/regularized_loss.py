"""The complete loss of one batch (Eq. 6, plus Eq. 7 where negatives exist): the paper's terms of
:mod:`rlseg.losses`, weighted per stage by :class:`LossWeights`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlseg.losses import _border, _centre, _negative, _positional, _sparse_crf, _volumetric

__all__ = ["LossWeights", "RegularizedLoss"]


@dataclass(kw_only=True)
class LossWeights:
    """Weights of one training stage (Eq. 6 plus Eq. 7), by keyword only: a new term cannot shift the others."""

    reg: float = 100.0
    vol: float = 1.0
    pos: float = 1.0
    neg: float = 2.0
    sigma: float = 0.15


@dataclass
class RegularizedLoss:
    """The complete loss of Eq. 6 (+ Eq. 7 where negatives exist), computed once per batch.

    In a batch that mixes positives and negatives, sparse-CRF and volumetric losses see the positives only, the
    negative loss the negatives only, and the positional loss the positives only or, with
    ``negatives_in_positional`` (the reference), negatives too (see the module's docstring). ``__call__`` returns the
    weighted total and each term (unweighted) for logging.
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
    negative_printed: bool = False
    negatives_in_positional: bool = False

    def __call__(
        self, probs: torch.Tensor, image: torch.Tensor, is_negative: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        x = probs[:, 1]  # every term reads the object channel: sliced once, so its gradient is one map
        pos_mask = None if is_negative is None else ~is_negative
        xp, im = x, image
        if pos_mask is not None and not bool(pos_mask.all()):
            xp, im = x[pos_mask], image[pos_mask]
        total = probs.new_zeros(())
        has_neg = is_negative is not None and bool(is_negative.any())
        if xp.shape[0] > 0:
            terms["sparse_crf"] = _sparse_crf(xp, im, w.sigma, self.diagonal)
            terms["volumetric"] = _volumetric(xp, self.vol_target, self.vol_minimum, self.lambda_s,
                                              self.small_reduction)
            total = total + w.reg * terms["sparse_crf"] + w.vol * terms["volumetric"]
        x_neg = x[is_negative] if has_neg else None
        # the negatives' (mean object probability)^2: Eq. 7 as the reference computes it, computed once
        neg_squared = _negative(x_neg, printed=False) if has_neg else None
        if self.negatives_in_positional and has_neg:
            # the reference: the border over the whole batch; the centre over the positives, plus the negatives'
            # mean object probability squared
            positional = _border(x, self.border_width, self.border_mode) + neg_squared
            if xp.shape[0] > 0:
                positional = positional + _centre(xp, self.center_half, self.center_size)
            terms["positional"] = positional
            total = total + w.pos * positional
        elif xp.shape[0] > 0:
            terms["positional"] = _positional(xp, self.border_width, self.center_half, self.center_size,
                                              self.border_mode)
            total = total + w.pos * terms["positional"]
        if has_neg:
            terms["negative"] = _negative(x_neg, printed=True) if self.negative_printed else neg_squared
            total = total + w.neg * terms["negative"]
        return total, {k: float(v.detach()) for k, v in terms.items()}
