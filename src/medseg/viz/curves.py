"""Training curves from a Lightning ``CSVLogger`` ``metrics.csv``.

The logger writes one row per logging call, so rows are sparse: a training-step row holds
``step``, ``epoch`` and ``train/loss`` (or ``train/loss_step``) and nothing else; a validation
row holds ``val/*`` at the last step of the epoch; a ``LearningRateMonitor`` adds ``lr-<Optimizer>``
columns (``lr-AdamW``, ``lr-AdamW/pg1``, ...). Empty cells are skipped column by column.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medseg.viz.panels import save_figure

_AXIS_COLUMNS = ("step", "epoch")


def _is_lr(name: str) -> bool:
    low = name.lower()
    return low.startswith("lr") or low.endswith("/lr") or "learning_rate" in low


def _read_columns(metrics_csv: Path) -> dict[str, np.ndarray]:
    """Read every column as float64 with NaN for empty or non-numeric cells."""
    try:
        with open(metrics_csv, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"cannot read training log {metrics_csv}: {exc}") from exc
    if not header or not any(h.strip() for h in header):
        raise ValueError(f"cannot read training log {metrics_csv}: the file is empty (no header)")
    names = [h.strip() for h in header]
    data = np.full((len(rows), len(names)), np.nan)
    for i, row in enumerate(rows):
        for j, cell in enumerate(row[: len(names)]):
            cell = cell.strip()
            if cell:
                try:
                    data[i, j] = float(cell)
                except ValueError:
                    pass
    return {name: data[:, j] for j, name in enumerate(names) if name}


def plot_training_curves(
    metrics_csv: str | os.PathLike[str], path: str | os.PathLike[str], title: str | None = None
) -> Path:
    """Plot losses, validation metrics and learning rate from a Lightning ``metrics.csv``.

    Args:
        metrics_csv: a ``CSVLogger`` file: a header row with ``epoch``, ``step`` and any of
            ``train/loss`` (per step; ``train/loss_step``/``train/loss_epoch`` when logged both
            ways), ``val/loss``, ``val/dice`` (or other metrics), ``lr-AdamW`` or other ``lr*``
            columns; most cells of each row are empty.
        path: output image (PNG unless the suffix says otherwise), written atomically; parent
            folders are created.
        title: the figure's title, e.g. ``"training curves: drive-dscnet"`` (train and evaluate
            pass the run's name); default "training curves".

    Layout: one row of up to three axes, absent groups skipped.

    1. every column whose name contains ``loss`` (train per step as a thin line; epoch-level
       and validation values with markers at the step they were logged, i.e. the epoch end);
    2. every other metric column (``val/dice``, ...), same x axis;
    3. learning-rate columns (``lr*``, ``*/lr``), log scale when they span more than a decade.

    The x axis is ``step`` when the column exists (``epoch`` otherwise, else the row index).

    Returns:
        The :class:`~pathlib.Path` written.

    Raises:
        ValueError: naming the file, if it cannot be read, is empty or has no column with a
            numeric value other than ``epoch``/``step``.
    """
    metrics_csv = Path(metrics_csv)
    cols = _read_columns(metrics_csv)
    n_rows = len(next(iter(cols.values()))) if cols else 0
    if "step" in cols and np.isfinite(cols["step"]).any():
        x_all, x_label = cols["step"], "step"
    elif "epoch" in cols and np.isfinite(cols["epoch"]).any():
        x_all, x_label = cols["epoch"], "epoch"
    else:
        x_all, x_label = np.arange(n_rows, dtype=np.float64), "row"

    groups: dict[str, list[str]] = {"loss": [], "metrics": [], "lr": []}
    for name, values in cols.items():
        if name in _AXIS_COLUMNS or not np.isfinite(values).any():
            continue
        if "loss" in name.lower():
            groups["loss"].append(name)
        elif _is_lr(name):
            groups["lr"].append(name)
        else:
            groups["metrics"].append(name)
    present = [g for g in ("loss", "metrics", "lr") if groups[g]]
    if not present:
        raise ValueError(
            f"training log {metrics_csv} has no plottable column (found {sorted(cols)}; "
            "expected e.g. train/loss, val/loss, val/dice or lr-*)"
        )

    fig = Figure(figsize=(5.0 * len(present), 3.8))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(present)))
    titles = {"loss": "loss", "metrics": "validation metrics", "lr": "learning rate"}
    for ax, group in zip(axes, present):
        lr_values = []
        for name in sorted(groups[group], key=lambda n: (not n.startswith("train"), n)):
            values = cols[name]
            keep = np.isfinite(values) & np.isfinite(x_all)
            if not keep.any():
                continue
            x, y = x_all[keep], values[keep]
            per_step = name.startswith("train") and not name.endswith("_epoch") and keep.sum() > 50
            if per_step:
                ax.plot(x, y, lw=0.8, alpha=0.7, label=name)
            else:
                ax.plot(x, y, marker="o", ms=3, lw=1.2, label=name)
            if group == "lr":
                lr_values.append(y)
        if lr_values:
            allv = np.concatenate(lr_values)
            pos = allv[allv > 0]
            if pos.size == allv.size and pos.size and pos.max() / pos.min() > 10:
                ax.set_yscale("log")
        ax.set_title(titles[group])
        ax.set_xlabel(x_label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or "training curves", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
