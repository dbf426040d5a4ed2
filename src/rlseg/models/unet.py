"""The single-class U-Net: a frozen ImageNet encoder, a decoder, and a 2-channel softmax (object / background)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from rlseg.architectures import UNET_KEYS, check_unet
from rlseg.models.encoders import (
    Normalise,
    all_blocks_encoder,
    encoder_stats,
    smp_encoder,
)
from rlseg.models.layers import ShiftSumConv2d, up_head
from rlseg.settings import defaults

# one 3x3 conv after the skip concatenations at strides 4 and 2 only: it lifts ECSSD's reg F-measure where
# convolutions at the coarse strides sink it (docs/single_class_study.md)
LIGHT_DECODER_CONVS = (0, 0, 1, 1)

_SC = defaults("single_class")  # the schema's defaults: written once, there

__all__ = ["LIGHT_DECODER_CONVS", "LightUnetDecoder", "SingleClassUNet", "build_unet"]


def _up_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, stride=2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _split_input(conv: nn.Conv2d, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``conv(torch.cat([x, skip], 1))`` as one convolution on each, its weight split by input channels: no
    concatenated copy, and no input gradient for a frozen encoder's skip. The same split of the transposed
    convolutions at the levels without a 3x3 convolution is no faster (docs/performance.md)."""
    w, n = conv.weight, x.shape[1]
    args = (conv.stride, conv.padding, conv.dilation, conv.groups)  # zero padding: the decoder's convolutions'
    return F.conv2d(x, w[:, :n], conv.bias, *args) + F.conv2d(skip, w[:, n:], None, *args)


class LightUnetDecoder(nn.Module):
    """The reference's U-Net decoder: one 2x2 transposed convolution (+BN+ReLU) per level, skip concatenation,
    a last transposed convolution to full resolution and a 3x3 convolution to the classes.

    Several times lighter than smp's default decoder (two 3x3 convolutions per level), which dominates the
    training time on a CPU. ``convs`` adds that many 3x3 convolutions (+BN+ReLU) after each concatenation, or
    per level (strides 16, 8, 4, 2) when a list.
    """

    def __init__(self, encoder_channels: Sequence[int], channels: Sequence[int], classes: int,
                 convs: int | Sequence[int] = 0) -> None:
        super().__init__()
        skips = list(encoder_channels[1:-1])[::-1]  # strides 16, 8, 4, 2
        if len(channels) != len(skips) + 1:
            raise ValueError(f"light decoder needs {len(skips) + 1} channel numbers, got {list(channels)}")
        per_level = [convs] * len(skips) if isinstance(convs, int) else list(convs)
        if len(per_level) != len(skips):
            raise ValueError(f"light decoder needs {len(skips)} conv counts (strides 16 to 2), got {per_level}")
        cin = encoder_channels[-1]
        self.ups = nn.ModuleList()
        self.mix = nn.ModuleList()
        for cout, skip, n in zip(channels[:-1], skips, per_level, strict=True):
            self.ups.append(_up_block(cin, cout))
            cin = cout + skip
            self.mix.append(nn.Sequential(*[_conv_block(cin if i == 0 else cout, cout) for i in range(n)]))
            cin = cout if n else cin
        self.last = _up_block(cin, channels[-1])
        self.head = ShiftSumConv2d(channels[-1], classes)
        # True: each layer as PyTorch's module on the concatenated input, as the reference computes it
        # (benchmarks/throughput.py's baseline); False: the same function in the faster forms below
        self.module_layers = False

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, mix, skip in zip(self.ups, self.mix, list(features[1:-1])[::-1], strict=True):
            x = up(x)  # kept as modules: with BatchNorm folded in as up_head folds it, the loop ran slower
            if self.module_layers or not len(mix):
                x = mix(torch.cat([x, skip], 1))
            else:
                x = mix[1:](mix[0][1:](_split_input(mix[0][0], x, skip)))
        return self.head(self.last(x)) if self.module_layers else up_head(x, self.last, self.head)


class SingleClassUNet(nn.Module):
    """U-Net for one class: frozen pretrained encoder, configurable decoder, 2-channel softmax output.

    ``forward`` takes RGB in 0-1 [B, 3, H, W] (H, W multiples of 32) and returns probabilities [B, 2, H, W],
    channel 1 = object. A frozen encoder's weights never change. ``encoder_batchnorm`` says what its BatchNorm
    layers do: ``"fixed"`` (default) keeps them in eval mode whatever ``train()`` is called with, so the
    ImageNet statistics stay; ``"train"`` lets them follow ``train()`` as the reference implementation does
    (its ``model.train()`` reaches the frozen MobileNetV2 too): in training they normalise with each batch's
    statistics and their running statistics drift to the training images, which ``eval()`` then uses.
    ``decoder_convs`` None means the decoder's default: ``LIGHT_DECODER_CONVS`` for the light one.
    """

    def __init__(
        self,
        encoder: str = _SC["encoder"],
        decoder: str = _SC["decoder"],
        decoder_channels: Sequence[int] = tuple(_SC["decoder_channels"]),
        pretrained: bool = True,
        freeze_encoder: bool = _SC["freeze_encoder"],
        encoder_head: bool = _SC["encoder_head"],
        decoder_convs: int | Sequence[int] | None = _SC["decoder_convs"],
        encoder_features: str = _SC["encoder_features"],
        encoder_batchnorm: str = _SC["encoder_batchnorm"],
    ) -> None:
        super().__init__()
        check_unet({"encoder": encoder, "decoder": decoder, "encoder_features": encoder_features,
                    "encoder_batchnorm": encoder_batchnorm, "encoder_head": encoder_head,
                    "decoder_convs": decoder_convs})
        if decoder_convs is None:
            decoder_convs = LIGHT_DECODER_CONVS if decoder == "light" else 0
        self.arch = {"encoder": encoder, "decoder": decoder, "decoder_channels": list(decoder_channels),
                     "encoder_head": encoder_head, "encoder_features": encoder_features,
                     "decoder_convs": decoder_convs if isinstance(decoder_convs, int) else list(decoder_convs)}
        self.normalise = Normalise(*encoder_stats(encoder))
        if encoder_features == "all_blocks":
            self.encoder = all_blocks_encoder(encoder, pretrained)
        else:
            self.encoder = smp_encoder(encoder, pretrained, head=encoder_head)
        self.freeze_encoder = freeze_encoder
        # a trainable encoder always trains its BatchNorm; "fixed" only means something for a frozen one
        self.encoder_batchnorm = encoder_batchnorm if freeze_encoder else "train"
        if decoder == "light":
            self.decoder = LightUnetDecoder(self.encoder.out_channels, decoder_channels, 2, convs=decoder_convs)
        else:  # smp
            from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

            dec = UnetDecoder(
                encoder_channels=self.encoder.out_channels,
                decoder_channels=decoder_channels,
                n_blocks=len(decoder_channels),
            )
            self.decoder = _SmpDecoder(dec, decoder_channels[-1])
        if freeze_encoder:
            for p in self.encoder.parameters():
                p.requires_grad_(False)
            self.encoder.eval()
        # the layout the convolutions run in. Channels-last runs a decoder step faster on the CPU
        # (benchmarks/throughput.py --channels-last), but with it a test that trains the same model in two
        # processes got different weights now and then, unexplained: off until it is
        self.memory_format = torch.contiguous_format

    @property
    def fixed_encoder(self) -> bool:
        """Whether the encoder gives an image the same features every time (frozen, BatchNorm fixed)."""
        return self.encoder_batchnorm == "fixed"  # "fixed" is kept for a frozen encoder only (see __init__)

    def train(self, mode: bool = True) -> SingleClassUNet:
        super().train(mode)
        if self.fixed_encoder:
            self.encoder.eval()
        return self

    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's features ``[input, stride 2, ..., stride 32]`` of RGB images in 0-1."""
        x = self.normalise(image).contiguous(memory_format=self.memory_format)
        if self.freeze_encoder:
            with torch.no_grad():
                return list(self.encoder(x))
        return list(self.encoder(x))

    def decode(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Probabilities [B, 2, H, W] from the encoder's features."""
        return torch.softmax(self.logits_of(features), dim=1)

    def logits_of(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Object/background logits [B, 2, H, W] from the encoder's features."""
        return self.decoder([f.contiguous(memory_format=self.memory_format) for f in features])

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits_of(self.features(image))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.decode(self.features(image))


class _SmpDecoder(nn.Module):
    def __init__(self, decoder: nn.Module, channels: int) -> None:
        super().__init__()
        self.decoder = decoder
        self.head = ShiftSumConv2d(channels, 2)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head(self.decoder(list(features)))


def build_unet(arch: dict, pretrained: bool = True) -> SingleClassUNet:
    """Build a single-class U-Net from an architecture dict (``encoder``, ``decoder``, ``decoder_channels``)."""
    return SingleClassUNet(pretrained=pretrained, **{k: arch[k] for k in UNET_KEYS if k in arch})
