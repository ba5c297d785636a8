"""Helpers shared by the exporters: example inputs, eval mode, output comparison."""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Iterator

import torch
import torch.nn as nn

from medseg.export.errors import ExportError

#: Side length of the default example input (rounded up to the network's ``size_divisor``).
DEFAULT_SIDE = 64


def input_channels(model: nn.Module) -> int:
    """Input channels of ``model``: its ``in_channels`` attribute, else the first Conv2d's.

    Raises:
        ExportError: neither exists (pass ``input_shape``/``example`` explicitly).
    """
    c = getattr(model, "in_channels", None)
    if isinstance(c, int) and c > 0:
        return c
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise ExportError(
        f"cannot tell the input channels of {type(model).__name__}: no 'in_channels' attribute "
        "and no Conv2d; pass input_shape=(N, C, H, W)"
    )


def default_input_shape(model: nn.Module, batch: int = 1) -> tuple[int, int, int, int]:
    """(batch, C, S, S) with S = 64 rounded up to a multiple of ``model.size_divisor`` (if any)."""
    d = int(getattr(model, "size_divisor", 1) or 1)
    side = math.ceil(DEFAULT_SIDE / d) * d
    return (batch, input_channels(model), side, side)


def example_input(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A fixed standard-normal float32 tensor of ``shape`` (CPU), from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore its training flag."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def quiet_deprecations() -> Iterator[None]:
    """Silence the DeprecationWarnings of torch.jit and the TorchScript-based ONNX exporter
    (torch >= 2.9 deprecates both; they are still the exporters that need no extra package)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def main_output(y: object, where: str) -> torch.Tensor:
    """``y`` if it is a tensor; else ExportError (``forward`` must return the main output)."""
    if not isinstance(y, torch.Tensor):
        raise ExportError(f"{where}: forward must return one tensor (the main output), got {type(y).__name__}")
    return y


def errors(got: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max abs error, relative error) of ``got`` against ``ref``.

    The relative error is ``max|got - ref| / max|ref|`` (both maxima over all elements,
    computed in float64); when ``ref`` is all zero it is the absolute error itself.
    """
    got, ref = got.detach().double(), ref.detach().double()
    abs_err = float((got - ref).abs().max()) if got.numel() else 0.0
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    return abs_err, (abs_err / scale if scale > 0 else abs_err)
