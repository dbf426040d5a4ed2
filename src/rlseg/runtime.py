"""What every trainer and predictor shares at run time: the device choice, the precision, the memory allocator's
settings and the error a diverging loss raises."""

from __future__ import annotations

import ctypes
import logging

import torch

from rlseg.io import EncoderWeightsUnavailable
from rlseg.settings import check_choice

__all__ = [
    "EncoderWeightsUnavailable",
    "NonFiniteLossError",
    "autocast",
    "resolve_device",
    "reuse_freed_memory",
    "set_precision",
]

_PRECISION = "auto"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message gives epoch, batch and each loss term."""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def set_precision(precision: str) -> None:
    """``auto``: bfloat16 autocast on GPUs that support it, float32 elsewhere; ``bf16`` or ``fp32`` force it."""
    global _PRECISION
    check_choice("precision", precision)
    _PRECISION = precision


def autocast(device: torch.device) -> torch.autocast:
    """The autocast context of this process's precision on ``device`` (bfloat16 or off)."""
    if _PRECISION == "auto":
        enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    else:
        enabled = _PRECISION == "bf16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def reuse_freed_memory() -> bool:
    """Keep the memory that freed tensors leave in this process's heap, to serve the next step's tensors (glibc).

    A training step allocates and frees the same tensors of tens of MB every step. glibc serves each one above its
    mmap threshold (at most 32 MB) from fresh pages that the kernel must zero on first touch, and returns them on
    ``free``: a large share of a single-class training step on the CPU (docs/performance.md). No mmap for
    allocations and no trimming of the heap's top keeps them; the process's
    resident memory then stays at its peak, which its job has to fit anyway. Results do not change. Returns whether
    it was applied (not on a C library without ``mallopt``, such as macOS's).
    """
    try:
        # the process's own symbols: the C library it runs on, without find_library's ldconfig subprocess
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    log.debug("freed memory kept in the heap: %s", applied)
    return applied
