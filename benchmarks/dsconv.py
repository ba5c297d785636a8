"""Benchmark of medseg.ops.DSConv2d against a 3x3 conv block, and of a DSCNet training step
against MONAI's BasicUNet.

For each input shape (N, C, H, W) it measures these layers mapping C -> C channels:

- ``conv_gn_relu``: ``Conv2d(C, C, 3, padding=1)`` + ``GroupNorm(C // 4, C)`` + ReLU, the
  baseline (the same norm and activation DSConv ends with);
- ``conv3x3``: the bare ``Conv2d(C, C, 3, padding=1)``;
- ``dsconv``: ``DSConv2d(C, C, kernel_size=9, morph=0)`` (BatchNorm offsets, zero padding) as
  eager PyTorch runs it (:func:`medseg.ops.snake.snake_conv`);
- ``dsconv_m1``: the same with morph 1;
- ``dsconv_gridsample``: the same layer and weights through the portable grid_sample formulation
  (``use_snake_conv=False``; what export runs, and what eager ran before snake_conv);
- ``reference``: ``DSConv2dReference`` (explicit 4-neighbour gather, loop accumulation) with the
  same weights.

Then a training step (forward, BCE loss, backward, Adam step) at (1, 1, 256, 256): medseg's
DSCNet (``dscnet``, the authors' widths, K=9) with snake_conv and with grid_sample, against
``monai.networks.nets.BasicUNet(spatial_dims=2, in_channels=1, out_channels=1)``.

Timings: ``fwd`` = forward in eval mode under ``torch.inference_mode``; ``fwd+bwd`` = forward in
training mode on an input that requires grad, ``out.sum().backward()``. Median over
``--repeats`` runs after two warm-up runs, the three layers taking turns in every repeat (so
load from other processes hits them alike); the largest shape uses at most ``--large-repeats``.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` minus the allocation before the call;
on CPU the peak of the running sum of allocations and frees recorded by ``torch.profiler``
(``profile_memory=True``) during one separate call, i.e. the extra memory held at the worst
moment, excluding the input and weights that existed before. Ratios are against ``conv_gn_relu``
of the same shape in the same run, and the step's against BasicUNet's.

Usage::

    python benchmarks/dsconv.py [--device cpu|cuda] [--repeats 7] [--large-repeats 2]
                                [--out benchmarks/results/dsconv.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from _machine import time_interleaved  # noqa: E402 - benchmarks/ is on sys.path when run as a script
from medseg.machine import matmul_flops, peak_memory
from medseg.ops import DSConv2d
from medseg.ops.dsconv_reference import DSConv2dReference

SHAPES = [(1, 32, 128, 128), (4, 32, 128, 128), (1, 64, 256, 256)]
KERNEL_SIZE = 9


BASELINE = "conv_gn_relu"
STEP_SHAPE = (1, 1, 256, 256)


def _make_layers(channels: int, device: torch.device) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    dsconv = DSConv2d(channels, channels, KERNEL_SIZE, morph=0)
    gridsample = DSConv2d(channels, channels, KERNEL_SIZE, morph=0)
    gridsample.load_state_dict(dsconv.state_dict())
    gridsample.use_snake_conv = False
    reference = DSConv2dReference(channels, channels, KERNEL_SIZE, morph=0)
    reference.load_state_dict(dsconv.state_dict())
    conv = nn.Conv2d(channels, channels, 3, padding=1)
    block = nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(channels // 4, channels), nn.ReLU(inplace=True)
    )
    layers = {
        BASELINE: block,
        "conv3x3": conv,
        "dsconv": dsconv,
        "dsconv_m1": DSConv2d(channels, channels, KERNEL_SIZE, morph=1),
        "dsconv_gridsample": gridsample,
        "reference": reference,
    }
    return {name: layer.to(device) for name, layer in layers.items()}


def _train_step(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def run() -> None:
        optimiser.zero_grad(set_to_none=True)
        out = model(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        nn.functional.binary_cross_entropy_with_logits(out, target).backward()
        optimiser.step()

    return run


def _step_rows(device: torch.device, repeats: int) -> list[dict]:
    """Training-step seconds of DSCNet (snake_conv, grid_sample) and BasicUNet at STEP_SHAPE."""
    from monai.networks.nets import BasicUNet

    from medseg.models import count_parameters, create_model

    torch.manual_seed(0)
    x = torch.randn(*STEP_SHAPE, device=device)
    target = (torch.rand(*STEP_SHAPE, device=device) > 0.9).float()
    fast = create_model("dscnet").to(device)
    slow = create_model("dscnet").to(device)
    slow.load_state_dict(fast.state_dict())
    for m in slow.modules():
        if isinstance(m, DSConv2d):
            m.use_snake_conv = False
    models = {
        "basicunet": BasicUNet(spatial_dims=2, in_channels=1, out_channels=1).to(device),
        "dscnet": fast,
        "dscnet_gridsample": slow,
    }
    fns = {name: _train_step(m, x, target) for name, m in models.items()}
    times = time_interleaved(fns, repeats, device, warmup=1)
    rows = []
    for name, model in models.items():
        rows.append(
            {
                "shape": list(STEP_SHAPE),
                "model": name,
                "parameters": count_parameters(model),
                "step_s": times[name],
                "step_ratio": times[name] / times["basicunet"],
                "step_peak_bytes": peak_memory(fns[name], device),
            }
        )
    return rows


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
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per case (median)")
    parser.add_argument(
        "--large-repeats", type=int, default=2, help="at most this many timed runs for the largest shape"
    )
    parser.add_argument("--step-repeats", type=int, default=3, help="timed training steps per model (median)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dsconv.json"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    memory_method = (
        "torch.cuda.max_memory_allocated minus allocation before the call"
        if device.type == "cuda"
        else "torch.profiler(profile_memory=True): peak of the running sum of CPU allocations during one call"
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
            for name, seconds in time_interleaved(fns, repeats, device).items():
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

    steps = _step_rows(device, args.step_repeats)
    print("  done training steps", file=sys.stderr, flush=True)
    mib = 2.0**20
    header = (
        f"{'shape (N,C,H,W)':<18} {'layer':<18} {'fwd ms':>9} {'x block':>7} {'fwd+bwd ms':>11} "
        f"{'x block':>7} {'fwd MiB':>8} {'x block':>7} {'f+b MiB':>8} {'x block':>7}"
    )
    print(
        f"DSConv2d benchmark: device={device}, torch {torch.__version__}, "
        f"threads={torch.get_num_threads()}, K={KERNEL_SIZE}, matmul {matmul_flops() / 1e9:.0f} GFLOP/s; "
        f"'x block' = ratio to {BASELINE}"
    )
    print(f"peak memory: {memory_method}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{str(tuple(r['shape'])):<18} {r['layer']:<18} {r['fwd_s'] * 1e3:>9.1f} "
            f"{r['fwd_ratio']:>7.1f} {r['fwd+bwd_s'] * 1e3:>11.1f} {r['fwd+bwd_ratio']:>7.1f} "
            f"{r['fwd_peak_bytes'] / mib:>8.1f} {r['fwd_mem_ratio']:>7.1f} "
            f"{r['fwd+bwd_peak_bytes'] / mib:>8.1f} {r['fwd+bwd_mem_ratio']:>7.1f}"
        )
    print(f"\ntraining step (forward, BCE, backward, Adam) at {STEP_SHAPE}; ratio to BasicUNet")
    for r in steps:
        print(
            f"{r['model']:<18} {r['parameters']:>10,} params {r['step_s'] * 1e3:>9.0f} ms {r['step_ratio']:>6.2f}x "
            f"{r['step_peak_bytes'] / mib:>8.0f} MiB"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "device": str(device),
                "device_name": (
                    torch.cuda.get_device_name(device)
                    if device.type == "cuda"
                    else platform.processor() or platform.machine()
                ),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "kernel_size": KERNEL_SIZE,
                "timing": "median of repeats after two warm-up runs; fwd = eval + inference_mode, fwd+bwd = train mode",
                "memory_method": memory_method,
                "matmul_flops_per_s": matmul_flops(),
                "baseline": BASELINE,
                "results": rows,
                "training_step": steps,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
