"""``medseg benchmark``: how large and how fast a network is, eager and exported, as a ratio to what
the machine allows.

For one network (``--network NAME``, built with its recipe's arguments and random weights) or one
trained checkpoint (``-m CHECKPOINT``), at an input of (N, C, H, W) ((N, C, D, H, W) for a 3-D network, eager only), every runtime row gives:

- ``parameters``; ``gflops``: PyTorch's flop counter (:class:`torch.utils.flop_counter.FlopCounterMode`)
  over one eager forward pass, in GFLOP (10^9 floating-point operations, a multiply-add counted as
  two). It counts convolutions and matrix products only: grid_sample (DSConv's sampling),
  interpolation, normalisation and activations are not counted, so the floor below is a lower
  bound;
- ``floor_ms``: the FLOP floor, ``gflops / measured matmul GFLOP/s`` of this machine
  (:func:`medseg.machine.matmul_flops`, measured in the same run); ``floor_ratio``: latency over
  the floor (1 would be a network running at the machine's float32 matmul rate);
- ``latency_ms``: median of ``repeats`` calls after ``warmup`` calls, batch N; ``throughput``: N
  images over the median latency, in images per second;
- ``peak_mb``: eager rows only: the extra memory held at the worst moment of one forward pass (MiB;
  CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation before the call; CPU: the peak of
  the running sum of allocations and frees recorded by ``torch.profiler``, ``profile_memory=True``,
  :func:`medseg.machine.peak_memory`); None for ONNX Runtime, whose arena the profiler does not see;
- ``file_mb`` (ONNX rows): the size of the exported file; ``rel_error``: its output against eager
  PyTorch (``max|a - b| / max|b|``).

Runtimes: ``eager`` (PyTorch, fp32, ``torch.no_grad``), ``onnx-fp32`` (ONNX Runtime, the file
:func:`medseg.export.onnx_export.export_onnx` writes at the benchmark's size), ``onnx-int8``
(static int8 quantisation as ``medseg export --int8`` does it, :func:`medseg.export.deploy`;
calibrated on ``CALIBRATION_INPUTS`` random inputs for ``--network`` since speed does not depend on
the calibration, on the training split under ``--data-root`` for a checkpoint when given). ONNX
rows run on the CPU unless onnxruntime offers CUDA and ``device`` is "cuda".
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

#: Side used for a network without a recipe (rounded up to its divisor).
DEFAULT_SIDE = 256

#: Random inputs that calibrate the int8 file of a ``--network`` benchmark.
CALIBRATION_INPUTS = 4

RUNTIMES = ("eager", "onnx-fp32", "onnx-int8")

#: JSON schema of a benchmark file (``medseg benchmark -o``; benchmarks/results/benchmark-*.json).
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["tool", "machine", "rows"],
    "properties": {
        "tool": {"const": "medseg benchmark"},
        "machine": {"type": "object", "required": ["matmul_flops_per_s", "device"]},
        "rows": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "network",
                    "runtime",
                    "input",
                    "parameters",
                    "gflops",
                    "latency_ms",
                    "throughput",
                    "floor_ms",
                    "floor_ratio",
                ],
                "properties": {
                    "network": {"type": "string"},
                    "recipe": {"type": ["string", "null"]},
                    "runtime": {"enum": list(RUNTIMES)},
                    "device": {"type": "string"},
                    "input": {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 5},
                    "parameters": {"type": "integer", "minimum": 0},
                    "gflops": {"type": "number", "minimum": 0},
                    "latency_ms": {"type": "number", "exclusiveMinimum": 0},
                    "throughput": {"type": "number", "exclusiveMinimum": 0},
                    "floor_ms": {"type": "number", "minimum": 0},
                    "floor_ratio": {"type": ["number", "null"]},
                    "peak_mb": {"type": ["number", "null"]},
                    "file_mb": {"type": ["number", "null"]},
                    "rel_error": {"type": ["number", "null"]},
                    "skipped": {"type": ["string", "null"]},
                },
            },
        },
    },
}


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """Floating-point operations of one ``model(x)`` in eval mode, by PyTorch's flop counter
    (convolutions and matrix products; a multiply-add is 2). E.g. a 3x3 Conv2d 1 -> 2 channels on
    (1, 1, 8, 8) is 2 * 1 * 2 * 9 * 64 = 2,304."""
    from torch.utils.flop_counter import FlopCounterMode

    from medseg.export._common import eval_mode

    with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def recipe_for(network: str, configs: str | os.PathLike | None = None) -> Path | None:
    """The paper-scale recipe of ``network``: the first ``configs/<dataset>/<network>.yaml`` in
    dataset order, or None (no recipe, or no recipes folder)."""
    from medseg.errors import ConfigError
    from medseg.workflows.reproduce import recipes_dir

    try:
        root = Path(configs) if configs is not None else recipes_dir()
    except ConfigError:
        return None
    found = sorted(root.glob(f"*/{network}.yaml"))
    return found[0] if found else None


def network_setup(
    network: str, size: Sequence[int] | None = None, configs: str | os.PathLike | None = None
) -> tuple[nn.Module, tuple[int, ...], str | None]:
    """``network`` built with its recipe's ``model.args`` (random weights) and the (H, W) to
    benchmark ((D, H, W) for a 3-D network; :func:`input_size`): ``size``, else the recipe's
    inference window or patch (``eval.roi_size``, else ``data.patch_size``), else
    :data:`DEFAULT_SIDE`, rounded up to the network's divisor.

    Returns:
        ``(model, (H, W) or (D, H, W), recipe name "dataset/network" or None)``.

    Raises:
        medseg.errors.ConfigError: an unknown network name (the registry's message).
    """
    from medseg.config import load_config
    from medseg.models import create_model

    path = recipe_for(network, configs)
    cfg = load_config(path) if path is not None else None
    model = create_model(network, **(dict(cfg.model.args) if cfg is not None else {}))
    recipe = f"{path.parent.name}/{path.stem}" if path is not None else None
    return model, input_size(model, cfg, size), recipe


def input_size(model: nn.Module, cfg=None, size: Sequence[int] | None = None) -> tuple[int, ...]:
    """(H, W) to benchmark ``model`` at, in pixels ((D, H, W) voxels for a network whose
    ``spatial_dims`` is 3): ``size`` (H, W; a volume takes D, H, W, or one side for all three),
    else the recipe's inference window or patch (:func:`medseg.export.deploy.export_side`), else
    :data:`DEFAULT_SIDE`, the same along every axis; each rounded up to the multiple the network
    needs (:func:`medseg.export.deploy.needed_divisor`)."""
    from medseg.export.deploy import export_side, needed_divisor

    divisor = needed_divisor(model)
    dims = int(getattr(model, "spatial_dims", 2))
    if size:
        sides = (size[0], size[-1]) if dims == 2 else (tuple(size) if len(size) == 3 else (size[0],) * 3)
        return tuple(int(math.ceil(int(s) / divisor) * divisor) for s in sides)
    side = export_side(cfg, divisor) if cfg is not None else export_side(None, divisor, DEFAULT_SIDE)
    return (side,) * dims


def _row(base: dict[str, Any], runtime: str, ms: float, flops_per_s: float, **extra: Any) -> dict[str, Any]:
    floor_ms = 1000.0 * base["gflops"] * 1e9 / flops_per_s
    n = base["input"][0]
    return {
        **base,
        "runtime": runtime,
        "latency_ms": round(ms, 3),
        "throughput": round(1000.0 * n / ms, 3),
        "floor_ms": round(floor_ms, 4),
        "floor_ratio": round(ms / floor_ms, 3) if floor_ms > 0 else None,
        "peak_mb": None,
        "file_mb": None,
        "rel_error": None,
        "skipped": None,
        **extra,
    }


def _onnx_rows(
    model: nn.Module,
    x: torch.Tensor,
    ref: torch.Tensor,
    base: dict[str, Any],
    flops_per_s: float,
    warmup: int,
    repeats: int,
    int8: bool,
    calibration: list[np.ndarray] | None,
    providers: list[str],
) -> list[dict[str, Any]]:
    import onnxruntime as ort

    from medseg.export._common import errors
    from medseg.export.deploy import quantise_int8
    from medseg.export.onnx_export import export_onnx
    from medseg.machine import median_ms

    rows = []
    with tempfile.TemporaryDirectory(prefix="medseg-benchmark-") as work:
        fp32 = Path(work) / "fp32.onnx"
        export_onnx(model.cpu(), fp32, input_shape=tuple(x.shape), dynamic_batch=True, dynamic_size=False)
        files = [("onnx-fp32", fp32)]
        if int8:
            int8_path = Path(work) / "int8.onnx"
            arrays = calibration or [
                torch.randn(1, *x.shape[1:], generator=torch.Generator().manual_seed(10 + i)).numpy()
                for i in range(CALIBRATION_INPUTS)
            ]
            quantise_int8(fp32, int8_path, arrays)
            files.append(("onnx-int8", int8_path))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        feed = x.cpu().numpy()
        for runtime, path in files:
            session = ort.InferenceSession(str(path), options, providers=providers)
            name = session.get_inputs()[0].name
            out = torch.from_numpy(session.run(None, {name: feed})[0]).float()
            ms = median_ms(lambda s=session, n=name: s.run(None, {n: feed}), warmup, repeats)
            rows.append(
                _row(
                    base,
                    runtime,
                    ms,
                    flops_per_s,
                    file_mb=round(path.stat().st_size / 2**20, 3),
                    rel_error=float(errors(out, ref.cpu().float())[1]),
                )
            )
    return rows


def benchmark_model(
    model: nn.Module,
    input_shape: Sequence[int],
    device: str = "cpu",
    warmup: int = 2,
    repeats: int = 10,
    onnx: bool = True,
    int8: bool = True,
    flops_per_s: float | None = None,
    calibration: list[np.ndarray] | None = None,
    network: str | None = None,
    recipe: str | None = None,
) -> list[dict[str, Any]]:
    """Benchmark rows (one per runtime: eager, then ONNX fp32 and int8) of ``model`` at
    ``input_shape`` (N, C, H, W) of standard-normal float32 input; the fields are the module
    docstring's. A 3-D network takes (N, C, D, H, W) and gets the eager row only (medseg's ONNX
    export, :mod:`medseg.export`, takes image networks).

    Args:
        model: a network whose ``forward`` returns one tensor (moved to ``device``; left in eval mode).
        device: "cpu" or "cuda" for the eager row (ONNX rows on the CPU unless onnxruntime offers CUDA).
        warmup, repeats: calls before timing, and timed calls (the median is kept).
        onnx, int8: add the ONNX Runtime rows (int8 only with ``onnx``).
        flops_per_s: the machine's float32 matmul rate; default measured now
            (:func:`medseg.machine.matmul_flops`).
        calibration: (1, C, H, W) float32 arrays for int8 (default :data:`CALIBRATION_INPUTS`
            random ones).

    Raises:
        ValueError: ``input_shape`` is not four positive integers (five for a 3-D network), or
            ``repeats`` < 1.
        medseg.export.errors.ExportError: the network cannot be exported to ONNX.
        medseg.errors.ConfigError: "cuda" asked for where PyTorch has no CUDA device.
    """
    from medseg.machine import matmul_flops, median_ms, peak_memory
    from medseg.models import count_parameters

    shape = tuple(int(s) for s in input_shape)
    volume = int(getattr(model, "spatial_dims", 2)) == 3
    if len(shape) != (5 if volume else 4) or min(shape) < 1:
        want = "(N, C, D, H, W)" if volume else "(N, C, H, W)"
        raise ValueError(f"input_shape must be {want} of positive integers, got {tuple(input_shape)}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from medseg.errors import ConfigError

        raise ConfigError("--device cuda: PyTorch sees no CUDA device here")
    flops_per_s = flops_per_s or matmul_flops()
    model = model.to(dev).eval()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(dev)
    base = {
        "network": network or type(model).__name__,
        "recipe": recipe,
        "device": dev.type,
        "input": list(shape),
        "parameters": count_parameters(model),
        "gflops": round(count_flops(model, x) / 1e9, 4),
    }
    with torch.no_grad():
        ref = model(x)
        ms = median_ms(lambda: model(x), warmup, repeats, dev)
        peak = peak_memory(lambda: model(x), dev)
    rows = [_row(base, "eager", ms, flops_per_s, peak_mb=round(peak / 2**20, 2))]
    if onnx and not volume:
        import onnxruntime as ort

        cuda = dev.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
        providers = ["CUDAExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        onnx_base = {**base, "device": "cuda" if cuda else "cpu"}
        rows += _onnx_rows(model, x, ref, onnx_base, flops_per_s, warmup, repeats, int8, calibration, providers)
        model.to(dev)
    return rows


def benchmark(
    networks: Sequence[str] = (),
    checkpoint: str | os.PathLike | None = None,
    size: Sequence[int] | None = None,
    batch: int = 1,
    device: str = "cpu",
    warmup: int = 2,
    repeats: int = 10,
    onnx: bool = True,
    int8: bool = True,
    data_root: str | os.PathLike | None = None,
    configs: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The benchmark document of ``networks`` (each at its recipe's input size, random weights)
    or of one ``checkpoint`` (its own network and recipe; int8 calibrated on the training split
    under ``data_root`` when given): ``{"tool", "machine", "rows"}``, valid against :data:`SCHEMA`.

    Raises:
        ValueError: neither or both of ``networks`` and ``checkpoint``; bad sizes (as
            :func:`benchmark_model`).
        medseg.errors.ConfigError, medseg.errors.CheckpointError: an unknown network, an
            unreadable checkpoint.
    """
    from medseg.export._common import input_channels
    from medseg.machine import describe

    if bool(networks) == (checkpoint is not None):
        raise ValueError("benchmark one of: networks (--network / --all) or a checkpoint (-m)")
    machine = describe(device if device == "cpu" or torch.cuda.is_available() else "cpu")
    if device == "cuda" and torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name()
    rows: list[dict[str, Any]] = []
    jobs: list[tuple[nn.Module, tuple[int, ...], str | None, str, list | None]] = []
    if checkpoint is not None:
        from medseg.engine.checkpoint import load_model_from_checkpoint
        from medseg.export.deploy import calibration_images

        model, cfg = load_model_from_checkpoint(checkpoint)
        hw = input_size(model, cfg, size)
        calib = (
            calibration_images(cfg, hw[0], data_root=data_root)
            if (int8 and data_root is not None and len(hw) == 2 and hw[0] == hw[1])
            else None
        )
        jobs.append((model, hw, str(checkpoint), cfg.model.name, calib))
    for name in networks:
        model, hw, recipe = network_setup(name, size, configs)
        jobs.append((model, hw, recipe, name, None))
    for model, sides, recipe, name, calib in jobs:
        shape = (batch, input_channels(model), *sides)
        log(f"medseg benchmark: {name} at {'x'.join(map(str, shape))}")
        rows += benchmark_model(
            model,
            shape,
            device=device,
            warmup=warmup,
            repeats=repeats,
            onnx=onnx,
            int8=int8,
            flops_per_s=machine["matmul_flops_per_s"],
            calibration=calib,
            network=name,
            recipe=recipe,
        )
    doc = {"tool": "medseg benchmark", "machine": machine, "rows": rows}
    validate(doc)
    return doc


def validate(doc: dict[str, Any]) -> None:
    """Check a benchmark document against :data:`SCHEMA`.

    Raises:
        medseg.errors.ConfigError: the first violation, with its path in the document.
    """
    import jsonschema

    from medseg.errors import ConfigError

    try:
        jsonschema.validate(doc, SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        raise ConfigError(f"benchmark results: {where}: {exc.message}") from exc


def markdown_table(doc: dict[str, Any]) -> str:
    """A Markdown table of a benchmark document: one line per network and runtime, with the
    machine's matmul rate in the heading line."""
    m = doc["machine"]
    lines = [
        f"Measured on {m.get('processor', '?')}, {m.get('threads', '?')} threads, matmul "
        f"{m['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s (float32), torch {m.get('torch', '?')}"
        + (f", {m['gpu']}" if m.get("gpu") else "")
        + ". Floor: GFLOP / matmul rate; ratio: latency / floor.",
        "",
        "| network | input (N, C, H, W) | runtime | device | parameters | GFLOP | file MB | latency ms | "
        "images/s | floor ms | ratio | peak MB | rel. error |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def fmt(v: Any, spec: str) -> str:
        return "" if v is None else format(v, spec)

    for r in doc["rows"]:
        lines.append(
            f"| {r['network']} | {'x'.join(map(str, r['input']))} | {r['runtime']} | {r.get('device', '')} | "
            f"{r['parameters']:,} | {r['gflops']:.2f} | {fmt(r.get('file_mb'), '.1f')} | {r['latency_ms']:.1f} | "
            f"{r['throughput']:.2f} | {r['floor_ms']:.2f} | {fmt(r.get('floor_ratio'), '.1f')} | "
            f"{fmt(r.get('peak_mb'), '.0f')} | {fmt(r.get('rel_error'), '.1e')} |"
        )
    return "\n".join(lines) + "\n"


#: What writes the README section of a benchmark file (the markers name it).
README_COMMAND = "medseg benchmark --readme"


def update_readme(readme: str | os.PathLike, results: str | os.PathLike) -> bool:
    """Rewrite the README section generated from the benchmark file ``results`` with its
    :func:`markdown_table` (markers as :func:`medseg.workflows.reproduce.rewrite_section`).

    Returns:
        True if the README changed.

    Raises:
        medseg.errors.ConfigError: the file does not validate; the README lacks the markers.
    """
    from medseg.workflows.reproduce import rewrite_section

    doc = json.loads(Path(results).read_text())
    validate(doc)
    return rewrite_section(readme, Path(results).name, README_COMMAND, markdown_table(doc))


__all__ = [
    "CALIBRATION_INPUTS",
    "DEFAULT_SIDE",
    "RUNTIMES",
    "SCHEMA",
    "benchmark",
    "benchmark_model",
    "count_flops",
    "input_size",
    "markdown_table",
    "network_setup",
    "recipe_for",
    "update_readme",
    "validate",
]
