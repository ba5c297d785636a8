"""Gather-based reference implementation of :class:`medseg.ops.DSConv2d` (tests, benchmark).

Same algorithm as :mod:`medseg.ops.dsconv` (Qi et al., ICCV 2023, arXiv 2307.08388, Sec. 3;
authors' files ``S3_DSConv.py`` / ``S3_DSConv_pro.py``), written the straightforward way so it can
serve as an independent check:

- the snake offsets are accumulated with an explicit loop over kernel points, out of place
  (not ``cumsum``), covering every point (the authors' fixed loop);
- bilinear sampling is an explicit gather of the four integer neighbours of every sampling
  position, per sample of the batch (batch-correct, unlike the original 2D file), with
  ``padding_mode="zeros"`` (neighbours outside the image contribute 0), ``"border"`` (the
  position is clamped to ``[0, size-1]`` first, as the pro file does) or ``"original"`` (the
  original file's rule, written here as per-axis neighbour weights by case, independently of
  :func:`medseg.ops.dsconv.original_boundary_positions`: 0 before pixel 0, linear inside, the last
  pixel up to one pixel beyond it, 0 further out);
- the strided axis conv is applied to the samples laid out as (N, C, K*H, W) or (N, C, H, K*W).

It uses the parameters of a :class:`DSConv2d`, so both produce the same values and gradients
(up to float rounding). It is slower and uses more memory (four gathered copies of the K-fold
sampled map); do not use it for training.
"""

from __future__ import annotations

import torch

from medseg.ops.dsconv import DSConv2d

__all__ = ["loop_cumulative_offsets", "bilinear_gather", "dsconv2d_reference", "DSConv2dReference"]


def loop_cumulative_offsets(raw: torch.Tensor) -> torch.Tensor:
    """Snake accumulation with a loop from the centre outward (reference for ``cumsum``).

    Args:
        raw: (N, K, H, W) raw offsets, K odd, pixels (or (N, K, D, H, W) voxels: any trailing
            spatial dims; the 3-D reference uses it too).

    Returns:
        The shape of ``raw``: centre 0, point ``c+i`` = point ``c+i-1`` + ``raw[:, c+i]``, and
        symmetrically for ``c-i``, for every ``i = 1 .. K // 2``.
    """
    k = raw.shape[1]
    c = k // 2
    points: list[torch.Tensor | None] = [None] * k
    points[c] = torch.zeros_like(raw[:, c])
    for i in range(1, c + 1):
        points[c + i] = points[c + i - 1] + raw[:, c + i]
        points[c - i] = points[c - i + 1] + raw[:, c - i]
    return torch.stack(points, dim=1)  # type: ignore[arg-type]


def _original_axis_weights(t: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One axis of the original ``S3_DSConv.py`` boundary rule as neighbour weights.

    Args:
        t: positions in pixels along an axis of ``size`` pixels (any values, any shape).
        size: axis length, >= 1.

    Returns:
        ``(lower, w_lower, w_upper)``: int64 index of the lower neighbour and the weights of it and
        of ``lower + 1``, by case: ``0 <= t < size - 1``: ``floor(t)``, ``1 - frac``, ``frac``;
        ``size - 1 <= t < size``: ``size - 1``, 1, 0 (the last pixel, constant in ``t``); else
        ``size - 1``, 0, 0 (the sample is 0). ``w_upper`` is non-zero only where ``lower + 1`` is
        inside the image.
    """
    low = torch.floor(t)
    frac = t - low
    interior = (t >= 0) & (t < size - 1)
    edge = (t >= size - 1) & (t < size)
    lower = torch.where(interior, low, torch.full_like(low, size - 1)).long()
    w_lower = torch.where(interior, 1 - frac, edge.to(t.dtype))
    w_upper = torch.where(interior, frac, torch.zeros_like(t))
    return lower, w_lower, w_upper


def bilinear_gather(
    x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, padding_mode: str = "zeros"
) -> torch.Tensor:
    """Bilinear interpolation of ``x`` at arbitrary pixel positions by a 4-neighbour gather.

    Args:
        x: (N, C, H, W) floating tensor.
        rows, cols: (N, P, Q) positions in pixels (pixel centres at integers), same dtype family
            as ``x``; any values (outside the image is allowed).
        padding_mode: "zeros" (outside neighbours read 0), "border" (positions clamped to the
            image first, i.e. the border pixel is replicated) or "original" (the original
            ``S3_DSConv.py`` rule per axis, :func:`_original_axis_weights`).

    Returns:
        (N, C, P, Q) interpolated values, dtype of ``x``; differentiable w.r.t. ``x`` and the
        positions.

    Raises:
        ValueError: unknown ``padding_mode``.
    """
    if padding_mode not in ("zeros", "border", "original"):
        raise ValueError(f"padding_mode must be 'zeros', 'border' or 'original', got {padding_mode!r}")
    n, c, h, w = x.shape
    _, p, q = rows.shape
    rows = rows.to(x.dtype)
    cols = cols.to(x.dtype)
    if padding_mode == "border":
        rows = rows.clamp(0, h - 1)
        cols = cols.clamp(0, w - 1)
    if padding_mode == "original":
        r0, wr0, wr1 = _original_axis_weights(rows, h)
        c0, wc0, wc1 = _original_axis_weights(cols, w)
    else:
        r0 = torch.floor(rows)
        c0 = torch.floor(cols)
        fr = rows - r0  # weight of the lower/right neighbour
        fc = cols - c0
        r0, wr0, wr1 = r0.long(), 1 - fr, fr
        c0, wc0, wc1 = c0.long(), 1 - fc, fc
    flat = x.reshape(n, c, h * w)
    out = x.new_zeros(n, c, p * q)
    for dr, wr in ((0, wr0), (1, wr1)):
        for dc, wc in ((0, wc0), (1, wc1)):
            rr = r0 + dr
            cc = c0 + dc
            inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            idx = (rr.clamp(0, h - 1) * w + cc.clamp(0, w - 1)).reshape(n, 1, p * q)
            vals = torch.gather(flat, 2, idx.expand(n, c, p * q))
            weight = (wr * wc * inside.to(x.dtype)).reshape(n, 1, p * q)
            out = out + vals * weight
    return out.reshape(n, c, p, q)


def dsconv2d_reference(module: DSConv2d, x: torch.Tensor) -> torch.Tensor:
    """Forward pass of ``module`` computed with the gather-based reference path.

    Args:
        module: a :class:`DSConv2d` whose parameters and settings are used (its BatchNorm
            running statistics update in training mode, as in its own forward).
        x: (N, in_channels, H, W) float32/float64.

    Returns:
        (N, out_channels, H, W), equal to ``module(x)`` up to float rounding.
    """
    n, _, h, w = x.shape
    k, c = module.kernel_size, module.kernel_size // 2
    dev, dt = x.device, x.dtype
    row_grid = torch.arange(h, device=dev, dtype=dt).view(1, 1, h, 1).expand(n, k, h, w)
    col_grid = torch.arange(w, device=dev, dtype=dt).view(1, 1, 1, w).expand(n, k, h, w)
    line = torch.arange(-c, c + 1, device=dev, dtype=dt).view(1, k, 1, 1)
    if module.if_offset:
        offset = module.offset_conv(x)
        norm = module.bn if module.offset_norm == "batch" else module.gn_offset
        offset = torch.tanh(norm(offset))
        raw = offset[:, :k] if module.morph == 0 else offset[:, k:]
        shift = loop_cumulative_offsets(raw) * module.extend_scope
    else:
        shift = torch.zeros(n, k, h, w, device=dev, dtype=dt)
    if module.morph == 0:
        rows, cols = row_grid + shift, col_grid + line
        # (N, K, H, W) -> (N, H, K, W) -> (N, K*H, W): rows h*K..h*K+K-1 hold pixel row h
        rows = rows.permute(0, 2, 1, 3).reshape(n, h * k, w)
        cols = cols.permute(0, 2, 1, 3).reshape(n, h * k, w)
        deformed = bilinear_gather(x, rows, cols, module.padding_mode)
        out = module.dsc_conv_x(deformed)
    else:
        rows, cols = row_grid + line, col_grid + shift
        # (N, K, H, W) -> (N, H, W, K) -> (N, H, W*K)
        rows = rows.permute(0, 2, 3, 1).reshape(n, h, w * k)
        cols = cols.permute(0, 2, 3, 1).reshape(n, h, w * k)
        deformed = bilinear_gather(x, rows, cols, module.padding_mode)
        out = module.dsc_conv_y(deformed)
    return module.relu(module.gn(out))


class DSConv2dReference(DSConv2d):
    """:class:`DSConv2d` whose forward is :func:`dsconv2d_reference` (same arguments, same
    parameter names, same state dict); for benchmarks and parity tests only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H, W) via the gather-based path."""
        self._check_input(x)
        return dsconv2d_reference(self, x)
