"""Tests of medseg.ops.DSConv3d (3D Dynamic Snake Convolution) against plain Conv3d, hand-computed
numbers and the gather-based reference (medseg.ops.dsconv3d_reference), which re-derives the
authors' sample layout, strided axis conv and boundary arithmetic ("original")."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.ops import DSConv3d
from medseg.ops.dsconv3d import trilinear_sample
from medseg.ops.dsconv3d_reference import DSConv3dReference, trilinear_gather
from medseg.ops.dsconv_reference import loop_cumulative_offsets

MORPHS = [0, 1, 2]
MODES = ["zeros", "border", "original"]

#: state-dict keys and shapes of the authors' DCN_Conv(4, 8, kernel_size=3, ...), written out from
#: their S3_DSConv.py (offset conv 4 -> 6K = 18, BatchNorm3d(18), three axis convs, the unused full
#: 3x3x3 conv, GroupNorm(2, 8)); their module has 3,198 parameters (counted by instantiating it).
AUTHORS_KEYS = [
    ("offset_conv.weight", (18, 4, 3, 3, 3)),
    ("offset_conv.bias", (18,)),
    ("bn.weight", (18,)),
    ("bn.bias", (18,)),
    ("bn.running_mean", (18,)),
    ("bn.running_var", (18,)),
    ("bn.num_batches_tracked", ()),
    ("dcn_conv_x.weight", (8, 4, 1, 1, 3)),
    ("dcn_conv_x.bias", (8,)),
    ("dcn_conv_y.weight", (8, 4, 1, 3, 1)),
    ("dcn_conv_y.bias", (8,)),
    ("dcn_conv_z.weight", (8, 4, 3, 1, 1)),
    ("dcn_conv_z.bias", (8,)),
    ("dcn_conv.weight", (8, 4, 3, 3, 3)),
    ("dcn_conv.bias", (8,)),
    ("gn.weight", (8,)),
    ("gn.bias", (8,)),
]
AUTHORS_PARAMETERS = 3198

#: offset channels (of 6K, K = 5) whose raw offsets reach the output, per morph: the two blocks the
#: authors' _coordinate_map_3D reads (morph 0: z_offset1, y_offset1; morph 1: x_offset1, z_offset2;
#: morph 2: y_offset2, x_offset2), without the centre point (2 within a block).
USED_CHANNELS_K5 = {
    0: [0, 1, 3, 4, 5, 6, 8, 9],
    1: [10, 11, 13, 14, 15, 16, 18, 19],
    2: [20, 21, 23, 24, 25, 26, 28, 29],
}


def _randomise(m: nn.Module, seed: int = 0) -> nn.Module:
    """Large offset-conv weights (tanh near saturation) and non-trivial BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.offset_conv.weight.mul_(4)
        if hasattr(m, "bn"):
            m.bn.running_mean.copy_(torch.randn(m.bn.running_mean.shape, generator=g) * 0.1)
            m.bn.running_var.copy_(torch.rand(m.bn.running_var.shape, generator=g) + 0.5)
    return m


def _pair(morph, padding_mode, k=3, scope=2.5, in_ch=4, **kw):
    """A DSConv3d and a DSConv3dReference with the same weights, float64, eval mode."""
    torch.manual_seed(10 * morph + k)
    m = _randomise(DSConv3d(in_ch, 8, k, scope, morph, padding_mode=padding_mode, **kw)).double().eval()
    ref = DSConv3dReference(in_ch, 8, k, scope, morph, padding_mode=padding_mode, **kw).double().eval()
    ref.load_state_dict(m.state_dict(), strict=True)
    return m, ref


def _outside_fraction(m: DSConv3d, x: torch.Tensor) -> float:
    pos = m.kernel_coordinates(x)
    size = torch.tensor(x.shape[2:], dtype=pos.dtype)
    return ((pos < 0) | (pos > size - 1)).any(dim=-1).double().mean().item()


def _rigid_equivalent(m: DSConv3d) -> nn.Conv3d:
    """The plain sliding Conv3d a DSConv3d with zero offsets must equal."""
    k, c = m.kernel_size, m.kernel_size // 2
    size = [(1, 1, k), (1, k, 1), (k, 1, 1)][m.morph]
    pad = [(0, 0, c), (0, c, 0), (c, 0, 0)][m.morph]
    mode = "replicate" if m.padding_mode == "border" else "zeros"
    conv = nn.Conv3d(m.in_channels, m.out_channels, size, padding=pad, padding_mode=mode).to(m.gn.weight.dtype)
    src = (m.dcn_conv_x, m.dcn_conv_y, m.dcn_conv_z)[m.morph]
    with torch.no_grad():
        conv.weight.copy_(src.weight)
        conv.bias.copy_(src.bias)
    return conv


def test_state_dict_has_the_authors_keys_and_loads_theirs_strictly():
    m = DSConv3d(4, 8, 3)
    assert [(k, tuple(v.shape)) for k, v in m.state_dict().items()] == AUTHORS_KEYS
    assert sum(p.numel() for p in m.parameters()) == AUTHORS_PARAMETERS
    g = torch.Generator().manual_seed(1)
    theirs = {k: torch.randn(s, generator=g) if s else torch.tensor(7) for k, s in AUTHORS_KEYS}
    theirs["bn.running_var"] = theirs["bn.running_var"].abs() + 0.1
    m.load_state_dict(theirs, strict=True)
    assert torch.equal(m.dcn_conv_z.weight, theirs["dcn_conv_z.weight"])
    assert m.bn.num_batches_tracked.item() == 7
    # the GroupNorm variant replaces bn by gn_offset (K groups over 6K channels)
    grouped = DSConv3d(4, 8, 3, offset_norm="group")
    keys = [k for k, _ in AUTHORS_KEYS if not k.startswith("bn.")]
    assert sorted(grouped.state_dict()) == sorted(keys + ["gn_offset.weight", "gn_offset.bias"])
    assert (grouped.gn_offset.num_groups, grouped.gn_offset.num_channels) == (3, 18)


@pytest.mark.parametrize(("cin", "cout", "k", "expected"), [(4, 8, 9, 30234), (16, 32, 3, 26454), (16, 32, 9, 410754)])
def test_parameter_count_equals_the_authors(cin, cout, k, expected):
    # expected: sum of parameter numels of the authors' DCN_Conv(cin, cout, k, ...), measured
    m = DSConv3d(cin, cout, k)
    assert sum(p.numel() for p in m.parameters()) == expected
    assert (
        expected == 6 * k * (27 * cin + 1) + 2 * 6 * k + 3 * cout * (cin * k + 1) + cout * (cin * k**3 + 1) + 2 * cout
    )


@pytest.mark.parametrize("padding_mode", MODES)
@pytest.mark.parametrize("morph", MORPHS)
def test_matches_the_gather_reference_values_and_gradients(morph, padding_mode):
    m, ref = _pair(morph, padding_mode)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 8, 10, 12, dtype=torch.float64, generator=g)
    assert _outside_fraction(m, x) > 0.25  # the scaled-up offsets take many points out of the volume
    weight = torch.randn(1, 8, 8, 10, 12, dtype=torch.float64, generator=g)
    grads = []
    for module in (m, ref):
        xi = x.clone().requires_grad_(True)
        out = module(xi)
        (out * weight).sum().backward()
        grads.append((out.detach(), xi.grad, module.offset_conv.weight.grad, module.axis_conv().weight.grad))
    for ours, theirs in zip(grads[0], grads[1]):
        torch.testing.assert_close(ours, theirs, atol=1e-8, rtol=1e-8)
    assert grads[0][2].abs().max() > 1e-3  # the offsets do receive gradient


@pytest.mark.parametrize("padding_mode", MODES)
def test_sample_is_trilinear_sample_at_the_kernel_coordinates(padding_mode):
    m, _ = _pair(2, padding_mode, k=5)
    x = torch.randn(2, 4, 5, 6, 7, dtype=torch.float64)
    with torch.no_grad():
        pos = m.kernel_coordinates(x)  # (N, K, D, H, W, 3)
        expected = trilinear_sample(x, pos.reshape(2, 5 * 5, 6, 7, 3), padding_mode).view(2, 4, 5, 5, 6, 7)
        torch.testing.assert_close(m.sample(x), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("morph", MORPHS)
def test_batch_of_two_equals_two_singles(morph):
    torch.manual_seed(morph)
    m = _randomise(DSConv3d(3, 8, 3, 2.0, morph)).eval()
    x = torch.randn(2, 3, 6, 7, 9)
    with torch.no_grad():
        both = m(x)
        singles = torch.cat([m(x[:1]), m(x[1:])])
    torch.testing.assert_close(both, singles, atol=1e-5, rtol=1e-5)
    assert (both[0] - both[1]).abs().max() > 0.1


@pytest.mark.parametrize("morph", MORPHS)
def test_gradients_reach_exactly_the_offset_channels_the_morph_uses(morph):
    torch.manual_seed(morph)
    m = DSConv3d(3, 8, 5, 1.0, morph).train()
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["pre_tanh"] = output

    m.bn.register_forward_hook(keep)
    x = torch.randn(1, 3, 6, 7, 8)
    m(x).square().sum().backward()
    per_channel = captured["pre_tanh"].grad.abs().sum(dim=(0, 2, 3, 4))
    assert [i for i in range(30) if per_channel[i] > 0] == USED_CHANNELS_K5[morph]
    assert per_channel[USED_CHANNELS_K5[morph]].min() > 1e-6
    for i, conv in enumerate((m.dcn_conv_x, m.dcn_conv_y, m.dcn_conv_z)):
        assert (conv.weight.grad is not None) == (i == morph)
    assert m.dcn_conv.weight.grad is None


def _biased(morph, k, channel_values, scope=1.0):
    """A DSConv3d whose raw offsets are constants: offset conv weight 0, bias atanh(v) on the given
    channels, BatchNorm the identity in eval mode."""
    m = DSConv3d(2, 4, k, scope, morph).double().eval()
    with torch.no_grad():
        m.offset_conv.weight.zero_()
        m.offset_conv.bias.zero_()
        m.bn.running_var.fill_(1.0 - m.bn.eps)
        for ch, v in channel_values.items():
            m.offset_conv.bias[ch] = math.atanh(v)
    return m


def _rigid_positions(morph, k, shape):
    d, h, w = shape
    c = k // 2
    zz, yy, xx = torch.meshgrid(torch.arange(d), torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([zz, yy, xx], dim=-1).double().unsqueeze(0).repeat(k, 1, 1, 1, 1)
    axis = (2, 1, 0)[morph]
    pos[..., axis] += torch.arange(-c, c + 1).double().view(k, 1, 1, 1)
    return pos.unsqueeze(0)


# (morph, moved axis 0=z 1=y 2=x, offset block): the table of the module docstring.
CHANNEL_TABLE = [(0, 0, 0), (0, 1, 1), (1, 2, 2), (1, 0, 3), (2, 1, 4), (2, 2, 5)]


@pytest.mark.parametrize(("morph", "axis", "block"), CHANNEL_TABLE)
def test_each_offset_block_moves_the_axis_the_authors_assign(morph, axis, block):
    k, c = 5, 2
    m = _biased(morph, k, {block * k + c + 1: 0.5}, scope=2.0)  # raw 0.5 at point c+1 only
    x = torch.zeros(1, 2, 3, 4, 6, dtype=torch.float64)
    moved = m.kernel_coordinates(x) - _rigid_positions(morph, k, (3, 4, 6))
    expected = torch.zeros_like(moved)
    expected[:, c + 1 :, ..., axis] = 1.0  # cumulative: points c+1 and c+2 both move 0.5 * 2
    torch.testing.assert_close(moved, expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("morph", MORPHS)
def test_unused_blocks_and_centre_channels_do_not_move_the_kernel(morph):
    k, c = 3, 1
    used = [b for mm, _, b in CHANNEL_TABLE if mm == morph]
    values = {b * k + c: 0.9 for b in used}  # centre points of the used blocks (morph 2: the authors' bug)
    values.update({b * k + j: 0.7 for b in range(6) if b not in used for j in range(k)})
    m = _biased(morph, k, values)
    x = torch.randn(1, 2, 4, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(m.kernel_coordinates(x), _rigid_positions(morph, k, (4, 5, 6)), atol=1e-12, rtol=0)


def test_accumulation_runs_over_every_point_hand_computed():
    k = 7
    raw = [0.1, -0.2, 0.3, 0.9, 0.4, -0.5, 0.6]  # the centre's 0.9 must be ignored
    m = _biased(0, k, {j: v for j, v in enumerate(raw)}, scope=2.0)  # block 0: z of morph 0
    x = torch.zeros(1, 2, 2, 3, 4, dtype=torch.float64)
    dz = (m.kernel_coordinates(x) - _rigid_positions(0, k, (2, 3, 4)))[0, :, 1, 1, 1, 0]
    # point 0: 0.1 - 0.2 + 0.3; 1: -0.2 + 0.3; 2: 0.3; 3: 0; 4: 0.4; 5: 0.4 - 0.5; 6: 0.4 - 0.5 + 0.6; x 2
    expected = torch.tensor([0.4, 0.2, 0.6, 0.0, 0.8, -0.2, 1.0], dtype=torch.float64)
    torch.testing.assert_close(dz, expected, atol=1e-9, rtol=0)
    r = torch.tensor(raw, dtype=torch.float64).view(1, k, 1, 1, 1)
    torch.testing.assert_close(loop_cumulative_offsets(r).flatten() * 2, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("padding_mode", MODES)
@pytest.mark.parametrize(("morph", "k"), [(0, 3), (1, 3), (2, 3), (0, 5), (2, 5)])
def test_zero_offsets_and_offsets_off_equal_a_plain_axis_conv3d(morph, k, padding_mode):
    torch.manual_seed(k + morph)
    x = torch.randn(2, 3, 5, 6, 7, dtype=torch.float64)
    off = DSConv3d(3, 8, k, 3.0, morph, if_offset=False, padding_mode=padding_mode).double().eval()
    zero = DSConv3d(3, 8, k, 3.0, morph, padding_mode=padding_mode).double().eval()
    zero.load_state_dict(off.state_dict())
    with torch.no_grad():
        zero.offset_conv.weight.zero_()
        zero.offset_conv.bias.zero_()
        expected = F.relu(off.gn(_rigid_equivalent(off)(x)))
        torch.testing.assert_close(off(x), expected, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(zero(x), expected, atol=1e-10, rtol=1e-10)
        ref = DSConv3dReference(3, 8, k, 3.0, morph, if_offset=False, padding_mode=padding_mode).double().eval()
        ref.load_state_dict(off.state_dict())
        torch.testing.assert_close(ref(x), expected, atol=1e-10, rtol=1e-10)


def test_offsets_off_skip_the_offset_branch():
    m = DSConv3d(2, 4, 3, morph=0, if_offset=False).train()
    stats = m.bn.running_mean.clone()
    m(torch.randn(1, 2, 4, 5, 6)).sum().backward()
    assert torch.equal(m.bn.running_mean, stats) and m.bn.num_batches_tracked.item() == 0
    assert m.offset_conv.weight.grad is None and m.dcn_conv_x.weight.grad is not None
    assert m.snake_offsets(torch.randn(1, 2, 4, 5, 6)) is None


@pytest.mark.parametrize("morph", MORPHS)
def test_k3_deforms(morph):
    torch.manual_seed(morph)
    on = _randomise(DSConv3d(3, 8, 3, 1.0, morph)).eval()
    off = DSConv3d(3, 8, 3, 1.0, morph, if_offset=False).eval()
    off.load_state_dict(on.state_dict())
    x = torch.randn(1, 3, 6, 7, 8)
    with torch.no_grad():
        assert (on(x) - off(x)).abs().max() > 0.1
        shift = on.snake_offsets(x)
    assert shift.shape == (1, 3, 3, 6, 7, 8)
    assert shift[:, (2, 1, 0)[morph]].abs().max() == 0  # never along the kernel axis
    assert shift[:, :, 1].abs().max() == 0  # nor the centre point
    assert shift.abs().max() > 0.5


def test_k9_matches_the_reference():
    m, ref = _pair(1, "zeros", k=9, scope=1.0, in_ch=2)
    x = torch.randn(1, 2, 5, 11, 6, dtype=torch.float64)
    out = m(x)
    assert out.shape == (1, 8, 5, 11, 6)
    torch.testing.assert_close(out, ref(x), atol=1e-8, rtol=1e-8)
    assert _outside_fraction(m, x) > 0.3


@pytest.mark.parametrize(("morph", "shape"), [(0, (1, 5, 9)), (2, (1, 5, 9)), (1, (3, 1, 4)), (2, (7, 2, 3))])
def test_non_cubic_and_thin_volumes(morph, shape):
    for mode in MODES:
        m, ref = _pair(morph, mode, in_ch=2)
        x = torch.randn((2, 2) + shape, dtype=torch.float64)
        out = m(x)
        assert out.shape == (2, 8) + shape
        torch.testing.assert_close(out, ref(x), atol=1e-8, rtol=1e-8)


def test_group_offset_norm_matches_the_reference():
    m, ref = _pair(2, "original", offset_norm="group")
    x = torch.randn(2, 4, 4, 5, 6, dtype=torch.float64)
    assert not hasattr(m, "bn")
    torch.testing.assert_close(m(x), ref(x), atol=1e-8, rtol=1e-8)


# Values [1, 2, 3, 4] along x; positions in voxels, hand-computed per boundary rule.
X_POSITIONS = [-1.5, -0.5, 0.0, 1.25, 3.0, 3.5, 4.0, 4.2]
EXPECTED = {
    "zeros": [0.0, 0.5, 1.0, 2.25, 4.0, 2.0, 0.0, 0.0],
    "border": [1.0, 1.0, 1.0, 2.25, 4.0, 4.0, 4.0, 4.0],
    "original": [0.0, 0.0, 1.0, 2.25, 4.0, 4.0, 0.0, 0.0],  # 0 before voxel 0, last voxel on [3, 4)
}
# Volume (1, 2, 2) = [[1, 2], [3, 4]] at (z, y, x) = (0, 1.5, 0.5): y half a voxel beyond the last row.
EXPECTED_Y = {"zeros": 1.75, "border": 3.5, "original": 3.5}


@pytest.mark.parametrize("padding_mode", MODES)
def test_boundary_rules_hand_computed(padding_mode):
    vol = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).view(1, 1, 1, 1, 4)
    xs = torch.tensor(X_POSITIONS, dtype=torch.float64).view(1, 1, 1, -1)
    zeros = torch.zeros_like(xs)
    expected = torch.tensor(EXPECTED[padding_mode], dtype=torch.float64)
    fast = trilinear_sample(vol, torch.stack([zeros, zeros, xs], dim=-1), padding_mode)
    slow = trilinear_gather(vol, zeros, zeros, xs, padding_mode)
    torch.testing.assert_close(fast.flatten(), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(slow.flatten(), expected, atol=1e-12, rtol=0)
    square = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64).view(1, 1, 1, 2, 2)
    at = torch.tensor([0.0, 1.5, 0.5], dtype=torch.float64).view(1, 1, 1, 1, 3)
    assert trilinear_sample(square, at, padding_mode).item() == pytest.approx(EXPECTED_Y[padding_mode], abs=1e-12)
    z, y, x = (at[..., i] for i in range(3))
    assert trilinear_gather(square, z, y, x, padding_mode).item() == pytest.approx(EXPECTED_Y[padding_mode], abs=1e-12)


def test_half_inputs_keep_their_dtype_and_stay_close():
    torch.manual_seed(4)
    m = _randomise(DSConv3d(4, 8, 3, 1.5, 1, padding_mode="original")).eval()
    x = torch.randn(1, 4, 5, 6, 7)
    with torch.no_grad():
        full = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = m(x)
        half = m.to(torch.bfloat16)(x.bfloat16())
    assert half.dtype == torch.bfloat16
    assert (mixed.float() - full).abs().max() <= 0.05 * full.abs().max()
    assert (half.float() - full).abs().max() <= 0.1 * full.abs().max()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": 4},
        {"kernel_size": 1},
        {"morph": 3},
        {"offset_norm": "instance"},
        {"padding_mode": "reflect"},
        {"out_channels": 3},
        {"in_channels": 0},
        {"extend_scope": float("nan")},
    ],
)
def test_bad_arguments_raise(kwargs):
    args = {"in_channels": 2, "out_channels": 8, **kwargs}
    with pytest.raises(ValueError, match="DSConv3d"):
        DSConv3d(**args)


@pytest.mark.parametrize(
    "x",
    [torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4, 4), torch.zeros(1, 2, 4, 4, 4, dtype=torch.long)],
    ids=["4d", "channels", "integer"],
)
def test_bad_inputs_raise(x):
    with pytest.raises(ValueError, match="DSConv3d"):
        DSConv3d(2, 4)(x)
    with pytest.raises(ValueError, match="padding_mode"):
        trilinear_sample(torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 1, 1, 1, 3), "reflect")
