"""Benchmark of medseg.ops.DSConv3d against a 3x3x3 conv block of the same shape.

For each input shape (N, C, D, H, W) it measures these layers mapping C -> C channels:

- ``conv_gn_relu``: ``Conv3d(C, C, 3, padding=1)`` + ``GroupNorm(C // 4, C)`` + ReLU, the baseline
  (the standard branch of the authors' 3D DSCNet block, and the norm and activation DSConv ends with);
- ``dsconv3d_k3``: ``DSConv3d(C, C, kernel_size=3, morph=0)`` (BatchNorm offsets, zero padding), the
  kernel size the authors' 3D network hard-codes;
- ``dsconv3d_k3_m2``: the same along z (morph 2), to show whether the kernel axis matters;
- ``dsconv3d_k9``: ``kernel_size=9``, morph 0 (the size the authors' config names);
- ``reference_k3``: ``DSConv3dReference`` (explicit 8-neighbour gather, the authors' layout and
  strided conv) with the weights of ``dsconv3d_k3``.

Timings: ``fwd`` = forward in eval mode under ``torch.inference_mode``; ``fwd+bwd`` = forward in
training mode on an input that requires grad, ``out.sum().backward()``. Median over ``--repeats``
runs after two warm-up runs, the layers taking turns in every repeat (so load from other processes
hits them alike). Peak memory: :func:`medseg.machine.peak_memory` (on CPU the peak of the running
sum of allocations recorded by ``torch.profiler`` during one separate call). Ratios are against
``conv_gn_relu`` of the same shape in the same run.

Usage::

    python benchmarks/dsconv3d.py [--device cpu|cuda] [--repeats 5] [--out benchmarks/results/dsconv3d.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from _machine import machine, time_interleaved  # noqa: E402 - benchmarks/ is on sys.path when run as a script
from medseg.machine import peak_memory
from medseg.ops import DSConv3d
from medseg.ops.dsconv3d_reference import DSConv3dReference

SHAPES = [(1, 16, 32, 32, 32), (2, 32, 24, 24, 24)]
BASELINE = "conv_gn_relu"


def _make_layers(channels: int, device: torch.device) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    k3 = DSConv3d(channels, channels, 3, morph=0)
    reference = DSConv3dReference(channels, channels, 3, morph=0)
    reference.load_state_dict(k3.state_dict())
    layers = {
        BASELINE: nn.Sequential(
            nn.Conv3d(channels, channels, 3, padding=1), nn.GroupNorm(channels // 4, channels), nn.ReLU(inplace=True)
        ),
        "dsconv3d_k3": k3,
        "dsconv3d_k3_m2": DSConv3d(channels, channels, 3, morph=2),
        "dsconv3d_k9": DSConv3d(channels, channels, 9, morph=0),
        "reference_k3": reference,
    }
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dsconv3d.json"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    info = machine()
    rows = []
    for shape in SHAPES:
        x = torch.randn(*shape, device=device)
        layers = _make_layers(shape[1], device)
        block = {
            name: {
                "shape": list(shape),
                "layer": name,
                "parameters": sum(p.numel() for p in layer.parameters()),
                "repeats": args.repeats,
            }
            for name, layer in layers.items()
        }
        for mode, backward in (("fwd", False), ("fwd+bwd", True)):
            fns = {name: _step(layer, x, backward) for name, layer in layers.items()}
            for name, seconds in time_interleaved(fns, args.repeats, device).items():
                block[name][f"{mode}_s"] = seconds
            for name, fn in fns.items():
                block[name][f"{mode}_peak_bytes"] = peak_memory(fn, device)
            print(f"  done {tuple(shape)} {mode}", file=sys.stderr, flush=True)
        base = block[BASELINE]
        for row in block.values():
            for mode in ("fwd", "fwd+bwd"):
                row[f"{mode}_ratio"] = row[f"{mode}_s"] / base[f"{mode}_s"]
                peak, base_peak = row[f"{mode}_peak_bytes"], base[f"{mode}_peak_bytes"]
                row[f"{mode}_mem_ratio"] = peak / base_peak if base_peak else float("nan")
            rows.append(row)

    mib = 2.0**20
    header = (
        f"{'shape (N,C,D,H,W)':<20} {'layer':<15} {'params':>8} {'fwd ms':>9} {'x block':>7} {'fwd+bwd ms':>11} "
        f"{'x block':>7} {'fwd MiB':>8} {'x block':>7} {'f+b MiB':>8} {'x block':>7}"
    )
    print(
        f"DSConv3d benchmark: device={device}, torch {torch.__version__}, threads={torch.get_num_threads()}, "
        f"usable cores {info['usable_cores']}, matmul {info['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s; "
        f"median of {args.repeats}; 'x block' = ratio to {BASELINE}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{str(tuple(r['shape'])):<20} {r['layer']:<15} {r['parameters']:>8,} {r['fwd_s'] * 1e3:>9.1f} "
            f"{r['fwd_ratio']:>7.1f} {r['fwd+bwd_s'] * 1e3:>11.1f} {r['fwd+bwd_ratio']:>7.1f} "
            f"{r['fwd_peak_bytes'] / mib:>8.1f} {r['fwd_mem_ratio']:>7.1f} "
            f"{r['fwd+bwd_peak_bytes'] / mib:>8.1f} {r['fwd+bwd_mem_ratio']:>7.1f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": info,
                "timing": "median of repeats after two warm-up runs, layers interleaved; "
                "fwd = eval + inference_mode, fwd+bwd = train mode, out.sum().backward()",
                "memory_method": "medseg.machine.peak_memory (CPU: torch.profiler running sum of allocations)",
                "baseline": BASELINE,
                "results": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
