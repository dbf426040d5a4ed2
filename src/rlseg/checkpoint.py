"""The one resume contract shared by every trainer.

A checkpoint holds {model, optimizer, scheduler, epoch, rng, config, digest}; it is written atomically after
every epoch and read with ``torch.load(weights_only=True)``. Resuming needs the same configuration (the digest);
initialising from another model's weights needs only the same architecture.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlseg.io import CheckpointMismatch, save_torch

__all__ = ["CheckpointMismatch", "add_meta", "config_digest", "copy_weights", "load_checkpoint", "load_weights",
           "resume", "rng_state", "save_checkpoint", "save_weights", "set_rng_state"]


CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "rng", "config", "digest")


def _read(path: Path, kind: str) -> dict:
    """``torch.load`` with weights only, every failure a :class:`CheckpointMismatch` naming the file and why."""
    try:
        if path.stat().st_size == 0:
            raise CheckpointMismatch(f"{path}: empty {kind} (an interrupted write?)")
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointMismatch:
        raise
    except FileNotFoundError:
        raise CheckpointMismatch(f"{path}: no such {kind}") from None
    except (EOFError, RuntimeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointMismatch(f"{path}: truncated or not a torch file ({first})") from None
    except Exception as err:  # noqa: BLE001 - pickle and zip raise many kinds on a file that is not a checkpoint
        raise CheckpointMismatch(f"{path}: not a readable {kind} ({type(err).__name__}: {err})") from None
    if not isinstance(blob, dict):
        raise CheckpointMismatch(f"{path}: not an rlseg {kind} (holds a {type(blob).__name__})")
    return blob


def config_digest(config: dict) -> str:
    """Stable digest of a JSON-able configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} -> {b!r}"]


def rng_state() -> dict[str, torch.Tensor]:
    """RNG states of torch, numpy and random, as tensors (readable with weights_only=True)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": torch.tensor([np_state[2]]),
        "python": torch.tensor(list(py_state[1]), dtype=torch.int64),
        "python_version": torch.tensor([py_state[0]]),
        **({"cuda": torch.stack(torch.cuda.get_rng_state_all())} if torch.cuda.is_available() else {}),
    }


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(state["numpy_pos"][0]), 0, 0.0))
    random.setstate((int(state["python_version"][0]), tuple(int(x) for x in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, epoch: int, config: dict, extra: dict | None = None) -> None:
    """Write the checkpoint of a finished epoch atomically."""
    save_torch(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "epoch": epoch,
            "rng": rng_state(),
            "config": json.dumps(config, sort_keys=True, default=str),
            "digest": config_digest(config),
            "extra": extra or {},
        },
        path,
    )


def load_checkpoint(path: str | os.PathLike, config: dict) -> dict | None:
    """The checkpoint at ``path`` if there is one; refuses one made under another configuration."""
    path = Path(path)
    if not path.is_file():
        return None
    ckpt = _read(path, "checkpoint")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        kind = "a weights file" if "arch" in ckpt else "not an rlseg checkpoint"
        raise CheckpointMismatch(f"{path}: {kind} (no {', '.join(missing)}); delete it to start this run over")
    if ckpt["digest"] != config_digest(config):
        diffs = _diff(json.loads(ckpt["config"]), json.loads(json.dumps(config, sort_keys=True, default=str)))
        raise CheckpointMismatch(
            f"{path}: checkpoint was made under another configuration ({'; '.join(diffs) or 'digest differs'}); "
            "delete it to start this run over"
        )
    return ckpt


def resume(path: str | os.PathLike, config: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
           scheduler: Any) -> tuple[int, list[dict]]:
    """Restore model, optimizer, scheduler and RNG states from the checkpoint at ``path`` if there is one.

    Returns:
        (the first epoch still to run, the rows logged so far); (0, []) without a checkpoint.
    """
    ckpt = load_checkpoint(path, config)
    if ckpt is None:
        return 0, []
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    logging.getLogger("rlseg").info("resumed %s at epoch %d", path, ckpt["epoch"] + 1)
    return ckpt["epoch"] + 1, list(ckpt["extra"].get("rows", []))


def save_weights(path: str | os.PathLike, model: torch.nn.Module, meta: dict | None = None) -> None:
    """Save a finished model: its architecture dict, state dict and metadata."""
    save_torch({"arch": json.dumps(model.arch, sort_keys=True), "state_dict": model.state_dict(),
                "meta": json.dumps(meta or {}, default=str)}, path)


def add_meta(path: str | os.PathLike, **items) -> None:
    """Add ``items`` to a finished model's metadata; the file is written again atomically."""
    copy_weights(path, path, **items)


def copy_weights(src: str | os.PathLike, dst: str | os.PathLike, **items) -> None:
    """Write the finished model ``src`` to ``dst`` (atomically) with ``items`` added to its metadata."""
    blob = load_weights(src)
    save_torch({"arch": json.dumps(blob["arch"], sort_keys=True), "state_dict": blob["state_dict"],
                "meta": json.dumps({**blob["meta"], **items}, default=str)}, dst)


def load_weights(path: str | os.PathLike, model: torch.nn.Module | None = None) -> dict:
    """Read a weights file; with ``model``, load into it after checking the architecture matches."""
    blob = _read(Path(path), "weights file")
    if "arch" not in blob or "state_dict" not in blob:
        kind = "a training checkpoint, not a finished model" if "digest" in blob else "not an rlseg weights file"
        raise CheckpointMismatch(f"{path}: {kind} (no architecture recorded)")
    try:
        arch = json.loads(blob["arch"])
        meta = json.loads(blob.get("meta", "{}"))
    except (TypeError, ValueError) as err:
        raise CheckpointMismatch(f"{path}: its architecture record is damaged ({err})") from None
    if model is not None:
        want = json.loads(json.dumps(model.arch, sort_keys=True))
        if arch != want:
            raise CheckpointMismatch(f"{path}: architecture differs ({'; '.join(_diff(arch, want))})")
        try:
            model.load_state_dict(blob["state_dict"])
        except (RuntimeError, TypeError, AttributeError) as err:
            what = " ".join(line.strip() for line in str(err).strip().splitlines()[:2])[:300]
            raise CheckpointMismatch(f"{path}: its weights do not fit its architecture ({what})") from None
    return {"arch": arch, "state_dict": blob["state_dict"], "meta": meta}
