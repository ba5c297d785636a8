"""Checkpoints: written atomically, read without unpickling code; read back into a network.

Lightning's own ``TorchCheckpointIO`` opens the destination and writes into it, so a crash
mid-write leaves a truncated ``best.ckpt``. :class:`AtomicCheckpointIO` writes to a temporary
file beside it and renames it into place, so the previous checkpoint survives any crash.

Every checkpoint is read with :func:`medseg.models.weights.safe_torch_load`
(``torch.load(weights_only=True)``): by :func:`read_checkpoint` (``medseg evaluate``,
``medseg predict``, the stages of a staged recipe) and by :meth:`AtomicCheckpointIO.load_checkpoint`
(Lightning's ``trainer.fit(ckpt_path=...)``, i.e. ``medseg train --resume``). A file holding
anything but tensors and plain data is refused with a :class:`~medseg.errors.CheckpointError`.
Writing checks the other side: :meth:`AtomicCheckpointIO.save_checkpoint` refuses to write a
checkpoint that this reader would refuse.
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medseg.atomic import atomic_path
from medseg.config import Config, build_config
from medseg.errors import CheckpointError
from medseg.models.weights import CHECKPOINT_SAFE_GLOBALS, safe_torch_load

# What ``torch.load(weights_only=True)`` rebuilds without an allow-list (exact types: a subclass
# of dict or tuple, a namedtuple, a numpy scalar or array pickles as its own class and is refused).
_PLAIN_LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None), torch.Size, torch.device, torch.dtype)
_PLAIN_CONTAINERS = (dict, OrderedDict, Counter, list, tuple, set)


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Check that ``obj`` holds only what :func:`~medseg.models.weights.safe_torch_load` reads back.

    Tensors (``torch.Tensor`` / ``nn.Parameter``), the builtin scalars, str/bytes, ``torch.Size``,
    ``torch.device``, ``torch.dtype``, and dict/OrderedDict/Counter/list/tuple/set of these, plus
    instances of :data:`~medseg.models.weights.CHECKPOINT_SAFE_GLOBALS` types.

    Raises:
        TypeError: the first entry of another type, named by its key path (a bug of the code
            that put it there: convert it to a tensor or plain numbers, as
            ``SegmentationModule.on_save_checkpoint`` does with the numpy RNG state).
    """
    extra = tuple(t for t in CHECKPOINT_SAFE_GLOBALS if isinstance(t, type))
    stack: list[tuple[Any, str]] = [(obj, where)]
    while stack:
        value, at = stack.pop()
        kind = type(value)
        if kind in (torch.Tensor, nn.Parameter) or kind in _PLAIN_LEAVES or kind in extra:
            continue
        if kind in _PLAIN_CONTAINERS:
            if isinstance(value, dict):
                for key, item in value.items():
                    stack.append((key, f"{at} (key {key!r})"))
                    stack.append((item, f"{at}[{key!r}]"))
            else:
                stack.extend((item, f"{at}[{i}]") for i, item in enumerate(value))
            continue
        raise TypeError(
            f"{at} is a {kind.__module__}.{kind.__qualname__}, which torch.load(weights_only=True) refuses, so "
            "the checkpoint could not be read back (evaluate, predict, --resume); store tensors and plain "
            "numbers, strings, lists and dicts instead (nothing was written)"
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose ``save_checkpoint`` is atomic (temp file + ``os.replace``) and
    whose ``load_checkpoint`` never unpickles anything but tensors and plain data."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically.

        Raises:
            TypeError: ``storage_options`` given, or ``checkpoint`` holds an object that
                :meth:`load_checkpoint` would refuse (see :func:`check_plain`); nothing is written.
            OSError: the write failed; the previous file at ``path`` is left as it was.
            CheckpointError: the weights hold NaN or infinite values; nothing is written.
        """
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        check_plain(checkpoint, f"checkpoint {path}")
        bad = [
            k
            for k, v in checkpoint.get("state_dict", {}).items()
            if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()
        ]
        if bad:  # never put NaN weights over a good checkpoint
            raise CheckpointError(
                f"checkpoint {path} not written: the weights hold NaN or infinite values "
                f"({', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}); the previous file is kept"
            )
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(
        self,
        path: str | os.PathLike,
        map_location: Callable | str | torch.device | None = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Read the checkpoint at ``path`` (Lightning calls this on ``trainer.fit(ckpt_path=...)``).

        Always ``torch.load(weights_only=True)`` onto the CPU (Lightning moves the state to the
        device afterwards): ``map_location`` and ``weights_only`` are accepted for Lightning's
        signature and ignored, so no caller can turn the safe loading off.

        Raises:
            CheckpointError: missing, unreadable, or holding objects other than tensors and plain
                data (named with the refused global; nothing is unpickled).
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist")
        ckpt = safe_torch_load(path, f"checkpoint {path}")
        if not isinstance(ckpt, dict):
            raise CheckpointError(f"checkpoint {path} is not a Lightning checkpoint (it holds a {type(ckpt).__name__})")
        return ckpt


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a medseg checkpoint (a Lightning ``.ckpt``) onto the CPU, with ``weights_only=True``.

    Reads the file with :func:`medseg.models.weights.safe_torch_load`: only tensors, containers
    and plain values are rebuilt; nothing in the file can run code.

    Raises:
        CheckpointError: missing, unreadable, holding objects medseg will not unpickle (the message
            names the file and the refused global), or not a medseg checkpoint (no config inside).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    ckpt = safe_torch_load(path, f"checkpoint {path}")
    hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if "config" not in hp or "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint {path} is not a medseg training checkpoint (no config or state_dict)")
    return ckpt


def checkpoint_differences(a: str | os.PathLike, b: str | os.PathLike) -> list[str]:
    """Where two training checkpoints differ, bit for bit: step, epoch, every weight and buffer,
    every optimiser state tensor, the LR schedulers' states and the best validation scores of the
    checkpoint callbacks. Used to show that a killed and resumed run equals an uninterrupted one
    (``tests/engine/test_resume_exact.py``, ``benchmarks/faults.py``).

    Returns:
        The names of what differs (empty: identical), e.g. ``["global_step", "state_dict/net.out.weight"]``.

    Raises:
        CheckpointError: either file cannot be read (:func:`read_checkpoint`).
    """
    sa, sb = read_checkpoint(a), read_checkpoint(b)
    diffs = [k for k in ("global_step", "epoch") if sa.get(k) != sb.get(k)]
    wa, wb = sa["state_dict"], sb["state_dict"]
    diffs += [
        f"state_dict/{k}"
        for k in sorted(set(wa) | set(wb))
        if k not in wa or k not in wb or not torch.equal(wa[k], wb[k])
    ]
    oa, ob = sa.get("optimizer_states", []), sb.get("optimizer_states", [])
    if len(oa) != len(ob):
        diffs.append("optimizer_states")
    for i, (pa, pb) in enumerate(zip(oa, ob)):
        ta, tb = pa.get("state", {}), pb.get("state", {})
        for param in sorted(set(ta) | set(tb), key=str):
            for k in sorted(set(ta.get(param, {})) | set(tb.get(param, {}))):
                va, vb = ta.get(param, {}).get(k), tb.get(param, {}).get(k)
                if va is None or vb is None or not torch.equal(torch.as_tensor(va), torch.as_tensor(vb)):
                    diffs.append(f"optimizer_states/{i}/{param}/{k}")
    if sa.get("lr_schedulers") != sb.get("lr_schedulers"):
        diffs.append("lr_schedulers")

    def scores(ckpt: dict) -> list[float]:
        return sorted(
            float(v["best_model_score"])
            for v in ckpt.get("callbacks", {}).values()
            if isinstance(v, dict) and v.get("best_model_score") is not None
        )

    if scores(sa) != scores(sb):
        diffs.append("callbacks/best_model_score")
    return diffs


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
    from medseg.models.weights import load_strict

    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    load_strict(model, state, f"checkpoint {path}", f"network {cfg.model.name!r} its config describes")
    model.eval()
    return model, cfg
