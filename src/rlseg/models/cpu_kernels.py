"""The CPU fast path, swapped in at build time (``single_class.cpu_kernels``): layers that compute a standard
layer's function faster on the CPU with the same parameters (state dicts), and :class:`CpuLightUnetDecoder`, the
light decoder computed with them. Other devices, layouts, dtypes and autocast fall back to the plain modules."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from rlseg.models.light_decoder import LightUnetDecoder

__all__ = ["CpuLightUnetDecoder", "ShiftSumConv2d", "split_input", "up_head"]

# the nine taps of a 3x3 kernel as (row, column) offsets, in the kernel's (ky, kx) order
_TAPS = [(ky - 1, kx - 1) for ky in range(3) for kx in range(3)]


def _cpu_form_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether this module's CPU forms apply to ``x``: a contiguous CPU tensor of ``weight``'s dtype, no autocast.
    GPUs, channels-last inputs and autocast take the standard layers."""
    return (x.device.type == "cpu" and x.is_contiguous() and not torch.is_autocast_enabled("cpu")
            and x.dtype == weight.dtype)


def _window(offset: int, n: int) -> tuple[slice, slice]:
    """(output slice, input slice) along one axis for ``out[i] += y[i + offset]`` inside ``0..n-1``."""
    return slice(max(0, -offset), n - max(0, offset)), slice(max(0, offset), n - max(0, -offset))


class _ShiftSum3x3(torch.autograd.Function):
    """3x3 convolution, stride 1, padding 1: one channel matmul to ``9 * out`` maps, then nine shifted sums."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, c, h, w = x.shape
        o = weight.shape[0]
        taps = weight.permute(2, 3, 0, 1).reshape(9 * o, c)  # rows in (ky, kx, out) order
        y = torch.matmul(taps, x.reshape(b, c, h * w)).view(b, 9, o, h, w)
        out = y[:, 4].clone()  # the centre tap covers every pixel
        if bias is not None:
            out += bias.view(1, o, 1, 1)
        for k, (dy, dx) in enumerate(_TAPS):
            if k != 4:
                (ro, ri), (co, ci) = _window(dy, h), _window(dx, w)
                out[:, :, ro, co] += y[:, k, :, ri, ci]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        b, c, h, w = x.shape
        o = weight.shape[0]
        padded = F.pad(grad, (1, 1, 1, 1))
        # the gradient reaching tap k's map at p is the output gradient at p - offset_k (zero outside)
        grad_y = torch.stack([padded[:, :, 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w] for dy, dx in _TAPS], 1)
        grad_y = grad_y.view(b, 9 * o, h * w)
        taps = weight.permute(2, 3, 0, 1).reshape(9 * o, c)
        grad_x = torch.matmul(taps.t(), grad_y).view(b, c, h, w)
        grad_taps = torch.matmul(grad_y, x.reshape(b, c, h * w).transpose(1, 2)).sum(0)
        grad_w = grad_taps.view(3, 3, o, c).permute(2, 3, 0, 1)
        return grad_x, grad_w, grad.sum((0, 2, 3)) if ctx.has_bias else None


class ShiftSumConv2d(nn.Conv2d):
    """``nn.Conv2d(cin, cout, 3, padding=1)`` for a few output channels (a segmentation head), same parameters.

    On the CPU, oneDNN runs a 3x3 convolution to 2 channels at a few percent of its matmul rate: at 128 px it was
    a fifth of a U-Net training step. Here the input goes through one matmul to the nine taps' maps, which are then
    added shifted: faster forward and backward (docs/performance.md), the same function up to float rounding.
    Channels-last inputs, GPUs and autocast take the standard convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _cpu_form_applies(x, self.weight):
            return super().forward(x)
        return _ShiftSum3x3.apply(x, self.weight, self.bias)


# ---- the last up-sampling block and the head, in sub-pixel layout ------------------------------------------------
#
# ConvTranspose2d(kernel 2, stride 2) writes each input pixel's 2x2 output cell from one matmul. Kept as the four
# cell positions' channels at the input's resolution ("sub-pixel" layout: channel s * O + o for cell position
# s = 2a + b), the full-resolution map never needs its pixels shuffled; BatchNorm's batch statistics follow from the
# input's mean and covariance (the map is linear in the input), so BatchNorm folds into the matmul; and the head's
# 3x3 convolution becomes a 3x3 shift-sum at the input's resolution whose taps each reach one of the four cell
# positions (32 tap maps per 2 classes at a quarter of the pixels, against 18 at all of them).

def _head_taps() -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """The head's 3x3 taps in sub-pixel layout.

    Returns ``T`` [16, 4, 9], 0/1: row ``4 * s + t`` (output cell position ``s``, its ``t``-th cell shift) takes
    input cell position ``s'`` through tap ``q`` when ``T[4s+t, s', q] = 1``; and per row ``(s, di, dj)``, the
    output cell position and the shift in input cells.
    """
    taps = torch.zeros(16, 4, 9)
    rows = []
    for s in range(4):
        a, b = divmod(s, 2)
        # the unshifted cell first: the forward pass copies it, then adds the shifted ones
        shifts = [(di, dj) for di in ((0, -1) if a == 0 else (0, 1)) for dj in ((0, -1) if b == 0 else (0, 1))]
        for t, (di, dj) in enumerate(shifts):
            rows.append((s, di, dj))
            for q, (dy, dx) in enumerate(_TAPS):
                ry, rx = a + dy, b + dx  # the tap's full-resolution offset from this cell's origin
                if ry // 2 == di and rx // 2 == dj:
                    taps[4 * s + t, 2 * (ry % 2) + rx % 2, q] = 1.0
    return taps, rows


_SUBPIXEL_TAPS, _SUBPIXEL_ROWS = _head_taps()


def _bmm(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``weight @ x[i]`` for each ``i``: ``torch.matmul`` folds the batch into one matmul through transposed copies
    of ``x`` and of the result, which cost more than the matmul itself (docs/performance.md)."""
    # the weight as stored: a transposed one is much slower
    return torch.bmm(weight.contiguous().expand(x.shape[0], -1, -1), x)


def _shift_rows(y: torch.Tensor, out: torch.Tensor, k: int) -> None:
    """``out`` [b, 4K, h, w] from the tap maps ``y`` [b, 16K, h, w]: each output cell position's four maps, shifted."""
    h, w = out.shape[-2:]
    for r, (s, di, dj) in enumerate(_SUBPIXEL_ROWS):
        dst, src = out[:, s * k : (s + 1) * k], y[:, r * k : (r + 1) * k]
        if di == dj == 0:
            dst.copy_(src)  # the unshifted map covers every pixel
            continue
        (ro, ri), (co, ci) = _window(di, h), _window(dj, w)
        dst[:, :, ro, co] += src[:, :, ri, ci]


def _unshift_rows(grad: torch.Tensor, grad_y: torch.Tensor, k: int) -> None:
    """The tap maps' gradient ``grad_y`` [b, 16K, h, w] (uninitialised on entry) from the output's ``grad``
    [b, 4K, h, w]: each row's shifted copy, and zeros in the edge row and column that its shift leaves out."""
    h, w = grad.shape[-2:]
    for r, (s, di, dj) in enumerate(_SUBPIXEL_ROWS):
        (ro, ri), (co, ci) = _window(di, h), _window(dj, w)
        dst = grad_y[:, r * k : (r + 1) * k]
        dst[:, :, ri, ci] = grad[:, s * k : (s + 1) * k, ro, co]
        if di:
            dst[:, :, 0 if di > 0 else h - 1].zero_()
        if dj:
            dst[:, :, :, 0 if dj > 0 else w - 1].zero_()


class _SubpixelUpHead(torch.autograd.Function):
    """relu(W [x; 1]) in sub-pixel layout, then the head's shift-sum: logits [B, 4K, h, w] in sub-pixel layout.

    ``weight`` [4O, C + 1] is the transposed convolution with BatchNorm folded in, its bias the last column (a
    ones channel on the small input is cheaper than a pass over the large output); ``taps`` [16K, 4O] the head's
    weights per output cell position and cell shift (rows in ``_SUBPIXEL_ROWS`` order, K each). Backward
    recomputes the activations: one small matmul instead of keeping a full-resolution map.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        k = taps.shape[0] // 16
        xa = torch.cat([x.view(b, c, h * w), x.new_ones(b, 1, h * w)], 1)
        act = _bmm(weight, xa).relu_()
        out = x.new_empty(b, 4 * k, h, w)
        _shift_rows(_bmm(taps, act).view(b, 16 * k, h, w), out, k)
        ctx.save_for_backward(xa, weight, taps)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xa, weight, taps = ctx.saved_tensors
        b, k = grad.shape[0], taps.shape[0] // 16
        h, w = grad.shape[-2:]
        act = _bmm(weight, xa).relu_()
        grad_y = grad.new_empty(b, 16 * k, h, w)
        _unshift_rows(grad, grad_y, k)
        grad_y = grad_y.view(b, 16 * k, h * w)
        grad_taps = torch.bmm(grad_y, act.transpose(1, 2)).sum(0)
        grad_act = _bmm(taps.t(), grad_y)
        # in place: a new map of this size costs a pass of its own over cold memory
        torch.ops.aten.threshold_backward.grad_input(grad_act, act, 0, grad_input=grad_act)
        del act
        grad_weight = torch.bmm(grad_act, xa.transpose(1, 2)).sum(0)
        grad_x = _bmm(weight[:, :-1].t(), grad_act).view(b, -1, h, w)
        return grad_x, grad_weight, grad_taps


class _Moments(torch.autograd.Function):
    """Mean [C] and covariance [C, C] of ``x`` [B, C, h, w] over batch and pixels (one matmul each way)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        mean = x.mean((0, 2, 3))
        centred = (x - mean.view(1, c, 1, 1)).view(b, c, h * w)
        ctx.save_for_backward(centred)
        ctx.hw = (h, w)
        return mean, torch.bmm(centred, centred.transpose(1, 2)).sum(0) / (b * h * w)

    @staticmethod
    def backward(ctx, grad_mean: torch.Tensor, grad_cov: torch.Tensor) -> torch.Tensor:
        (centred,) = ctx.saved_tensors
        b, c, n = centred.shape
        # d cov / d x = ((G + G^T) / M) (x - mean); the mean's own path through cov is zero (centred sums to 0)
        grad = _bmm((grad_cov + grad_cov.t()) / (b * n), centred)
        grad += (grad_mean / (b * n)).view(1, c, 1)
        return grad.view(b, c, *ctx.hw)


def _batch_moments(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (biased) variance per output channel of ``ConvTranspose2d(k=2, s=2)`` over the batch, from the
    input's mean and covariance: ``weight`` [4, O, C] per cell position, ``bias`` [O]."""
    mean_x, cov = _Moments.apply(x)
    cell_means = torch.matmul(weight, mean_x) + bias  # [4, O]
    mean = cell_means.mean(0)
    within = torch.einsum("soc,cd,sod->so", weight, cov, weight)  # each cell position's variance
    var = (within + (cell_means - mean) ** 2).mean(0)
    return mean, var


def _update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
    """``bn``'s running statistics and batch count after one training batch, as ``nn.BatchNorm2d`` updates them."""
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        bn.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        bn.running_var.mul_(1 - momentum).add_(var * (count / (count - 1)), alpha=momentum)


def up_head(x: torch.Tensor, up: nn.Sequential, head: nn.Conv2d) -> torch.Tensor:
    """``head(up(x))`` for ``up`` = ConvTranspose2d(k=2, s=2) + BatchNorm2d + ReLU and a 3x3 ``head``, computed in
    sub-pixel layout on the CPU: the same function, parameters and running statistics, up to float rounding.

    These full-resolution layers are memory-bound and take a large share of a U-Net training step on the CPU. Here
    no full-resolution map of the up block's channels is shuffled, normalised, padded or kept for backward, which
    makes forward and backward faster (docs/performance.md). Other devices, layouts, dtypes and autocast take
    the modules themselves.
    """
    convt, bn, _ = up
    if (not _cpu_form_applies(x, convt.weight) or x.dtype not in (torch.float32, torch.float64)
            or not isinstance(head, ShiftSumConv2d) or convt.bias is None or not bn.affine):
        return head(up(x))
    b, c, h, w = x.shape
    o = convt.out_channels
    cell_weight = convt.weight.permute(2, 3, 1, 0).reshape(4, o, c)  # [cell position, out, in]
    if bn.training or bn.running_mean is None:
        mean, var = _batch_moments(x, cell_weight, convt.bias)
        if bn.training and bn.track_running_stats:
            _update_running_stats(bn, mean.detach(), var.detach(), 4 * b * h * w)
    else:
        mean, var = bn.running_mean, bn.running_var
    scale = bn.weight * torch.rsqrt(var + bn.eps)
    bias = ((convt.bias - mean) * scale + bn.bias).repeat(4)
    weight = torch.cat([(cell_weight * scale.view(1, o, 1)).reshape(4 * o, c), bias.view(-1, 1)], 1)
    k = head.out_channels
    head_taps = torch.einsum("rpq,koq->rkpo", _SUBPIXEL_TAPS.to(head.weight), head.weight.view(k, o, 9))
    logits = _SubpixelUpHead.apply(x, weight, head_taps.reshape(16 * k, 4 * o))
    logits = F.pixel_shuffle(logits.view(b, 2, 2, k, h, w).permute(0, 3, 1, 2, 4, 5).reshape(b, 4 * k, h, w), 2)
    return logits if head.bias is None else logits + head.bias.view(1, k, 1, 1)


def split_input(conv: nn.Conv2d, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``conv(torch.cat([x, skip], 1))`` as one convolution on each, its weight split by input channels: no
    concatenated copy, and no input gradient for a frozen encoder's skip. The same split of the transposed
    convolutions at the levels without a 3x3 convolution is no faster (docs/performance.md)."""
    w, n = conv.weight, x.shape[1]
    args = (conv.stride, conv.padding, conv.dilation, conv.groups)  # zero padding: the decoder's convolutions'
    return F.conv2d(x, w[:, :n], conv.bias, *args) + F.conv2d(skip, w[:, n:], None, *args)


class CpuLightUnetDecoder(LightUnetDecoder):
    """:class:`LightUnetDecoder` with the CPU forms: each first 3x3 convolution after a skip runs on the two
    inputs without concatenating them (:func:`split_input`), and the last up block and the head run in sub-pixel
    layout (:func:`up_head`, with the head a :class:`ShiftSumConv2d`). Same parameters, same function up to float
    rounding (tests/test_models.py compares them in float64)."""

    make_head = staticmethod(ShiftSumConv2d)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, mix, skip in zip(self.ups, self.mix, list(features[1:-1])[::-1], strict=True):
            x = up(x)  # kept as modules: with BatchNorm folded in as up_head folds it, the loop ran slower
            if len(mix):
                x = mix[1:](mix[0][1:](split_input(mix[0][0], x, skip)))
            else:
                x = torch.cat([x, skip], 1)
        return up_head(x, self.last, self.head)
