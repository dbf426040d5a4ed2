"""Eq. 5, the positional loss: the frame's border pushed to background, a centre box to the object.

The reference's centre box is 4x4 px (middle +- 2) and its border term is the mean over the four sides of (mean
object probability on that side)^2; the paper prints c = 3 and one band (``border_mode="band"``). Two options go
past both: ``sides`` names the sides the border term sees, and ``centres`` puts each image's centre box at its own
point (:func:`rlseg.cam.centre_points`) instead of the middle. :mod:`rlseg.losses` exports every name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["SIDES", "border_loss", "border_term", "centre_loss", "centre_term", "positional_loss", "positional_term"]


class _RegionMeans(torch.autograd.Function):
    """The means of x [B, H, W] over rectangular regions (slices of rows and columns, every image of the batch),
    with one gradient map for all of them."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, regions: list[tuple[slice, slice]]) -> torch.Tensor:
        ctx.regions, ctx.shape = regions, x.shape
        ctx.counts = [x[:, r, c].numel() for r, c in regions]
        return torch.stack([x[:, r, c].mean() for r, c in regions])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_x = grad.new_zeros(ctx.shape)
        for (r, c), n, g in zip(ctx.regions, ctx.counts, grad, strict=True):
            grad_x[:, r, c] += g / n
        return grad_x, None


def _centre_box(h: int, w: int, center_half: int | None, center_size: int) -> tuple[slice, slice]:
    if center_half is not None:
        ch, cw = h // 2, w // 2
        return slice(ch - center_half, ch + center_half), slice(cw - center_half, cw + center_half)
    r0, c0 = (h - center_size) // 2, (w - center_size) // 2
    return slice(r0, r0 + center_size), slice(c0, c0 + center_size)


SIDES = ("top", "bottom", "left", "right")


def _sides(b: int, sides: Sequence[str] = SIDES) -> list[tuple[slice, slice]]:
    full = slice(None)
    regions = {"top": (slice(None, b), full), "bottom": (slice(-b, None), full), "left": (full, slice(None, b)),
               "right": (full, slice(-b, None))}
    unknown = set(sides) - set(regions)
    if unknown or not sides:
        raise ValueError(f"border sides must be a non-empty subset of {SIDES}, not {list(sides)}")
    return [regions[s] for s in SIDES if s in sides]


def border_term(x: torch.Tensor, border_width: int, border_mode: str, sides: Sequence[str] = SIDES) -> torch.Tensor:
    b = border_width
    if border_mode == "sides":
        return _RegionMeans.apply(x, _sides(b, sides)).pow(2).mean()
    if border_mode == "band":
        band = torch.zeros_like(x[0], dtype=torch.bool)
        for r, c in _sides(b, sides):
            band[r, c] = True
        return x[:, band].mean().pow(2)
    raise ValueError(f"border_mode must be 'sides' or 'band', not {border_mode!r}")


def _centre_boxes(x: torch.Tensor, center_half: int | None, center_size: int, centres: torch.Tensor) -> torch.Tensor:
    """A boolean map [B, H, W] of each image's centre box placed at its own centre (``centres`` [B, 2]: row and
    column as fractions of the height and width), kept inside the image."""
    _, h, w = x.shape
    size = 2 * center_half if center_half is not None else center_size
    at = torch.round(centres.to(torch.float64) * torch.tensor([h, w], dtype=torch.float64, device=centres.device))
    r0 = (at[:, 0].long() - size // 2).clamp(0, h - size).to(x.device)
    c0 = (at[:, 1].long() - size // 2).clamp(0, w - size).to(x.device)
    rows = torch.arange(h, device=x.device)[None, :] - r0[:, None]
    cols = torch.arange(w, device=x.device)[None, :] - c0[:, None]
    return ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]


def centre_term(x: torch.Tensor, center_half: int | None, center_size: int,
                centres: torch.Tensor | None = None) -> torch.Tensor:
    if centres is not None:
        return (x[_centre_boxes(x, center_half, center_size, centres)].mean() - 1.0).pow(2)
    box = _centre_box(*x.shape[-2:], center_half, center_size)
    return (_RegionMeans.apply(x, [box])[0] - 1.0).pow(2)


def positional_term(x: torch.Tensor, border_width: int, center_half: int | None, center_size: int,
                border_mode: str, sides: Sequence[str] = SIDES, centres: torch.Tensor | None = None) -> torch.Tensor:
    if border_mode != "sides" or centres is not None:
        return border_term(x, border_width, border_mode, sides) + centre_term(x, center_half, center_size, centres)
    # the sides and the centre box in one pass of the gradient
    regions = _sides(border_width, sides)
    means = _RegionMeans.apply(x, [*regions, _centre_box(*x.shape[-2:], center_half, center_size)])
    return means[:-1].pow(2).mean() + (means[-1] - 1.0).pow(2)


def centre_loss(probs: torch.Tensor, center_half: int | None = 2, center_size: int = 3,
                centres: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 5's centre term: (mean object probability on the centre box - 1)^2. The reference's box spans the
    middle +- ``center_half`` pixels (4x4 for 2); with ``center_half=None`` it is ``center_size`` pixels centred
    (the paper's c = 3). ``centres`` [B, 2] (row, column as fractions) puts each image's box at its own point
    instead of the middle."""
    return centre_term(probs[:, 1], center_half, center_size, centres)


def border_loss(probs: torch.Tensor, border_width: int = 3, border_mode: str = "sides",
                sides: Sequence[str] = SIDES) -> torch.Tensor:
    """Eq. 5's border term (width ``border_width``): ``"sides"`` (reference) averages (mean object probability on
    a side)^2 over the four sides; ``"band"`` (printed) squares the mean over the whole band. ``sides`` names the
    frame's sides the term pushes to background (all four in the paper)."""
    return border_term(probs[:, 1], border_width, border_mode, sides)


def positional_loss(
    probs: torch.Tensor,
    border_width: int = 3,
    center_half: int | None = 2,
    center_size: int = 3,
    border_mode: str = "sides",
    sides: Sequence[str] = SIDES,
    centres: torch.Tensor | None = None,
) -> torch.Tensor:
    """Positional loss, Eq. 5: the border pushed to background (:func:`border_loss`), the centre box to the object
    (:func:`centre_loss`)."""
    return positional_term(probs[:, 1], border_width, center_half, center_size, border_mode, sides, centres)
