"""Gather-based reference implementation of :class:`medseg.ops.DSConv3d` (tests, benchmark).

Same algorithm as :mod:`medseg.ops.dsconv3d` (Qi et al., ICCV 2023, arXiv 2307.08388; authors' file
``DSCNet_3D_opensource/Code/Kipa/DSCNet/S3_DSConv.py``, class ``DCN_Conv``), written the
straightforward way so it can serve as an independent check of the vectorised operator:

- the 6K offset channels are split six ways as the authors do (z, y, x of group 1, then of group
  2), and each morph picks its two blocks by name, written out here rather than taken from
  :data:`medseg.ops.dsconv3d.OFFSET_BLOCKS`;
- the snake offsets are accumulated with an explicit loop over kernel points from the centre
  outward, out of place (not ``cumsum``), covering every point, with the centre zeroed for both
  moved axes (the authors' morph 2 leaves the y centre unzeroed; fixed here as in the operator);
- trilinear sampling is an explicit gather of the eight integer neighbours of every position, per
  sample of the batch, with three boundary rules: "zeros" (neighbours outside read 0), "border"
  (positions clamped to [0, S-1] first) and "original", which re-derives the authors' index
  arithmetic: per axis, neighbour indices ``floor(p)`` and ``floor(p) + 1`` clamped to [0, S-1],
  interpolation corners the same numbers clamped to [0, S], weights ``corner1 - p`` and
  ``p - corner0``;
- the samples are laid out as the authors do, (N, C, D, H, K*W) / (N, C, D, K*H, W) /
  (N, C, K*D, H, W), and convolved with the module's strided ``dcn_conv_x`` / ``dcn_conv_y`` /
  ``dcn_conv_z``.

It uses the parameters of a :class:`DSConv3d`, so both produce the same values and gradients (up to
float rounding). It is slow and memory-hungry (eight gathered copies of the K-fold sampled map); do
not use it for training.
"""

from __future__ import annotations

import torch

from medseg.ops.dsconv3d import DSConv3d
from medseg.ops.dsconv_reference import loop_cumulative_offsets

__all__ = ["trilinear_gather", "dsconv3d_reference", "DSConv3dReference"]


def _axis_terms(p: torch.Tensor, size: int, padding_mode: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The two (index, weight) pairs of one axis: indices within [0, size-1] for the gather,
    weights already zero where the neighbour reads 0."""
    if padding_mode == "border":
        p = p.clamp(0, size - 1)
    f = torch.floor(p)
    if padding_mode == "original":
        corner0 = f.clamp(0, size)
        corner1 = (f + 1).clamp(0, size)
        return [
            (f.clamp(0, size - 1).long(), corner1 - p),
            ((f + 1).clamp(0, size - 1).long(), p - corner0),
        ]
    t = p - f
    terms = []
    for step, weight in ((0, 1 - t), (1, t)):
        idx = f + step
        inside = (idx >= 0) & (idx <= size - 1)
        terms.append((idx.clamp(0, size - 1).long(), weight * inside.to(p.dtype)))
    return terms


def trilinear_gather(
    x: torch.Tensor, z: torch.Tensor, y: torch.Tensor, xs: torch.Tensor, padding_mode: str = "zeros"
) -> torch.Tensor:
    """Trilinear interpolation of ``x`` at arbitrary voxel positions by an 8-neighbour gather.

    Args:
        x: (N, C, D, H, W) floating tensor.
        z, y, xs: (N, P, Q, R) positions in voxels along D, H, W (centres at integers); any
            values, outside the volume allowed.
        padding_mode: "zeros", "border" or "original" (see the module docstring).

    Returns:
        (N, C, P, Q, R), dtype of ``x``; differentiable w.r.t. ``x`` and the positions.

    Raises:
        ValueError: unknown ``padding_mode``.
    """
    if padding_mode not in ("zeros", "border", "original"):
        raise ValueError(f"padding_mode must be 'zeros', 'border' or 'original', got {padding_mode!r}")
    n, c, d, h, w = x.shape
    shape = z.shape
    m = z[0].numel()
    flat = x.reshape(n, c, d * h * w)
    terms = [_axis_terms(p.to(x.dtype).reshape(n, m), size, padding_mode) for p, size in ((z, d), (y, h), (xs, w))]
    out = x.new_zeros(n, c, m)
    for iz, wz in terms[0]:
        for iy, wy in terms[1]:
            for ix, wx in terms[2]:
                idx = ((iz * h + iy) * w + ix).unsqueeze(1).expand(n, c, m)
                out = out + torch.gather(flat, 2, idx) * (wz * wy * wx).unsqueeze(1)
    return out.reshape((n, c) + tuple(shape[1:]))


def dsconv3d_reference(module: DSConv3d, x: torch.Tensor) -> torch.Tensor:
    """Forward pass of ``module`` computed with the gather-based reference path.

    Args:
        module: a :class:`DSConv3d` whose parameters and settings are used (its BatchNorm running
            statistics update in training mode, as in its own forward).
        x: (N, in_channels, D, H, W) float32/float64.

    Returns:
        (N, out_channels, D, H, W), equal to ``module(x)`` up to float rounding.
    """
    n, _, d, h, w = x.shape
    k, c = module.kernel_size, module.kernel_size // 2
    dev, dt = x.device, x.dtype
    shape = (n, k, d, h, w)
    zs = torch.arange(d, device=dev, dtype=dt).view(1, 1, d, 1, 1).expand(shape)
    ys = torch.arange(h, device=dev, dtype=dt).view(1, 1, 1, h, 1).expand(shape)
    xs = torch.arange(w, device=dev, dtype=dt).view(1, 1, 1, 1, w).expand(shape)
    line = torch.arange(-c, c + 1, device=dev, dtype=dt).view(1, k, 1, 1, 1)
    if module.morph == 0:
        xs = xs + line
    elif module.morph == 1:
        ys = ys + line
    else:
        zs = zs + line
    if module.if_offset:
        offset = module.offset_conv(x)
        norm = module.bn if module.offset_norm == "batch" else module.gn_offset
        offset = torch.tanh(norm(offset))
        z1, y1, x1, z2, y2, x2 = torch.split(offset, k, dim=1)
        s = module.extend_scope
        if module.morph == 0:  # along x: z and y of group 1
            zs = zs + loop_cumulative_offsets(z1) * s
            ys = ys + loop_cumulative_offsets(y1) * s
        elif module.morph == 1:  # along y: x of group 1, z of group 2
            xs = xs + loop_cumulative_offsets(x1) * s
            zs = zs + loop_cumulative_offsets(z2) * s
        else:  # along z: y and x of group 2
            ys = ys + loop_cumulative_offsets(y2) * s
            xs = xs + loop_cumulative_offsets(x2) * s

    def layout(t: torch.Tensor) -> torch.Tensor:
        # (N, K, D, H, W) -> the authors' sample layout, K samples of a voxel contiguous.
        if module.morph == 0:
            return t.permute(0, 2, 3, 4, 1).reshape(n, d, h, w * k)
        if module.morph == 1:
            return t.permute(0, 2, 3, 1, 4).reshape(n, d, h * k, w)
        return t.permute(0, 2, 1, 3, 4).reshape(n, d * k, h, w)

    deformed = trilinear_gather(x, layout(zs), layout(ys), layout(xs), module.padding_mode)
    conv = (module.dcn_conv_x, module.dcn_conv_y, module.dcn_conv_z)[module.morph]
    return module.relu(module.gn(conv(deformed)))


class DSConv3dReference(DSConv3d):
    """:class:`DSConv3d` whose forward is :func:`dsconv3d_reference` (same arguments, same parameter
    names, same state dict); for benchmarks and parity tests only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, D, H, W) -> (N, out_channels, D, H, W) via the gather-based path."""
        self._check_input(x)
        return dsconv3d_reference(self, x)
