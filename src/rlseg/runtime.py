"""What every trainer and predictor shares at run time: the device choice and the error a diverging loss raises."""

from __future__ import annotations

import torch

__all__ = ["EncoderWeightsUnavailable", "NonFiniteLossError", "resolve_device"]


class EncoderWeightsUnavailable(RuntimeError):
    """Pretrained weights could not be loaded (typically: no internet)."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message gives epoch, batch and each loss term."""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
