"""Dense-CRF refinement of an object probability map, in PyTorch (no compiled extension).

Mean-field inference of a fully connected CRF with a Potts model and the usual two kernels (Krähenbühl & Koltun,
NIPS 2011): an appearance kernel, ``w_bilateral * exp(-|p_i - p_j|² / 2θα² - |I_i - I_j|² / 2θβ²)``, and a smoothness
kernel, ``w_gaussian * exp(-|p_i - p_j|² / 2θγ²)``. As in ConvCRF (Teichmann & Cipolla, BMVC 2018), messages pass
within a window around each pixel instead of across the whole image, which makes each iteration a fixed number of
multiply-adds per pixel; rows are processed in chunks so memory stays bounded on large photos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rlseg.settings import defaults

__all__ = ["CrfParams", "refine"]

_CRF = defaults("pseudo_gt")["crf_params"]


@dataclass(frozen=True)
class CrfParams:
    """The CRF's kernels (θ in pixels of the map and 0-255 colour levels), weights, window and iterations."""

    iterations: int = _CRF["iterations"]
    radius: int = _CRF["radius"]
    theta_alpha: float = _CRF["theta_alpha"]
    theta_beta: float = _CRF["theta_beta"]
    theta_gamma: float = _CRF["theta_gamma"]
    w_bilateral: float = _CRF["w_bilateral"]
    w_gaussian: float = _CRF["w_gaussian"]


def _offsets(radius: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1) if dy or dx]


def _shifted(x: torch.Tensor, dy: int, dx: int, r: int) -> torch.Tensor:
    """From ``x`` [..., H + 2r, W + 2r] (an [H, W] map padded by ``r``), each pixel's neighbour at (dy, dx)."""
    h, w = x.shape[-2] - 2 * r, x.shape[-1] - 2 * r
    return x[..., r + dy : r + dy + h, r + dx : r + dx + w]


def _kernels(rgb: torch.Tensor, p: CrfParams) -> torch.Tensor:
    """Pairwise weights [n_offsets, H, W] between each pixel and its neighbour at each window offset (0 off the
    image), both kernels normalised over the window and weighted."""
    r = p.radius
    h, w = rgb.shape[1:]
    padded = F.pad(rgb, (r, r, r, r))
    inside = F.pad(torch.ones(h, w), (r, r, r, r))
    bilateral, gaussian = [], []
    for dy, dx in _offsets(r):
        d2 = dy * dy + dx * dx
        colour2 = ((_shifted(padded, dy, dx, r) - rgb) ** 2).sum(0)
        valid = _shifted(inside, dy, dx, r)
        # exp below e^-80 (1e-35) would make subnormal floats, several times slower to compute, for weights the
        # normalisation below drops anyway
        arg = (-d2 / (2 * p.theta_alpha**2) - colour2 / (2 * p.theta_beta**2)).clamp_min(-80.0)
        bilateral.append(torch.exp(arg) * valid)
        gaussian.append(valid * float(np.exp(-d2 / (2 * p.theta_gamma**2))))
    out = torch.zeros(len(bilateral), h, w)
    for weight, kern in ((p.w_bilateral, torch.stack(bilateral)), (p.w_gaussian, torch.stack(gaussian))):
        # each kernel normalised over its window: a message is a weighted mean of the neighbours' labels, so the
        # weights compare with the unary's log-probabilities whatever the window, as pydensecrf's normalisation does
        out += weight * kern / kern.sum(0, keepdim=True).clamp_min(1e-12)
    return out


@torch.no_grad()
def refine(image: np.ndarray, prob: np.ndarray, params: CrfParams | None = None) -> np.ndarray:
    """The object probability after mean-field inference.

    Args:
        image: uint8 RGB [H, W, 3]. prob: the network's object probability [H, W], at the image's size.
    Returns:
        the refined object probability [H, W] (float32).
    """
    p = params or CrfParams()
    r = p.radius
    rgb = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)
    pr = torch.from_numpy(np.asarray(prob, dtype=np.float32)).clamp(1e-6, 1 - 1e-6)
    logit = torch.log(pr) - torch.log1p(-pr)  # the unary's log-odds of object against background
    kernels = _kernels(rgb, p)
    total = p.w_bilateral + p.w_gaussian  # each pixel's messages to the two labels add up to this
    offsets = _offsets(r)
    q = torch.sigmoid(logit)
    for _ in range(p.iterations):
        padded = F.pad(q, (r, r, r, r))
        msg = torch.zeros_like(q)
        for kern, (dy, dx) in zip(kernels, offsets, strict=True):
            msg += kern * _shifted(padded, dy, dx, r)
        # Potts, two labels: the object's message minus the background's (total - object's) shifts the log-odds
        q = torch.sigmoid(logit + 2 * msg - total)
    return q.numpy()
