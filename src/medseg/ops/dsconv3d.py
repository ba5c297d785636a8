"""Dynamic Snake Convolution (DSConv), 3D.

Source: Y. Qi, Y. He, X. Qi, Y. Zhang, G. Yang, "Dynamic Snake Convolution based on Topological
Geometric Constraints for Tubular Structure Segmentation", ICCV 2023, arXiv 2307.08388, Sec. 3
(the paper describes the 2D operator; the 3D one exists only as code). Released code
(github.com/YaoleiQi/DSCNet, commit d453499): ``DSCNet_3D_opensource/Code/Kipa/DSCNet/S3_DSConv.py``,
class ``DCN_Conv`` and its helper class ``DCN``. This is an independent implementation of the
algorithm that file describes; parameter names and shapes are the authors', so a state dict of
their ``DCN_Conv`` loads unchanged (``strict=True``).

Axes. Inputs are (N, C, D, H, W); z = dim 2 (D), y = dim 3 (H), x = dim 4 (W), in voxels, voxel
centres at integers. (The authors name the same dims (N, C, D, W, H): their "width" is our H and
their "height" our W; their z/y/x are ours.)

Algorithm, for an input of shape (N, C, D, H, W) and K kernel points (c = K // 2):

1. Offsets: ``offset_conv`` (Conv3d C -> 6K, 3x3x3, padding 1, bias), a norm (BatchNorm3d(6K),
   module ``bn``, as the authors; or GroupNorm(K, 6K), module ``gn_offset``), tanh: raw offsets in
   (-1, 1) voxels. The 6K channels are six blocks of K, in the authors' split order:
   block 0 = z (group 1), 1 = y (group 1), 2 = x (group 1), 3 = z (group 2), 4 = y (group 2),
   5 = x (group 2); block b holds channels ``b*K .. b*K+K-1``, one per kernel point.
2. The K points lie on a line through the voxel, displacements ``-c .. c`` along the kernel axis,
   and move only in the two perpendicular axes, with these blocks (read from the authors' code):

   =====  ===========  ===================  ===================  ===================
   morph  kernel axis  moves z with         moves y with         moves x with
   =====  ===========  ===================  ===================  ===================
   0      x (W)        block 0 (0..K-1)     block 1 (K..2K-1)    --
   1      y (H)        block 3 (3K..4K-1)   --                   block 2 (2K..3K-1)
   2      z (D)        --                   block 4 (4K..5K-1)   block 5 (5K..6K-1)
   =====  ===========  ===================  ===================  ===================

   The other four blocks (4K channels) are unused by a given module.
3. Snake accumulation from the centre outward, per moved axis: point c gets 0, point ``c+i`` gets
   ``offset(c+i-1) + raw(c+i)`` and ``c-i`` gets ``offset(c-i+1) + raw(c-i)`` for every
   ``i = 1 .. c`` (:func:`medseg.ops.dsconv.cumulative_offsets`), times ``extend_scope``. A point
   ``i`` steps from the centre thus moves at most ``i * extend_scope`` voxels in each moved axis.
4. The input is sampled trilinearly at the K points of every voxel (as :func:`trilinear_sample`:
   ``F.grid_sample`` on the 5-D input, all voxels and samples at once). The authors lay the samples
   out as (N, C, D, H, K*W) (morph 0, column ``w*K + k``), (N, C, D, K*H, W) (morph 1) or
   (N, C, K*D, H, W) (morph 2) and convolve with ``dcn_conv_x`` (kernel = stride = (1, 1, K)),
   ``dcn_conv_y`` ((1, K, 1)) or ``dcn_conv_z`` ((K, 1, 1)), no padding. Here the samples are held
   as (N, C, K, D, H, W) and the same weight, viewed as (out, C*K), is applied as one batched matrix
   product: the same sums (the parity tests check it against :mod:`medseg.ops.dsconv3d_reference`,
   which keeps the authors' layout and strided conv). Then GroupNorm(out // 4, out) (``gn``) and
   ReLU, as the authors.

Deviations from the authors' ``S3_DSConv.py`` (each confirmed by running their code on CPU):

- Morph 2 zeroes the centre point of both moved axes. The authors zero the centre of
  ``x_offset2`` twice and never that of ``y_offset2``, so the whole z-kernel is shifted in y by the
  raw (detached, gradient-free) centre offset, channel 4K + c (measured: with only that channel's
  raw offset tanh(0.5) = 0.462 set, all three points of a K=3 kernel sat 0.462 voxels off in y).
- ``if_offset=False`` gives the rigid (1, 1, K) / (1, K, 1) / (K, 1, 1) convolution (zero padding;
  replicate for "border"). In the authors' morph 0 the reshape of the coordinates into the sample layout sits inside
  the ``if_offset`` branch, so with offsets off the samples are silently scrambled (measured: max
  difference 3.6 from the rigid conv on unit-variance input; morphs 1 and 2 are correct). Here the
  offset branch is also skipped (the authors still run it, updating BatchNorm running statistics),
  and the rigid case is computed by ``F.conv3d`` directly.
- Indexing is exact for any volume. The authors build the flat gather index in float32, so beyond
  2**24 voxels of N*D*H*W it reads neighbouring voxels (measured on (2, 1, 160, 256, 256): 2,097,152
  voxels of sample 1 read from the wrong place) and at the last voxel raises IndexError.
- ``padding_mode`` chooses the boundary: "zeros" (default) is true trilinear zero padding;
  "border" replicates the border voxel; "original" is the authors' hand-written boundary, which per
  axis of size S reads 0 for a position p < 0 (including -1 < p < 0) and for p >= S, and the last
  slice S-1 for S-1 <= p < S (their neighbour indices are clamped to [0, S-1] but the interpolation
  corners to [0, S]); the three axes combine as a product (verified against their
  ``_bilinear_interpolate_3D`` to 1e-7 at random positions; applied per axis with
  :func:`medseg.ops.dsconv.original_boundary_positions`, shared with :class:`DSConv2d`). With that
  mode, and morph 2's unzeroed centre channel held at 0, this module matches their ``DCN_Conv`` on
  CPU in float32 to 4e-6 in the output and 8e-6 / 5e-5 in the gradients of the input / offset conv
  weight (whose magnitudes reach 14 / 93; K = 3, 5, 9, batch 2, extend_scope 1.7-2.5, about half the
  points outside the volume). All three modes agree at integer positions inside the volume, "zeros" and "original" at every
  integer position.
- Coordinates are computed in the input's precision (float64 for float64 inputs; the authors cast to
  float32). float16/bfloat16 inputs are sampled in float32 and cast back, as in
  :class:`medseg.ops.DSConv2d`.
- ``offset_norm="group"`` (GroupNorm(K, 6K), K groups as in the authors' 2D ``S3_DSConv_pro.py``) is
  a medseg option; the authors' 3D file only has BatchNorm3d. The ``device`` argument is dropped.
- Kept as the authors (for state-dict and parameter-count parity): the full K x K x K conv
  ``dcn_conv`` (kernel = stride = K) is allocated but never used, and so are the two axis convs of
  the other morphs; they receive no gradient.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.ops.dsconv import PADDING_MODES, check_dsconv_arguments, cumulative_offsets, original_boundary_positions

__all__ = ["DSConv3d", "trilinear_sample", "OFFSET_BLOCKS", "KERNEL_AXIS"]


#: morph -> the axis (0 = z, 1 = y, 2 = x) along which its K points lie.
KERNEL_AXIS = {0: 2, 1: 1, 2: 0}

#: morph -> {moved axis (0 = z, 1 = y, 2 = x): offset block b (channels b*K .. b*K+K-1 of the 6K)},
#: as in the authors' ``_coordinate_map_3D``.
OFFSET_BLOCKS = {0: {0: 0, 1: 1}, 1: {0: 3, 2: 2}, 2: {1: 4, 2: 5}}


#: grid_sample's padding mode per medseg padding mode ("original" remaps positions, then zero pads).
_GRID_MODE = {"zeros": "zeros", "border": "border", "original": "zeros"}


def _normalised(
    p: torch.Tensor, size: int, padding_mode: str, shift: torch.Tensor | None = None, scale: float = 1.0
) -> torch.Tensor:
    """grid_sample coordinate (align_corners=False: voxel p <-> (2p + 1) / size - 1) of the voxel
    position ``p + scale * shift`` along one axis of ``size`` voxels. For "original" the position is
    first remapped by :func:`medseg.ops.dsconv.original_boundary_positions` (the authors' rule as
    positions for zero padding: p on [0, S-1), the constant S-1 on [S-1, S), far outside otherwise)."""
    if padding_mode == "original":
        if shift is not None:
            p = torch.add(p, shift, alpha=scale)
        return original_boundary_positions(p, size) * (2.0 / size) + (1.0 / size - 1.0)
    g = p * (2.0 / size) + (1.0 / size - 1.0)
    return g if shift is None else torch.add(g, shift, alpha=2.0 * scale / size)


def trilinear_sample(x: torch.Tensor, coords: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Trilinear interpolation of a volume at arbitrary voxel positions (``F.grid_sample``).

    Args:
        x: (N, C, D, H, W) float32/float64 tensor.
        coords: (N, P, Q, R, 3) positions in voxels, last dim (z, y, x), voxel centres at integers
            (z = 0 .. D-1 etc.); any finite values, outside the volume allowed. Cast to ``x``'s dtype.
        padding_mode: value read outside the volume, see the module docstring: "zeros" (zero
            padding), "border" (the position is clamped to [0, S-1] per axis: replicate), or
            "original" (the authors' rule per axis of size S: 0 for p < 0 or p >= S, the last slice
            for S-1 <= p < S).

    Returns:
        (N, C, P, Q, R), dtype of ``x``; differentiable w.r.t. ``x`` and ``coords`` (for
        "original" the gradient w.r.t. a position is 0 where the value is constant, as in the
        authors' code; the rule is applied per axis by
        :func:`medseg.ops.dsconv.original_boundary_positions`, shared with :class:`DSConv2d`).

    Raises:
        ValueError: wrong shapes or an unknown ``padding_mode``.
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if x.dim() != 5 or coords.dim() != 5 or coords.shape[-1] != 3 or coords.shape[0] != x.shape[0]:
        raise ValueError(
            f"trilinear_sample expects x (N, C, D, H, W) and coords (N, P, Q, R, 3), got {tuple(x.shape)} "
            f"and {tuple(coords.shape)}"
        )
    coords = coords.to(x.dtype)
    sizes = x.shape[2:]
    grid = torch.stack([_normalised(coords[..., a], sizes[a], padding_mode) for a in (2, 1, 0)], dim=-1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode=_GRID_MODE[padding_mode], align_corners=False)
    return out


class DSConv3d(nn.Module):
    """Dynamic Snake Convolution, 3D (Qi et al., ICCV 2023; authors' ``DCN_Conv`` in
    ``DSCNet_3D_opensource/Code/Kipa/DSCNet/S3_DSConv.py``).

    See the module docstring for the algorithm, the offset channels each morph uses and every
    deviation from the authors' code (their bugs are fixed).

    Args:
        in_channels: input channels C (>= 1).
        out_channels: output channels; must be >= 4 and divisible by ``out_channels // 4`` (the
            output GroupNorm has ``out_channels // 4`` groups, as the authors').
        kernel_size: number of kernel points K, odd, >= 3 (the authors' 3D DSCNet hard-codes 3).
        extend_scope: finite multiplier of the cumulative offsets (1.0 in the authors' code; a point
            ``i`` steps from the centre moves at most ``i * extend_scope`` voxels per moved axis).
        morph: 0 = kernel along x (W), points move in z and y; 1 = along y (H), moving in z and x;
            2 = along z (D), moving in y and x.
        if_offset: False gives the rigid (1, 1, K) / (1, K, 1) / (K, 1, 1) kernel (the offset
            parameters still exist and load, but are unused).
        offset_norm: "batch" (BatchNorm3d(6K), module ``bn``, the authors') or "group"
            (GroupNorm(K, 6K), module ``gn_offset``).
        padding_mode: "zeros" (trilinear zero padding), "border" (replicate) or "original" (the
            authors' boundary); see :func:`trilinear_sample`.

    Submodules (the authors' names): ``offset_conv`` (Conv3d C -> 6K, 3x3x3, padding 1, bias),
    ``bn`` or ``gn_offset``, ``dcn_conv_x`` (Conv3d C -> out, kernel/stride (1, 1, K); morph 0),
    ``dcn_conv_y`` ((1, K, 1); morph 1), ``dcn_conv_z`` ((K, 1, 1); morph 2), ``dcn_conv`` (K x K x K,
    stride K; never used, kept for parity), ``gn`` (GroupNorm(out // 4, out)), ``relu``. Registered
    parameters: ``6K(27C + 1) + 2*6K + 3*out*(C*K + 1) + out*(C*K**3 + 1) + 2*out`` (batch norm),
    e.g. 3,198 for C=4, out=8, K=3, equal to the authors' ``DCN_Conv``.

    Shapes: (N, in_channels, D, H, W) -> (N, out_channels, D, H, W), any D, H, W >= 1, values >= 0
    (after ReLU). float32/float64 inputs are processed in their dtype; float16/bfloat16 inputs are
    sampled in float32 and cast back.

    Raises:
        ValueError: at construction for a bad ``kernel_size``, ``morph``, ``offset_norm``,
            ``padding_mode``, ``extend_scope``, ``in_channels`` or an ``out_channels`` the GroupNorm
            cannot split; in ``forward`` (and the other methods taking ``x``) for a non-5-D,
            non-floating or empty input or a wrong channel count.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        extend_scope: float = 1.0,
        morph: int = 0,
        if_offset: bool = True,
        offset_norm: str = "batch",
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        check_dsconv_arguments(
            "DSConv3d", in_channels, out_channels, kernel_size, extend_scope, morph, 3, offset_norm, padding_mode
        )
        k = kernel_size
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = k
        self.extend_scope = float(extend_scope)
        self.morph = morph
        self.if_offset = bool(if_offset)
        self.offset_norm = offset_norm
        self.padding_mode = padding_mode

        # Registration order as the authors' (state-dict key order).
        self.offset_conv = nn.Conv3d(in_channels, 6 * k, 3, padding=1)
        if offset_norm == "batch":
            self.bn = nn.BatchNorm3d(6 * k)
        else:
            self.gn_offset = nn.GroupNorm(k, 6 * k)
        self.dcn_conv_x = nn.Conv3d(in_channels, out_channels, (1, 1, k), stride=(1, 1, k))
        self.dcn_conv_y = nn.Conv3d(in_channels, out_channels, (1, k, 1), stride=(1, k, 1))
        self.dcn_conv_z = nn.Conv3d(in_channels, out_channels, (k, 1, 1), stride=(k, 1, 1))
        self.dcn_conv = nn.Conv3d(in_channels, out_channels, k, stride=k)  # unused, as the authors'
        self.gn = nn.GroupNorm(out_channels // 4, out_channels)
        self.relu = nn.ReLU(inplace=True)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"extend_scope={self.extend_scope}, morph={self.morph}, if_offset={self.if_offset}, "
            f"offset_norm={self.offset_norm!r}, padding_mode={self.padding_mode!r}"
        )

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"DSConv3d expects (N, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"DSConv3d expects a floating-point input, got {x.dtype}")
        if x.numel() == 0:
            raise ValueError(f"DSConv3d got an empty input {tuple(x.shape)}")

    def axis_conv(self) -> nn.Conv3d:
        """The axis conv this morph uses: ``dcn_conv_x`` (0), ``dcn_conv_y`` (1) or ``dcn_conv_z`` (2)."""
        return (self.dcn_conv_x, self.dcn_conv_y, self.dcn_conv_z)[self.morph]

    def _cumulative(self, x: torch.Tensor) -> dict[int, torch.Tensor] | None:
        """Moved axis (0 = z, 1 = y, 2 = x) -> (N, K, D, H, W) cumulative raw offsets (before
        ``extend_scope``), float32 or float64; None without offsets. Runs the offset branch."""
        if not self.if_offset:
            return None
        k = self.kernel_size
        offset = self.offset_conv(x)
        offset = self.bn(offset) if self.offset_norm == "batch" else self.gn_offset(offset)
        offset = torch.tanh(offset)
        n, _, d, h, w = offset.shape
        dtype = torch.promote_types(offset.dtype, torch.float32)
        out = {}
        for axis, block in OFFSET_BLOCKS[self.morph].items():
            raw = offset[:, block * k : (block + 1) * k].to(dtype)
            out[axis] = cumulative_offsets(raw.reshape(n, k, d, h * w)).view(n, k, d, h, w)
        return out

    def _rigid(self, x: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
        """Rigid kernel positions (z, y, x) in voxels, broadcastable to (N, K, D, H, W)."""
        d, h, w = x.shape[2:]
        c = self.kernel_size // 2
        dev = x.device
        base = [
            torch.arange(d, dtype=dtype, device=dev).view(1, 1, d, 1, 1),
            torch.arange(h, dtype=dtype, device=dev).view(1, 1, 1, h, 1),
            torch.arange(w, dtype=dtype, device=dev).view(1, 1, 1, 1, w),
        ]
        axis = KERNEL_AXIS[self.morph]
        base[axis] = base[axis] + torch.arange(-c, c + 1, dtype=dtype, device=dev).view(1, -1, 1, 1, 1)
        return base

    def _dtype(self, x: torch.Tensor, cum: dict[int, torch.Tensor] | None) -> torch.dtype:
        return next(iter(cum.values())).dtype if cum else torch.promote_types(x.dtype, torch.float32)

    def snake_offsets(self, x: torch.Tensor) -> torch.Tensor | None:
        """Cumulative displacements of the K points, in voxels.

        Args:
            x: (N, in_channels, D, H, W) input.

        Returns:
            (N, 3, K, D, H, W) tensor (float32, or float64 for a float64 input), already multiplied
            by ``extend_scope``: ``[:, a, k]`` is point k's displacement along axis a (0 = z,
            1 = y, 2 = x); the kernel axis (:data:`KERNEL_AXIS`) and the centre point are 0. None
            when ``if_offset`` is False. Runs the offset branch, so in training mode BatchNorm
            running statistics are updated.

        Raises:
            ValueError: wrong input shape or dtype.
        """
        self._check_input(x)
        cum = self._cumulative(x)
        if cum is None:
            return None
        some = next(iter(cum.values()))
        axes = [cum[a] * self.extend_scope if a in cum else torch.zeros_like(some) for a in range(3)]
        return torch.stack(axes, dim=1)

    def kernel_coordinates(self, x: torch.Tensor) -> torch.Tensor:
        """Positions of the K sampled points of every output voxel.

        Args:
            x: (N, in_channels, D, H, W) input.

        Returns:
            (N, K, D, H, W, 3) float32 (float64 for a float64 input): ``[..., 0]`` z, ``[..., 1]``
            y, ``[..., 2]`` x, in input voxels (centres at integers; positions may lie outside the
            volume). With ``if_offset=False`` the rigid grid, e.g. ``(d, h, w + k - K//2)`` for
            morph 0. Carries autograd history when grad is enabled; in training mode the offset
            BatchNorm updates its running statistics (call in eval mode for visualisation).

        Raises:
            ValueError: wrong input shape or dtype.
        """
        self._check_input(x)
        n, _, d, h, w = x.shape
        cum = self._cumulative(x)
        base = self._rigid(x, self._dtype(x, cum))
        shape = (n, self.kernel_size, d, h, w)
        pos = []
        for a in range(3):
            p = base[a] if cum is None or a not in cum else torch.add(base[a], cum[a], alpha=self.extend_scope)
            pos.append(p.expand(shape))
        return torch.stack(pos, dim=-1)

    def sample(self, x: torch.Tensor) -> torch.Tensor:
        """Trilinear samples of ``x`` at the K kernel points of every voxel.

        Args:
            x: (N, C, D, H, W) input.

        Returns:
            (N, C, K, D, H, W), dtype of ``x``: ``[:, :, k, d, h, w]`` is ``x`` interpolated at
            ``kernel_coordinates(x)[:, k, d, h, w]`` with this module's ``padding_mode`` (what
            :func:`trilinear_sample` computes; here the grid is built per axis without holding the
            voxel positions). The authors lay the same values out as (N, C, D, H, K*W),
            (N, C, D, K*H, W) or (N, C, K*D, H, W); see :mod:`medseg.ops.dsconv3d_reference`.

        Raises:
            ValueError: wrong input shape or dtype.
        """
        self._check_input(x)
        n, c_in, d, h, w = x.shape
        k = self.kernel_size
        cum = self._cumulative(x)
        base = self._rigid(x, self._dtype(x, cum))
        sizes = (d, h, w)
        shape = (n, k, d, h, w)
        comps = []
        for a in (2, 1, 0):  # grid_sample wants (x, y, z)
            shift = None if cum is None else cum.get(a)
            comps.append(_normalised(base[a], sizes[a], self.padding_mode, shift, self.extend_scope).expand(shape))
        src = x if x.dtype in (torch.float32, torch.float64) else x.float()
        grid = torch.stack(comps, dim=-1).reshape(n, k * d, h, w, 3).to(src.dtype)
        mode = _GRID_MODE[self.padding_mode]
        out = F.grid_sample(src, grid, mode="bilinear", padding_mode=mode, align_corners=False)
        return out.to(x.dtype).view(n, c_in, k, d, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, D, H, W) -> (N, out_channels, D, H, W), values >= 0 (after ReLU).

        With offsets: :meth:`sample`, then the axis conv's weight viewed as (out, C*K) in one batched
        matrix product with the samples viewed as (N, C*K, D*H*W), i.e. the authors' strided conv
        over their sample layout; then ``gn`` and ReLU. Without offsets (``if_offset=False``):
        ``F.conv3d`` with the same weight and padding K // 2 along the kernel axis (zeros, or
        replicate for ``padding_mode="border"``; "original" equals zero padding at integer
        positions), then ``gn`` and ReLU.

        Raises:
            ValueError: wrong input shape or dtype.
        """
        self._check_input(x)
        conv = self.axis_conv()
        if not self.if_offset:
            c = self.kernel_size // 2
            pad = [0] * 6  # F.pad order: (x lo, x hi, y lo, y hi, z lo, z hi)
            slot = 2 * (2 - KERNEL_AXIS[self.morph])
            pad[slot] = pad[slot + 1] = c
            mode = "replicate" if self.padding_mode == "border" else "constant"
            out = F.conv3d(F.pad(x, pad, mode=mode), conv.weight, conv.bias)  # stride 1: a sliding conv
            return self.relu(self.gn(out))
        deformed = self.sample(x)
        n, c_in, k, d, h, w = deformed.shape
        weight = conv.weight.reshape(1, self.out_channels, c_in * k)
        bias = conv.bias.view(1, self.out_channels, 1)
        out = torch.baddbmm(bias, weight.expand(n, -1, -1), deformed.reshape(n, c_in * k, d * h * w))
        return self.relu(self.gn(out.view(n, self.out_channels, d, h, w)))
