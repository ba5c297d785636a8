"""Where a dynamic snake convolution (DSConv) samples: kernel point positions over the image.

Input is the (K, H, W, 2) array of ``DSConv2d.kernel_coordinates(x)[0]``: for every output
pixel (h, w), the (row, col) positions of its K sampled points in input-pixel units (pixel
centres at integers). Drawing the K points of a few output pixels as polylines shows how the
kernels bend along vessels (DSCNet, Qi et al., ICCV 2023, Fig. 1/5-style visualisation).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medseg.viz.panels import display_image, grey, save_figure


def _to_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor, without importing torch
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _grid_centers(h: int, w: int, n: int) -> list[tuple[int, int]]:
    """About ``n`` output pixels on a regular grid (exactly n unless n > h*w)."""
    n = max(1, min(n, h * w))
    rows = max(1, min(h, int(round(np.sqrt(n * h / w)))))
    cols = max(1, min(w, int(np.ceil(n / rows))))
    rr = ((np.arange(rows) + 0.5) * h / rows).astype(int)
    cc = ((np.arange(cols) + 0.5) * w / cols).astype(int)
    pts = [(int(r), int(c)) for r in rr for c in cc]
    return pts[:n]


def _spread_centers(mask: np.ndarray, n: int) -> list[tuple[int, int]]:
    """``n`` positive pixels of ``mask`` spread out by greedy farthest-point sampling.

    Deterministic: starts at the positive pixel closest to the centroid of the positives
    (first in raster order on ties), then repeatedly adds the positive pixel farthest from
    those chosen (first in raster order on ties).
    """
    pts = np.argwhere(mask).astype(np.float64)
    if len(pts) <= n:
        return [(int(r), int(c)) for r, c in pts]
    first = int(np.argmin(((pts - pts.mean(axis=0)) ** 2).sum(axis=1)))
    chosen = [first]
    dist = ((pts - pts[first]) ** 2).sum(axis=1)
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((pts - pts[nxt]) ** 2).sum(axis=1))
    return [(int(pts[i, 0]), int(pts[i, 1])) for i in chosen]


def save_kernel_positions(
    path: str | os.PathLike[str],
    image: Any,
    coords: Any,
    centers: Sequence[tuple[int, int]] | None = None,
    n_centers: int = 24,
    target: Any = None,
    title: str | None = None,
) -> Path:
    """Draw the sampled points of DSConv kernels as polylines over the image.

    Args:
        path: output file (PNG unless the suffix says otherwise), written atomically; parent
            folders are created.
        image: (H, W) or (H, W, 3) array (uint8 or any float range, min-max scaled), shown in
            grey.
        coords: float array (K, Hc, Wc, 2) (numpy or a torch tensor), ``[..., 0]`` row and
            ``[..., 1]`` column of the K points of each output pixel, in the pixel units of a
            (Hc, Wc) grid with pixel centres at integers, as returned by
            ``DSConv2d.kernel_coordinates(x)[0]``. When (Hc, Wc) differs from the image's
            (H, W) (a DSConv deeper in the network), positions are scaled by
            image_size / coords_size about pixel centres, ``y = (r + 0.5) * H / Hc - 0.5``
            (likewise for columns), so that a coarse pixel maps onto the centre of the image
            block it covers.
        centers: (row, col) output pixels of the (Hc, Wc) grid whose kernels are drawn. If
            ``None``: ``n_centers`` pixels spread over the positives of ``target`` (greedy
            farthest-point sampling, deterministic) when ``target`` is given and has positives,
            else a regular grid of ``n_centers`` pixels.
        n_centers: number of kernels drawn when ``centers`` is None.
        target: optional bool/0-1 array (H, W) (or (Hc, Wc)); drawn as a faint cyan overlay and
            used to choose the centres (nearest-neighbour resampled to (Hc, Wc)).
        title: optional figure title.

    Each kernel is a polyline through its K points in order k = 0..K-1 with a dot per point;
    the output pixel itself is marked with a white-edged square. Colours cycle per kernel.

    Returns:
        The :class:`~pathlib.Path` written.

    Raises:
        ValueError: coords not (K, Hc, Wc, 2) (a batched (N, K, Hc, Wc, 2) array gets a hint to
            take ``[0]``), a centre outside the (Hc, Wc) grid, or a target of another shape.
    """
    img = display_image(image)
    h, w = img.shape[:2]
    c = _to_numpy(coords).astype(np.float64)
    if c.ndim == 5:
        raise ValueError(f"coords must be (K, H, W, 2), got a batch of shape {tuple(c.shape)}; pass coords[0]")
    if c.ndim != 4 or c.shape[-1] != 2:
        raise ValueError(f"coords must have shape (K, H, W, 2), got {tuple(c.shape)}")
    k, hc, wc, _ = c.shape
    sy, sx = h / hc, w / wc

    t = None
    t_coarse = None
    if target is not None:
        t = _to_numpy(target)
        t = t != 0 if t.dtype != bool else t
        if t.shape == (h, w):
            rr = np.minimum(((np.arange(hc) + 0.5) * sy).astype(int), h - 1)
            cc = np.minimum(((np.arange(wc) + 0.5) * sx).astype(int), w - 1)
            t_coarse = t[np.ix_(rr, cc)]
        elif t.shape == (hc, wc):
            t_coarse = t
            rr = np.minimum(((np.arange(h) + 0.5) / sy).astype(int), hc - 1)
            cc = np.minimum(((np.arange(w) + 0.5) / sx).astype(int), wc - 1)
            t = t[np.ix_(rr, cc)]
        else:
            raise ValueError(
                f"shape mismatch: target has shape {tuple(t.shape)} but the image is {(h, w)} and coords are {(hc, wc)}"
            )

    if centers is None:
        if t_coarse is not None and t_coarse.any():
            centers = _spread_centers(t_coarse, n_centers)
        else:
            centers = _grid_centers(hc, wc, n_centers)
    centers = [(int(r), int(cl)) for r, cl in centers]
    for r, cl in centers:
        if not (0 <= r < hc and 0 <= cl < wc):
            raise ValueError(f"center {(r, cl)} lies outside the coords grid {(hc, wc)}")

    panel_w = 7.0
    fig = Figure(figsize=(panel_w, panel_w * h / w + 0.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grey(img), cmap="gray", vmin=0, vmax=1)
    if t is not None:
        overlay = np.zeros((h, w, 4), np.float32)
        overlay[t] = (0.0, 0.9, 0.9, 0.25)
        ax.imshow(overlay, interpolation="nearest")
    cmap = matplotlib.colormaps["tab10"]
    palette = [cmap(i) for i in range(10) if i != 7]  # no grey on a grey image
    colours = [palette[i % len(palette)] for i in range(len(centers))]
    outline = [patheffects.withStroke(linewidth=2.6, foreground="black", alpha=0.6)]
    for (r, cl), colour in zip(centers, colours):
        ys = (c[:, r, cl, 0] + 0.5) * sy - 0.5
        xs = (c[:, r, cl, 1] + 0.5) * sx - 0.5
        ax.plot(xs, ys, "-", color=colour, lw=1.4, path_effects=outline)
        ax.plot(xs, ys, "o", color=colour, ms=2.5)
        ax.plot(
            [(cl + 0.5) * sx - 0.5],
            [(r + 0.5) * sy - 0.5],
            "s",
            color=colour,
            ms=5,
            markeredgecolor="white",
            markeredgewidth=0.8,
        )
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    scale = "" if (hc, wc) == (h, w) else f", coords {hc}x{wc} scaled to {h}x{w}"
    head = f"{title}\n" if title else ""
    ax.set_title(f"{head}{len(centers)} kernels, K = {k}{scale}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
