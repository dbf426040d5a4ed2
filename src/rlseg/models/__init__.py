"""Networks: the single-class U-Net (frozen ImageNet encoder, 2-channel softmax) and the multi-class DeepLab.

Every network here takes RGB images in 0-1 and normalises them itself with its encoder's statistics, so
data code never needs to know which encoder is in use. Modules: ``encoders`` (how encoders are built; which exist
and which settings combine is ``rlseg.architectures``), ``lite0`` (the packaged EfficientNet-Lite0 weights),
``light_decoder`` (the reference's U-Net decoder), ``cpu_kernels`` (its faster CPU forms, swapped in at build time),
``unet``, ``deeplab``.
"""

from rlseg.architectures import ALL_BLOCKS_ENCODERS, OFFLINE_ENCODER
from rlseg.models.cpu_kernels import CpuLightUnetDecoder, ShiftSumConv2d
from rlseg.models.deeplab import MultiClassNet, build_multiclass
from rlseg.models.encoders import encoder_stats
from rlseg.models.light_decoder import LightUnetDecoder
from rlseg.models.lite import load_lite_imagenet
from rlseg.models.unet import LIGHT_DECODER_CONVS, SingleClassUNet, build_unet
from rlseg.runtime import EncoderWeightsUnavailable

__all__ = [
    "ALL_BLOCKS_ENCODERS",
    "CpuLightUnetDecoder",
    "OFFLINE_ENCODER",
    "EncoderWeightsUnavailable",
    "LIGHT_DECODER_CONVS",
    "LightUnetDecoder",
    "MultiClassNet",
    "ShiftSumConv2d",
    "SingleClassUNet",
    "build_multiclass",
    "build_unet",
    "encoder_stats",
    "load_lite_imagenet",
]
