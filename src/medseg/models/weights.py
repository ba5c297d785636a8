"""Reading weight files and loading them strictly, for encoders and ``load_original``.

Every loader in medseg goes through :func:`read_state_dict` (a path to a ``.pth``/``.pt``/``.tar``
file saved by ``torch.save``, a ``.safetensors`` file, or an in-memory mapping) and
:func:`load_strict` (every key of the network present, no extra key, every shape equal; all
problems listed in one :class:`~medseg.errors.CheckpointError`). No file is ever downloaded.

No file is ever unpickled into arbitrary objects: every ``torch.save`` file medseg reads (weight
files here, training checkpoints in :mod:`medseg.engine.checkpoint`, Lightning's ``--resume``)
goes through :func:`safe_torch_load`, which is ``torch.load(weights_only=True)``: tensors,
containers and plain Python values only. A file holding anything else (a class, a function, a
pickle that would run code when loaded) is refused with a :class:`~medseg.errors.CheckpointError`
naming the file and the refused global.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn

from medseg.errors import CheckpointError

#: Globals allowed beyond the defaults of ``torch.load(weights_only=True)`` (tensors, storages,
#: dtypes, ``torch.Size``/``torch.device``, ``OrderedDict``/``Counter``, ``set``, bytes and the
#: builtin scalars and containers). Empty on purpose: a medseg/Lightning 2.6 checkpoint holds
#: nothing else (the weights, optimiser and LR-scheduler state dicts, loops' and ModelCheckpoint's
#: state as dicts of numbers, strings and tensors, the resolved config as a plain dict, and the
#: numpy RNG state stored as a tensor plus numbers by ``SegmentationModule.on_save_checkpoint``).
#: A future entry must be a plain-data type, never a callable that can do something when called.
CHECKPOINT_SAFE_GLOBALS: tuple[Any, ...] = ()

_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_WEIGHTS_UNPICKLER = re.compile(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", re.S)


def _refusal_detail(message: str) -> tuple[bool, str]:
    """(refused a global?, the one-line reason) from a weights-only ``UnpicklingError`` message."""
    found = _REFUSED_GLOBAL.search(message)
    if found:
        return True, f"global {found.group(1)}"
    found = _WEIGHTS_UNPICKLER.search(message)
    detail = found.group(1) if found else message
    detail = " ".join(detail.split())
    # torch's advice to allow-list the type or reload with weights_only=False does not apply here
    detail = re.split(r"\s*(?:Please use `torch\.serialization|Re-running `torch\.load`)", detail)[0].rstrip(". ")
    refused = bool(found) and not detail.startswith("Unsupported operand")
    return refused, detail or "unknown reason"


def _pickle_globals(path: str | os.PathLike, max_bytes: int = 64 << 20) -> list[str]:
    """The globals outside torch's weights-only defaults that a plain pickle file (not a zip
    archive) names, found by parsing it with :mod:`pickletools` (nothing is executed); empty when
    it cannot be parsed or is larger than ``max_bytes``. Used only to word the error for a pickle
    of protocol > 2, which torch's weights-only reader refuses before it reaches any global."""
    import pickletools
    import zipfile

    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except Exception:  # noqa: BLE001 - private API: without it every global is named
        allowed = set()

    try:
        if os.path.getsize(path) > max_bytes or zipfile.is_zipfile(path):
            return []
        found: list[str] = []
        strings: list[str] = []
        with open(path, "rb") as fh:
            for op, arg, _ in pickletools.genops(fh):
                if op.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # noqa: BLE001 - not a pickle: nothing to name
        pass
    return [name for name in dict.fromkeys(found) if name not in allowed]


def safe_torch_load(path: str | os.PathLike, where: str) -> Any:
    """Read a ``torch.save`` file onto the CPU without unpickling arbitrary objects.

    ``torch.load(path, map_location="cpu", weights_only=True)`` inside
    ``torch.serialization.safe_globals(CHECKPOINT_SAFE_GLOBALS)``; ``weights_only=True`` is passed
    explicitly so that ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn it off.

    Args:
        path: the file (a zip archive written by ``torch.save``, or the legacy format).
        where: the file in words, for messages ("checkpoint /runs/x/best.ckpt", see
            :func:`describe_source`).

    Returns:
        The object saved (for medseg files a dict of tensors, containers and plain values).

    Raises:
        CheckpointError: the file holds objects other than tensors and plain data (a class, a
            function, a pickle that would run code); the message names the file and the global
            torch refused. Also for a missing, truncated, corrupt or non-``torch.save`` file
            ("... cannot be read (...)").
    """
    allowed = list(CHECKPOINT_SAFE_GLOBALS)
    scope = torch.serialization.safe_globals(allowed) if allowed else contextlib.nullcontext()
    try:
        with scope, warnings.catch_warnings():
            # a pickle of protocol > 2 makes torch warn before it refuses or reads it
            warnings.filterwarnings("ignore", message=r"Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure is the file's
        if isinstance(exc, pickle.UnpicklingError) and "WeightsUnpickler" in str(exc):
            refused, detail = _refusal_detail(str(exc))
            if not refused and (named := _pickle_globals(path)):
                refused, detail = True, f"global{'s' if len(named) > 1 else ''} {', '.join(named[:3])}"
            if refused:
                raise CheckpointError(
                    f"{where} holds objects medseg will not unpickle ({detail}); medseg reads only tensors "
                    "and plain data from checkpoint and weight files (torch.load weights_only=True), so a file "
                    "that would create other objects or run code when loaded is refused"
                ) from None
            raise CheckpointError(
                f"{where} cannot be read: not a file written by torch.save, or a pickle medseg will not "
                f"unpickle ({detail})"
            ) from None
        raise CheckpointError(f"{where} cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())})") from exc


def describe_source(source: Any) -> str:
    """Words for error messages: "weight file '<path>'" or "state dict"."""
    if isinstance(source, (str, os.PathLike)):
        return f"weight file {os.fspath(source)!r}"
    return "state dict"


def read_state_dict(source: Any, strip_prefixes: tuple[str, ...] = ("module.",)) -> dict[str, torch.Tensor]:
    """A flat ``{key: tensor}`` state dict from a file path or a mapping.

    Accepts ``torch.save`` files (read by :func:`safe_torch_load`: ``weights_only=True``, no
    object other than tensors and plain data is created, no code runs) and ``.safetensors``
    files; unwraps ``{"state_dict": ...}`` and ``{"model": ...}`` containers (as saved by
    Lightning and many training scripts) and strips ``strip_prefixes`` from keys (``module.``
    from ``nn.DataParallel``).

    Raises:
        CheckpointError: the file is missing or unreadable, holds objects other than tensors and
            plain data (refused unread, see :func:`safe_torch_load`), or does not hold a mapping of
            string keys to tensors; the message names the file.
    """
    where = describe_source(source)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise CheckpointError(f"{where} not found")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            try:
                obj: Any = load_file(path, device="cpu")
            except Exception as exc:  # noqa: BLE001 - any failure means an unreadable file
                raise CheckpointError(f"cannot read {where}: {type(exc).__name__}: {exc}") from exc
        else:
            obj = safe_torch_load(path, where)
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
                key = key[len(prefix) :]
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

    def listed(items: list[str], sep: str = ", ", n: int = 5) -> str:
        return sep.join(items[:n]) + (f"{sep}... ({len(items) - n} more)" if len(items) > n else "")

    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {listed(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {listed(mismatched, '; ')}")
    if problems:
        hint = (
            "no key matches: it is probably the file of another network; "
            if expected and mapped and not set(mapped) & set(expected)
            else ""
        )
        raise CheckpointError(f"{where} does not fit the {what}: {hint}" + " | ".join(problems))
    module.load_state_dict(mapped, strict=True)
    return module


__all__ = ["CHECKPOINT_SAFE_GLOBALS", "describe_source", "safe_torch_load", "read_state_dict", "load_strict"]
