"""Encoders of the single-class U-Net and the multi-class network: which exist, how their inputs are normalised,
how they are built (smp, timm, or every block's output), and the error when their weights cannot be fetched."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from rlseg.architectures import ALL_BLOCKS_ENCODERS, LITE_ENCODERS, OFFLINE_ENCODER
from rlseg.losses import IMAGENET_MEAN, IMAGENET_STD
from rlseg.models.lite import lite_head, lite_model, lite_state_dict, load_lite_imagenet
from rlseg.runtime import EncoderWeightsUnavailable

__all__ = [
    "Normalise",
    "all_blocks_encoder",
    "encoder_stats",
    "offline_hint",
    "smp_encoder",
]


def encoder_stats(encoder: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input mean and std the encoder was trained with (EfficientNet-Lite: 0.5/0.5, others: ImageNet)."""
    if "efficientnet_lite" in encoder:
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return IMAGENET_MEAN, IMAGENET_STD


def _weights_source(encoder: str) -> str:
    if encoder == "resnet101":
        from torchvision.models import ResNet101_Weights  # the model zoo, for this message only

        url = ResNet101_Weights.IMAGENET1K_V1.url
        return f"{url}, cached as {Path(torch.hub.get_dir()) / 'checkpoints' / url.rsplit('/', 1)[-1]}"
    try:
        # smp, timm and huggingface: only the networks built from smp pay their import
        import segmentation_models_pytorch as smp

        repo = smp.encoders.encoders[encoder]["pretrained_settings"]["imagenet"]["repo_id"]
        return f"the Hugging Face repository {repo}, cached under ~/.cache/huggingface/hub"
    except (KeyError, ImportError):
        return f"the usual download of {encoder!r}"


def offline_hint(encoder: str, err: Exception) -> EncoderWeightsUnavailable:
    first = str(err).splitlines()[0][:200] if str(err) else ""
    return EncoderWeightsUnavailable(
        f"could not fetch the ImageNet weights of encoder {encoder!r} ({type(err).__name__}: {first}). "
        f"They come from {_weights_source(encoder)}: fetch them once on a machine with internet and copy the "
        f"cache here, or use the offline encoder {OFFLINE_ENCODER!r}."
    )


class _WithHead(nn.Module):
    """An smp encoder whose deepest feature also goes through the backbone's last 1x1 convolution (+BN+act).

    smp's ``mobilenet_v2`` encoder (the paper's UMobV2) ends with that 1280-channel convolution; timm's
    ``features_only`` EfficientNet-Lite0 stops before it, at 320 channels.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, channels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.out_channels = [*encoder.out_channels[:-1], channels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = list(self.encoder(x))
        feats[-1] = self.head(feats[-1])
        return feats


class _AllBlocksEncoder(nn.Module):
    """Every block's output, concatenated per stride: the reference's UMobV2 feature extractor.

    The reference (SingleClassRL's ``MobileNetV2_Layers``) feeds its decoder, at each of the strides 2 to 32,
    the concatenation of all MobileNetV2 blocks that output that stride, not only the last one as smp does
    (for MobileNetV2 48, 48, 96, 544, 800 channels instead of 16, 24, 32, 96, 1280). Returns smp's layout:
    ``[input, stride 2, 4, 8, 16, 32]``.
    """

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.blocks.eval()  # a probe in train mode would move the pretrained BatchNorm statistics
        with torch.no_grad():
            x, sizes, channels = torch.zeros(1, 3, 64, 64), [], []
            for block in self.blocks:
                x = block(x)
                sizes.append(x.shape[-1])
                channels.append(x.shape[1])
        self.blocks.train()
        strides = sorted(set(sizes), reverse=True)
        if len(strides) != 5:
            raise ValueError(f"expected blocks at 5 strides, got feature sizes {strides}")
        # group[i]: index of the stride whose concatenation block i joins
        self.group = [strides.index(s) for s in sizes]
        self.out_channels = [3] + [sum(c for c, g in zip(channels, self.group, strict=True) if g == k)
                                   for k in range(5)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs: list[list[torch.Tensor]] = [[] for _ in range(5)]
        feats = x
        for block, g in zip(self.blocks, self.group, strict=True):
            feats = block(feats)
            outs[g].append(feats)
        return [x] + [torch.cat(o, 1) for o in outs]


def all_blocks_encoder(encoder: str, pretrained: bool) -> _AllBlocksEncoder:
    """Every block's output per stride, for an encoder of ``ALL_BLOCKS_ENCODERS`` (``check_unet`` refuses others)."""
    assert encoder in ALL_BLOCKS_ENCODERS, encoder
    if encoder in LITE_ENCODERS:
        full = lite_model(encoder, lite_state_dict(encoder) if pretrained else None)
        blocks = [b for stage in full.blocks for b in stage]
        return _AllBlocksEncoder([nn.Sequential(full.conv_stem, full.bn1), *blocks])
    # mobilenet_v2: the reference stops before MobileNetV2's last 1x1 convolution (1280 channels)
    return _AllBlocksEncoder(list(smp_encoder(encoder, pretrained).features)[:-1])


def smp_encoder(encoder: str, pretrained: bool, depth: int = 5, head: bool = False) -> nn.Module:
    """An smp encoder (the packaged weights for the EfficientNet-Lite ones); ``head`` as ``check_unet`` allows it."""
    # smp, timm and huggingface: only the networks built from smp pay their import
    import segmentation_models_pytorch as smp

    if encoder in LITE_ENCODERS:
        enc = smp.encoders.get_encoder(encoder, in_channels=3, depth=depth, weights=None)
        mapped = lite_state_dict(encoder) if pretrained else None
        if pretrained:
            load_lite_imagenet(enc.model, encoder, mapped)
        if head:
            conv_head = lite_head(encoder, mapped)
            enc = _WithHead(enc, conv_head, conv_head[0].out_channels)
        return enc
    try:
        return smp.encoders.get_encoder(encoder, in_channels=3, depth=depth, weights="imagenet" if pretrained else None)
    except Exception as err:  # network errors come in many types from several libraries
        raise offline_hint(encoder, err) from err


class Normalise(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
