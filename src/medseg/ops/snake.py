"""The sampling and axis convolution of :class:`medseg.ops.DSConv2d` as one custom autograd
Function, written for DSConv's structure (Qi et al., ICCV 2023, Sec. 3): a morph-0 point moves
only along rows at an integer column (morph 1: along columns at an integer row), so its bilinear
sample is a linear interpolation between two pixels of one column (row): two reads and one weight,
not grid_sample's four reads and two weights.

Layout: the input is read as a table of pixels, channels last, (N*H*W, C), so a sample is a copy
of C contiguous floats (``index_select``) and the axis convolution of point k is one matrix
product (N*H*W, C) @ (C, out). The points are taken one at a time and their products summed, so
the K-times-larger sampled map (N, C, K, H, W) is never held: the forward pass keeps the input,
two (N, K, H, W) index maps and two weight maps; the backward pass recomputes each point's samples.
Boundary: ``padding_mode="zeros"`` gives a neighbour outside the image the value 0 (grid_sample's
``zeros``); ``"border"`` clamps the position to [0, size - 1] first (grid_sample's ``border``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["snake_conv", "snake_sample", "line_taps"]


def line_taps(shift: torch.Tensor, size: tuple[int, int], morph: int, padding_mode: str
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two pixels each kernel point interpolates between, along the axis it moves on.

    Args:
        shift: (N, K, H, W) float32/float64 displacements in pixels across the kernel line (rows
            for morph 0, columns for morph 1); K odd.
        size: (H, W) of the input.
        morph: 0 (line along columns, points move in rows) or 1 (line along rows, move in columns).
        padding_mode: "zeros" or "border".

    Returns:
        ``(index0, index1, weight0, weight1, slope0, slope1)``, each (N, K, H, W): the int64 row
        (morph 0) or column (morph 1) of the two pixels, clamped into the image; their float
        weights (``weight0 + weight1`` is 1 inside the image and less where a neighbour lies
        outside, zero padding); and d(sample)/d(shift) = ``slope0 * x[index0] + slope1 *
        x[index1]`` (-1 and +1 for neighbours that exist; 0 where ``border`` clamps the
        position). The position along the line (``k - K//2`` pixels from the centre) is integer
        and read from the padded input (:func:`_padded`).
    """
    along = size[0] if morph == 0 else size[1]
    base = torch.arange(along, dtype=shift.dtype, device=shift.device)
    move = (base.view(1, 1, -1, 1) if morph == 0 else base.view(1, 1, 1, -1)) + shift
    slope = torch.ones_like(move)
    if padding_mode == "border":
        slope = ((move >= 0) & (move <= along - 1)).to(shift.dtype)
        move = move.clamp(0, along - 1)
    p0 = torch.floor(move)
    a = move - p0
    p0 = p0.long()
    p1 = p0 + 1
    ok0 = (p0 >= 0) & (p0 < along)
    ok1 = (p1 >= 0) & (p1 < along)
    weight0, weight1 = (1 - a) * ok0, a * ok1
    return (p0.clamp(0, along - 1), p1.clamp(0, along - 1), weight0, weight1, -slope * ok0, slope * ok1)


def _padded(x: torch.Tensor, k: int, morph: int, padding_mode: str) -> torch.Tensor:
    """``x`` padded by K//2 on both sides of the kernel line's axis (W for morph 0, H for morph 1):
    zeros, or the border replicated."""
    c = k // 2
    pad = (c, c, 0, 0) if morph == 0 else (0, 0, c, c)
    return F.pad(x, pad, mode="constant" if padding_mode == "zeros" else "replicate")


def _window(padded: torch.Tensor, j: int, size: tuple[int, int], morph: int) -> torch.Tensor:
    """The (N, C, H, W) view of the padded input seen by kernel point ``j`` (shifted ``j - K//2``
    pixels along the line)."""
    h, w = size
    return padded[..., j:j + w] if morph == 0 else padded[..., j:j + h, :]


class _Point:
    """Samples of one kernel point at a time into buffers reused across points: a fresh large
    CPU tensor costs its page faults on first touch (about as much as the gather itself), so the
    loop over points allocates once. Channels first: the gather runs along the moving axis with
    the index of each pixel broadcast over channels."""

    def __init__(self, x: torch.Tensor, taps, morph: int, padding_mode: str) -> None:
        self.size, self.morph, self.dim = tuple(x.shape[2:]), morph, 2 if morph == 0 else 3
        self.padded = _padded(x, taps[0].shape[1], morph, padding_mode)
        self.taps, self.channels = taps, x.shape[1]
        self.g0, self.g1, self.sample = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)

    def index(self, which: int, j: int) -> torch.Tensor:
        """(N, C, H, W) expanded int64 index of pixel ``which`` (0 or 1) of point ``j``."""
        i = self.taps[which][:, j:j + 1]
        return i.expand(i.shape[0], self.channels, *i.shape[2:])

    def __call__(self, j: int) -> torch.Tensor:
        """Point ``j``: fills ``g0``, ``g1`` (the two pixels) and returns ``sample``, (N, C, H, W)."""
        window = _window(self.padded, j, self.size, self.morph)
        torch.gather(window, self.dim, self.index(0, j), out=self.g0)
        torch.gather(window, self.dim, self.index(1, j), out=self.g1)
        torch.mul(self.g0, self.taps[2][:, j:j + 1], out=self.sample)
        return self.sample.addcmul_(self.g1, self.taps[3][:, j:j + 1])


class _SnakeConv(torch.autograd.Function):
    """out = bias + sum_k W[:, :, k] @ sample_k(x, shift): see :func:`snake_conv`."""

    @staticmethod
    def forward(ctx, x, shift, weight, bias, morph: int, padding_mode: str):  # noqa: D102
        n, c, h, w = x.shape
        out_channels, _, k = weight.shape
        x = x.contiguous()
        taps = line_taps(shift, (h, w), morph, padding_mode)
        point = _Point(x, taps, morph, padding_mode)
        # the sums accumulate channels last, (N, H*W, out): BLAS runs this orientation of the
        # product about twice as fast as (out, C) @ (C, H*W) here (measured, 2-core CPU)
        out = bias.to(x.dtype).view(1, 1, out_channels).expand(n, h * w, out_channels).contiguous()
        for j in range(k):
            out.baddbmm_(point(j).view(n, c, h * w).transpose(1, 2), weight[:, :, j].t().expand(n, c, out_channels))
        ctx.save_for_backward(x, weight, *taps)
        ctx.morph, ctx.padding_mode = morph, padding_mode
        return out.transpose(1, 2).reshape(n, out_channels, h, w)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        with torch.autocast(device_type=grad_out.device.type, enabled=False):
            return _SnakeConv._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        x, weight, *taps = ctx.saved_tensors
        index0, index1, weight0, weight1, slope0, slope1 = taps
        n, c, h, w = x.shape
        out_channels, _, k = weight.shape
        g = grad_out.to(x.dtype).contiguous().view(n, out_channels, h * w)
        point = _Point(x, taps, ctx.morph, ctx.padding_mode)
        need_x, need_shift, need_w, need_b = ctx.needs_input_grad[:4]
        grad_padded = torch.zeros_like(point.padded) if need_x else None
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
                window = _window(grad_padded, j, (h, w), ctx.morph)
                window.scatter_add_(point.dim, point.index(0, j), torch.mul(gs, weight0[:, j:j + 1], out=scratch))
                window.scatter_add_(point.dim, point.index(1, j), torch.mul(gs, weight1[:, j:j + 1], out=scratch))
        grad_x = _unpad(grad_padded, k, ctx.morph, ctx.padding_mode) if need_x else None
        grad_bias = g.sum((0, 2)) if need_b else None
        return grad_x, grad_shift, grad_weight, grad_bias, None, None


def _unpad(grad_padded: torch.Tensor, k: int, morph: int, padding_mode: str) -> torch.Tensor:
    """The gradient of :func:`_padded`: the centre, plus (border) the pad's gradient folded onto
    the edge pixels it replicated."""
    c, dim = k // 2, 3 if morph == 0 else 2
    size = grad_padded.shape[dim] - 2 * c
    grad = grad_padded.narrow(dim, c, size).clone()
    if padding_mode == "border":
        grad.narrow(dim, 0, 1).add_(grad_padded.narrow(dim, 0, c).sum(dim, keepdim=True))
        grad.narrow(dim, size - 1, 1).add_(grad_padded.narrow(dim, c + size, c).sum(dim, keepdim=True))
    return grad


def snake_conv(x: torch.Tensor, shift: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, morph: int,
               padding_mode: str) -> torch.Tensor:
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
        padding_mode: "zeros" or "border".

    Returns:
        (N, out, H, W): ``bias + sum_k weight[:, :, k] @ sample_k``, with ``sample_k`` the
        bilinear sample of ``x`` at point k (identical to grid_sample's, up to float rounding).
        Differentiable in ``x``, ``shift``, ``weight`` and ``bias``.
    """
    return _SnakeConv.apply(x, shift, weight, bias, morph, padding_mode)


def snake_sample(x: torch.Tensor, shift: torch.Tensor, morph: int, padding_mode: str) -> torch.Tensor:
    """The samples themselves, (N, C, K, H, W) (for inspection and tests; :func:`snake_conv`
    never builds them). Arguments as :func:`snake_conv`; differentiable by autograd."""
    n, c, h, w = x.shape
    k = shift.shape[1]
    index0, index1, weight0, weight1 = line_taps(shift, (h, w), morph, padding_mode)[:4]
    padded, dim = _padded(x, k, morph, padding_mode), 2 if morph == 0 else 3
    points = []
    for j in range(k):
        window = _window(padded, j, (h, w), morph)
        g0 = window.gather(dim, index0[:, j:j + 1].expand(n, c, h, w))
        g1 = window.gather(dim, index1[:, j:j + 1].expand(n, c, h, w))
        points.append(g0 * weight0[:, j:j + 1] + g1 * weight1[:, j:j + 1])
    return torch.stack(points, 2)
