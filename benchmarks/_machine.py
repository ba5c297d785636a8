"""What every benchmark states beside its times: the machine, as measured in the same run
(:mod:`medseg.machine`). Benchmarks compare ratios measured in one run, never against a constant
from another machine."""

from __future__ import annotations

import os

from medseg.machine import describe, matmul_flops


def machine() -> dict:
    """:func:`medseg.machine.describe` plus ``os.cpu_count()`` (every core of the host)."""
    return {**describe(), "cpu_count": os.cpu_count()}


__all__ = ["machine", "matmul_flops"]
