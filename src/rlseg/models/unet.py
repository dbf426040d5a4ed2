"""The single-class U-Net: a frozen ImageNet encoder, a decoder, and a 2-channel softmax (object / background)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from rlseg.architectures import UNET_KEYS, check_unet
from rlseg.models.cpu_kernels import CpuLightUnetDecoder, ShiftSumConv2d
from rlseg.models.encoders import (
    Normalise,
    all_blocks_encoder,
    encoder_stats,
    smp_encoder,
)
from rlseg.models.light_decoder import LightUnetDecoder
from rlseg.settings import defaults

# one 3x3 conv after the skip concatenations at strides 4 and 2 only: it lifts ECSSD's reg F-measure where
# convolutions at the coarse strides sink it (docs/single_class_study.md)
LIGHT_DECODER_CONVS = (0, 0, 1, 1)

_SC = defaults("single_class")  # the schema's defaults: written once, there

__all__ = ["LIGHT_DECODER_CONVS", "SingleClassUNet", "build_unet"]


class SingleClassUNet(nn.Module):
    """U-Net for one class: frozen pretrained encoder, configurable decoder, 2-channel softmax output.

    ``forward`` takes RGB in 0-1 [B, 3, H, W] (H, W multiples of 32) and returns probabilities [B, 2, H, W],
    channel 1 = object. A frozen encoder's weights never change. ``encoder_batchnorm`` says what its BatchNorm
    layers do: ``"fixed"`` (default) keeps them in eval mode whatever ``train()`` is called with, so the
    ImageNet statistics stay; ``"train"`` lets them follow ``train()`` as the reference implementation does
    (its ``model.train()`` reaches the frozen MobileNetV2 too): in training they normalise with each batch's
    statistics and their running statistics drift to the training images, which ``eval()`` then uses.
    ``decoder_convs`` None means the decoder's default: ``LIGHT_DECODER_CONVS`` for the light one.
    ``cpu_kernels`` builds the decoder with :mod:`rlseg.models.cpu_kernels`' faster CPU forms of its layers (the
    same parameters and function; other devices take the plain modules).
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
        cpu_kernels: bool = _SC["cpu_kernels"],
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
            light = CpuLightUnetDecoder if cpu_kernels else LightUnetDecoder
            self.decoder = light(self.encoder.out_channels, decoder_channels, 2, convs=decoder_convs)
        else:  # smp
            # smp, timm and huggingface: only the networks built from smp pay their import
            from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

            dec = UnetDecoder(
                encoder_channels=self.encoder.out_channels,
                decoder_channels=decoder_channels,
                n_blocks=len(decoder_channels),
            )
            self.decoder = _SmpDecoder(dec, decoder_channels[-1], cpu_kernels)
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
    def __init__(self, decoder: nn.Module, channels: int, cpu_kernels: bool) -> None:
        super().__init__()
        self.decoder = decoder
        self.head = (ShiftSumConv2d if cpu_kernels else LightUnetDecoder.make_head)(channels, 2)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head(self.decoder(list(features)))


def build_unet(arch: dict, pretrained: bool = True, cpu_kernels: bool = _SC["cpu_kernels"]) -> SingleClassUNet:
    """Build a single-class U-Net from an architecture dict (``encoder``, ``decoder``, ``decoder_channels``);
    ``cpu_kernels`` swaps in the decoder's CPU-fast layers (:mod:`rlseg.models.cpu_kernels`, same parameters)."""
    return SingleClassUNet(pretrained=pretrained, cpu_kernels=cpu_kernels,
                           **{k: arch[k] for k in UNET_KEYS if k in arch})
