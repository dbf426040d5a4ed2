"""The packaged start: a class-agnostic objectness decoder that ships with rlseg, the offline stand-in for the
paper's Oxford-IIIT Pet model (``base_model.source: packaged``).

The encoder is frozen and rebuilt from its own weight package, so the ``.pt`` file holds the decoder's weights
only. Beside it a ``.json`` file says the architecture they fit, the images they learned from (a count and a
digest, no paths), their training history and the ``.pt``'s SHA-1: the config check reads it without torch. The
workflow's ``packaged_start`` target exports both from a trained base model (docs/workflow.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

from rlseg.architectures import unet_arch
from rlseg.io import save_torch, write_csv, write_json
from rlseg.settings import ConfigError

# torch, the checkpoints and the U-Net are imported by the two functions that move weights: the config check,
# which runs before every workflow, reads the JSON only

__all__ = ["check_packaged", "export_start", "materialise_start", "packaged_file", "packaged_start"]

FORMAT = "rlseg-packaged-start-1"
# where the installed package keeps its packaged starts
WEIGHTS_DIR = Path(str(resources.files("rlseg") / "weights"))


def packaged_file(encoder: str, folder: str | os.PathLike | None = None) -> Path:
    """The packaged start's weights file for ``encoder`` (its metadata: the same name, ``.json``), inside the
    installed package or ``folder``; it may not exist."""
    name = "objectness_" + "".join(c if c.isalnum() else "_" for c in encoder) + ".pt"
    return Path(folder or WEIGHTS_DIR) / name


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def export_start(model_path: str | os.PathLike, settings: dict, history_rows: list[dict], images: list[str],
                 outdir: str | os.PathLike) -> Path:
    """Write a base model's decoder, trained with the ``single_class`` ``settings``, as a packaged start under
    ``outdir``; returns the weights file.

    Raises:
        ValueError: the model's encoder was trained (its weights would be needed too).
        CheckpointMismatch: the model is not of the architecture ``settings`` make.
    """
    # torch: see the module's imports
    from rlseg.checkpoint import load_weights
    from rlseg.models.unet import build_unet

    arch = unet_arch(settings)
    if not arch["freeze_encoder"]:
        raise ValueError(f"{model_path}: the encoder was trained, so its decoder alone cannot be packaged")
    blob = load_weights(model_path, build_unet(arch, pretrained=False))
    out = packaged_file(arch["encoder"], outdir)
    save_torch({k: v.clone() for k, v in blob["state_dict"].items() if not k.startswith("encoder.")}, out)
    names = "\n".join(sorted(Path(p).name for p in images))
    write_json(out.with_suffix(".json"), {
        "format": FORMAT, "arch": arch, "weights_sha1": _sha1(out), "images": len(images),
        "images_sha1": hashlib.sha1(names.encode()).hexdigest(), "trained": blob["meta"], "history": history_rows,
        # the JSON's keys are sorted: the history's column order is kept here
        "history_columns": list(dict.fromkeys(k for r in history_rows for k in r))})
    return out


def packaged_start(encoder: str) -> dict:
    """The packaged start's metadata for ``encoder`` (``arch``, ``history``, ``weights_sha1``, ...).

    Raises:
        ConfigError: none ships for this encoder, or its metadata is damaged.
    """
    meta_file = packaged_file(encoder).with_suffix(".json")
    if not meta_file.is_file():
        raise ConfigError(f"base_model.source = packaged: no packaged start for encoder {encoder!r} ({meta_file} is "
                          "missing); build one with the packaged_start target (docs/workflow.md) or use "
                          "base_model.source: classes")
    try:
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT or not isinstance(meta.get("arch"), dict):
            raise ValueError(f"format {meta.get('format')!r}")
    except ValueError as err:
        raise ConfigError(f"{meta_file}: not a packaged start's metadata ({err})") from None
    return meta


def check_packaged(arch: dict) -> None:
    """The packaged start fits the U-Net that ``arch`` (a ``single_class`` block or its architecture) makes.

    Raises:
        ConfigError: naming the keys that differ.
    """
    want = json.loads(json.dumps(unet_arch(arch), sort_keys=True))
    have = packaged_start(arch["encoder"])["arch"]
    diff = [f"{k}: {have.get(k)!r} packaged, {want.get(k)!r} configured" for k in sorted(set(have) | set(want))
            if have.get(k) != want.get(k)]
    if diff:
        raise ConfigError("base_model.source = packaged: single_class.arch differs from the packaged start's ("
                          + "; ".join(diff) + ")")


def materialise_start(arch: dict, model_out: str | os.PathLike, history_out: str | os.PathLike) -> None:
    """Write the packaged start as an ordinary weights file (the encoder from its own package) and its history.

    Raises:
        ConfigError: it does not fit ``arch``, or its weights file is not the one its metadata describes.
    """
    # torch: see the module's imports
    import torch

    from rlseg.checkpoint import save_weights
    from rlseg.models.unet import build_unet

    arch = unet_arch(arch)
    check_packaged(arch)
    meta = packaged_start(arch["encoder"])
    path = packaged_file(arch["encoder"])
    if not path.is_file() or _sha1(path) != meta["weights_sha1"]:
        raise ConfigError(f"{path}: missing or not the weights its metadata describes (SHA-1 differs); reinstall "
                          "rlseg or rebuild the packaged start")
    model = build_unet(arch)
    missing, unexpected = model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True),
                                                strict=False)
    if unexpected or any(not k.startswith("encoder.") for k in missing):
        raise ConfigError(f"{path}: its weights do not fit the U-Net")
    save_weights(model_out, model, meta={**meta["trained"], "packaged": str(path)})
    write_csv(history_out, meta["history"], meta["history_columns"])
