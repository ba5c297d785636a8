"""Reading weight files and loading them strictly, for encoders and ``load_original``.

Every loader in medseg goes through :func:`read_state_dict` (a path to a ``.pth``/``.pt``/``.tar``
file saved by ``torch.save``, a ``.safetensors`` file, or an in-memory mapping) and
:func:`load_strict` (every key of the network present, no extra key, every shape equal; all
problems listed in one :class:`~medseg.errors.CheckpointError`). No file is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn

from medseg.errors import CheckpointError


def describe_source(source: Any) -> str:
    """Words for error messages: "weight file '<path>'" or "state dict"."""
    if isinstance(source, (str, os.PathLike)):
        return f"weight file {os.fspath(source)!r}"
    return "state dict"


def read_state_dict(source: Any, strip_prefixes: tuple[str, ...] = ("module.",)) -> dict[str, torch.Tensor]:
    """A flat ``{key: tensor}`` state dict from a file path or a mapping.

    Accepts ``torch.save`` files (read with ``weights_only=True``: no code runs) and
    ``.safetensors`` files; unwraps ``{"state_dict": ...}`` and ``{"model": ...}`` containers
    (as saved by Lightning and many training scripts) and strips ``strip_prefixes`` from keys
    (``module.`` from ``nn.DataParallel``).

    Raises:
        CheckpointError: the file is missing or unreadable, or does not hold a mapping of
            string keys to tensors; the message names the file.
    """
    where = describe_source(source)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise CheckpointError(f"{where} not found")
        try:
            if path.endswith(".safetensors"):
                from safetensors.torch import load_file

                obj: Any = load_file(path, device="cpu")
            else:
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means an unreadable file
            raise CheckpointError(f"cannot read {where}: {type(exc).__name__}: {exc}") from exc
    else:
        obj = source
    for _ in range(3):  # {"state_dict": {...}} / {"model": {...}} wrappers, possibly nested
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), Mapping)), None)
            if inner is not None:
                obj = inner
                continue
        break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where} does not hold a state dict (got {type(obj).__name__})")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where}: entry {key!r} is not a tensor ({type(value).__name__})")
        for prefix in strip_prefixes:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        state[key] = value
    return state


def load_strict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    where: str,
    what: str,
    key_map: Callable[[str], str | None] | None = None,
) -> nn.Module:
    """Load ``state`` into ``module`` with every key and shape checked; return ``module``.

    Args:
        module: the network (or encoder) to fill.
        state: a flat state dict (see :func:`read_state_dict`).
        where: the source, for messages (:func:`describe_source`).
        what: what the file should be, for messages ("torchvision ResNet-34", ...).
        key_map: maps a key of ``state`` to our key, or to None to drop it on purpose (for
            example a classifier ``fc.*`` an encoder does not have). Identity when None.

    Raises:
        CheckpointError: missing keys, unexpected keys or shape mismatches, all listed.
    """
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key_map(key) if key_map is not None else key
        if new is not None:
            mapped[new] = value
    expected = module.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    mismatched = sorted(
        f"{k}: file {tuple(mapped[k].shape)} vs network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in mapped and mapped[k].shape != v.shape
    )
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched)}")
    if problems:
        raise CheckpointError(f"{where} does not fit the {what}: " + " | ".join(problems))
    module.load_state_dict(mapped, strict=True)
    return module


__all__ = ["describe_source", "read_state_dict", "load_strict"]
