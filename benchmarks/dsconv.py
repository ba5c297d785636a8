"""Benchmark of medseg.ops.DSConv2d against a plain 3x3 conv and the gather-based reference.

For each input shape (N, C, H, W) it measures, for three layers mapping C -> C channels:

- ``conv3x3``: ``nn.Conv2d(C, C, 3, padding=1)``, the baseline;
- ``dsconv``: ``DSConv2d(C, C, kernel_size=9, morph=0)`` (BatchNorm offsets, zero padding);
- ``reference``: ``DSConv2dReference`` (explicit 4-neighbour gather, loop accumulation) with the
  same weights.

Timings: ``fwd`` = forward in eval mode under ``torch.inference_mode``; ``fwd+bwd`` = forward in
training mode on an input that requires grad, ``out.sum().backward()``. Median over
``--repeats`` runs after two warm-up runs, the three layers taking turns in every repeat (so
load from other processes hits them alike); the largest shape uses at most ``--large-repeats``.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` minus the allocation before the call;
on CPU the peak of the running sum of allocations and frees recorded by ``torch.profiler``
(``profile_memory=True``) during one separate call, i.e. the extra memory held at the worst
moment, excluding the input and weights that existed before. Ratios are against ``conv3x3`` of
the same shape in the same run.

Usage::

    python benchmarks/dsconv.py [--device cpu|cuda] [--repeats 7] [--large-repeats 2]
                                [--out benchmarks/results/dsconv.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from medseg.ops import DSConv2d
from medseg.ops.dsconv_reference import DSConv2dReference

SHAPES = [(1, 32, 128, 128), (4, 32, 128, 128), (1, 64, 256, 256)]
KERNEL_SIZE = 9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_layers(channels: int, device: torch.device) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    dsconv = DSConv2d(channels, channels, KERNEL_SIZE, morph=0)
    reference = DSConv2dReference(channels, channels, KERNEL_SIZE, morph=0)
    reference.load_state_dict(dsconv.state_dict())
    conv = nn.Conv2d(channels, channels, 3, padding=1)
    layers = {"conv3x3": conv, "dsconv": dsconv, "reference": reference}
    return {name: layer.to(device) for name, layer in layers.items()}


def _step(layer: nn.Module, x: torch.Tensor, backward: bool) -> Callable[[], None]:
    def run() -> None:
        if backward:
            layer.train()
            inp = x.detach().requires_grad_(True)
            layer(inp).sum().backward()
            layer.zero_grad(set_to_none=True)
        else:
            layer.eval()
            with torch.inference_mode():
                layer(x)

    return run


def _time_interleaved(
    fns: dict[str, Callable[[], None]], repeats: int, device: torch.device, warmup: int = 2
) -> dict[str, float]:
    """Median seconds per call of each function; the functions take turns in every repeat so
    that load from other processes affects all of them alike (the ratios stay meaningful)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _peak_memory(fn: Callable[[], None], device: torch.device) -> int:
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    fd, trace = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(trace)
        with open(trace) as fh:
            events = json.load(fh)["traceEvents"]
    finally:
        os.remove(trace)
    mem = sorted(
        (
            e
            for e in events
            if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type") == 0
        ),
        key=lambda e: e["ts"],
    )
    level = peak = 0
    for e in mem:
        level += int(e["args"]["Bytes"])
        peak = max(peak, level)
    return peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per case (median)")
    parser.add_argument("--large-repeats", type=int, default=2,
                        help="at most this many timed runs for the largest shape")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dsconv.json"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    memory_method = (
        "torch.cuda.max_memory_allocated minus allocation before the call"
        if device.type == "cuda"
        else "torch.profiler(profile_memory=True): peak of the running sum of CPU allocations "
        "during one call"
    )
    rows = []
    largest = max(SHAPES, key=lambda s: s[0] * s[1] * s[2] * s[3])
    for shape in SHAPES:
        repeats = min(args.repeats, args.large_repeats) if shape == largest else args.repeats
        x = torch.randn(*shape, device=device)
        layers = _make_layers(shape[1], device)
        block = {name: {"shape": list(shape), "layer": name, "repeats": repeats} for name in layers}
        for mode, backward in (("fwd", False), ("fwd+bwd", True)):
            fns = {name: _step(layer, x, backward) for name, layer in layers.items()}
            for name, seconds in _time_interleaved(fns, repeats, device).items():
                block[name][f"{mode}_s"] = seconds
            for name, fn in fns.items():
                block[name][f"{mode}_peak_bytes"] = _peak_memory(fn, device)
            print(f"  done {tuple(shape)} {mode}", file=sys.stderr, flush=True)
        base = block["conv3x3"]
        for row in block.values():
            for mode in ("fwd", "fwd+bwd"):
                row[f"{mode}_ratio"] = row[f"{mode}_s"] / base[f"{mode}_s"]
                peak, base_peak = row[f"{mode}_peak_bytes"], base[f"{mode}_peak_bytes"]
                row[f"{mode}_mem_ratio"] = peak / base_peak if base_peak else float("nan")
            rows.append(row)

    mib = 2.0**20
    header = (
        f"{'shape (N,C,H,W)':<18} {'layer':<10} {'fwd ms':>9} {'x conv':>7} {'fwd+bwd ms':>11} "
        f"{'x conv':>7} {'fwd MiB':>8} {'x conv':>7} {'f+b MiB':>8} {'x conv':>7}"
    )
    print(f"DSConv2d benchmark: device={device}, torch {torch.__version__}, "
          f"threads={torch.get_num_threads()}, K={KERNEL_SIZE}, morph 0")
    print(f"peak memory: {memory_method}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{str(tuple(r['shape'])):<18} {r['layer']:<10} {r['fwd_s'] * 1e3:>9.1f} "
            f"{r['fwd_ratio']:>7.1f} {r['fwd+bwd_s'] * 1e3:>11.1f} {r['fwd+bwd_ratio']:>7.1f} "
            f"{r['fwd_peak_bytes'] / mib:>8.1f} {r['fwd_mem_ratio']:>7.1f} "
            f"{r['fwd+bwd_peak_bytes'] / mib:>8.1f} {r['fwd+bwd_mem_ratio']:>7.1f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine()
        ),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "kernel_size": KERNEL_SIZE,
        "timing": "median of repeats after two warm-up runs; fwd = eval + inference_mode, "
        "fwd+bwd = train mode",
        "memory_method": memory_method,
        "results": rows,
    }, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
