"""Time ``medseg evaluate`` per stage against the network's FLOP floor on this machine.

Usage::

    medseg train --config configs/drive/unet_cpu.yaml --data-root ../shared/data/DRIVE --out runs/drive-unet --no-eval
    python benchmarks/evaluate.py --run runs/drive-unet [--json benchmarks/results/evaluate.json]

For the run's test split it evaluates twice, once with whole-image inference and once with the
recipe's sliding windows (``--inference sliding``), and reports per stage (loading, inference,
metrics, figures) the seconds, beside

* the machine's measured float32 matmul rate (median of 2048x2048 products, FLOP/s),
* the network's forward FLOPs for the split (PyTorch's ``FlopCounterMode``; whole images padded
  to the size divisor, or every window of the sliding path), and the **inference floor** =
  FLOPs / measured FLOP/s: the time the arithmetic alone needs at matmul speed;
* the ratio of the whole evaluation to that floor (goal: within 2x for the whole-image path),
* the largest difference of any headline metric between the two paths (goal: 1e-3).

Nothing is compared against a constant from another machine: every ratio is between two
numbers measured in this run. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from _machine import matmul_flops  # noqa: E402 - benchmarks/ is on sys.path when run as a script
from medseg.engine.checkpoint import load_model_from_checkpoint
from medseg.engine.datamodule import load_split
from medseg.engine.module import roi_size
from medseg.workflows.evaluate import evaluate, run_checkpoint
from medseg.workflows.protocols import headline


def forward_flops(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass at ``shape`` (N, C, H, W), counted by PyTorch."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(shape))
    return int(counter.get_total_flops())


def split_flops(run: Path, split: str) -> dict[str, int]:
    """Forward FLOPs of the whole split for the whole-image and the sliding-window paths."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    model, cfg = load_model_from_checkpoint(run_checkpoint(run))
    cases = load_split(cfg, split)
    divisor = int(getattr(model, "size_divisor", 1))
    roi = roi_size(cfg)
    whole = windows = 0
    per_window = forward_flops(model, (1, cases.in_channels, roi, roi))
    cache: dict[tuple[int, int], int] = {}
    for case in cases:
        h, w = case.image.shape[1:]
        key = (h, w)
        if key not in cache:
            hh, ww = -(-h // divisor) * divisor, -(-w // divisor) * divisor
            cache[key] = forward_flops(model, (1, cases.in_channels, hh, ww))
        whole += cache[key]
        size = (max(h, roi), max(w, roi))
        interval = _get_scan_interval(size, (roi, roi), 2, (cfg.eval.overlap, cfg.eval.overlap))
        windows += len(dense_patch_slices(size, (roi, roi), interval))
    return {"whole": whole, "sliding": windows * per_window, "windows": windows, "images": len(cases)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run directory (e.g. DRIVE unet_cpu)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/evaluate.json"))
    args = parser.parse_args(argv)

    rate = matmul_flops()
    flops = split_flops(args.run, args.split)
    results = {}
    for method in ("sliding", "whole"):  # whole last: the run keeps its default (auto = whole) evaluation
        t = time.perf_counter()
        metrics = evaluate(args.run, split=args.split, inference=method, show_progress=False, report=False)
        total = time.perf_counter() - t
        floor = flops[method] / rate
        results[method] = {
            "total_s": round(total, 3),
            **{f"{k}_s": v for k, v in metrics["timing_s"].items()},
            "flops": flops[method],
            "inference_floor_s": round(floor, 3),
            "inference_over_floor": round(metrics["timing_s"]["inference"] / floor, 2),
            "total_over_floor": round(total / floor, 2),
            "headline": headline(metrics),
        }
    diffs = {
        k: abs(a - b)
        for k, a in results["whole"]["headline"].items()
        if isinstance(a, float)
        and isinstance(b := results["sliding"]["headline"].get(k), float)
        and math.isfinite(a)
        and math.isfinite(b)
        and not k.startswith("betti")
        and k != "euler_error"
    }
    worst = max(diffs, key=diffs.get) if diffs else None

    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"float32 matmul {rate / 1e9:.1f} GFLOP/s; {flops['images']} images, {flops['windows']} windows"
    )
    cols = ("load_s", "inference_s", "metrics_s", "figures_s", "total_s", "inference_floor_s", "total_over_floor")
    print(f"{'path':<9}" + "".join(f"{c:>19}" for c in cols))
    for method, r in results.items():
        print(f"{method:<9}" + "".join(f"{r[c]:>19}" for c in cols))
    if worst is not None:
        print(
            f"largest metric difference whole vs sliding: {worst} {diffs[worst]:.2e} "
            f"(Betti/Euler counts excluded: integers that move with single pixels)"
        )
    doc = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "matmul_flops_per_s": rate,
        },
        "run": str(args.run),
        "split": args.split,
        "flops": flops,
        "results": results,
        "metric_differences": diffs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
