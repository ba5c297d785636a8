"""What every benchmark states beside its times: the machine, as measured in the same run.

Times differ up to 2.6x between machines of one kind, so a benchmark reports its seconds with
this machine's float32 matmul rate (:func:`matmul_flops`) and compares ratios measured in one
run, never against a constant from another machine.
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import torch


def matmul_flops(n: int = 2048, repeats: int = 7) -> float:
    """Median float32 matmul rate of this machine (FLOP/s) for (n x n) @ (n x n), with PyTorch's
    current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def machine() -> dict:
    """Processor, usable cores, PyTorch threads and the measured matmul rate (FLOP/s)."""
    from medseg.threads import usable_cores

    return {
        "processor": platform.processor() or platform.machine(),
        "usable_cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "matmul_flops_per_s": matmul_flops(),
    }
