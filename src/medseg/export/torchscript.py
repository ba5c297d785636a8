"""TorchScript export (``torch.jit.script``, falling back to ``torch.jit.trace``) and
``torch.export`` programs, each checked against the eager network after reloading.

Sources: PyTorch documentation of ``torch.jit.script``/``trace``/``save``/``load`` (deprecated
since torch 2.9 in favour of ``torch.export``, still shipped; the DeprecationWarning is silenced
here) and of ``torch.export.export``/``save``/``load`` with ``Dim`` for dynamic axes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from medseg.atomic import atomic_path
from medseg.export._common import (
    default_input_shape,
    errors,
    eval_mode,
    example_input,
    main_output,
    quiet_deprecations,
)
from medseg.export.errors import ExportError

__all__ = ["TorchScriptResult", "export_torchscript", "export_program", "ATOL"]

log = logging.getLogger(__name__)

#: Reloaded exports must match the eager output within ATOL * max(1, max|output|).
ATOL = 1e-5


@dataclass(frozen=True)
class TorchScriptResult:
    """What :func:`export_torchscript` wrote.

    Attributes:
        path: the ``.pt`` TorchScript file (load with ``torch.jit.load``).
        method: "script" or "trace".
        script_error: why ``torch.jit.script`` failed when ``method == "trace"`` (first line),
            else None.
        max_abs_error: largest |reloaded - eager| over the checked inputs.
        batches: batch sizes checked after reloading.
    """

    path: Path
    method: str
    script_error: str | None
    max_abs_error: float
    batches: tuple[int, ...]


def _check(fn, model: nn.Module, inputs: list[torch.Tensor], what: str) -> float:
    worst = 0.0
    with torch.no_grad():
        for xb in inputs:
            ref = main_output(model(xb), what)
            try:
                got = fn(xb)
            except Exception as exc:  # noqa: BLE001 - the export does not run on this input
                raise ExportError(f"{what} fails on input {tuple(xb.shape)}: {type(exc).__name__}: {exc}") from exc
            if not isinstance(got, torch.Tensor) or got.shape != ref.shape:
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                raise ExportError(f"{what}: output {shape} vs eager {tuple(ref.shape)}")
            abs_err, _ = errors(got, ref)
            bound = ATOL * max(1.0, float(ref.abs().max()))
            if not abs_err <= bound:
                raise ExportError(
                    f"{what} differs from the eager network on input {tuple(xb.shape)}: max abs "
                    f"error {abs_err:.3e} > {bound:.3e}"
                )
            worst = max(worst, abs_err)
    return worst


def _check_inputs(example: torch.Tensor) -> list[torch.Tensor]:
    """``example`` and a batch one larger (``example`` plus a fresh sample): a traced graph must
    not be specialised to the example's batch size."""
    extra = example_input((1,) + tuple(example.shape[1:]), seed=1).to(example)
    return [example, torch.cat([example, extra])]


def export_torchscript(
    model: nn.Module, path: str | os.PathLike, example: torch.Tensor | None = None
) -> TorchScriptResult:
    """Write ``model`` (eval mode) as a TorchScript file, atomically, and check the reload.

    ``torch.jit.script`` is tried first (keeps Python control flow); if it cannot compile the
    network (e.g. ``getattr`` with computed names, dict outputs, untyped helpers) the network is
    traced with ``example`` instead (control flow is frozen for the example's H and W; the batch
    axis stays dynamic). Which one was used is returned and logged. The file is reloaded with
    ``torch.jit.load`` and run on ``example`` and on a batch one larger; the outputs must equal the
    eager network's within ``ATOL * max(1, max|output|)``.

    Args:
        model: the network (training flag restored afterwards).
        path: the ``.pt`` file to write.
        example: (N, C, H, W) float32 input; default a fixed random (1, C, 64, 64) (64 rounded up
            to ``model.size_divisor``).

    Returns:
        A :class:`TorchScriptResult`.

    Raises:
        ExportError: both scripting and tracing failed, or the reloaded module's outputs differ
            (the message gives the error).
    """
    path = Path(path)
    if example is None:
        example = example_input(default_input_shape(model))
    example = example.detach()
    inputs = _check_inputs(example)
    name = type(model).__name__
    with eval_mode(model), quiet_deprecations():
        script_error = None
        try:
            compiled = torch.jit.script(model)
            method = "script"
        except Exception as exc:  # noqa: BLE001 - any scripting failure -> trace
            first_line = (str(exc).strip().splitlines() or [""])[0]
            script_error = f"{type(exc).__name__}: {first_line}"
            try:
                with torch.no_grad():
                    compiled = torch.jit.trace(model, (example,), check_trace=False)
            except Exception as exc2:  # noqa: BLE001
                raise ExportError(
                    f"TorchScript export of {name} failed: script: {script_error}; trace: {type(exc2).__name__}: {exc2}"
                ) from exc2
            method = "trace"
        why = f" (script failed: {script_error})" if script_error else ""
        log.info("TorchScript export of %s used torch.jit.%s%s", name, method, why)
        with atomic_path(path, replace_stale=True) as tmp:
            torch.jit.save(compiled, str(tmp))
        loaded = torch.jit.load(str(path), map_location="cpu")
        worst = _check(loaded, model, inputs, f"TorchScript ({method}) file {str(path)!r}")
    batches = tuple(int(x.shape[0]) for x in inputs)
    return TorchScriptResult(path, method, script_error, worst, batches)


def export_program(
    model: nn.Module,
    example: torch.Tensor,
    path: str | os.PathLike | None = None,
    dynamic_batch: bool = True,
) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model.forward`` (eval mode), checked against the eager network.

    With ``dynamic_batch`` the batch axis is a ``torch.export.Dim`` (named "batch", >= 1); an
    example of batch 1 is repeated to batch 2 first, since torch.export specialises size-1
    axes. H and W are static. The program (and, with ``path``, the reloaded ``.pt2`` file) must
    reproduce the eager output on the example and a batch one larger within
    ``ATOL * max(1, max|output|)``.

    Args:
        model: the network (training flag restored afterwards).
        example: (N, C, H, W) float32 input.
        path: if given, ``torch.export.save`` writes the program there, atomically.
        dynamic_batch: symbolic batch axis.

    Returns:
        The ``ExportedProgram`` (run it with ``program.module()(x)``).

    Raises:
        ExportError: ``torch.export`` failed (data-dependent control flow, unsupported op: the
            message has the exporter's reason) or the outputs differ.
    """
    example = example.detach()
    if dynamic_batch and example.shape[0] == 1:
        example = torch.cat([example, example_input(tuple(example.shape), seed=1).to(example)])
    name = type(model).__name__
    with eval_mode(model), torch.no_grad():
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
        try:
            program = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)
        except Exception as exc:  # noqa: BLE001 - any export failure
            raise ExportError(f"torch.export of {name} failed: {type(exc).__name__}: {exc}") from exc
        inputs = _check_inputs(example) if dynamic_batch else [example]
        _check(program.module(), model, inputs, f"torch.export program of {name}")
        if path is not None:
            path = Path(path)
            with atomic_path(path, replace_stale=True) as tmp:
                torch.export.save(program, str(tmp))
            loaded = torch.export.load(str(path))
            _check(loaded.module(), model, inputs, f"torch.export file {str(path)!r}")
    return program
