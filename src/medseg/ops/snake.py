"""The sampling and axis convolution of :class:`medseg.ops.DSConv2d` as one custom autograd
Function, written for DSConv's structure (Qi et al., ICCV 2023, Sec. 3): a morph-0 point moves
only along rows at an integer column (morph 1: along columns at an integer row), so its bilinear
sample is a linear interpolation between two pixels of one column (row): two reads and one weight,
not grid_sample's four reads and two weights.

Layout: channels first. The input is padded by K//2 along the kernel line (zeros, or the border
replicated), so point k reads a shifted view of it; its two pixels are read by ``torch.gather``
along the axis it moves on, with one index per pixel broadcast over channels, and its samples
enter one matrix product with the axis conv's weight for that point, the sums accumulated channels
last. The points are taken one at a time into reused buffers, so the K-times-larger sampled map
(N, C, K, H, W) is never held: the forward pass keeps the input and six (N, K, H, W) maps (two
indices, two weights, two slopes); the backward pass recomputes each point's samples.

Measured (benchmarks/dsconv.py, 2-core CPU): the gathers take about half the time and the products
most of the rest; a fused kernel that reads each pixel once for all K points would remove the
first, and pure PyTorch has none (the CPU path must install without a compiler).
Boundary: ``padding_mode="zeros"`` gives a neighbour outside the image the value 0 (grid_sample's
``zeros``); ``"border"`` clamps the position to [0, size - 1] first (grid_sample's ``border``);
``"original"`` is the authors' ``S3_DSConv.py`` rule (:func:`medseg.ops.dsconv.original_boundary_positions`):
along the kernel line the positions are integers, where it equals zero padding; across it a position
``t`` reads 0 for ``t < 0`` and ``t >= size``, the last pixel for ``size - 1 < t < size`` (gradient 0
in ``t``) and interpolates inside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medseg.ops.dsconv import original_boundary_positions

__all__ = ["TENT_MAX_TERMS", "line_taps", "snake_conv"]


def line_taps(
    shift: torch.Tensor, size: tuple[int, int], morph: int, padding_mode: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two pixels each kernel point interpolates between, along the axis it moves on.

    Args:
        shift: (N, K, H, W) float32/float64 displacements in pixels across the kernel line (rows
            for morph 0, columns for morph 1); K odd.
        size: (H, W) of the input.
        morph: 0 (line along columns, points move in rows) or 1 (line along rows, move in columns).
        padding_mode: "zeros", "border" or "original".

    Returns:
        ``(index0, index1, weight0, weight1, slope0, slope1)``, each (N, K, H, W): the int64 row
        (morph 0) or column (morph 1) of the two pixels, clamped into the image; their float
        weights (``weight0 + weight1`` is 1 inside the image and less where a neighbour lies
        outside, zero padding; both 0 where "original" reads 0); and d(sample)/d(shift) =
        ``slope0 * x[index0] + slope1 * x[index1]`` (-1 and +1 for neighbours that exist; 0 where
        ``border`` clamps the position, and where "original" is constant: outside
        ``[0, size - 1)``). For "original" the position is first mapped by
        :func:`medseg.ops.dsconv.original_boundary_positions`. The position along the line
        (``k - K//2`` pixels from the centre) is integer and read from the padded input
        (:class:`_Padding`).
    """
    along = size[0] if morph == 0 else size[1]
    base = torch.arange(along, dtype=shift.dtype, device=shift.device)
    move = (base.view(1, 1, -1, 1) if morph == 0 else base.view(1, 1, 1, -1)) + shift
    slope = torch.ones_like(move)
    if padding_mode == "border":
        slope = ((move >= 0) & (move <= along - 1)).to(shift.dtype)
        move = move.clamp(0, along - 1)
    elif padding_mode == "original":
        slope = ((move >= 0) & (move < along - 1)).to(shift.dtype)
        move = original_boundary_positions(move, along)
    p0 = torch.floor(move)
    a = move - p0
    p0 = p0.long()
    p1 = p0 + 1
    ok0 = (p0 >= 0) & (p0 < along)
    ok1 = (p1 >= 0) & (p1 < along)
    weight0, weight1 = (1 - a) * ok0, a * ok1
    return (p0.clamp(0, along - 1), p1.clamp(0, along - 1), weight0, weight1, -slope * ok0, slope * ok1)


class _Padding:
    """The input padded by K//2 on both sides of the kernel line's axis (W for morph 0, H for
    morph 1) and by ``reach`` across it, zeros ("zeros", "original") or the border replicated
    ("border"; replication equals grid_sample's clamping of a position), with the views each kernel
    point reads and the gradient of the padding."""

    def __init__(self, x: torch.Tensor, k: int, reach: int, morph: int, padding_mode: str) -> None:
        self.size, self.morph, self.padding_mode, self.reach = tuple(x.shape[2:]), morph, padding_mode, reach
        m = k // 2
        self.pad = (m, m, reach, reach) if morph == 0 else (reach, reach, m, m)  # F.pad order: W, then H
        self.padded = F.pad(x, self.pad, mode="replicate" if padding_mode == "border" else "constant")

    def view(self, tensor: torch.Tensor, d: int, j: int) -> torch.Tensor:
        """(N, C, H, W) view of a padded tensor for point ``j`` (``j - K//2`` pixels along the
        line) displaced by ``d`` integer pixels across it."""
        h, w = self.size
        r = self.reach
        if self.morph == 0:
            return tensor[:, :, r + d : r + d + h, j : j + w]
        return tensor[:, :, j : j + h, r + d : r + d + w]

    def unpad(self, grad_padded: torch.Tensor) -> torch.Tensor:
        """The input's gradient: the centre, with (border) each pad's gradient folded onto the edge
        pixels it replicated, first along H, then along W."""
        h, w = self.size
        grad = grad_padded
        left, _, top, _ = self.pad
        for dim, before, size in ((2, top, h), (3, left, w)):
            centre = grad.narrow(dim, before, size).clone()
            if self.padding_mode == "border" and before:
                centre.narrow(dim, 0, 1).add_(grad.narrow(dim, 0, before).sum(dim, keepdim=True))
                centre.narrow(dim, size - 1, 1).add_(grad.narrow(dim, before + size, before).sum(dim, keepdim=True))
            grad = centre
        return grad


class _Point:
    """Samples of one kernel point at a time into buffers reused across points: a fresh large
    CPU tensor costs its page faults on first touch (about as much as the gather itself), so the
    loop over points allocates once. Channels first: the gather runs along the moving axis with
    the index of each pixel broadcast over channels."""

    def __init__(self, x: torch.Tensor, taps, morph: int, padding_mode: str) -> None:
        self.dim = 2 if morph == 0 else 3
        self.padding = _Padding(x, taps[0].shape[1], 0, morph, padding_mode)
        self.taps, self.channels = taps, x.shape[1]
        self.g0, self.g1, self.sample = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)

    def index(self, which: int, j: int) -> torch.Tensor:
        """(N, C, H, W) expanded int64 index of pixel ``which`` (0 or 1) of point ``j``."""
        i = self.taps[which][:, j : j + 1]
        return i.expand(i.shape[0], self.channels, *i.shape[2:])

    def __call__(self, j: int) -> torch.Tensor:
        """Point ``j``: fills ``g0``, ``g1`` (the two pixels) and returns ``sample``, (N, C, H, W)."""
        window = self.padding.view(self.padding.padded, 0, j)
        torch.gather(window, self.dim, self.index(0, j), out=self.g0)
        torch.gather(window, self.dim, self.index(1, j), out=self.g1)
        torch.mul(self.g0, self.taps[2][:, j : j + 1], out=self.sample)
        return self.sample.addcmul_(self.g1, self.taps[3][:, j : j + 1])


def _axis_products(samples, weight: torch.Tensor, bias: torch.Tensor, shape) -> torch.Tensor:
    """``bias + sum_j weight[:, :, j] @ samples(j)``: (N, out, H, W) from ``samples(j)`` of
    (N, C, H, W) for each kernel point j. The sums accumulate channels last, (N, H*W, out): BLAS
    runs this orientation of the product about twice as fast as (out, C) @ (C, H*W) here
    (measured, 2-core CPU)."""
    n, c, h, w = shape
    out_channels, _, k = weight.shape
    out = bias.to(weight.dtype).view(1, 1, out_channels).expand(n, h * w, out_channels).contiguous()
    for j in range(k):
        out.baddbmm_(samples(j).view(n, c, h * w).transpose(1, 2), weight[:, :, j].t().expand(n, c, out_channels))
    return out.transpose(1, 2).reshape(n, out_channels, h, w)


class _AxisConvFunction(torch.autograd.Function):
    """The two formulations' common backward entry: autocast off (the hand-written backward
    keeps the forward's dtype), then the formulation's ``_backward``."""

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        with torch.autocast(device_type=grad_out.device.type, enabled=False):
            return ctx._forward_cls._backward(ctx, grad_out)


class _SnakeConv(_AxisConvFunction):
    """out = bias + sum_k W[:, :, k] @ sample_k(x, shift): see :func:`snake_conv`."""

    @staticmethod
    def forward(ctx, x, shift, weight, bias, morph: int, padding_mode: str):  # noqa: D102
        x = x.contiguous()
        taps = line_taps(shift, tuple(x.shape[2:]), morph, padding_mode)
        out = _axis_products(_Point(x, taps, morph, padding_mode), weight, bias, x.shape)
        ctx.save_for_backward(x, weight, *taps)
        ctx.morph, ctx.padding_mode = morph, padding_mode
        return out

    @staticmethod
    def _backward(ctx, grad_out):
        x, weight, *taps = ctx.saved_tensors
        _, _, weight0, weight1, slope0, slope1 = taps
        n, c, h, w = x.shape
        out_channels, _, k = weight.shape
        g = grad_out.to(x.dtype).contiguous().view(n, out_channels, h * w)
        point = _Point(x, taps, ctx.morph, ctx.padding_mode)
        need_x, need_shift, need_w, need_b = ctx.needs_input_grad[:4]
        grad_padded = torch.zeros_like(point.padding.padded) if need_x else None
        grad_shift = torch.zeros_like(weight0) if need_shift else None
        grad_weight = torch.zeros_like(weight) if need_w else None
        gs, scratch = torch.empty_like(x), torch.empty_like(x)
        for j in range(k):
            s = point(j)
            if need_w:
                grad_weight[:, :, j] = torch.bmm(g, s.view(n, c, h * w).transpose(1, 2)).sum(0)
            if not (need_x or need_shift):
                continue
            torch.bmm(weight[:, :, j].t().expand(n, c, out_channels), g, out=gs.view(n, c, h * w))  # dL/dsample
            if need_shift:
                at0 = torch.mul(gs, point.g0, out=scratch).sum(1)
                at1 = torch.mul(gs, point.g1, out=scratch).sum(1)
                grad_shift[:, j] = slope0[:, j] * at0 + slope1[:, j] * at1
            if need_x:
                window = point.padding.view(grad_padded, 0, j)
                window.scatter_add_(point.dim, point.index(0, j), torch.mul(gs, weight0[:, j : j + 1], out=scratch))
                window.scatter_add_(point.dim, point.index(1, j), torch.mul(gs, weight1[:, j : j + 1], out=scratch))
        grad_x = point.padding.unpad(grad_padded) if need_x else None
        grad_bias = g.sum((0, 2)) if need_b else None
        return grad_x, grad_shift, grad_weight, grad_bias, None, None


#: The tent formulation is used while a kernel point's displacements span at most this many
#: integer rows (columns); beyond it, the gather formulation (its cost does not grow with the span).
TENT_MAX_TERMS = 16


def _original_tent_shift(
    shift: torch.Tensor, size: tuple[int, int], morph: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The "original" boundary rule (:func:`medseg.ops.dsconv.original_boundary_positions`) as
    displacements for the tent formulation: ``(displacement, gain, slope_gain)``, each (N, K, H, W)
    of the dtype of ``shift``. ``displacement`` is ``shift`` where the position ``t`` lies in
    ``[0, size - 1)``, ``size - 1 - row`` (the last pixel) for ``size - 1 <= t < size`` and 0
    elsewhere (kept small so the spans stay short); ``gain`` is 1 where ``0 <= t < size`` else 0
    (the sample is 0 there); ``slope_gain`` is 1 where ``0 <= t < size - 1`` (d sample / d shift is
    the tent slope there) else 0."""
    along = size[0] if morph == 0 else size[1]
    base = torch.arange(along, dtype=shift.dtype, device=shift.device)
    base = base.view(1, 1, -1, 1) if morph == 0 else base.view(1, 1, 1, -1)
    move = base + shift
    inside = (move >= 0) & (move < along)
    moving = (move >= 0) & (move < along - 1)
    edge = ((along - 1) - base).expand_as(shift)
    displacement = torch.where(moving, shift, torch.where(inside, edge, torch.zeros_like(shift)))
    return displacement, inside.to(shift.dtype), moving.to(shift.dtype)


def _tent_spans(shift: torch.Tensor) -> list[tuple[int, int]]:
    """Per kernel point, the integer displacements ``lo .. hi`` whose pixels its bilinear samples
    can touch: ``floor(min shift)`` to ``floor(max shift) + 1``."""
    lo = torch.floor(shift.amin(dim=(0, 2, 3))).long().tolist()
    hi = (torch.floor(shift.amax(dim=(0, 2, 3))) + 1).long().tolist()
    return list(zip(lo, hi))


class _TentPlan(_Padding):
    """The tent formulation of one call: every sample is a sum over integer displacements d of
    ``max(0, 1 - |shift - d|)`` times the input shifted by d across the line and by the point's
    place along it, views of one padded input (:class:`_Padding`, reaching the widest span); each
    term is one multiply-add over (N, C, H, W) with a per-pixel weight, no gather. Exactly
    bilinear (two terms are non-zero per pixel). For "original" the weights and slopes are those
    of :func:`_original_tent_shift`'s displacement, times its gains (``spans`` must then be the
    spans of that displacement)."""

    def __init__(self, x: torch.Tensor, shift: torch.Tensor, spans, morph: int, padding_mode: str) -> None:
        super().__init__(x, shift.shape[1], max(1, max(max(-lo, hi) for lo, hi in spans)), morph, padding_mode)
        self.spans = spans
        self.original = None
        if padding_mode == "original":
            self.original = _original_tent_shift(shift, self.size, morph)

    def weights(self, shift: torch.Tensor, j: int) -> torch.Tensor:
        """(D, N, 1, H, W) tent weights ``max(0, 1 - |shift_j - d|)`` of point ``j``, one per
        displacement ``d`` of its span ("original": of the mapped displacement, times the gain)."""
        lo, hi = self.spans[j]
        d = torch.arange(lo, hi + 1, dtype=shift.dtype, device=shift.device).view(-1, 1, 1, 1, 1)
        at = shift if self.original is None else self.original[0]
        weights = (1 - (at[:, j : j + 1].unsqueeze(0) - d).abs()).clamp_(min=0)
        return weights if self.original is None else weights.mul_(self.original[1][:, j : j + 1])

    def slopes(self, shift: torch.Tensor, j: int) -> torch.Tensor:
        """(D, N, 1, H, W) d(weight)/d(shift): +1 for ``d = floor(shift) + 1``, -1 for
        ``d = floor(shift)`` (grid_sample's one-sided slope at integer positions); "original":
        of the mapped displacement, 0 where the rule is constant."""
        lo, hi = self.spans[j]
        d = torch.arange(lo, hi + 1, dtype=shift.dtype, device=shift.device).view(-1, 1, 1, 1, 1)
        at = shift if self.original is None else self.original[0]
        floor = torch.floor(at[:, j : j + 1]).unsqueeze(0)
        slopes = (floor == d - 1).to(shift.dtype) - (floor == d).to(shift.dtype)
        return slopes if self.original is None else slopes.mul_(self.original[2][:, j : j + 1])

    def combine(self, tensor: torch.Tensor, j: int, weights: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out = sum_d weights[d] * view(tensor, d, j)``, (N, C, H, W)."""
        lo = self.spans[j][0]
        torch.mul(self.view(tensor, lo, j), weights[0], out=out)
        for i in range(1, weights.shape[0]):
            out.addcmul_(self.view(tensor, lo + i, j), weights[i])
        return out

    def scatter(self, grad_padded: torch.Tensor, j: int, weights: torch.Tensor, grad_sample: torch.Tensor) -> None:
        """Add point ``j``'s sample gradient to the padded input's gradient."""
        lo = self.spans[j][0]
        for i in range(weights.shape[0]):
            self.view(grad_padded, lo + i, j).addcmul_(grad_sample, weights[i])


class _TentSnakeConv(_AxisConvFunction):
    """:func:`snake_conv` by the tent formulation (:class:`_TentPlan`)."""

    @staticmethod
    def forward(ctx, x, shift, weight, bias, morph: int, padding_mode: str, spans):  # noqa: D102
        plan, sample = _TentPlan(x, shift, spans, morph, padding_mode), torch.empty_like(x)
        out = _axis_products(
            lambda j: plan.combine(plan.padded, j, plan.weights(shift, j), sample), weight, bias, x.shape
        )
        ctx.save_for_backward(x, shift, weight)
        ctx.morph, ctx.padding_mode, ctx.spans = morph, padding_mode, spans
        return out

    @staticmethod
    def _backward(ctx, grad_out):
        x, shift, weight = ctx.saved_tensors
        n, c, h, w = x.shape
        out_channels, _, k = weight.shape
        g = grad_out.to(x.dtype).contiguous().view(n, out_channels, h * w)
        plan = _TentPlan(x, shift, ctx.spans, ctx.morph, ctx.padding_mode)
        need_x, need_shift, need_w, need_b = ctx.needs_input_grad[:4]
        grad_padded = torch.zeros_like(plan.padded) if need_x else None
        grad_shift = torch.zeros_like(shift) if need_shift else None
        grad_weight = torch.zeros_like(weight) if need_w else None
        sample, gs = torch.empty_like(x), torch.empty_like(x)
        slope = torch.empty_like(x) if need_shift else None
        for j in range(k):
            weights = plan.weights(shift, j)
            plan.combine(plan.padded, j, weights, sample)
            if need_shift:
                plan.combine(plan.padded, j, plan.slopes(shift, j), slope)
            if need_w:
                grad_weight[:, :, j] = torch.bmm(g, sample.view(n, c, h * w).transpose(1, 2)).sum(0)
            if not (need_x or need_shift):
                continue
            torch.bmm(weight[:, :, j].t().expand(n, c, out_channels), g, out=gs.view(n, c, h * w))  # dL/dsample
            if need_shift:
                grad_shift[:, j] = slope.mul_(gs).sum(1)
            if need_x:
                plan.scatter(grad_padded, j, weights, gs)
        grad_x = plan.unpad(grad_padded) if need_x else None
        grad_bias = g.sum((0, 2)) if need_b else None
        return grad_x, grad_shift, grad_weight, grad_bias, None, None, None


def snake_conv(
    x: torch.Tensor, shift: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, morph: int, padding_mode: str
) -> torch.Tensor:
    """DSConv's sampling and axis convolution in one pass, without the K-fold sampled map.

    Args:
        x: (N, C, H, W) float32/float64 input.
        shift: (N, K, H, W), the dtype of ``x``: each point's displacement in pixels across the
            kernel line (rows for morph 0, columns for morph 1), i.e. the cumulative snake offsets
            times ``extend_scope``; point ``k`` lies ``k - K//2`` pixels along the line.
        weight: (out, C, K): the axis conv's weight (``dsc_conv_x`` (out, C, K, 1) or
            ``dsc_conv_y`` (out, C, 1, K) reshaped).
        bias: (out,).
        morph: 0 or 1 (see :class:`medseg.ops.DSConv2d`).
        padding_mode: "zeros", "border" or "original" (see the module docstring).

    Returns:
        (N, out, H, W): ``bias + sum_k weight[:, :, k] @ sample_k``, with ``sample_k`` the
        bilinear sample of ``x`` at point k (identical to grid_sample's, up to float rounding;
        for "original" to grid_sample's at the positions mapped by
        :func:`medseg.ops.dsconv.original_boundary_positions`).
        Differentiable in ``x``, ``shift``, ``weight`` and ``bias``.

    Two formulations, the same values: the tent sum (:class:`_TentPlan`: multiply-adds of shifted
    views, no gather), while every point's displacements span at most :data:`TENT_MAX_TERMS`
    integer rows (columns), as DSConv's cumulative tanh offsets do (point i from the centre moves
    less than ``i * extend_scope`` pixels); else the two-pixel gather (:class:`_Point`).
    """
    if padding_mode == "original":
        spans = _tent_spans(_original_tent_shift(shift.detach(), tuple(x.shape[2:]), morph)[0])
    else:
        spans = _tent_spans(shift.detach())
    if max(hi - lo + 1 for lo, hi in spans) <= TENT_MAX_TERMS:
        return _TentSnakeConv.apply(x, shift, weight, bias, morph, padding_mode, spans)
    return _SnakeConv.apply(x, shift, weight, bias, morph, padding_mode)
