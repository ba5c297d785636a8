"""Tests of DSConv2d(padding_mode="original"): the boundary rule of the authors' original 2D file
(``DSCNet_2D_opensource/Code/DRIVE/DSCNet/S3_DSConv.py``, ``DSC._bilinear_interpolate_3D``).

The reference here is an independent re-implementation of that file's sampling arithmetic (batch
size 1, where its batch-indexing bug is harmless, and with the accumulation loop fixed to run
i = 1..c as in the authors' 3D file and README): neighbour indices ``floor(t)`` and ``floor(t)+1``
clamped to [0, size-1], weights ``c1 - t`` and ``t - c0`` with the corners clamped to [0, size],
the product over axes, summed over the corners in the authors' order. medseg's three formulations
(grid_sample, snake tent and snake gather) and the gather reference module are checked against it.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import medseg.ops.dsconv as dsconv
import medseg.ops.snake as snake
from medseg.models.dscnet import DSCNet
from medseg.ops import DSConv2d
from medseg.ops.dsconv import original_boundary_positions
from medseg.ops.dsconv_reference import DSConv2dReference, bilinear_gather

EXTEND = 3.3  # with offsets x 4 (tanh near +-1), a point i steps out moves up to 3.3 i pixels


# ------------------------------------------------------------------------------------------------
# The authors' arithmetic, written out (test reference)


def authors_interpolate(x: torch.Tensor, positions: list[torch.Tensor]) -> torch.Tensor:
    """The original's N-linear interpolation of ``x`` (1, C, *sizes) at ``positions`` (one tensor
    of pixel positions per spatial axis, all of one shape P): (C, *P)."""
    assert x.shape[0] == 1 and len(positions) == x.dim() - 2
    sizes = x.shape[2:]
    flat = x[0].reshape(x.shape[1], -1)
    out = None
    for corner in itertools.product((0, 1), repeat=len(sizes)):  # their order: a0, c0, a1, c1
        index, weight = None, None
        for t, bit, size in zip(positions, corner, sizes):
            low = torch.floor(t)
            read = (low + bit).clamp(0, size - 1)  # the neighbour read: clamped into the image
            c0, c1 = low.clamp(0, size), (low + 1).clamp(0, size)  # the corners the weights use
            factor = c1 - t if bit == 0 else t - c0
            index = read if index is None else index * size + read
            weight = factor if weight is None else weight * factor
        term = flat[:, index.long()] * weight
        out = term if out is None else out + term
    return out


def authors_dsconv(m: DSConv2d, x: torch.Tensor) -> torch.Tensor:
    """Forward of ``m`` (offset_norm "batch") as the original file computes it, batch size 1,
    with the fixed accumulation loop: (1, out, H, W)."""
    assert x.shape[0] == 1 and m.offset_norm == "batch"
    _, _, h, w = x.shape
    k, c = m.kernel_size, m.kernel_size // 2
    rows = torch.arange(h, dtype=x.dtype).view(1, h, 1).expand(k, h, w)
    cols = torch.arange(w, dtype=x.dtype).view(1, 1, w).expand(k, h, w)
    line = torch.arange(-c, c + 1, dtype=x.dtype).view(k, 1, 1)
    shift = torch.zeros(k, h, w, dtype=x.dtype)
    if m.if_offset:
        offset = torch.tanh(m.bn(m.offset_conv(x)))[0]
        raw = offset[:k] if m.morph == 0 else offset[k:]
        points = [None] * k
        points[c] = torch.zeros_like(raw[c])
        for i in range(1, c + 1):  # the fixed loop (the original 2D file stops at c - 1)
            points[c + i] = points[c + i - 1] + raw[c + i]
            points[c - i] = points[c - i + 1] + raw[c - i]
        shift = torch.stack(points) * m.extend_scope
    if m.morph == 0:  # samples laid out (K*H, W): row h*K + k
        pr, pc = (rows + shift).permute(1, 0, 2), (cols + line).permute(1, 0, 2)
        pr, pc = pr.reshape(h * k, w), pc.reshape(h * k, w)
        out = m.dsc_conv_x(authors_interpolate(x, [pr, pc])[None])
    else:  # (H, W*K): column w*K + k
        pr, pc = (rows + line).permute(1, 2, 0), (cols + shift).permute(1, 2, 0)
        pr, pc = pr.reshape(h, w * k), pc.reshape(h, w * k)
        out = m.dsc_conv_y(authors_interpolate(x, [pr, pc])[None])
    return F.relu(m.gn(out))


def make_layer(c_in: int, k: int, morph: int, if_offset: bool, seed: int = 0, **kw) -> DSConv2d:
    """An eval-mode DSConv2d ("original") whose offsets reach far outside the image: offset conv
    weights x 4 (tanh near +-1) and extend_scope 3.3."""
    torch.manual_seed(seed)
    m = DSConv2d(c_in, 8, k, EXTEND, morph, if_offset, padding_mode="original", **kw).eval()
    with torch.no_grad():
        m.offset_conv.weight.mul_(4)
    return m


def use_path(monkeypatch, path: str) -> None:
    """Select the eager formulation: "grid" (grid_sample), "tent" or "gather" (snake_conv)."""
    monkeypatch.setattr(dsconv, "SNAKE_MIN_ELEMENTS", 2**62 if path == "grid" else 0)
    monkeypatch.setattr(snake, "TENT_MAX_TERMS", 0 if path == "gather" else snake.TENT_MAX_TERMS)


# ------------------------------------------------------------------------------------------------
# The rule itself


def test_boundary_positions_hand_computed():
    """Size 4: before 0 -> -2 (reads 0), inside unchanged, [3, 4) -> 3 (the last pixel), >= 4 -> -2;
    gradient 1 only on [0, 3)."""
    t = torch.tensor([-5.0, -1.0, -0.25, 0.0, 0.25, 2.75, 3.0, 3.5, 4.0, 4.5, 9.0], requires_grad=True)
    got = original_boundary_positions(t, 4)
    expected = [-2.0, -2.0, -2.0, 0.0, 0.25, 2.75, 3.0, 3.0, -2.0, -2.0, -2.0]
    assert got.tolist() == expected
    got.sum().backward()
    assert t.grad.tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="size >= 1"):
        original_boundary_positions(t, 0)


def test_hand_computed_samples_of_a_column():
    """x = [1, 2, 3, 4] down one column: the original reads 0 at -0.5 (zero padding: 0.5), 1.5 at
    0.5, 4 at 3.5 (zero padding: 2), 0 at 4.5 and at -1.5; the reference and the authors'
    arithmetic agree."""
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 4, 1)
    rows = torch.tensor([-1.5, -0.5, 0.5, 3.5, 4.5]).view(1, 1, 5)
    cols = torch.zeros_like(rows)
    expected = [0.0, 0.0, 1.5, 4.0, 0.0]
    assert bilinear_gather(x, rows, cols, "original").flatten().tolist() == expected
    assert authors_interpolate(x, [rows[0], cols[0]]).flatten().tolist() == expected
    assert bilinear_gather(x, rows, cols, "zeros").flatten().tolist() == [0.0, 0.5, 1.5, 2.0, 0.0]


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_rule_with_grid_sample_equals_the_authors_interpolation_in_n_d(dims):
    """original_boundary_positions per axis + zero-padded grid_sample (linear, bilinear,
    trilinear) equals the authors' arithmetic at random positions from 4 pixels before to 3
    beyond the image on every axis (sizes 1, 3, 5), values and gradients."""
    g = torch.Generator().manual_seed(dims)
    sizes = (5, 3, 1)[:dims] if dims > 1 else (5,)
    x = torch.randn(1, 2, *sizes, dtype=torch.float64, generator=g, requires_grad=True)
    pos = [(torch.rand(40, dtype=torch.float64, generator=g) * (s + 7) - 4).requires_grad_() for s in sizes]
    ref = authors_interpolate(x, pos)
    mapped = [original_boundary_positions(p, s) for p, s in zip(pos, sizes)]
    norm = [(2 * p + 1) / s - 1 for p, s in zip(mapped, sizes)]  # align_corners=False
    if dims == 1:  # as a (1, C, 1, L) image
        src, grid = x.unsqueeze(2), torch.stack([norm[0], torch.zeros_like(norm[0])], -1).view(1, 1, 40, 2)
    else:
        src, grid = x, torch.stack(norm[::-1], -1).view((1,) * dims + (40, dims))
    got = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False).reshape(2, 40)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)
    weights = torch.randn(2, 40, dtype=torch.float64, generator=g)
    grads_ref = torch.autograd.grad((ref * weights).sum(), [x, *pos])
    grads = torch.autograd.grad((got * weights).sum(), [x, *pos])
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_reference_gather_equals_the_authors_interpolation():
    """bilinear_gather(..., "original") (written by cases) against the authors' arithmetic at
    random positions, with many outside the image on every side; values and gradients."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 6, 9, dtype=torch.float64, generator=g, requires_grad=True)
    rows = (torch.rand(1, 7, 11, dtype=torch.float64, generator=g) * 14 - 4).requires_grad_()
    cols = (torch.rand(1, 7, 11, dtype=torch.float64, generator=g) * 17 - 4).requires_grad_()
    got = bilinear_gather(x, rows, cols, "original")[0]
    ref = authors_interpolate(x, [rows[0], cols[0]])
    torch.testing.assert_close(got, ref.view(3, 7, 11), atol=1e-12, rtol=0)
    grads = torch.autograd.grad(got.sum(), [x, rows, cols])
    grads_ref = torch.autograd.grad(ref.sum(), [x, rows, cols])
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


# ------------------------------------------------------------------------------------------------
# The layer against the authors' arithmetic


def _coverage(m: DSConv2d, x: torch.Tensor) -> None:
    """With offsets on, sampled rows (morph 0) / columns (morph 1) fall in every region of the rule."""
    with torch.no_grad():
        pos = m.kernel_coordinates(x)[..., m.morph]
    size = x.shape[2 + m.morph]
    regions = [pos < -1, (pos > -1) & (pos < 0), (pos > size - 1) & (pos < size), pos > size]
    assert all(r.any() for r in regions)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("if_offset", [True, False], ids=["offsets", "rigid"])
@pytest.mark.parametrize("kernel_size", [3, 9])
@pytest.mark.parametrize("morph", [0, 1])
@pytest.mark.parametrize("shape", ["square", "non-square"])
@pytest.mark.parametrize("path", ["grid", "snake"])
def test_layer_matches_the_authors_sampling(path, shape, morph, kernel_size, if_offset, dtype):
    """Output against the authors' arithmetic. "grid": small inputs (the grid_sample path, as
    DSConv2d picks it below SNAKE_MIN_ELEMENTS); "snake": inputs of >= 2**18 elements, which
    DSConv2d runs through snake_conv, and again with use_snake_conv off (grid_sample).

    float64: within 1e-10. float32: small inputs within 1e-5 of the float32 reference; large
    inputs within 1e-4 of the float64 reference: at 128..256 pixels a float32 position has an ulp
    of 1.5e-5, so the authors' own float32 arithmetic is 4e-5 from its float64 value there."""
    if path == "grid":
        c_in, size = 3, {"square": (16, 16), "non-square": (12, 20)}[shape]
    else:
        c_in, size = 8, {"square": (184, 184), "non-square": (128, 256)}[shape]
    m = make_layer(c_in, kernel_size, morph, if_offset).to(dtype)
    x = torch.randn(1, c_in, *size, generator=torch.Generator().manual_seed(2)).to(dtype)
    assert (x.numel() >= dsconv.SNAKE_MIN_ELEMENTS) == (path == "snake")
    if if_offset and path == "grid":
        _coverage(m, x)
    if dtype == torch.float64:
        tol, exact = 1e-10, m
    elif path == "grid":
        tol, exact = 1e-5, m
    else:
        tol, exact = 1e-4, copy.deepcopy(m).double()
    with torch.no_grad():
        ref = authors_dsconv(exact, x.to(exact.gn.weight.dtype))
        assert (m(x) - ref).abs().max() <= tol
        if path == "snake":
            m.use_snake_conv = False
            assert (m(x) - ref).abs().max() <= tol


def test_snake_path_is_taken_for_large_inputs(monkeypatch):
    """The large inputs above do run snake_conv (and with use_snake_conv off, they do not)."""
    calls = []
    real = snake.snake_conv
    monkeypatch.setattr(snake, "snake_conv", lambda *a: calls.append(a[-1]) or real(*a))
    m = make_layer(8, 3, 0, True)
    with torch.no_grad():
        m(torch.randn(1, 8, 128, 256))
        m.use_snake_conv = False
        m(torch.randn(1, 8, 128, 256))
    assert calls == ["original"]


@pytest.mark.parametrize("morph", [0, 1])
@pytest.mark.parametrize("path", ["grid", "tent", "gather"])
def test_gradients_match_the_authors_sampling(path, morph, monkeypatch):
    """Gradients of the input, the offset conv and the axis conv (float64) against autograd
    through the authors' arithmetic, K=9, offsets far outside; snake formulations forced on a
    small input (monkeypatched threshold)."""
    use_path(monkeypatch, path)
    m = make_layer(3, 9, morph, True).double()
    ref_m = copy.deepcopy(m)
    x = torch.randn(1, 3, 11, 14, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    g = torch.randn(1, 8, 11, 14, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    (m(xa) * g).sum().backward()
    (authors_dsconv(ref_m, xb) * g).sum().backward()
    axis = "dsc_conv_x" if morph == 0 else "dsc_conv_y"
    pairs = [(xa.grad, xb.grad)]
    for name in ("offset_conv.weight", "offset_conv.bias", f"{axis}.weight", f"{axis}.bias"):
        pairs.append((m.get_parameter(name).grad, ref_m.get_parameter(name).grad))
    for a, b in pairs:
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, atol=1e-9 * b.abs().max().item(), rtol=1e-7)


@pytest.mark.parametrize("formulation", ["tent", "gather"])
@pytest.mark.parametrize("morph", [0, 1])
def test_snake_conv_original_gradcheck(morph, formulation, monkeypatch):
    """snake_conv's hand-written backwards for "original" against finite differences (float64),
    displacements reaching 4 pixels beyond the image on both sides."""
    use_path(monkeypatch, formulation)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64, generator=g, requires_grad=True)
    shift = (torch.rand(1, 3, 6, 7, dtype=torch.float64, generator=g) * 8 - 4).requires_grad_()
    weight = torch.randn(4, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, generator=g, requires_grad=True)
    fn = lambda *a: snake.snake_conv(*a, morph, "original")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, shift, weight, bias))


@pytest.mark.parametrize("morph", [0, 1])
def test_reference_module_matches_the_authors_sampling(morph):
    """DSConv2dReference (the gather reference) with "original", batch 1."""
    m = make_layer(3, 9, morph, True)
    ref = DSConv2dReference(3, 8, 9, EXTEND, morph, True, padding_mode="original").eval()
    ref.load_state_dict(m.state_dict())
    x = torch.randn(1, 3, 13, 10)
    with torch.no_grad():
        assert (ref(x) - authors_dsconv(m, x)).abs().max() <= 1e-5


def test_zeros_and_original_differ_near_the_border_only():
    """With offsets on, "zeros" and "original" samples differ (by more than 0.05) at pixels whose
    points leave the image and are equal where every point of the pixel's kernel stays inside;
    the outputs differ (the output GroupNorm spreads a border difference over the image)."""
    m = make_layer(3, 9, 0, True)
    zeros = DSConv2d(3, 8, 9, EXTEND, 0, True, padding_mode="zeros").eval()
    zeros.load_state_dict(m.state_dict())
    x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        diff = (m.sample(x) - zeros.sample(x)).abs().amax((1, 2))[0]  # (H, W)
        pos = m.kernel_coordinates(x)[0]
        assert (m(x) - zeros(x)).abs().max() > 0.05
    inside = ((pos[..., 0] >= 0) & (pos[..., 0] <= 23) & (pos[..., 1] >= 0) & (pos[..., 1] <= 23)).all(0)
    assert inside.any() and (~inside).any()
    assert diff[~inside].max() > 0.05
    assert diff[inside].max() == 0


# ------------------------------------------------------------------------------------------------
# Whole network, export


def _with_authors_sampling(net: DSCNet, dtype: torch.dtype) -> DSCNet:
    """A copy of ``net`` in ``dtype`` whose every DSConv2d runs :func:`authors_dsconv`."""
    net = copy.deepcopy(net).to(dtype)
    for mod in net.modules():
        if isinstance(mod, DSConv2d):
            mod.forward = lambda x, mod=mod: authors_dsconv(mod, x)
    return net


@pytest.mark.parametrize("case", ["f32-default", "f64-far"])
@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
@pytest.mark.parametrize("path", ["grid", "snake"])
def test_dscnet_original_matches_the_authors_sampling(path, size, case, monkeypatch):
    """DSCNet(offset_norm="batch", padding_mode="original"), eval, batch 1, against the same
    network with every DSConv run through the authors' arithmetic. "f32-default": float32, the
    initialisation as built, within 1e-5 (measured 4.6e-6 to 6.0e-6: the authors' float32
    arithmetic is itself up to 6.6e-6 from its float64 value), and "zeros" differs by more than
    1e-3; "f64-far": float64, offset convs x 4 so points go well outside, within 1e-10 (measured
    3e-14). "snake" forces snake_conv on every DSConv (threshold 0); at these sizes DSCNet's
    DSConvs take the grid_sample path on their own."""
    use_path(monkeypatch, path)
    torch.manual_seed(7)
    net = DSCNet(offset_norm="batch", padding_mode="original").eval()
    dtype, tol = (torch.float32, 1e-5) if case == "f32-default" else (torch.float64, 1e-10)
    with torch.no_grad():
        if case == "f64-far":
            for mod in net.modules():
                if isinstance(mod, DSConv2d):
                    mod.offset_conv.weight.mul_(4)
        x = torch.randn(1, 1, *size, generator=torch.Generator().manual_seed(8)).to(dtype)
        expected = _with_authors_sampling(net, dtype)(x)
        got = net.to(dtype)(x)
        assert expected.abs().max() > 0.01
        assert (got - expected).abs().max() <= tol
        if case == "f32-default":
            for mod in net.modules():
                if isinstance(mod, DSConv2d):
                    mod.padding_mode = "zeros"
            assert (net(x) - expected).abs().max() > 1e-3


def test_onnx_export_of_original_matches_pytorch(tmp_path):
    """ONNX export (opset 17, grid_sample path) of a DSConv2d with "original" runs in
    onnxruntime and matches PyTorch within 1e-4."""
    ort = pytest.importorskip("onnxruntime")
    from medseg.export import export_onnx

    m = make_layer(3, 9, 1, True)
    path = export_onnx(m, tmp_path / "dsconv.onnx", input_shape=(1, 3, 16, 20))
    x = torch.randn(1, 3, 16, 20, generator=torch.Generator().manual_seed(9))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = m(x).numpy()
        assert np.abs(expected - authors_dsconv(m, x).numpy()).max() <= 1e-5
    assert np.abs(got - expected).max() <= 1e-4
