"""The reference's light U-Net decoder, as plain PyTorch modules (its CPU-fast twin: ``rlseg.models.cpu_kernels``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

__all__ = ["LightUnetDecoder", "conv_block", "up_block"]


def up_block(cin: int, cout: int) -> nn.Sequential:
    """2x2 transposed convolution (stride 2) + BatchNorm + ReLU: one level up."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, stride=2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """3x3 convolution + BatchNorm + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


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
            self.ups.append(up_block(cin, cout))
            cin = cout + skip
            self.mix.append(nn.Sequential(*[conv_block(cin if i == 0 else cout, cout) for i in range(n)]))
            cin = cout if n else cin
        self.last = up_block(cin, channels[-1])
        self.head = self.make_head(channels[-1], classes)

    @staticmethod
    def make_head(in_channels: int, classes: int) -> nn.Conv2d:
        """The 3x3 convolution to the classes."""
        return nn.Conv2d(in_channels, classes, 3, padding=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits at the input's resolution from the encoder's features ``[input, stride 2, ..., stride 32]``."""
        x = features[-1]
        for up, mix, skip in zip(self.ups, self.mix, list(features[1:-1])[::-1], strict=True):
            x = mix(torch.cat([up(x), skip], 1))
        return self.head(self.last(x))
