"""Progress bars with an ETA (tqdm, on stderr) for the long loops a user waits on: evaluation,
prediction and the data check."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def progress(
    iterable: Iterable[T], total: int | None, desc: str, unit: str = "image", enabled: bool | None = True
) -> Iterable[T]:
    """``iterable`` wrapped in a tqdm bar (count, rate, ETA) on stderr.

    Args:
        total: number of items (for the ETA), or None.
        desc: the bar's label, e.g. "evaluate: inference".
        unit: what an item is ("image", "volume", "file").
        enabled: True shows the bar, False returns ``iterable`` unchanged, None shows it only
            when stderr is a terminal.
    """
    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        return iterable
    from tqdm.auto import tqdm

    bar: Any = tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
    return bar


__all__ = ["progress"]
