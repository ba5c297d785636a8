"""Tests of the two options of medseg.models.dscnet.DSCNet: the multi-scale fusion head
(``fusion_head``) and the reconstructed multi-view feature fusion with random drop
(``multi_view``, paper Sec. 3.2). Parameter counts are computed here by hand from the layer
widths; the defaults must stay the authors' network (count, keys, outputs)."""

from __future__ import annotations

import fnmatch
import itertools

import pytest
import torch
from conformance import ModelConformance
from test_dscnet import authors_layout
from weight_fixtures import random_state

from medseg.models import count_parameters
from medseg.models.dscnet import DSCNet, fuse_views, load_original, view_keep_mask

# ------------------------------------------------------------------------------------------------
# Parameter counts by hand: conv weight + bias, GroupNorm / BatchNorm weight + bias.


def conv(c_in: int, c_out: int, k: int) -> int:
    return c_out * c_in * k * k + c_out


def plain(c_in: int, c_out: int) -> int:
    """3x3 conv + GroupNorm (ConvGNReLU)."""
    return conv(c_in, c_out, 3) + 2 * c_out


def dsconv(c_in: int, c_out: int, k: int) -> int:
    """offset conv (3x3, c_in -> 2K) + its norm (2K channels) + both axis convs (K taps) + GroupNorm."""
    return conv(c_in, 2 * k, 3) + 2 * 2 * k + 2 * (c_out * c_in * k + c_out) + 2 * c_out


def block(c_in: int, c_out: int, k: int, templates: int) -> int:
    """3x3 branch + ``templates`` DSConv pairs + the fuse conv (3*c_out -> c_out)."""
    return plain(c_in, c_out) + templates * 2 * dsconv(c_in, c_out, k) + plain(3 * c_out, c_out)


def network_params(
    n: int = 16,
    k: int = 9,
    c_in: int = 1,
    c_out: int = 1,
    templates: int = 1,
    fusion_width: int | None = None,
    bottleneck: bool = False,
) -> int:
    widths = [(c_in, n), (n, 2 * n), (2 * n, 4 * n), (4 * n, 8 * n), (12 * n, 4 * n), (6 * n, 2 * n), (3 * n, n)]
    total = sum(block(a, b, k, templates) for a, b in widths)
    head_in = n
    if fusion_width is not None:
        w = fusion_width
        levels = ([8 * n] if bottleneck else []) + [4 * n, 2 * n, n]
        total += sum(conv(c, w, 1) for c in levels) + block(len(levels) * w, w, k, templates)
        head_in = w
    return total + conv(head_in, c_out, 1)


def meta_count(**kwargs) -> int:
    with torch.device("meta"):
        return count_parameters(DSCNet(**kwargs))


def test_hand_count_reproduces_the_authors_network():
    assert network_params() == 2_094_169 == meta_count()


@pytest.mark.parametrize(
    "kwargs,hand,literal",
    [
        ({"fusion_head": True}, {"fusion_width": 16}, 2_153_365),
        ({"fusion_head": True, "fusion_bottleneck": True}, {"fusion_width": 16, "bottleneck": True}, 2_172_133),
        ({"multi_view": True}, {"templates": 2}, 3_211_473),
        ({"multi_view": True, "fusion_head": True}, {"templates": 2, "fusion_width": 16}, 3_314_105),
        (
            {
                "n_basic_layer": 8,
                "kernel_size": 5,
                "in_channels": 3,
                "out_channels": 2,
                "fusion_head": True,
                "fusion_width": 12,
                "multi_view": True,
                "view_templates": 3,
            },
            {"n": 8, "k": 5, "c_in": 3, "c_out": 2, "fusion_width": 12, "templates": 3},
            None,
        ),
    ],  # fmt: skip
    ids=["fusion", "fusion+bottleneck", "multi-view", "both", "both, other widths"],
)
def test_parameter_counts_with_options(kwargs, hand, literal):
    count = meta_count(**kwargs)
    assert count == network_params(**hand)
    if literal is not None:  # the numbers the DSCNet docstring states
        assert count == literal


# ------------------------------------------------------------------------------------------------
# Defaults unchanged


def test_defaults_are_the_authors_network():
    explicit = DSCNet(fusion_head=False, multi_view=False)
    assert count_parameters(explicit) == 2_094_169
    keys = list(explicit.state_dict())
    assert keys == list(DSCNet().state_dict())
    assert set(keys) == set(authors_layout())
    assert not explicit.fusion_head and not explicit.multi_view


def test_single_template_without_drop_is_the_authors_block():
    """multi_view with m = 1 and p = 0 has the authors' keys and gives their outputs."""
    torch.manual_seed(0)
    ref = DSCNet(n_basic_layer=4, kernel_size=3)
    mv = DSCNet(n_basic_layer=4, kernel_size=3, multi_view=True, view_templates=1, view_drop=0.0)
    mv.load_state_dict(ref.state_dict())  # strict: same keys and shapes
    x = torch.randn(2, 1, 16, 24)
    for mode in (True, False):
        ref.train(mode)
        mv.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(mv(x), ref(x), rtol=0, atol=0)


def test_authors_state_dict_warm_starts_template_one():
    state = random_state(authors_layout(n=4, k=3))
    model = DSCNet(n_basic_layer=4, kernel_size=3, multi_view=True, fusion_head=True)
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    # out_conv reads the fusion width (here n, so the same shape); only new modules are missing
    allowed = ("conv*_t2.*", "proj*", "conv18*", "conv19.*")
    assert result.missing_keys and all(any(fnmatch.fnmatch(k, p) for p in allowed) for k in result.missing_keys)
    assert load_original(state).multi_view is False


# ------------------------------------------------------------------------------------------------
# Shapes, keys, gradients


def small(**kwargs) -> DSCNet:
    torch.manual_seed(kwargs.pop("seed", 0))
    return DSCNet(n_basic_layer=4, kernel_size=3, **kwargs)


def test_new_state_dict_keys():
    base = set(DSCNet(n_basic_layer=4, kernel_size=3).state_dict())
    both = set(small(fusion_head=True, fusion_bottleneck=True, multi_view=True, view_templates=3).state_dict())
    assert base <= both
    new_modules = {k.split(".")[0] for k in both - base}
    prefixes = ("0", "2", "4", "6", "12", "14", "16", "18")
    expected = {f"conv{p}{a}_t{t}" for p in prefixes for a in "xy" for t in (2, 3)}
    expected |= {"proj7", "proj13", "proj15", "proj17", "conv180", "conv18x", "conv18y", "conv19"}
    assert new_modules == expected


@pytest.mark.parametrize(
    "kwargs",
    [{"fusion_head": True}, {"fusion_head": True, "fusion_width": 8, "fusion_bottleneck": True},
     {"multi_view": True}, {"multi_view": True, "fusion_head": True, "view_templates": 3}],
    ids=["fusion", "fusion w8 bottleneck", "multi-view", "both m3"],
)  # fmt: skip
def test_shapes_train_and_eval(kwargs):
    model = small(out_channels=2, **kwargs)
    x = torch.randn(2, 1, 32, 48)
    assert model(x).shape == (2, 2, 32, 48)  # training mode (drops views)
    with torch.no_grad():
        y = model.eval()(x)
    assert y.shape == (2, 2, 32, 48) and y.dtype == torch.float32 and torch.isfinite(y).all()


UNUSED = ("conv*x.dsc_conv_y.*", "conv*y.dsc_conv_x.*", "conv*x_t*.dsc_conv_y.*", "conv*y_t*.dsc_conv_x.*")


def test_gradients_reach_the_new_modules():
    model = small(fusion_head=True, fusion_bottleneck=True, multi_view=True, view_drop=0.0).train()
    model(torch.randn(2, 1, 16, 16)).square().mean().backward()
    params = dict(model.named_parameters())
    new = [n for n in params if n.startswith(("proj", "conv18", "conv19")) or "_t2." in n]
    assert len(new) > 40
    missing = [n for n in new if params[n].grad is None and not any(fnmatch.fnmatch(n, p) for p in UNUSED)]
    assert not missing
    assert all(params[n].grad.abs().sum() > 0 for n in ("proj7.weight", "proj13.weight", "conv18x.offset_conv.weight"))
    assert params["conv12y_t2.dsc_conv_y.weight"].grad.abs().sum() > 0


def test_dropped_views_are_not_computed():
    """The keep mask is drawn with torch.rand per block in forward order; dropped views get no
    gradient, kept ones do."""
    model = small(multi_view=True, view_drop=0.5).train()
    x = torch.randn(1, 1, 16, 16)
    torch.manual_seed(7)
    masks = [torch.rand(4) >= 0.5 for _ in range(7)]  # 7 blocks x (x1, y1, x2, y2)
    torch.manual_seed(7)
    model(x).sum().backward()
    blocks = ("0", "2", "4", "6", "12", "14", "16")
    dropped = 0
    for prefix, mask in zip(blocks, masks):
        names = [f"conv{prefix}x", f"conv{prefix}y", f"conv{prefix}x_t2", f"conv{prefix}y_t2"]
        for name, kept in zip(names, mask.tolist()):
            grad = getattr(model, name).offset_conv.weight.grad
            assert (grad is not None) == kept, (name, kept)
            dropped += not kept
    assert 0 < dropped < 28  # seed 7 drops some views and keeps others


# ------------------------------------------------------------------------------------------------
# Random drop: training only, seeded, expectation kept


def test_view_keep_mask():
    state = torch.random.get_rng_state()
    assert view_keep_mask(6, 0.5, training=False) == [True] * 6
    assert view_keep_mask(6, 0.0, training=True) == [True] * 6
    assert torch.equal(torch.random.get_rng_state(), state)  # no random number consumed
    torch.manual_seed(0)
    draws = torch.tensor([view_keep_mask(4, 0.3, training=True) for _ in range(5000)], dtype=torch.float)
    assert abs(float(draws.mean()) - 0.7) < 0.02  # each view kept with probability 1 - p
    torch.manual_seed(3)
    a = view_keep_mask(8, 0.5, True)
    torch.manual_seed(3)
    assert view_keep_mask(8, 0.5, True) == a


@pytest.mark.parametrize("m,p", [(1, 0.5), (2, 0.5), (3, 0.3)])
def test_fuse_views_expectation_equals_eval(m, p):
    """Exact expectation over all 2^m keep masks of the training fusion = the eval fusion."""
    g = torch.Generator().manual_seed(m)
    views = [torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64) for _ in range(m)]
    eval_out = fuse_views(views, 0.0, views[0])
    torch.testing.assert_close(eval_out, sum(views) / m)
    expected = torch.zeros_like(eval_out)
    for keep in itertools.product((True, False), repeat=m):
        prob = 1.0
        for kept in keep:
            prob *= (1 - p) if kept else p
        sample = fuse_views([v if kept else None for v, kept in zip(views, keep)], p, views[0])
        expected += prob * sample
    torch.testing.assert_close(expected, eval_out)
    # one kept view of m, dropped with p: scaled by 1 / (m (1 - p))
    only = fuse_views([views[0]] + [None] * (m - 1), p, views[0])
    torch.testing.assert_close(only, views[0] / (m * (1 - p)))
    assert torch.equal(fuse_views([None] * m, p, views[0]), torch.zeros_like(views[0]))


def test_fuse_views_errors():
    with pytest.raises(ValueError, match="at least one"):
        fuse_views([], 0.0, torch.zeros(1))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        fuse_views([torch.zeros(1)], 1.0, torch.zeros(1))


def group_offsets(**kwargs) -> DSCNet:
    """GroupNorm offsets (pro variant): no BatchNorm anywhere, so train and eval differ only by the drop."""
    return small(offset_norm="group", fusion_head=True, multi_view=True, **kwargs)


def test_eval_is_deterministic_and_equals_train_without_drop():
    model = group_offsets(view_drop=0.5).eval()
    x = torch.randn(2, 1, 16, 24)
    with torch.no_grad():
        torch.manual_seed(0)
        first = model(x)
        torch.manual_seed(1)
        second = model(x)
    assert torch.equal(first, second)
    no_drop = group_offsets(view_drop=0.0, seed=5)
    no_drop.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(no_drop.train()(x), first, rtol=0, atol=1e-6)


def test_drop_in_training_changes_outputs_and_is_seeded():
    model = group_offsets(view_drop=0.5).train()
    x = torch.randn(2, 1, 16, 24)
    with torch.no_grad():
        outs = []
        for seed in (0, 0, 1):
            torch.manual_seed(seed)
            outs.append(model(x))
        ref = model.eval()(x)
    assert torch.equal(outs[0], outs[1])  # same torch seed, same drops
    assert (outs[0] - outs[2]).abs().max() > 1e-4  # another seed drops other views
    assert (outs[0] - ref).abs().max() > 1e-4  # training drops, eval does not


# ------------------------------------------------------------------------------------------------
# Arguments, state-dict round trip


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"fusion_width": 8}, "fusion_head"),
        ({"fusion_bottleneck": True}, "fusion_head"),
        ({"view_drop": 0.1}, "multi_view"),
        ({"view_templates": 3}, "multi_view"),
        ({"fusion_head": True, "fusion_width": 6}, "multiple of 4"),
        ({"multi_view": True, "view_templates": 0}, ">= 1"),
        ({"multi_view": True, "view_drop": 1.0}, r"\[0, 1\)"),
        ({"multi_view": True, "view_drop": -0.1}, r"\[0, 1\)"),
    ],
)
def test_bad_option_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DSCNet(n_basic_layer=4, kernel_size=3, **kwargs)


def test_state_dict_round_trip_with_options(tmp_path):
    kwargs = {"fusion_head": True, "fusion_bottleneck": True, "multi_view": True, "view_templates": 3}
    a = small(seed=0, **kwargs)
    a(torch.randn(1, 1, 16, 16))  # one training step's BatchNorm statistics
    path = tmp_path / "options.pt"
    torch.save(a.state_dict(), path)
    b = small(seed=1, **kwargs)
    x = torch.randn(2, 1, 16, 16)
    a.eval()
    b.eval()
    with torch.no_grad():
        before = b(x)
        b.load_state_dict(torch.load(path, weights_only=True))  # strict
        assert torch.equal(b(x), a(x))
    assert (before - a(x)).abs().max() > 0


class TestConformanceDSCNetOptions(ModelConformance):
    """Both options on (no drop, so that every view gets a gradient in the backward test)."""

    name = "dscnet"
    kwargs = {"n_basic_layer": 4, "kernel_size": 3, "fusion_head": True, "multi_view": True, "view_drop": 0.0}
    in_channels = 1
    sizes = [(32, 32), (24, 40)]
    bad_sizes = [(36, 32)]
    expected_params = {"both options, defaults": 3_314_105}
    param_kwargs = {"both options, defaults": {"fusion_head": True, "multi_view": True}}
    allowed_unused = UNUSED
    export = "torchscript"
