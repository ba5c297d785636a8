"""ONNX export of a network's main output and its check against PyTorch with onnxruntime.

Exporter: PyTorch's TorchScript-based ONNX exporter (``torch.onnx.export(..., dynamo=False)``).
Why not the default dynamo exporter of torch >= 2.9:

- it needs ``onnxscript``, which medseg does not depend on;
- it goes through ``torch.export``, which must prove every Python branch on input sizes for all
  sizes (U-Net's "pad if the upsampled map is smaller than the skip" is such a branch) or
  specialise it, and reports failures as export errors deep in the FX graph;
- the TorchScript exporter covers every op our networks use at opset 17, including
  ``grid_sample`` (ONNX ``GridSample``, opset >= 16) in DSConv (:mod:`medseg.ops.dsconv`),
  ``baddbmm`` with a batch-sized ``expand``, ``cumsum``, ``interpolate`` (``Resize``) and
  ``GroupNorm`` (exported as ``InstanceNormalization`` + affine).

It is deprecated in torch 2.9+ (a DeprecationWarning, silenced here) but still shipped. The
tracer records the graph for the example's H and W; the batch axis is left symbolic
(``dynamic_axes``) because every op we use reads N from the tensor shape at run time, which
:func:`check_onnx` verifies by running batch 1 and batch 2 through onnxruntime.

Sources: ONNX operator specs (GridSample: opset 16; opset 17 adds LayerNormalization),
https://onnx.ai/onnx/operators/; ``torch.onnx.export`` documentation (``dynamo=False``,
``dynamic_axes``, external data above 2 GB, the protobuf limit).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

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

__all__ = ["export_onnx", "check_onnx", "INPUT_NAME", "OUTPUT_NAME"]

#: Names of the graph's input and output.
INPUT_NAME = "image"
OUTPUT_NAME = "output"

#: Parameter bytes above which the file is written with its tensors in ``<name>.data`` (the
#: protobuf limit of one file is 2 GiB; keep a margin for the graph itself).
EXTERNAL_DATA_BYTES = 1_800_000_000


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_shape: tuple[int, int, int, int] | None = None,
    opset: int = 17,
    dynamic_batch: bool = True,
    dynamic_size: bool = False,
    external_data: bool | None = None,
) -> Path:
    """Export ``model.forward`` (the main output) to an ONNX file, atomically.

    The model is run in eval mode (its training flag is restored afterwards) on a fixed random
    input of ``input_shape``; parameters are stored as initializers (constant-folded).

    Args:
        model: a medseg network; ``forward(x)`` must return one tensor.
        path: the ``.onnx`` file to write (parent folders are created). Written to a temporary
            folder next to it and renamed into place, so a failed export leaves no file and no
            half-written one.
        input_shape: (N, C, H, W) of the example input; default (1, C, 64, 64) with C from
            ``model.in_channels`` (or the first Conv2d) and 64 rounded up to a multiple of
            ``model.size_divisor``. Sizes must be valid for the network.
        opset: ONNX opset (17; >= 16 is needed for DSConv's GridSample).
        dynamic_batch: leave the batch axis of input and output symbolic ("batch").
        dynamic_size: also leave H and W symbolic. Off by default: the tracer records Python
            arithmetic on sizes (U-Net's odd-size padding decision, DSConv's coordinate
            normalisation) for the example's H and W, so other sizes may fail or give wrong
            results. Measured: U-Net exported at 64x64 runs 48x80 correctly but fails at 37x53
            (its odd-size padding is frozen out of the graph); DSCNet exported at 64x64 runs
            48x80 correctly. Check every size you need with :func:`check_onnx`.
        external_data: store the tensors in ``<file name>.data`` next to the file (one file).
            None: only when the parameters and buffers exceed 1.8 GB (the 2 GiB protobuf limit;
            medseg's largest network, 117 M parameters, is ~0.47 GB, so never by default).

    Returns:
        ``Path(path)``.

    Raises:
        ExportError: the exporter failed (the message names the op or error), or ``forward``
            does not return a tensor. ``ValueError`` from the network for a bad
            ``input_shape`` is re-raised as ExportError naming the shape.
    """
    path = Path(path)
    shape = tuple(input_shape) if input_shape is not None else default_input_shape(model)
    if len(shape) != 4:
        raise ExportError(f"input_shape must be (N, C, H, W), got {shape}")
    x = example_input(shape)
    axes: dict[str, dict[int, str]] = {}
    if dynamic_batch or dynamic_size:
        dims = {0: "batch"} if dynamic_batch else {}
        if dynamic_size:
            dims.update({2: "height", 3: "width"})
        axes = {INPUT_NAME: dims, OUTPUT_NAME: dict(dims)}
    if external_data is None:
        size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        external_data = size > EXTERNAL_DATA_BYTES
    path.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{path.stem}.onnx-", dir=path.parent))
    try:
        staged = workdir / path.name
        with eval_mode(model), torch.no_grad(), quiet_deprecations():
            try:
                main_output(model(x), f"ONNX export of {type(model).__name__}")
            except ValueError as exc:
                raise ExportError(f"input_shape {shape} does not suit the network: {exc}") from exc
            try:
                torch.onnx.export(
                    model,
                    (x,),
                    str(staged),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes=axes or None,
                    do_constant_folding=True,
                )
            except ExportError:
                raise
            except Exception as exc:  # noqa: BLE001 - any exporter failure
                raise ExportError(
                    f"ONNX export (opset {opset}) of {type(model).__name__} to {str(path)!r} "
                    f"failed: {type(exc).__name__}: {exc}"
                ) from exc
        extra = [p for p in workdir.iterdir() if p != staged]
        if external_data or extra:
            _move_external(staged, path, workdir)
        else:
            with atomic_path(path, replace_stale=True) as tmp:
                shutil.copyfile(staged, tmp)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return path


def _move_external(staged: Path, path: Path, workdir: Path) -> None:
    """Re-save ``staged`` with all tensors in one ``<name>.data`` file and move both to ``path``'s
    folder: the data file first, the graph file last (each by an atomic rename)."""
    import onnx

    proto = onnx.load(str(staged), load_external_data=True)
    final = workdir / "final"
    final.mkdir()
    location = f"{path.name}.data"
    onnx.save_model(
        proto,
        str(final / path.name),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=1024,
    )
    os.replace(final / location, path.parent / location)
    with atomic_path(path, replace_stale=True) as tmp:
        shutil.copyfile(final / path.name, tmp)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - unreadable or invalid model
        raise ExportError(f"onnxruntime cannot load {str(path)!r}: {type(exc).__name__}: {exc}") from exc


def check_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    x: torch.Tensor | None = None,
    rtol: float = 1e-4,
    dynamic_batch: bool = True,
) -> dict[str, Any]:
    """Run the ONNX file (onnxruntime, CPUExecutionProvider) and ``model`` (eval mode, no grad)
    on the same inputs and compare.

    Inputs: ``x`` (N, C, H, W) float32 (default: a fixed standard-normal tensor with the file's
    input shape, symbolic batch -> 1), and, when ``dynamic_batch`` and N != 2, a batch of 2
    (``x[0]`` plus a second fixed random sample) to check the symbolic batch axis.

    Relative error: ``max|a - b| / max|b|`` with ``a`` the onnxruntime output and ``b`` PyTorch's,
    maxima over all elements of one batch (float64); the reported value is the largest over the
    batches. When ``b`` is all zero it is ``max|a - b|``.

    Args:
        model: the network the file was exported from (its training flag is restored).
        path: the ONNX file.
        x: input; moved to CPU float32.
        rtol: bound on the relative error.
        dynamic_batch: also run batch 2.

    Returns:
        ``{"max_abs_error": float, "rel_error": float, "rtol": float, "batches": [N, ...],
        "per_batch": {N: {"max_abs_error", "rel_error"}}, "output_shape": (N, C_out, H, W)
        of the first batch, "provider": "CPUExecutionProvider"}``.

    Raises:
        ExportError: the file cannot be loaded or run (e.g. a fixed batch axis given batch 2),
            the output shapes differ, or the relative error exceeds ``rtol``; the message names
            the file, the batch, the relative and the absolute error and ``rtol``.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file {str(path)!r} not found")
    session = _session(path)
    inp = session.get_inputs()[0]
    if x is None:
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        x = example_input(tuple(dims))
    x = x.detach().to("cpu", torch.float32)
    inputs = {int(x.shape[0]): x}
    if dynamic_batch and 2 not in inputs:
        second = example_input((1,) + tuple(x.shape[1:]), seed=1)
        inputs[2] = torch.cat([x[:1], second])
    per_batch: dict[int, dict[str, float]] = {}
    first_shape: tuple[int, ...] | None = None
    with eval_mode(model), torch.no_grad():
        for n, xb in inputs.items():
            ref = main_output(model(xb), f"check of {str(path)!r}").float()
            try:
                got = session.run(None, {inp.name: xb.numpy()})[0]
            except Exception as exc:  # noqa: BLE001 - bad shapes, bad graph
                raise ExportError(
                    f"onnxruntime failed to run {str(path)!r} on input {tuple(xb.shape)} (batch "
                    f"{n}): {type(exc).__name__}: {exc}"
                ) from exc
            got_t = torch.from_numpy(got)
            if tuple(got_t.shape) != tuple(ref.shape):
                raise ExportError(
                    f"{str(path)!r}: onnxruntime output {tuple(got_t.shape)} but PyTorch "
                    f"{tuple(ref.shape)} for input {tuple(xb.shape)}"
                )
            first_shape = first_shape or tuple(ref.shape)
            abs_err, rel_err = errors(got_t, ref)
            per_batch[n] = {"max_abs_error": abs_err, "rel_error": rel_err}
            if not rel_err <= rtol:
                raise ExportError(
                    f"{str(path)!r} disagrees with PyTorch at batch {n}: relative error "
                    f"{rel_err:.3e} (max abs error {abs_err:.3e} / max |PyTorch output|) "
                    f"exceeds rtol {rtol:.1e}"
                )
    return {
        "max_abs_error": max(v["max_abs_error"] for v in per_batch.values()),
        "rel_error": max(v["rel_error"] for v in per_batch.values()),
        "rtol": rtol,
        "batches": list(per_batch),
        "per_batch": per_batch,
        "output_shape": first_shape,
        "provider": "CPUExecutionProvider",
    }
