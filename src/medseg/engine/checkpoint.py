"""Checkpoints: written atomically; read back into a network with the run's config.

Lightning's own ``TorchCheckpointIO`` opens the destination and writes into it, so a crash
mid-write leaves a truncated ``best.ckpt``. :class:`AtomicCheckpointIO` writes to a temporary
file beside it and renames it into place, so the previous checkpoint survives any crash.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medseg.atomic import atomic_path
from medseg.config import Config, build_config
from medseg.errors import CheckpointError


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose ``save_checkpoint`` is atomic (temp file + ``os.replace``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a medseg checkpoint (a Lightning ``.ckpt``) onto the CPU.

    Raises:
        CheckpointError: missing, unreadable, or not a medseg checkpoint (no config inside).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupt zip, truncated file, pickle error
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc})") from exc
    hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if "config" not in hp or "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint {path} is not a medseg training checkpoint (no config or state_dict)")
    return ckpt


def load_model_from_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, Config]:
    """Rebuild the network of a medseg checkpoint and load its weights strictly.

    Returns:
        (model in eval mode on the CPU, the run's Config).

    Raises:
        CheckpointError: as :func:`read_checkpoint`, or weights that do not fit the network.
    """
    from medseg.engine.module import build_network

    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    cfg = build_config(hp["config"], source=f"config in {path}")
    model = build_network(cfg, hp.get("in_channels"), hp.get("num_classes"), for_checkpoint=True)
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not fit {cfg.model.name}: {exc}") from exc
    model.eval()
    return model, cfg
