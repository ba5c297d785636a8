"""Tests of medseg.ops.DSConv2d (Dynamic Snake Convolution) against plain convs and the
gather-based reference implementation."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.ops import DSConv2d
from medseg.ops.dsconv import cumulative_offsets
from medseg.ops.dsconv_reference import (
    DSConv2dReference,
    bilinear_gather,
    dsconv2d_reference,
    loop_cumulative_offsets,
)


@pytest.fixture(autouse=True, params=["snake", "grid_sample"])
def eager_path(request, monkeypatch):
    """Every test of this file runs through both eager formulations: snake_conv (forced on the
    small test inputs, which would otherwise take the grid_sample path) and grid_sample."""
    import medseg.ops.dsconv as dsconv

    monkeypatch.setattr(dsconv, "SNAKE_MIN_ELEMENTS", 0 if request.param == "snake" else 2**62)
    return request.param


def _rigid_equivalent(m: DSConv2d) -> nn.Conv2d:
    """The plain conv a DSConv2d with offsets off must equal: 1xK (morph 0) / Kx1 (morph 1)."""
    k, c = m.kernel_size, m.kernel_size // 2
    pad_mode = "zeros" if m.padding_mode == "zeros" else "replicate"
    if m.morph == 0:
        size, pad, src = (1, k), (0, c), m.dsc_conv_x
    else:
        size, pad, src = (k, 1), (c, 0), m.dsc_conv_y
    conv = nn.Conv2d(m.in_channels, m.out_channels, size, padding=pad, padding_mode=pad_mode)
    with torch.no_grad():
        # (out, in, K, 1) -> (out, in, 1, K) and vice versa: the K taps are the K samples.
        conv.weight.copy_(src.weight.reshape(conv.weight.shape))
        conv.bias.copy_(src.bias)
    return conv


@pytest.mark.parametrize("morph", [0, 1])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
@pytest.mark.parametrize("kernel_size", [3, 9])
def test_offsets_off_equals_axis_conv(morph, padding_mode, kernel_size):
    torch.manual_seed(0)
    m = DSConv2d(3, 8, kernel_size, morph=morph, if_offset=False, padding_mode=padding_mode)
    x = torch.randn(2, 3, 10, 14)
    expected = F.relu(m.gn(_rigid_equivalent(m)(x)))
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("morph", [0, 1])
def test_zero_offsets_equal_axis_conv(morph):
    # Offsets switched on but forced to zero (offset conv zeroed) also give the rigid kernel.
    torch.manual_seed(1)
    m = DSConv2d(3, 8, 5, morph=morph).eval()
    with torch.no_grad():
        m.offset_conv.weight.zero_()
        m.offset_conv.bias.zero_()
    x = torch.randn(1, 3, 9, 11)
    expected = F.relu(m.gn(_rigid_equivalent(m)(x)))
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("morph", [0, 1])
@pytest.mark.parametrize("offset_norm,padding_mode", [("batch", "zeros"), ("group", "border")])
def test_batch_of_two_equals_two_singles(morph, offset_norm, padding_mode):
    torch.manual_seed(2)
    m = DSConv2d(4, 8, 9, extend_scope=2.0, morph=morph, offset_norm=offset_norm, padding_mode=padding_mode).eval()
    x = torch.randn(2, 4, 12, 16) * 3
    with torch.no_grad():
        both = m(x)
        singles = torch.cat([m(x[:1]), m(x[1:])])
    torch.testing.assert_close(both, singles, atol=1e-5, rtol=1e-5)
    # the two samples really differ (guards against the original's "everyone reads sample 0")
    assert not torch.allclose(both[0], both[1], atol=1e-3)


@pytest.mark.parametrize("morph", [0, 1])
def test_gradients_reach_every_non_centre_offset_channel(morph):
    torch.manual_seed(3)
    k = 9
    c = k // 2
    m = DSConv2d(3, 8, k, morph=morph)  # BatchNorm offsets, training mode
    x = torch.randn(2, 3, 12, 12)
    m(x).square().sum().backward()
    per_channel = m.offset_conv.weight.grad.abs().flatten(1).sum(1)  # (2K,)
    used = per_channel[:k] if morph == 0 else per_channel[k:]
    unused = per_channel[k:] if morph == 0 else per_channel[:k]
    assert used[c] == 0, "the centre point must not move"
    for i in range(k):
        if i != c:
            assert used[i] > 0, f"offset channel {i} (incl. outermost 0 and K-1) gets no gradient"
    assert torch.all(unused == 0)
    # the unused axis conv is allocated but gets no gradient (parameter parity with the original)
    idle = m.dsc_conv_y if morph == 0 else m.dsc_conv_x
    assert idle.weight.grad is None


def test_cumsum_matches_loop_and_definition():
    raw = torch.randn(2, 7, 3, 4, dtype=torch.float64)
    acc = cumulative_offsets(raw)
    torch.testing.assert_close(acc, loop_cumulative_offsets(raw))
    assert torch.all(acc[:, 3] == 0)
    torch.testing.assert_close(acc[:, 6], raw[:, 4] + raw[:, 5] + raw[:, 6])
    torch.testing.assert_close(acc[:, 0], raw[:, 0] + raw[:, 1] + raw[:, 2])


@pytest.mark.parametrize("morph", [0, 1])
def test_non_square_input(morph):
    torch.manual_seed(4)
    x = torch.randn(1, 2, 24, 40)
    m = DSConv2d(2, 4, 9, morph=morph)
    y = m(x)
    assert y.shape == (1, 4, 24, 40)
    torch.testing.assert_close(y, dsconv2d_reference(m, x), atol=1e-4, rtol=1e-4)
    rigid = DSConv2d(2, 4, 9, morph=morph, if_offset=False)
    expected = F.relu(rigid.gn(_rigid_equivalent(rigid)(x)))
    torch.testing.assert_close(rigid(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("morph", [0, 1])
def test_kernel_size_3_deforms(morph):
    torch.manual_seed(5)
    m = DSConv2d(3, 4, 3, morph=morph).eval()
    x = torch.randn(1, 3, 10, 12)
    coords = m.kernel_coordinates(x)
    rigid = DSConv2d(3, 4, 3, morph=morph, if_offset=False).kernel_coordinates(x)
    assert coords.shape == (1, 3, 10, 12, 2)
    moving_axis = 0 if morph == 0 else 1
    outer = [0, 2]
    moved = coords[:, outer, ..., moving_axis] - rigid[:, outer, ..., moving_axis]
    assert moved.abs().max() > 1e-3
    torch.testing.assert_close(coords[:, 1], rigid[:, 1])  # the centre stays
    with torch.no_grad():
        y0 = m(x)
        m.offset_conv.weight.add_(0.5 * torch.randn_like(m.offset_conv.weight))
        y1 = m(x)
    assert (y1 - y0).abs().max() > 1e-3


@pytest.mark.parametrize("morph", [0, 1])
@pytest.mark.parametrize("offset_norm", ["batch", "group"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_parity_with_gather_reference(morph, offset_norm, padding_mode):
    torch.manual_seed(6)
    m = DSConv2d(3, 8, 7, extend_scope=1.7, morph=morph, offset_norm=offset_norm, padding_mode=padding_mode).double()
    with torch.no_grad():  # larger offsets so that many points leave the image
        m.offset_conv.weight.mul_(4)
    x = torch.randn(2, 3, 9, 13, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 8, 9, 13, dtype=torch.float64)
    y = m(x)
    (gx,) = torch.autograd.grad(y, x, g)
    x_ref = x.detach().clone().requires_grad_(True)
    y_ref = dsconv2d_reference(m, x_ref)
    (gx_ref,) = torch.autograd.grad(y_ref, x_ref, g)
    torch.testing.assert_close(y, y_ref, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(gx, gx_ref, atol=1e-8, rtol=1e-8)


def test_parity_float32_and_parameter_gradients():
    torch.manual_seed(7)
    m = DSConv2d(4, 8, 9, morph=1, extend_scope=1.5)
    ref = DSConv2dReference(4, 8, 9, morph=1, extend_scope=1.5)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 4, 16, 12)
    m(x).sum().backward()
    ref(x).sum().backward()
    for (name, p), q in zip(m.named_parameters(), ref.parameters()):
        if p.grad is None:
            assert q.grad is None, name
        else:
            torch.testing.assert_close(p.grad, q.grad, atol=2e-3, rtol=2e-3, msg=name)


@pytest.mark.parametrize("morph", [0, 1])
def test_kernel_coordinates(morph):
    torch.manual_seed(8)
    k, c, h, w = 5, 2, 6, 7
    x = torch.randn(2, 3, h, w)
    rigid = DSConv2d(3, 4, k, morph=morph, if_offset=False).kernel_coordinates(x)
    assert rigid.shape == (2, k, h, w, 2) and rigid.dtype == torch.float32
    rows = torch.arange(h).view(1, 1, h, 1).float().expand(2, k, h, w)
    cols = torch.arange(w).view(1, 1, 1, w).float().expand(2, k, h, w)
    line = torch.arange(-c, c + 1).view(1, k, 1, 1).float()
    if morph == 0:
        cols = cols + line
    else:
        rows = rows + line
    torch.testing.assert_close(rigid, torch.stack([rows, cols], dim=-1))

    # With offsets: only the perpendicular axis moves, |move of point i| <= |i - c| * scope,
    # the offsets scale with extend_scope, and sampling at these coordinates is what forward uses.
    m = DSConv2d(3, 4, k, morph=morph, extend_scope=1.0).eval()
    coords = m.kernel_coordinates(x)
    moved = coords - rigid
    fixed_axis, moving_axis = (1, 0) if morph == 0 else (0, 1)
    assert torch.all(moved[..., fixed_axis] == 0)
    bound = (torch.arange(k) - c).abs().float().view(1, k, 1, 1)
    assert torch.all(moved[..., moving_axis].abs() <= bound + 1e-6)
    m.extend_scope = 2.0
    torch.testing.assert_close(m.kernel_coordinates(x) - rigid, 2 * moved)
    m.extend_scope = 1.0
    sampled = m.sample(x)  # (N, C, K, H, W)
    assert sampled.shape == (2, 3, k, h, w)
    r = coords[..., 0].reshape(2, k * h, w)
    q = coords[..., 1].reshape(2, k * h, w)
    expected = bilinear_gather(x, r, q).view(2, 3, k, h, w)
    torch.testing.assert_close(sampled, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel_size", [2, 4, 8, 1])
def test_bad_kernel_size_raises(kernel_size):
    with pytest.raises(ValueError, match="odd"):
        DSConv2d(3, 4, kernel_size)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="morph"):
        DSConv2d(3, 4, 9, morph=2)
    with pytest.raises(ValueError, match="offset_norm"):
        DSConv2d(3, 4, 9, offset_norm="layer")
    with pytest.raises(ValueError, match="padding_mode"):
        DSConv2d(3, 4, 9, padding_mode="reflect")
    with pytest.raises(ValueError, match="out_channels"):
        DSConv2d(3, 2, 9)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        DSConv2d(3, 4, 9)(torch.randn(1, 2, 8, 8))


def test_state_dict_keys_and_shapes():
    bn = DSConv2d(5, 8, 9).state_dict()
    assert set(bn) == {
        "offset_conv.weight", "offset_conv.bias",
        "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked",
        "dsc_conv_x.weight", "dsc_conv_x.bias", "dsc_conv_y.weight", "dsc_conv_y.bias",
        "gn.weight", "gn.bias",
    }  # fmt: skip
    assert bn["dsc_conv_x.weight"].shape == (8, 5, 9, 1)
    assert bn["dsc_conv_y.weight"].shape == (8, 5, 1, 9)
    assert bn["offset_conv.weight"].shape == (18, 5, 3, 3)
    gn = DSConv2d(5, 8, 9, offset_norm="group").state_dict()
    assert {"gn_offset.weight", "gn_offset.bias"} <= set(gn) and "bn.weight" not in gn


def test_float64_and_size_one_inputs():
    torch.manual_seed(9)
    m = DSConv2d(2, 4, 3).double().eval()
    y = m(torch.randn(1, 2, 1, 5, dtype=torch.float64))
    assert y.dtype == torch.float64 and y.shape == (1, 4, 1, 5) and torch.isfinite(y).all()


@pytest.mark.parametrize("morph", [0, 1])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_snake_conv_equals_the_grid_sample_formulation(morph, padding_mode, monkeypatch):
    """The eager path (medseg.ops.snake.snake_conv) against the portable one export runs
    (grid_sample, use_snake_conv=False): outputs within 1e-5 and every gradient within 1e-4 of
    its largest entry, or of 1 % of the largest gradient (float32; grid_sample normalises and unnormalises each coordinate, which
    moves it by about 1e-7 x the image size, and the offset branch's gradients sum many such
    terms). Parity with the reference within 1e-5 is test_parity_float32_and_parameter_gradients."""
    import medseg.ops.dsconv as dsconv

    monkeypatch.setattr(dsconv, "SNAKE_MIN_ELEMENTS", 0)
    torch.manual_seed(3)
    fast = DSConv2d(3, 8, 5, morph=morph, padding_mode=padding_mode, extend_scope=2.0)
    slow = DSConv2d(3, 8, 5, morph=morph, padding_mode=padding_mode, extend_scope=2.0)
    slow.load_state_dict(fast.state_dict())
    slow.use_snake_conv = False
    x = torch.randn(2, 3, 13, 11)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fast(xa), slow(xb)
    assert (ya - yb).abs().max() <= 1e-5 * yb.abs().max()
    g = torch.randn_like(ya)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    pairs = [(xa.grad, xb.grad)] + [
        (pa.grad, pb.grad) for pa, pb in zip(fast.parameters(), slow.parameters()) if pb.grad is not None
    ]
    assert len(pairs) >= 6  # input, offset conv (2), offset norm (2), axis conv (2), output norm (2)
    scale = max(b.abs().max().item() for _, b in pairs)  # gradients that are 0 in exact arithmetic
    for a, b in pairs:  # (the offset BatchNorm's bias) are rounding
        assert a is not None and (a - b).abs().max() <= 1e-4 * max(b.abs().max().item(), 0.01 * scale)


@pytest.mark.parametrize("formulation", ["tent", "gather"])
@pytest.mark.parametrize("morph", [0, 1])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_snake_conv_gradcheck(morph, padding_mode, formulation, monkeypatch):
    """The hand-written backwards of snake_conv (both formulations) against finite differences
    (float64), with displacements reaching beyond the image on both sides."""
    import medseg.ops.snake as snake
    from medseg.ops.snake import snake_conv

    if formulation == "gather":
        monkeypatch.setattr(snake, "TENT_MAX_TERMS", 0)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, generator=g, requires_grad=True)
    shift = (torch.rand(2, 3, 6, 7, dtype=torch.float64, generator=g) * 8 - 4).requires_grad_()
    weight = torch.randn(4, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: snake_conv(*a, morph, padding_mode), (x, shift, weight, bias))


def test_export_and_scripting_use_the_portable_formulation():
    """Tracing (ONNX, TorchScript) takes the grid_sample path, whose graph ONNX Runtime runs."""
    m = DSConv2d(2, 4, 3).eval()
    traced = torch.jit.trace(m, torch.randn(1, 2, 8, 8))
    assert "grid_sampler" in str(traced.inlined_graph)
    x = torch.randn(1, 2, 8, 8)
    assert torch.allclose(traced(x), m(x), atol=1e-6)


def test_snake_conv_formulations_agree_and_half_inputs_keep_their_dtype(monkeypatch):
    """Tent and gather formulations give the same output (float32, 1e-5), and under bfloat16
    autocast the layer runs (sampling in float32, autocast off inside) close to float32."""
    import medseg.ops.dsconv as dsconv
    import medseg.ops.snake as snake

    monkeypatch.setattr(dsconv, "SNAKE_MIN_ELEMENTS", 0)
    torch.manual_seed(5)
    m = DSConv2d(4, 8, 9, morph=0, extend_scope=1.0).eval()
    x = torch.randn(2, 4, 17, 15)
    with torch.no_grad():
        tent = m(x)
        monkeypatch.setattr(snake, "TENT_MAX_TERMS", 0)
        gather = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = m(x)
    assert (tent - gather).abs().max() <= 1e-5 * gather.abs().max()
    assert (mixed.float() - tent).abs().max() <= 0.05 * tent.abs().max()


def test_small_inputs_take_the_grid_sample_path(monkeypatch):
    """Below SNAKE_MIN_ELEMENTS the eager forward is the grid_sample formulation (faster there)."""
    import medseg.ops.dsconv as dsconv
    import medseg.ops.snake as snake

    calls = []

    def recording(*args):
        calls.append(args)
        return snake.snake_conv.__wrapped__(*args)

    recording.__wrapped__ = snake.snake_conv
    monkeypatch.setattr(snake, "snake_conv", recording)
    monkeypatch.setattr(dsconv, "SNAKE_MIN_ELEMENTS", 65)
    layer = DSConv2d(2, 4, 3)
    layer(torch.randn(1, 2, 4, 8))  # 64 elements: grid_sample
    assert calls == []
    layer(torch.randn(1, 2, 4, 9))  # 72: snake_conv
    assert len(calls) == 1
