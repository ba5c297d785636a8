"""Qualitative result panels: image, reference, probability map and error overlay.

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly, so
nothing global (``pyplot`` state, the selected backend) is touched and the functions work in
headless processes and threads. Files are written atomically (a temporary file in the target
directory, then :func:`os.replace`, see :mod:`medseg.atomic`), so a crash never leaves a
half-written figure behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from medseg.atomic import atomic_path
from medseg.metrics.vessel import confusion_counts, pixel_metrics

TP_COLOUR = (0.0, 0.8, 0.0)
FP_COLOUR = (1.0, 0.0, 0.0)
FN_COLOUR = (0.15, 0.35, 1.0)


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Render ``fig`` with the Agg canvas and write it atomically to ``path``.

    Creates the parent directories; the format follows the suffix (``.png`` when there is
    none, ``.pdf``/``.svg`` work too). The figure is written to a temporary file in the same
    directory and moved into place with :func:`os.replace`; the temporary file is removed if
    rendering fails. Returns the :class:`~pathlib.Path` written.
    """
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    with atomic_path(path, suffix=path.suffix or ".png") as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return path


def _render_panel(job: dict[str, Any]) -> Path:
    return save_panel(**job)


def save_panels(jobs: list[dict[str, Any]], workers: int | None = None) -> list[Path]:
    """Write several :func:`save_panel` figures, in parallel processes where that pays.

    Args:
        jobs: keyword arguments of :func:`save_panel`, one dict per panel.
        workers: processes (default: the CPU count); panels render one at a time when there
            are fewer than 4 jobs, one CPU, or no ``forkserver`` start method (matplotlib figures are
            single-threaded: 20 DRIVE panels take 6.9 s in one process on 2 cores).

    Returns:
        The written paths, in job order.

    Raises:
        ValueError: as :func:`save_panel`, for the first job that fails.
    """
    import multiprocessing as mp

    n = workers or os.cpu_count() or 1
    if len(jobs) < 4 or n < 2 or "forkserver" not in mp.get_all_start_methods():
        return [save_panel(**job) for job in jobs]
    # forkserver, not fork: a child forked from a process with other native threads (torch's
    # OpenMP pool, onnxruntime's) can inherit a lock one of them held and wait on it forever (seen
    # in the test suite: two figure workers and their parent in futex waits)
    with mp.get_context("forkserver").Pool(min(n, len(jobs))) as pool:
        return pool.map(_render_panel, jobs, chunksize=max(1, len(jobs) // (4 * n)))


def display_image(image: Any) -> np.ndarray:
    """Return ``image`` as float32 in [0, 1] for display, (H, W) or (H, W, 3).

    Accepts (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (alpha dropped). uint8 is divided by
    255; any other dtype is min-max scaled over the whole array (a constant image becomes 0).
    Raises ValueError for other shapes.
    """
    if hasattr(image, "detach"):  # a torch tensor, without importing torch
        image = image.detach().cpu().numpy()
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[-1] == 3)):
        raise ValueError(f"image must have shape (H, W) or (H, W, 3), got {tuple(img.shape)}")
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    img = img.astype(np.float32)
    finite = np.isfinite(img)
    if not finite.any():
        return np.zeros(img.shape, np.float32)
    lo, hi = float(img[finite].min()), float(img[finite].max())
    img = np.where(finite, img, lo)
    if hi > lo:
        return (img - lo) / (hi - lo)
    return np.zeros(img.shape, np.float32)


def grey(img: np.ndarray) -> np.ndarray:
    """Luminance (ITU-R BT.601) of a display image from :func:`display_image`, (H, W) float."""
    if img.ndim == 2:
        return img
    return img @ np.array([0.299, 0.587, 0.114], np.float32)


def _binary(a: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(a)
    if arr.shape != tuple(shape):
        raise ValueError(f"shape mismatch: {name} has shape {tuple(arr.shape)} but the image is {shape}")
    return arr != 0 if arr.dtype != bool else arr


def save_panel(
    path: str | os.PathLike[str],
    image: Any,
    target: Any,
    prob: Any,
    threshold: float = 0.5,
    fov: Any = None,
    title: str | None = None,
) -> Path:
    """Write a 1x4 panel: image, ground truth, probability map and TP/FP/FN overlay.

    Args:
        path: output file (PNG unless the suffix says otherwise); parent folders are created
            and the file is written atomically.
        image: (H, W) or (H, W, 3) array, uint8 (0..255) or any float range (min-max scaled
            for display).
        target: bool or 0/1 array (H, W), the reference.
        prob: float array (H, W) of probabilities in [0, 1] (shown with a 0..1 colour bar).
        threshold: the prediction is ``prob >= threshold``.
        fov: optional bool array (H, W); outside-FOV pixels are dimmed in the overlay and the
            Dice of the title is computed inside the FOV.
        title: optional text put before the Dice in the figure title.

    The overlay shows the image in grey with true positives green, false positives red and
    false negatives blue. The title gives ``Dice@threshold`` (FOV or whole image).

    Returns:
        The :class:`~pathlib.Path` written.

    Raises:
        ValueError: if image, target, prob and fov do not share (H, W) (naming the shapes).
    """
    img = display_image(image)
    hw = img.shape[:2]
    t = _binary(target, "target", hw)
    p = np.asarray(prob, dtype=np.float32)
    if p.shape != hw:
        raise ValueError(f"shape mismatch: prob has shape {tuple(p.shape)} but the image is {hw}")
    f = None if fov is None else _binary(fov, "fov", hw)
    pred = p >= threshold

    dice = pixel_metrics(**confusion_counts(pred, t, f))["dice"]
    where = "in FOV" if f is not None else "whole image"

    base = grey(img)
    rgb = np.repeat(base[..., None], 3, axis=2) * 0.85
    rgb[pred & t] = TP_COLOUR
    rgb[pred & ~t] = FP_COLOUR
    rgb[~pred & t] = FN_COLOUR
    if f is not None:
        rgb[~f] *= 0.3

    h, w = hw
    panel_w = 3.6
    panel_h = panel_w * h / w
    fig = Figure(figsize=(4 * panel_w + 0.6, panel_h + 0.9))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 4)
    axes[0].imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    axes[0].set_title("image")
    axes[1].imshow(t, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title("ground truth")
    im = axes[2].imshow(p, cmap="magma", vmin=0.0, vmax=1.0)
    axes[2].set_title("probability")
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.02)
    axes[3].imshow(rgb, interpolation="nearest")
    axes[3].set_title(f"overlay @ {threshold:g}")
    axes[3].legend(
        handles=[
            Patch(color=TP_COLOUR, label="TP"),
            Patch(color=FP_COLOUR, label="FP"),
            Patch(color=FN_COLOUR, label="FN"),
        ],
        loc="lower right",
        fontsize=7,
        framealpha=0.7,
    )
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    head = f"{title} - " if title else ""
    fig.suptitle(f"{head}Dice@{threshold:g} = {dice:.4f} ({where})")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
