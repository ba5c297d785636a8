"""Input checks and small helpers shared by the protocol metric modules (octa, polyp, volume)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def case_label(case_id: Any) -> str:
    """``"case 'x': "`` for error messages, or "" when the case has no id."""
    return f"case {case_id!r}: " if case_id is not None else ""


def as_probability(prob: Any, case_id: Any = None, dtype: Any = np.float32, axes: str = "H, W") -> np.ndarray:
    """A 2-D probability map as a float array in [0, 1] (bool and integer maps are cast).

    Raises:
        ValueError: not a float/bool/integer array, not 2-D, empty, NaN/inf, or outside [0, 1]
            (the message names the case).
    """
    arr = np.asarray(prob)
    if arr.dtype == bool or arr.dtype.kind in "iu":
        arr = arr.astype(dtype)
    if arr.dtype.kind != "f":
        raise ValueError(f"{case_label(case_id)}prob must be a float array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{case_label(case_id)}prob must be 2-D ({axes}), got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"{case_label(case_id)}prob is empty (shape {tuple(arr.shape)})")
    if not bool(np.isfinite(arr).all()):
        raise ValueError(f"{case_label(case_id)}prob holds NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{case_label(case_id)}prob must lie in [0, 1] (got min {lo:.4g}, max {hi:.4g}); apply a "
            "sigmoid to logits first"
        )
    return arr


def unpack_case(case: Any, index: int, fields: tuple[str, ...]) -> tuple[Any, ...]:
    """``(case_id, *fields)`` from a tuple ``(case_id, f1, f2, ...)`` or a mapping with the field
    names (and ``case_id`` or ``id``; default: the index).

    Raises:
        ValueError: anything else (the message names the index and the expected fields).
    """
    if isinstance(case, Mapping):
        return (str(case.get("case_id", case.get("id", index))), *(case[f] for f in fields))
    if isinstance(case, (tuple, list)) and len(case) == len(fields) + 1:
        return (str(case[0]), *case[1:])
    names = ", ".join(fields)
    raise ValueError(
        f"case #{index}: expected a (case_id, {names}) tuple or a mapping with {'/'.join(fields)}, "
        f"got {type(case).__name__}" + (f" of length {len(case)}" if isinstance(case, (tuple, list)) else "")
    )


def none_if_nan(x: float | None) -> float | None:
    """None for None or NaN, else ``float(x)`` (strict-JSON summaries)."""
    return None if (x is None or math.isnan(x)) else float(x)
