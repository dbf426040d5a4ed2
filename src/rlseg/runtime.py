"""What every trainer and predictor shares at run time: the device choice and the error a diverging loss raises."""

from __future__ import annotations

import torch

from rlseg.config import check_choice

__all__ = ["EncoderWeightsUnavailable", "NonFiniteLossError", "autocast", "resolve_device", "set_precision"]

_PRECISION = "auto"


class EncoderWeightsUnavailable(RuntimeError):
    """Pretrained weights could not be loaded (typically: no internet)."""


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
