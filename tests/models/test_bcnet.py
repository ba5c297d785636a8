"""Tests of medseg.models.bcnet: BCNet reconstructed from the paper's description (Yue et al.,
IEEE JBHI 2022). Modules are tested in isolation on random feature maps (ACFIM reverse
attention, BBEM bilateral split, GFIM channel attention); the network on 64x64 / 64x96 inputs."""

from __future__ import annotations

import pytest
import torch
from conformance import ModelConformance

from medseg.errors import CheckpointError
from medseg.models import count_parameters, create_model
from medseg.models.bcnet import ACFIM, BBEM, DEFAULT_LOSS_WEIGHTS, GFIM, BCNet

# Default network (width 64): Res2Net-50 v1b 26w4s without fc + CFIS + BBEM + heads.
BCNET_PARAMS = 26_958_481
RES2NET50_V1B_NO_FC = 23_669_352  # 25,718,352 with the ImageNet fc (2,049,000)
OUTPUT_KEYS = {"out", "aux1", "aux2", "aux3", "boundary"}


@pytest.fixture(scope="module")
def model() -> BCNet:
    torch.manual_seed(0)
    return create_model("bcnet")


def test_parameter_count(model):
    assert count_parameters(model) == BCNET_PARAMS
    assert count_parameters(model.encoder) == RES2NET50_V1B_NO_FC
    # the decoder part, module by module (width 64): reductions 3x3 of 512/1024/2048 -> 64
    assert count_parameters(model.reduce4) == 2048 * 64 * 9 + 2 * 64
    assert count_parameters(model) - count_parameters(model.encoder) == 3_289_129


def test_width_changes_count():
    torch.manual_seed(0)
    small = create_model("bcnet", width=32)
    assert count_parameters(small) < BCNET_PARAMS
    assert small.reduce2[0].out_channels == 32


@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_forward_shapes_all_outputs_at_input_size(model, size):
    x = torch.randn(2, 3, *size)
    model.eval()
    with torch.no_grad():
        outs = model.forward_outputs(x)
        y = model(x)
    assert set(outs) == OUTPUT_KEYS
    assert y.shape == (2, 1, *size) and y.dtype == torch.float32
    for key, value in outs.items():
        assert value.shape == (2, 1, *size), (key, tuple(value.shape))
        assert torch.isfinite(value).all(), key
    assert torch.equal(outs["out"], y)


def test_loss_weights_cover_every_output(model):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = model.eval().forward_outputs(x)
    assert set(DEFAULT_LOSS_WEIGHTS) == set(outs)
    assert DEFAULT_LOSS_WEIGHTS["out"] == 1.0
    assert all(w > 0 for w in DEFAULT_LOSS_WEIGHTS.values())
    assert BCNet.loss_weights is DEFAULT_LOSS_WEIGHTS


def test_grey_input_is_repeated_to_rgb():
    torch.manual_seed(0)
    grey = create_model("bcnet", in_channels=1).eval()
    torch.manual_seed(0)
    rgb = create_model("bcnet", in_channels=3).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(grey(x), rgb(x.repeat(1, 3, 1, 1)))
    with pytest.raises(ValueError, match="in_channels=1"):
        grey(torch.randn(1, 3, 64, 64))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = create_model("bcnet").train()
    x = torch.randn(2, 3, 64, 64)
    outs = net.forward_outputs(x)
    loss = sum(
        DEFAULT_LOSS_WEIGHTS[k] * torch.nn.functional.binary_cross_entropy_with_logits(v, torch.rand_like(v))
        for k, v in outs.items()
    )
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    zero = [n for n, p in net.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0]
    assert not missing, missing
    assert not zero, zero
    # the boundary head in particular, from the boundary loss alone
    net.zero_grad(set_to_none=True)
    outs = net.forward_outputs(x)
    outs["boundary"].sum().backward()
    for name in ("bbem.fg_edge.weight", "bbem.bg_edge.weight", "bbem.edge_fuse.weight"):
        grad = dict(net.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert net.head_out.weight.grad is None  # the area head does not feed the boundary


@pytest.mark.parametrize("size", [(70, 64), (64, 100), (48, 64)])
def test_bad_size_raises_value_error_naming_it(model, size):
    with pytest.raises(ValueError) as info:
        model(torch.randn(1, 3, *size))
    msg = str(info.value)
    bad = size[0] if size[0] % 32 else size[1]
    assert f"={bad}" in msg and "32" in msg, msg


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        BCNet(num_classes=2)
    with pytest.raises(ValueError, match="in_channels"):
        BCNet(in_channels=4)


# ---- modules in isolation --------------------------------------------------------------------


def test_acfim_reverse_attention_background_branch():
    torch.manual_seed(0)
    shallow = torch.randn(2, 8, 16, 16)
    confident_polyp = torch.full((2, 1, 4, 4), 30.0)  # sigmoid ~ 1
    confident_background = torch.full((2, 1, 4, 4), -30.0)  # sigmoid ~ 0
    assert ACFIM.background(shallow, confident_polyp).abs().max() < 1e-9
    torch.testing.assert_close(ACFIM.background(shallow, confident_background), shallow)
    # a guide at 0 logits (p = 0.5) halves the features; a half-polyp guide is spatially resized
    torch.testing.assert_close(ACFIM.background(shallow, torch.zeros(2, 1, 4, 4)), shallow / 2)
    half = torch.cat([torch.full((2, 1, 8, 4), 30.0), torch.full((2, 1, 8, 4), -30.0)], dim=3)
    out = ACFIM.background(shallow, half)
    assert out[..., :6].abs().max() < 1e-9
    torch.testing.assert_close(out[..., 10:], shallow[..., 10:])


def test_acfim_cross_attention_and_shapes():
    torch.manual_seed(0)
    m = ACFIM(16).eval()
    assert m.key_channels == 8
    shallow, deep, guide = torch.randn(2, 16, 8, 12), torch.randn(2, 16, 4, 6), torch.randn(2, 1, 2, 3)
    with torch.no_grad():
        attended, attn = m.attend(shallow, deep)
        out = m(shallow, deep, guide)
    assert attended.shape == shallow.shape and out.shape == (2, 16, 8, 12)
    assert attn.shape == (2, 8 * 12, 4 * 6)
    assert (attn >= 0).all()
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 96))
    # every shallow position attends to the deep map: changing the deep features changes the
    # attended output everywhere, but changing the shallow map's far corner changes only the
    # queries there (attention itself is position-wise in the queries)
    with torch.no_grad():
        other, _ = m.attend(shallow, deep + torch.randn_like(deep))
        assert ((other - attended).abs().amax(dim=1) > 0).all()
        s2 = shallow.clone()
        s2[..., 0, 0] += 1.0
        moved, _ = m.attend(s2, deep)
    diff = (moved - attended).abs().amax(dim=1)
    assert diff[:, 0, 0].min() > 0 and diff[:, 1:, :].max() == 0


def test_bbem_split_sums_to_features_and_shapes():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 16, 24)
    guide = torch.randn(2, 1, 4, 6) * 3
    fg, bg = BBEM.split(x, guide)
    torch.testing.assert_close(fg + bg, x)
    # the foreground share is sigmoid(guide): with a confident polyp guide bg vanishes
    fg1, bg1 = BBEM.split(x, torch.full((2, 1, 4, 6), 30.0))
    assert bg1.abs().max() < 1e-9
    torch.testing.assert_close(fg1, x)
    m = BBEM(in_channels=12, channels=8).eval()
    with torch.no_grad():
        feat, boundary = m(torch.randn(2, 12, 16, 24), guide)
    assert feat.shape == (2, 8, 16, 24) and boundary.shape == (2, 1, 16, 24)


def test_gfim_shape_and_channel_weights_in_unit_interval():
    torch.manual_seed(0)
    m = GFIM(16, reduction=4).eval()
    a, b = torch.randn(2, 16, 4, 6) * 5, torch.randn(2, 16, 8, 12) * 5
    with torch.no_grad():
        z, w = m.integrate(a, b)
        out = m(a, b)
    assert out.shape == (2, 16, 8, 12) and z.shape == (2, 16, 8, 12)
    assert w.shape == (2, 16, 1, 1)
    assert (w > 0).all() and (w < 1).all()
    # the weights are global: they depend on the whole map, and differ between samples
    assert not torch.equal(w[0], w[1])
    with pytest.raises(ValueError, match="reduction"):
        GFIM(4, reduction=8)


# ---- encoder weights -------------------------------------------------------------------------


def _imagenet_state(model: BCNet) -> dict[str, torch.Tensor]:
    """The published Res2Net-50 v1b 26w4s ImageNet file's layout: the encoder's keys plus the
    classifier ``fc.weight`` (1000, 2048) / ``fc.bias`` (1000,); the published file
    (res2net50_v1b_26w_4s-3cf99910.pth) also holds BN ``num_batches_tracked``."""
    g = torch.Generator().manual_seed(7)
    state = {}
    for k, v in model.encoder.state_dict().items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(5, dtype=torch.long)
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(v.shape, generator=g) * 0.05
    state["fc.weight"] = torch.randn(1000, 2048, generator=g)
    state["fc.bias"] = torch.randn(1000, generator=g)
    return state


def test_encoder_weights_load_strictly(model, tmp_path):
    state = _imagenet_state(model)
    path = tmp_path / "res2net50_v1b_26w_4s.pth"
    torch.save(state, path)
    torch.manual_seed(1)
    net = create_model("bcnet", encoder_weights=str(path))
    enc = net.encoder.state_dict()
    assert all(torch.equal(enc[k], state[k]) for k in enc)

    broken = dict(state)
    del broken["layer3.2.convs.1.weight"]
    broken["layer9.weight"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as info:
        create_model("bcnet", encoder_weights=str(tmp_path / "broken.pth"))
    assert "layer3.2.convs.1.weight" in str(info.value) and "layer9.weight" in str(info.value)


# ---- the model contract (tests/models/conformance.py): export, ONNX, seeds, batch consistency ------


class TestConformanceBCNet(ModelConformance):
    name = "bcnet"
    kwargs: dict = {}
    in_channels = 3
    sizes = [(64, 64), (64, 96)]
    bad_sizes = [(70, 64), (64, 100)]
    expected_params = {"default": BCNET_PARAMS, "grey": BCNET_PARAMS, "width 32": 25_045_633}
    param_kwargs = {"default": {}, "grey": {"in_channels": 1}, "width 32": {"width": 32}}
    export = "torch.export"
