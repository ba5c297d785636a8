"""The machine a time was measured on: times differ up to 2.6x between machines of one kind, so
medseg states each with this machine's measured float32 matmul rate (``medseg reproduce``'s
results, ``benchmarks/``)."""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any, Callable


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

    return {
        "processor": platform.processor() or platform.machine(),
        "usable_cores": usable_cores(),
        "threads": torch.get_num_threads(),
        "matmul_flops_per_s": matmul_flops(),
        "torch": torch.__version__,
        "device": device,
    }


def peak_memory(fn: Callable[[], Any], device: Any = "cpu") -> int:
    """Extra bytes held at the worst moment of one call of ``fn``.

    CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation before the call. CPU: the peak
    of the running sum of allocations and frees ``torch.profiler`` records with
    ``profile_memory=True`` (PyTorch's own tensors; memory a library allocates behind PyTorch's
    back, e.g. onnxruntime's arena, is not seen).
    """
    import json
    import os
    import tempfile

    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
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
    memory = sorted(
        (e for e in events if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type") == 0),
        key=lambda e: e["ts"],
    )
    level = peak = 0
    for e in memory:
        level += int(e["args"]["Bytes"])
        peak = max(peak, level)
    return peak


def median_ms(run: Callable[[], Any], warmup: int = 2, repeats: int = 10, device: Any = "cpu") -> float:
    """Median wall milliseconds of ``run()`` over ``repeats`` calls after ``warmup`` untimed
    calls; on CUDA each call is followed by a device synchronisation so the time includes its
    kernels."""
    import torch

    device = torch.device(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)
