"""What every benchmark states beside its times: the machine, as measured in the same run
(:mod:`medseg.machine`), and the interleaved timing they share. Benchmarks compare ratios measured
in one run, never against a constant from another machine."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch

from medseg.machine import describe, matmul_flops


def machine() -> dict:
    """:func:`medseg.machine.describe` plus ``os.cpu_count()`` (every core of the host)."""
    return {**describe(), "cpu_count": os.cpu_count()}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], None]], repeats: int, device: torch.device, warmup: int = 2
) -> dict[str, float]:
    """Median seconds per call of each function, after ``warmup`` calls of each; the functions take
    turns in every repeat, so load from other processes affects all of them alike (the ratios stay
    meaningful)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


__all__ = ["machine", "matmul_flops", "sync", "time_interleaved"]
