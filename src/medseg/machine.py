"""The machine a time was measured on: times differ up to 2.6x between machines of one kind, so
medseg states each with this machine's measured float32 matmul rate (``medseg reproduce``'s
results, ``benchmarks/``)."""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any


def matmul_flops(n: int = 2048, repeats: int = 7) -> float:
    """Median float32 matmul rate of this machine in FLOP/s, for (n x n) @ (n x n) with PyTorch's
    current thread count (one warm-up product first)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def describe(device: str = "cpu") -> dict[str, Any]:
    """Processor, usable cores (:func:`medseg.threads.usable_cores`), PyTorch threads, measured
    float32 matmul FLOP/s (:func:`matmul_flops`), torch version and device."""
    import torch

    from medseg.threads import usable_cores

    return {"processor": platform.processor() or platform.machine(), "usable_cores": usable_cores(),
            "threads": torch.get_num_threads(), "matmul_flops_per_s": matmul_flops(), "torch": torch.__version__,
            "device": device}
