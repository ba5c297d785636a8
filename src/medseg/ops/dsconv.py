"""Dynamic Snake Convolution (DSConv), 2D.

Source: Y. Qi, Y. He, X. Qi, Y. Zhang, G. Yang, "Dynamic Snake Convolution based on Topological
Geometric Constraints for Tubular Structure Segmentation", ICCV 2023, arXiv 2307.08388, Sec. 3.
Released code (github.com/YaoleiQi/DSCNet): ``DSCNet_2D_opensource/Code/DRIVE/DSCNet/S3_DSConv.py``
(the "original") and ``DSCNet_2D_opensource/Code/DRIVE/S3_DSConv_pro.py`` (the "pro" rewrite).
This is an independent implementation of the algorithm those files describe; parameter names and
shapes are the authors' so their state dicts load unchanged.

Algorithm, for an input ``x`` of shape (N, C, H, W) ("row" = dim 2 = y, "column" = dim 3 = x):

1. A 3x3 conv (bias, padding 1) maps C -> 2K channels, then a norm (BatchNorm2d(2K) in the
   original, GroupNorm(K, 2K) in pro) and tanh: raw offsets in (-1, 1) pixels. Channels
   ``0..K-1`` are row (y) offsets, ``K..2K-1`` column (x) offsets.
2. Morph 0 lays its K points along the columns (displacements ``-K//2 .. K//2``) and moves each
   point only in rows, with the first K channels; morph 1 lays them along the rows and moves them
   only in columns, with the last K channels. The other half of the offsets is unused.
3. The offsets are cumulative from the centre outward (the "snake"): the centre point's offset
   is 0, point ``c+i`` gets ``offset(c+i-1) + raw(c+i)`` and ``c-i`` gets
   ``offset(c-i+1) + raw(c-i)``, so a point ``i`` steps from the centre moves at most ``i``
   pixels. They are multiplied by ``extend_scope``.
4. The input is sampled bilinearly at the K positions of every pixel; the original lays the
   samples out as (N, C, K*H, W) (morph 0) or (N, C, H, K*W) (morph 1) and convolves them with
   ``dsc_conv_x`` (kernel and stride (K, 1), weight (out, C, K, 1)) or ``dsc_conv_y``
   ((1, K), weight (out, C, 1, K)), then GroupNorm(out // 4) and ReLU. Here (eager PyTorch)
   sampling and conv are one pass, :func:`medseg.ops.snake.snake_conv`: a point moves only across
   the kernel line, so its sample is a linear interpolation between two pixels of one column
   (morph 0) or row (morph 1), read channels-last, and the conv is one matrix product per kernel
   point, summed; the K-fold sampled map is never held and the backward is written for this
   structure. Export and TorchScript use the portable formulation (grid_sample, samples laid out
   (N, C, K, H, W), the weight viewed as (out, C*K) in one batched matrix product). Both give
   the same sums; the reference implementation (:mod:`medseg.ops.dsconv_reference`) keeps the
   original layout and strided conv, so the parity tests check the formulations against each
   other.

Deviations from the original ``S3_DSConv.py`` (all deliberate):

- The accumulation covers every point. The original 2D loop stops one step early, so its two
  outermost points keep a raw, non-cumulative offset that receives no gradient, and with K=3
  nothing accumulates at all. The fixed behaviour is that of the authors' 3D file, the pro file
  and their README. Implemented with ``torch.cumsum``, which has the same values and gradients as
  the authors' fixed loop.
- Sampling is correct for every sample of a batch. The original's gather index drops the batch
  offset, so with N > 1 every sample reads sample 0's features.
- Sampling is bilinear as grid_sample's (``align_corners=False``). The default
  ``padding_mode="zeros"`` is true bilinear zero padding: it equals the original at integer
  positions (offsets off), but not for fractional positions within one pixel outside the image.
  ``padding_mode="border"`` replicates the border, as pro does by clamping coordinates.
  ``padding_mode="original"`` reproduces the original's hand-written boundary exactly (values and
  gradients), :func:`original_boundary_positions`. The original (``DSC._bilinear_interpolate_3D``)
  reads its four neighbours at ``floor(t)`` and ``floor(t) + 1`` clamped to ``[0, size - 1]`` but
  weights them with those corners clamped to ``[0, size]``; per axis (rows and columns alike,
  ``size`` = H or W) that gives, for a position ``t`` in pixels: ``t < 0``: 0 (the two weights
  ``-t`` and ``t`` of pixel 0 cancel; so also within one pixel before the first row/column, where
  zero padding would give ``(1 + t) * x[0]``); ``0 <= t <= size - 1``: linear interpolation;
  ``size - 1 < t < size``: ``x[size - 1]`` (replicated, gradient 0 in ``t``); ``t >= size``: 0.
  The 2D sample is the product of the two axes' rules, so it is 0 when either coordinate falls in a
  zero range (verified against the authors' ``DSC`` class on random positions from 4 pixels before
  to 3 beyond the image, H, W in 1..13: max difference 2.4e-7). This is not a deviation; it is the
  original's arithmetic, written without its float cancellations.
- ``if_offset=False`` is honoured (rigid kernel; pro ignores it) and skips the offset branch,
  whose BatchNorm running statistics are then not updated (the original still computes it).
- ``offset_norm`` selects BatchNorm (original, module ``bn``) or GroupNorm (pro, module
  ``gn_offset``). Note that GroupNorm(K, 2K) normalises consecutive channel pairs, so for odd K
  one group mixes the last row channel with the first column channel; kept as in pro.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DSConv2d", "PADDING_MODES", "check_dsconv_arguments", "cumulative_offsets", "original_boundary_positions"]

#: Boundary rules of DSConv's sampling: "zeros" (grid_sample's zero padding), "border" (positions
#: clamped to the image, the pro file) and "original" (the original 2D/3D files' hand-written rule,
#: :func:`original_boundary_positions`).
PADDING_MODES = ("zeros", "border", "original")

#: Inputs with fewer elements (N*C*H*W) take the grid_sample formulation in eager mode too: below
#: it the per-point loop's fixed cost outweighs its savings (measured on a 2-core CPU, forward and
#: backward, K=9: (4, 32, 48, 48) 19.9 ms snake against 17.6 ms grid_sample, (4, 128, 12, 12) 16.3
#: against 9.3; (4, 16, 96, 96) 40 against 45, (1, 16, 256, 256) 74 against 148).
SNAKE_MIN_ELEMENTS = 2**18
_OFFSET_NORMS = ("batch", "group")
_MORPH_AXES = ("along x", "along y", "along z")


def check_dsconv_arguments(
    op: str,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    extend_scope: float,
    morph: int,
    n_morphs: int,
    offset_norm: str,
    padding_mode: str,
) -> None:
    """The argument checks :class:`DSConv2d` and :class:`medseg.ops.DSConv3d` share.

    Args:
        op: the operator's name for the messages ("DSConv2d", "DSConv3d").
        n_morphs: its number of morphs (2 in 2-D, 3 in 3-D).
        in_channels, out_channels, kernel_size, extend_scope, morph, offset_norm, padding_mode:
            as :class:`DSConv2d`.

    Raises:
        ValueError: naming the argument and the value: an even or < 3 ``kernel_size``, a ``morph``
            outside ``0 .. n_morphs - 1``, an unknown ``offset_norm`` / ``padding_mode``, a
            non-positive ``in_channels``, an ``out_channels`` the output GroupNorm (``out // 4``
            groups) cannot split, or a non-finite ``extend_scope``.
    """
    if not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(
            f"{op} kernel_size must be an odd integer >= 3 (the kernel needs a centre point), got {kernel_size!r}"
        )
    if morph not in range(n_morphs) or isinstance(morph, bool):
        names = [f"{m} ({_MORPH_AXES[m]})" for m in range(n_morphs)]
        raise ValueError(f"{op} morph must be {', '.join(names[:-1])} or {names[-1]}, got {morph!r}")
    if offset_norm not in _OFFSET_NORMS:
        raise ValueError(f"{op} offset_norm must be one of {_OFFSET_NORMS}, got {offset_norm!r}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"{op} padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"{op} in_channels must be a positive integer, got {in_channels!r}")
    if not isinstance(out_channels, int) or out_channels < 4 or out_channels % (out_channels // 4) != 0:
        raise ValueError(
            f"{op} out_channels={out_channels!r} cannot be split into out_channels // 4 GroupNorm groups; "
            "use a multiple of 4 (>= 4)"
        )
    if not math.isfinite(float(extend_scope)):
        raise ValueError(f"{op} extend_scope must be finite, got {extend_scope!r}")


def cumulative_offsets(raw: torch.Tensor) -> torch.Tensor:
    """Accumulate per-point offsets from the kernel centre outward (the "snake").

    Args:
        raw: (N, K, H, W) floating tensor, K odd: the raw offset of each kernel point, in pixels
            (in DSConv the tanh output, so in (-1, 1)).

    Returns:
        (N, K, H, W) tensor of the same dtype: ``out[:, c] = 0`` with ``c = K // 2``,
        ``out[:, c+i] = raw[:, c+1] + ... + raw[:, c+i]`` and
        ``out[:, c-i] = raw[:, c-i] + ... + raw[:, c-1]``. ``raw[:, c]`` is unused (gets no
        gradient); every other channel reaches the points at and beyond it.

    Raises:
        ValueError: K even or ``raw`` not 4-D.
    """
    if raw.dim() != 4 or raw.shape[1] % 2 == 0:
        raise ValueError(f"raw offsets must be (N, K, H, W) with K odd, got {tuple(raw.shape)}")
    c = raw.shape[1] // 2
    after = torch.cumsum(raw[:, c + 1 :], dim=1)
    before = torch.cumsum(raw[:, :c].flip(1), dim=1).flip(1)
    centre = raw.new_zeros((raw.shape[0], 1) + tuple(raw.shape[2:]))
    return torch.cat([before, centre, after], dim=1)


def original_boundary_positions(positions: torch.Tensor, size: int) -> torch.Tensor:
    """The authors' boundary rule along one axis, as positions for zero-padded interpolation.

    Source: ``DSC._bilinear_interpolate_3D`` in the authors' ``S3_DSConv.py`` (2D file
    ``DSCNet_2D_opensource/Code/DRIVE/DSCNet/``; the 3D file ``DSCNet_3D_opensource/Code/Kipa/
    DSCNet/`` does the same per axis, trilinearly). Along an axis of ``size`` pixels they read the
    neighbours ``floor(t)`` and ``floor(t) + 1`` clamped to ``[0, size - 1]`` and weight them by
    ``c1 - t`` and ``t - c0`` with the same corners clamped to ``[0, size]``. Per position ``t``
    (pixels, pixel centres at integers) the sample along that axis is therefore

    - ``t < 0``: 0 (both neighbours are pixel 0, with weights ``-t`` and ``t``);
    - ``0 <= t <= size - 1``: linear interpolation between ``floor(t)`` and ``floor(t) + 1``;
    - ``size - 1 < t < size``: pixel ``size - 1`` (weights ``size - t`` and ``t - size + 1`` on it);
    - ``t >= size``: 0 (both neighbours are pixel ``size - 1``, weights ``size - t`` and ``t - size``),

    and the gradient in ``t`` is the slope of that function (0 outside ``[0, size - 1)``, including
    at ``t = size - 1``). The N-D sample (bilinear, trilinear) is the product of the axes' rules.

    This function returns, per position, a position at which zero-padded linear interpolation
    (``F.grid_sample(..., padding_mode="zeros")`` after normalising, or any gather that gives
    neighbours outside ``[0, size - 1]`` the value 0) yields exactly that value and gradient: ``t``
    itself for ``0 <= t < size - 1``, the constant ``size - 1`` for ``size - 1 <= t < size``, and the
    constant -2 (both neighbours outside, so the whole N-D sample is 0) otherwise. Apply it to each
    spatial axis with that axis's size; it works for any number of spatial dims. Scriptable and
    ONNX-exportable (comparisons and ``Where``).

    Args:
        positions: floating tensor of any shape, positions in pixels along one axis (any values).
        size: the axis length in pixels (H, W or D), >= 1.

    Returns:
        Tensor of the shape and dtype of ``positions``; differentiable (gradient 1 where
        ``0 <= t < size - 1``, else 0).

    Raises:
        ValueError: ``size`` < 1.
    """
    if size < 1:
        raise ValueError("original_boundary_positions needs an axis size >= 1, got " + str(size))
    edge = torch.full_like(positions, float(size - 1))
    outside = torch.full_like(positions, -2.0)
    inside = (positions >= 0) & (positions < size)
    moving = (positions >= 0) & (positions < size - 1)
    return torch.where(moving, positions, torch.where(inside, edge, outside))


class DSConv2d(nn.Module):
    """Dynamic Snake Convolution, 2D (Qi et al., ICCV 2023, arXiv 2307.08388, Sec. 3).

    See the module docstring for the algorithm and every deviation from the authors' code
    (``S3_DSConv.py`` original, ``S3_DSConv_pro.py`` pro).

    Args:
        in_channels: input channels C.
        out_channels: output channels; must be >= 4 and divisible by ``out_channels // 4``
            (the output GroupNorm has ``out_channels // 4`` groups, as in the original).
        kernel_size: number of kernel points K, odd, >= 3 (9 in the paper).
        extend_scope: multiplier of the cumulative offsets (1.0 in the paper; a point ``i``
            steps from the centre then moves at most ``i * extend_scope`` pixels).
        morph: 0 = kernel along x (columns), points move in rows (y); 1 = kernel along y (rows),
            points move in columns (x).
        if_offset: False gives the rigid 1xK (morph 0) or Kx1 (morph 1) kernel; the offset
            parameters still exist (and load) but are unused.
        offset_norm: "batch" (BatchNorm2d(2K), module ``bn``, the original) or "group"
            (GroupNorm(K, 2K), module ``gn_offset``, the pro file).
        padding_mode: value of samples outside the image: "zeros" (bilinear zero padding; equal to
            the original at integer positions), "border" (replicate the border pixel, pro) or
            "original" (the original file's exact rule, per axis: 0 before pixel 0, linear
            interpolation inside, the last pixel replicated up to one pixel beyond it, 0 further out;
            :func:`original_boundary_positions`). Use "original" for state dicts trained with
            ``S3_DSConv.py``.

    Submodules (the authors' names): ``offset_conv`` (Conv2d C->2K, 3x3, bias), ``bn`` or
    ``gn_offset``, ``dsc_conv_x`` (Conv2d C->out, kernel/stride (K, 1), weight (out, C, K, 1);
    used by morph 0), ``dsc_conv_y`` (kernel/stride (1, K), weight (out, C, 1, K); used by
    morph 1), ``gn`` (GroupNorm(out // 4, out)). Both axis convs are allocated, as in the
    original, so the unused one never receives a gradient.

    Shapes: (N, in_channels, H, W) -> (N, out_channels, H, W), any H, W >= 1, non-negative
    values (after ReLU). float32/float64 inputs are processed in their dtype; float16/bfloat16
    inputs are sampled in float32 (normalised coordinates need more than 8-11 bits) and cast
    back.

    Raises:
        ValueError: at construction for an even or < 3 ``kernel_size``, a ``morph`` other than
            0/1, an unknown ``offset_norm``/``padding_mode`` or an ``out_channels`` the
            GroupNorm cannot split; in ``forward`` for a non-4-D input or a wrong channel count.
    """

    #: Eager forward by :func:`medseg.ops.snake.snake_conv` (True) or by the portable grid_sample
    #: formulation (False; what export uses; kept selectable for benchmarks/dsconv.py).
    use_snake_conv: bool = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 9,
        extend_scope: float = 1.0,
        morph: int = 0,
        if_offset: bool = True,
        offset_norm: str = "batch",
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        check_dsconv_arguments(
            "DSConv2d", in_channels, out_channels, kernel_size, extend_scope, morph, 2, offset_norm, padding_mode
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

        self.offset_conv = nn.Conv2d(in_channels, 2 * k, 3, padding=1)
        if offset_norm == "batch":
            self.bn = nn.BatchNorm2d(2 * k)
        else:
            self.gn_offset = nn.GroupNorm(k, 2 * k)
        self.dsc_conv_x = nn.Conv2d(in_channels, out_channels, (k, 1), stride=(k, 1))
        self.dsc_conv_y = nn.Conv2d(in_channels, out_channels, (1, k), stride=(1, k))
        self.gn = nn.GroupNorm(out_channels // 4, out_channels)
        self.relu = nn.ReLU(inplace=True)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"extend_scope={self.extend_scope}, morph={self.morph}, if_offset={self.if_offset}, "
            f"offset_norm={self.offset_norm!r}, padding_mode={self.padding_mode!r}"
        )

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"DSConv2d expects (N, {self.in_channels}, H, W), got {tuple(x.shape)}")

    def snake_offsets(self, x: torch.Tensor) -> torch.Tensor | None:
        """Cumulative offsets of the K points, in pixels, perpendicular to the kernel line.

        Args:
            x: (N, in_channels, H, W) input.

        Returns:
            (N, K, H, W) tensor (float32, or float64 for a float64 input), already multiplied by
            ``extend_scope``: row displacements for morph 0, column displacements for morph 1;
            the centre channel is 0. None when ``if_offset`` is False. Runs the offset branch,
            so in training mode BatchNorm running statistics are updated.
        """
        if not self.if_offset:
            return None
        k = self.kernel_size
        offset = self.offset_conv(x)
        offset = self.bn(offset) if self.offset_norm == "batch" else self.gn_offset(offset)
        offset = torch.tanh(offset)
        raw = offset[:, :k] if self.morph == 0 else offset[:, k:]
        raw = raw.to(torch.promote_types(raw.dtype, torch.float32))
        return cumulative_offsets(raw) * self.extend_scope

    def _pixel_coordinates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, cols) of the sampled points, each broadcastable to (N, K, H, W), pixels."""
        n, _, h, w = x.shape
        k, c = self.kernel_size, self.kernel_size // 2
        shift = self.snake_offsets(x)
        dtype = shift.dtype if shift is not None else torch.promote_types(x.dtype, torch.float32)
        rows = torch.arange(h, dtype=dtype, device=x.device).view(1, 1, h, 1)
        cols = torch.arange(w, dtype=dtype, device=x.device).view(1, 1, 1, w)
        line = torch.arange(-c, c + 1, dtype=dtype, device=x.device).view(1, k, 1, 1)
        if self.morph == 0:
            cols = cols + line
            if shift is not None:
                rows = rows + shift
        else:
            rows = rows + line
            if shift is not None:
                cols = cols + shift
        return rows, cols

    def kernel_coordinates(self, x: torch.Tensor) -> torch.Tensor:
        """Positions of the K sampled points of every output pixel.

        Args:
            x: (N, in_channels, H, W) input.

        Returns:
            (N, K, H, W, 2) float32: ``[..., 0]`` the row (y) and ``[..., 1]`` the column (x),
            in input pixel units (pixel centres at integers 0..H-1 / 0..W-1; positions may lie
            outside the image). With ``if_offset=False`` this is the rigid grid
            ``(h, w + k - K//2)`` (morph 0) or ``(h + k - K//2, w)`` (morph 1). Carries autograd
            history when called with grad enabled; in training mode the offset BatchNorm updates
            its running statistics (call in eval mode for visualisation).

        Raises:
            ValueError: wrong input shape.
        """
        self._check_input(x)
        n, _, h, w = x.shape
        rows, cols = self._pixel_coordinates(x)
        shape = (n, self.kernel_size, h, w)
        return torch.stack([rows.expand(shape), cols.expand(shape)], dim=-1).float()

    def sample(self, x: torch.Tensor) -> torch.Tensor:
        """Bilinear samples of ``x`` at the K kernel points of every pixel.

        Args:
            x: (N, C, H, W) input.

        Returns:
            (N, C, K, H, W), dtype of ``x``: ``[:, :, k, h, w]`` is ``x`` interpolated at
            ``kernel_coordinates(x)[:, k, h, w]``, outside the image by ``padding_mode`` (for
            "original" the positions go through :func:`original_boundary_positions` first, then
            grid_sample with zero padding). (The original lays the same values out as
            (N, C, K*H, W) for morph 0, row ``h*K + k``, or (N, C, H, K*W) for morph 1, column
            ``w*K + k``; see :mod:`medseg.ops.dsconv_reference`.)

        Raises:
            ValueError: wrong input shape.
        """
        self._check_input(x)
        n, c_in, h, w = x.shape
        k = self.kernel_size
        rows, cols = self._pixel_coordinates(x)
        if self.padding_mode == "original":
            rows = original_boundary_positions(rows, h)
            cols = original_boundary_positions(cols, w)
        shape = (n, k, h, w)
        # grid_sample with align_corners=False: pixel p <-> normalised (2p + 1) / size - 1
        # (also defined for size 1, unlike align_corners=True).
        gy = ((2 * rows + 1) / h - 1).expand(shape)
        gx = ((2 * cols + 1) / w - 1).expand(shape)
        grid = torch.stack([gx, gy], dim=-1).reshape(n, k * h, w, 2)  # (x, y) order
        src = x if x.dtype in (torch.float32, torch.float64) else x.float()
        out = F.grid_sample(
            src,
            grid.to(src.dtype),
            mode="bilinear",
            padding_mode="zeros" if self.padding_mode == "original" else self.padding_mode,
            align_corners=False,
        )
        return out.to(x.dtype).view(n, c_in, k, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H, W), values >= 0 (after ReLU).

        Eager PyTorch (with ``use_snake_conv``, the default, for inputs of at least
        :data:`SNAKE_MIN_ELEMENTS` elements) runs the sampling and the axis conv as one pass that never holds the
        K-fold sampled map (:func:`medseg.ops.snake.snake_conv`: two-pixel line interpolation,
        one matrix product per kernel point, a backward written for that structure). Under
        ``torch.jit`` scripting or tracing and ONNX export it runs the portable formulation
        instead (:meth:`sample`, grid_sample, then one batched matrix product of the weight viewed
        as (out, C*K) with the samples viewed as (N, C*K, H*W)). Both give the original's sums
        (its strided (K, 1) / (1, K) conv over the (N, C, K*H, W) / (N, C, H, K*W) layout) up to
        float rounding.
        """
        if (
            torch.jit.is_scripting()
            or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export()
            or not self.use_snake_conv
            or x.numel() < SNAKE_MIN_ELEMENTS
        ):
            out = self._sampled_conv(x)
        else:
            out = self._snake_conv(x)
        return self.relu(self.gn(out))

    def _axis_conv(self) -> nn.Conv2d:
        return self.dsc_conv_x if self.morph == 0 else self.dsc_conv_y

    def _sampled_conv(self, x: torch.Tensor) -> torch.Tensor:
        """The axis conv over :meth:`sample`'s (N, C, K, H, W) map, (N, out, H, W)."""
        deformed = self.sample(x)
        n, c_in, k, h, w = deformed.shape
        conv = self._axis_conv()
        weight = conv.weight.reshape(1, self.out_channels, c_in * k)
        bias = conv.bias.view(1, self.out_channels, 1)
        out = torch.baddbmm(bias, weight.expand(n, -1, -1), deformed.reshape(n, c_in * k, h * w))
        return out.view(n, self.out_channels, h, w)

    @torch.jit.unused
    def _snake_conv(self, x: torch.Tensor) -> torch.Tensor:
        """The axis conv by :func:`medseg.ops.snake.snake_conv`, (N, out, H, W), dtype of ``x``
        (float16/bfloat16 computed in float32, autocast off inside)."""
        from medseg.ops.snake import snake_conv

        self._check_input(x)
        n, _, h, w = x.shape
        shift = self.snake_offsets(x)
        src = x if x.dtype in (torch.float32, torch.float64) else x.float()
        if shift is None:
            shift = src.new_zeros((n, self.kernel_size, h, w))
        conv = self._axis_conv()
        weight = conv.weight.reshape(self.out_channels, self.in_channels, self.kernel_size)
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = snake_conv(
                src, shift.to(src.dtype), weight.to(src.dtype), conv.bias.to(src.dtype), self.morph, self.padding_mode
            )
        return out.to(x.dtype)
