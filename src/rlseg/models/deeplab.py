"""The multi-class network trained on the pseudo ground truth: DeepLabV3+ on any smp encoder, or torchvision's
DeepLabV3-ResNet101 (the paper's DeepLab-ResNet101)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rlseg.architectures import LITE_ENCODERS, OFFLINE_ENCODER, check_multiclass
from rlseg.losses import IMAGENET_MEAN, IMAGENET_STD
from rlseg.models.encoders import Normalise, encoder_stats, offline_hint
from rlseg.models.lite import load_lite_imagenet

__all__ = ["MultiClassNet", "build_multiclass"]


class MultiClassNet(nn.Module):
    """Multi-class segmentation network on 0-1 RGB input; returns logits [B, K+1, H, W] at input size."""

    def __init__(self, arch: str, num_classes: int, encoder: str = OFFLINE_ENCODER, pretrained: bool = True) -> None:
        super().__init__()
        check_multiclass({"arch": arch})
        self.arch = {"arch": arch, "encoder": encoder, "num_classes": num_classes}
        if arch == "deeplabv3_resnet101":
            self.normalise = Normalise(IMAGENET_MEAN, IMAGENET_STD)
            self.net = _torchvision_deeplab(num_classes, pretrained)
        else:
            # smp, timm and huggingface: only the networks built from smp pay their import
            import segmentation_models_pytorch as smp

            self.normalise = Normalise(*encoder_stats(encoder))
            offline = encoder in LITE_ENCODERS or not pretrained
            try:
                net = smp.DeepLabV3Plus(encoder_name=encoder, encoder_weights=None if offline else "imagenet",
                                        classes=num_classes)
            except Exception as err:
                raise offline_hint(encoder, err) from err
            if pretrained and encoder in LITE_ENCODERS:
                load_lite_imagenet(net.encoder.model, encoder)
            self.net = net

    @property
    def output_stride(self) -> int:
        return 8 if self.arch["arch"] == "deeplabv3_resnet101" else 16

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.net(self.normalise(image))
        if isinstance(out, dict):
            out = out["out"]
        if out.shape[-2:] != image.shape[-2:]:
            out = F.interpolate(out, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return out


def _torchvision_deeplab(num_classes: int, pretrained: bool) -> nn.Module:
    """torchvision's DeepLabV3-ResNet101 with an ImageNet backbone only (never VOC/COCO mask weights)."""
    # torchvision's model zoo: only the paper's network pays its import
    from torchvision.models import ResNet101_Weights
    from torchvision.models.segmentation import deeplabv3_resnet101

    backbone = ResNet101_Weights.IMAGENET1K_V1 if pretrained else None
    try:
        return deeplabv3_resnet101(weights=None, weights_backbone=backbone, num_classes=num_classes, aux_loss=False)
    except Exception as err:
        raise offline_hint("resnet101", err) from err


def build_multiclass(arch: dict, pretrained: bool = True) -> MultiClassNet:
    """Build the multi-class network from an architecture dict (``arch``, ``encoder``, ``num_classes``)."""
    return MultiClassNet(arch["arch"], arch["num_classes"], arch.get("encoder", OFFLINE_ENCODER), pretrained)
