"""Tests of medseg.models.pranet: parameter parity with the authors' PraNet_Res2Net.py, shapes,
size checks, the no-ReLU BasicConv2d quirk, reverse attention, and loading of state dicts in the
authors' layout (``PraNet-19.pth``) and of the Res2Net ImageNet file."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conformance import ModelConformance
from test_encoder_res2net import published_layout, random_state

from medseg.errors import CheckpointError
from medseg.models import count_parameters, create_model
from medseg.models.pranet import BasicConv2d, PraNet, ReverseAttention, load_original


def randomise_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm affine parameters and running statistics (so eval-mode BN matters)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


@pytest.fixture(scope="module")
def model() -> PraNet:
    torch.manual_seed(0)
    return randomise_bn(create_model("pranet")).eval()


def test_parameter_counts():
    assert count_parameters(create_model("pranet")) == 30_498_319
    assert count_parameters(create_model("pranet", keep_fc=True)) == 32_547_319


@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_all_outputs_at_input_size_and_out_equals_forward(model, size):
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        outs = model.forward_outputs(x)
        y = model(x)
    assert list(outs) == ["out", "aux1", "aux2", "aux3"]
    for key, value in outs.items():
        assert tuple(value.shape) == (2, 1, *size), key
        assert value.dtype == torch.float32
    assert torch.equal(outs["out"], y)
    assert not torch.allclose(outs["out"], outs["aux3"])  # distinct maps


def test_grey_input_is_repeated_to_rgb(model):
    x = torch.randn(2, 1, 64, 64)
    model.in_channels = 1  # as built by create_model("pranet", in_channels=1); same weights
    try:
        with torch.no_grad():
            grey = model(x)
    finally:
        model.in_channels = 3
    with torch.no_grad():
        torch.testing.assert_close(grey, model(x.repeat(1, 3, 1, 1)), rtol=0, atol=0)
    assert create_model("pranet", in_channels=1).in_channels == 1


@pytest.mark.parametrize("size, bad", [((80, 64), "H=80"), ((64, 72), "W=72"), ((48, 100), "H=48")])
def test_size_not_multiple_of_32_raises_value_error_naming_it(model, size, bad):
    with pytest.raises(ValueError, match=rf"multiples of 32.*{bad} \(nearest valid: "):
        model(torch.randn(1, 3, *size))


def test_bad_arguments_and_channels_raise(model):
    with pytest.raises(ValueError, match="in_channels=3.*2 channels"):
        model(torch.randn(1, 2, 64, 64))
    with pytest.raises(ValueError, match="in_channels 3 .* or 1"):
        PraNet(in_channels=4)
    with pytest.raises(ValueError, match="out_channels must be 1, got 2"):
        PraNet(out_channels=2)


def test_basic_conv2d_applies_no_relu():
    torch.manual_seed(0)
    unit = randomise_bn(BasicConv2d(4, 8, 3, padding=1)).eval()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        y = unit(x)
        conv = F.conv2d(x, unit.conv.weight, padding=1)
        bn = unit.bn
        by_hand = (conv - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
        by_hand = by_hand * bn.weight[:, None, None] + bn.bias[:, None, None]
    torch.testing.assert_close(y, by_hand)
    assert float(y.min()) < 0.0  # a ReLU would have removed these


def test_reverse_attention_in_isolation():
    ra = ReverseAttention()
    prior = torch.tensor([[-8.0, -1.0], [0.0, 3.0]]).view(1, 1, 2, 2)
    ones = torch.ones(1, 5, 2, 2)
    expected = 1.0 - torch.tensor([[0.00033535, 0.26894142], [0.5, 0.95257413]])
    torch.testing.assert_close(ra.attention(prior), expected.view(1, 1, 2, 2))
    torch.testing.assert_close(ra(ones, prior), expected.view(1, 1, 2, 2).expand(1, 5, 2, 2))
    feats = torch.randn(2, 7, 4, 3)
    prior = torch.randn(2, 1, 4, 3)
    torch.testing.assert_close(ra(feats, prior), feats * (1 - torch.sigmoid(prior)))


def test_reverse_attention_stage_4_is_wired_as_in_the_authors_code(model):
    """Input of ra4_conv1 = layer4 * (1 - sigmoid(global map resized x0.25)); the stage output
    (before x32 upsampling) = ra4_conv5(...) + that resized prior."""
    seen = {}
    hooks = [
        model.encoder.layer4.register_forward_hook(lambda m, i, o: seen.__setitem__("x4", o)),
        model.agg1.register_forward_hook(lambda m, i, o: seen.__setitem__("global", o)),
        model.ra4_conv1.register_forward_hook(lambda m, i, o: seen.__setitem__("ra4_in", i[0])),
        model.ra4_conv5.register_forward_hook(lambda m, i, o: seen.__setitem__("ra4_out", o)),
    ]
    try:
        with torch.no_grad():
            outs = model.forward_outputs(torch.randn(1, 3, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    prior = F.interpolate(seen["global"], scale_factor=0.25, mode="bilinear")
    assert prior.shape[2:] == seen["x4"].shape[2:] == (2, 2)
    torch.testing.assert_close(seen["ra4_in"], seen["x4"] * (1 - torch.sigmoid(prior)))
    s4 = seen["ra4_out"] + prior
    torch.testing.assert_close(outs["aux2"], F.interpolate(s4, scale_factor=32.0, mode="bilinear"))
    torch.testing.assert_close(outs["aux3"], F.interpolate(seen["global"], scale_factor=8.0, mode="bilinear"))


# Gradient flow to every parameter (keep_fc=False) at 64x64 and 64x96: TestConformancePraNet
# .test_forward_and_backward (all four outputs in the loss, allowed_unused empty).


# -- weight files ----------------------------------------------------------------------------------


def test_encoder_weights_load_the_res2net_imagenet_file(tmp_path):
    state = random_state(published_layout(), seed=1)  # published keys incl. fc.* and counters
    path = tmp_path / "res2net50_v1b_26w_4s-3cf99910.pth"
    torch.save(state, path)
    net = create_model("pranet", encoder_weights=str(path))
    for k, v in net.encoder.state_dict().items():
        assert torch.equal(v, state[k]), k
    del state["layer1.0.downsample.1.weight"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing keys.*layer1\.0\.downsample\.1\.weight"):
        create_model("pranet", encoder_weights=str(path))


# Key names of the authors' PraNet state dict (PraNet-19.pth), from lib/PraNet_Res2Net.py.
AUTHORS_KEYS = [
    "resnet.conv1.0.weight", "resnet.conv1.6.weight", "resnet.bn1.num_batches_tracked",
    "resnet.layer1.0.convs.2.weight", "resnet.layer4.2.bns.0.running_var",
    "resnet.layer2.0.downsample.1.weight", "resnet.fc.weight", "resnet.fc.bias",
    "rfb2_1.branch0.0.conv.weight", "rfb3_1.branch1.3.conv.weight", "rfb4_1.branch3.2.bn.running_mean",
    "rfb4_1.conv_cat.conv.weight", "rfb2_1.conv_res.bn.weight",
    "agg1.conv_upsample1.conv.weight", "agg1.conv_upsample5.bn.bias", "agg1.conv_concat2.conv.weight",
    "agg1.conv_concat3.bn.running_var", "agg1.conv4.conv.weight", "agg1.conv5.weight", "agg1.conv5.bias",
    "ra4_conv1.conv.weight", "ra4_conv5.bn.num_batches_tracked", "ra3_conv4.conv.weight",
    "ra2_conv1.bn.weight", "ra2_conv4.bn.running_mean",
]  # fmt: skip


def authors_state(seed: int = 2) -> tuple[dict[str, torch.Tensor], PraNet]:
    """A random state dict in the authors' layout: ours renamed by the inverse of the documented
    map (``encoder.`` -> ``resnet.``), with randomised BatchNorm statistics; and the network
    (eval mode) it was taken from."""
    torch.manual_seed(seed)
    src = randomise_bn(PraNet(keep_fc=True), seed).eval()
    state = {
        ("resnet." + k[len("encoder.") :] if k.startswith("encoder.") else k): v for k, v in src.state_dict().items()
    }
    return state, src


@pytest.fixture(scope="module")
def authors() -> tuple[dict[str, torch.Tensor], PraNet]:
    return authors_state()


def test_authors_layout_has_the_known_keys_and_shapes(authors):
    state = authors[0]
    missing = [k for k in AUTHORS_KEYS if k not in state]
    assert not missing, missing
    assert tuple(state["agg1.conv5.weight"].shape) == (1, 96, 1, 1)
    assert tuple(state["ra4_conv2.conv.weight"].shape) == (256, 256, 5, 5)
    assert tuple(state["ra3_conv4.conv.weight"].shape) == (1, 64, 3, 3)
    assert tuple(state["rfb4_1.branch3.1.conv.weight"].shape) == (32, 32, 1, 7)
    assert tuple(state["rfb3_1.conv_res.conv.weight"].shape) == (32, 1024, 1, 1)
    assert not any(k.startswith("encoder.") for k in state)
    resnet = {k[len("resnet.") :]: tuple(v.shape) for k, v in state.items() if k.startswith("resnet.")}
    assert resnet == published_layout()


def test_load_original_round_trip(tmp_path, authors):
    state, src = authors
    path = tmp_path / "PraNet-19.pth"
    torch.save(state, path)
    net = load_original(str(path))
    assert net.encoder.fc is not None
    assert count_parameters(net) == 32_547_319
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = net.forward_outputs(x), src.forward_outputs(x)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert torch.equal(net.ra2_conv4.bn.running_mean, state["ra2_conv4.bn.running_mean"])


def test_load_original_errors_name_missing_and_extra_keys(authors):
    state = authors[0]
    missing = dict(state)
    del missing["ra3_conv2.bn.running_var"]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): ra3_conv2\.bn\.running_var"):
        load_original(missing)
    extra = dict(state, **{"ra5_conv1.conv.weight": torch.zeros(1, 1, 1, 1)})
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): ra5_conv1\.conv\.weight"):
        load_original(extra)
    missing_backbone = dict(state)
    del missing_backbone["resnet.layer3.5.convs.1.weight"]
    with pytest.raises(CheckpointError, match=r"encoder\.layer3\.5\.convs\.1\.weight"):
        load_original(missing_backbone)


class TestConformancePraNet(ModelConformance):
    name = "pranet"
    kwargs: dict = {}
    in_channels = 3
    sizes = [(64, 64), (64, 96)]
    bad_sizes = [(80, 64), (64, 72)]
    expected_params = {"default": 30_498_319, "keep_fc": 32_547_319}
    param_kwargs = {"default": {}, "keep_fc": {"keep_fc": True}}
    export = "torchscript"
