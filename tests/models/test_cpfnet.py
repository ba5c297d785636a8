"""Tests of medseg.models.cpfnet: parameter parity with the authors' BaseNet.py (both variants),
SAPF weight sharing and gamma = 0 start, GPG shapes, log-softmax output, gradient flow, size
checks, torchvision encoder weights and loading of state dicts in the authors' layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conformance import ModelConformance
from test_encoder_resnet import random_state, torchvision_resnet_layout

from medseg.errors import CheckpointError
from medseg.models import count_parameters, create_model
from medseg.models.cpfnet import GPG, SAPF, CPFNet, load_original

# Parameter counts of the authors' CPFNet (expansion=2, base_channel=32) with 2 classes
# (counted from OCT/CPFNet/model/BaseNet.py of github.com/FENGShuanglang/CPFNet_Project): registered / used in forward. The head's last conv (32 -> classes, bias)
# adds 33 per class.
FULL_2 = 43_269_891
USED_2 = 30_650_757


def authors_layout(n_classes: int = 2) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the authors' CPFNet state dict, written out from ``OCT/CPFNet/model/
    BaseNet.py`` (SAPblock, DecoderBlock, GPG_2/3/4, SeparableConv2d, ConvBnRelu, BaseNetHead)
    and ``model/resnet.py`` (``backbone``: torchvision ResNet-34 incl. ``fc``), independently of
    medseg's classes. ``()`` marks num_batches_tracked (saved by PyTorch >= 0.4.1, 2019 code)."""
    shapes = {f"backbone.{k}": v for k, v in torchvision_resnet_layout().items()}

    def bn(name: str, c: int) -> None:
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{s}"] = (c,)
        shapes[f"{name}.num_batches_tracked"] = ()

    def conv_bn_relu(name: str, cin: int, cout: int, k: int) -> None:
        shapes[f"{name}.conv.weight"] = (cout, cin, k, k)
        bn(f"{name}.bn", cout)

    def sapblock(p: str, c: int) -> None:
        shapes[f"{p}.conv3x3.weight"] = (c, c, 3, 3)
        shapes[f"{p}.conv3x3.bias"] = (c,)
        for i in range(3):
            bn(f"{p}.bn.{i}", c)
        for i in range(2):
            shapes[f"{p}.conv1x1.{i}.weight"] = (c, 2 * c, 1, 1)
            shapes[f"{p}.conv1x1.{i}.bias"] = (c,)
            shapes[f"{p}.conv3x3_1.{i}.weight"] = (c // 2, c, 3, 3)
            shapes[f"{p}.conv3x3_1.{i}.bias"] = (c // 2,)
            shapes[f"{p}.conv3x3_2.{i}.weight"] = (2, c // 2, 3, 3)
            shapes[f"{p}.conv3x3_2.{i}.bias"] = (2,)
        conv_bn_relu(f"{p}.conv_last", c, c, 1)
        shapes[f"{p}.gamma"] = (1,)

    def decoder(p: str, cin: int, cout: int) -> None:
        conv_bn_relu(f"{p}.conv_3x3", cin, cin, 3)
        conv_bn_relu(f"{p}.conv_1x1", cin, cout, 1)
        sapblock(f"{p}.sap", cin)

    def gpg(p: str, ins: list[int], width: int) -> None:
        k = len(ins)
        for level, c in zip(range(6 - k, 6), ins):
            shapes[f"{p}.conv{level}.0.weight"] = (width, c, 3, 3)
            bn(f"{p}.conv{level}.1", width)
        shapes[f"{p}.conv_out.0.weight"] = (width, k * width, 1, 1)
        bn(f"{p}.conv_out.1", width)
        for i in range(1, k + 1):
            shapes[f"{p}.dilation{i}.0.conv1.weight"] = (k * width, 1, 3, 3)
            bn(f"{p}.dilation{i}.0.bn", k * width)
            shapes[f"{p}.dilation{i}.0.pointwise.weight"] = (width, k * width, 1, 1)
            bn(f"{p}.dilation{i}.1", width)

    sapblock("sap", 512)
    decoder("decoder5", 512, 256)
    decoder("decoder4", 256, 128)
    decoder("decoder3", 128, 64)
    decoder("decoder2", 64, 64)
    gpg("mce_2", [64, 128, 256, 512], 64)
    gpg("mce_3", [128, 256, 512], 128)
    gpg("mce_4", [256, 512], 256)
    conv_bn_relu("main_head.conv_1x1_3x3.0", 64, 32, 1)
    conv_bn_relu("main_head.conv_1x1_3x3.1", 32, 32, 3)
    shapes["main_head.conv_1x1_2.weight"] = (n_classes, 32, 1, 1)
    shapes["main_head.conv_1x1_2.bias"] = (n_classes,)
    return shapes


def n_learnable(shapes: dict[str, tuple[int, ...]]) -> int:
    total = 0
    for key, shape in shapes.items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        total += int(torch.tensor(shape).prod()) if shape else 1
    return total


UNUSED_PATTERNS = ("encoder.fc.", "decoder5.sap.", "decoder4.sap.", "decoder3.sap.", "decoder2.sap.",
                   "sap.conv1x1.1.", "sap.conv3x3_1.1.", "sap.conv3x3_2.1.", "decoder5.conv_3x3.")  # fmt: skip


# -- parameter counts -------------------------------------------------------------------------


def test_parameter_counts_both_variants_and_per_class():
    with torch.device("meta"):
        assert count_parameters(create_model("cpfnet")) == USED_2
        assert count_parameters(create_model("cpfnet", keep_unused=True)) == FULL_2
        for c in (3, 4):
            assert count_parameters(create_model("cpfnet", num_classes=c)) == USED_2 + 33 * (c - 2)
            assert count_parameters(create_model("cpfnet", keep_unused=True, num_classes=c)) == FULL_2 + 33 * (c - 2)


def test_authors_layout_restatement_counts_43_269_891():
    # the independent key list itself reproduces the count measured on the authors' code
    assert n_learnable(authors_layout(2)) == FULL_2
    assert n_learnable(authors_layout(4)) == FULL_2 + 66


def test_keep_unused_state_dict_equals_authors_layout():
    with torch.device("meta"):
        model = CPFNet(keep_unused=True, num_classes=4)
    ours = {}
    for k, v in model.state_dict().items():
        key = "backbone." + k[len("encoder.") :] if k.startswith("encoder.") else k
        ours[key] = tuple(v.shape)
    expected = authors_layout(4)
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert ours == expected


def test_defaults_and_argument_checks():
    m = create_model("cpfnet")
    assert (m.in_channels, m.num_classes, m.keep_unused) == (3, 2, False)
    assert not hasattr(m.encoder, "fc") and m.decoder5.conv_3x3 is None and m.decoder4.sap is None
    assert len(m.sap.conv1x1) == 1
    assert CPFNet(out_planes=4).main_head.conv_1x1_2.out_channels == 4  # the original's name
    with pytest.raises(ValueError, match="in_channels 1 .* got 2"):
        CPFNet(in_channels=2)
    with pytest.raises(ValueError, match="expansion=4"):
        CPFNet(expansion=4)
    with pytest.raises(ValueError, match="disagree"):
        CPFNet(num_classes=3, out_planes=4)


# -- SAPF -------------------------------------------------------------------------------------


def _branch_inputs(sapf: SAPF, x: torch.Tensor) -> list[torch.Tensor]:
    """What each of SAPF's three BatchNorms receives (the three dilated conv outputs)."""
    seen: list[torch.Tensor] = []
    hooks = [bn.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone())) for bn in sapf.bn]
    try:
        sapf(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_sapf_shares_one_weight_across_dilations_1_2_4():
    torch.manual_seed(0)
    sapf = SAPF(8).eval()
    # a single CxCx3x3 Parameter in the whole block
    square = [n for n, p in sapf.named_parameters() if p.shape == (8, 8, 3, 3)]
    assert square == ["conv3x3.weight"]
    x = torch.randn(2, 8, 16, 16)
    w, b = sapf.conv3x3.weight, sapf.conv3x3.bias
    with torch.no_grad():
        b1, b2, b3 = _branch_inputs(sapf, x)
        assert torch.allclose(b1, F.conv2d(x, w, b, padding=1), atol=1e-5)  # bias on dilation 1 only
        assert torch.allclose(b2, F.conv2d(x, w, None, padding=2, dilation=2), atol=1e-5)
        assert torch.allclose(b3, F.conv2d(x, w, None, padding=4, dilation=4), atol=1e-5)
        # changing the one weight changes all three branches: zero it and only the bias is left
        sapf.conv3x3.weight.zero_()
        z1, z2, z3 = _branch_inputs(sapf, x)
    assert torch.allclose(z1, b.detach().view(1, 8, 1, 1).expand_as(z1))
    assert z2.abs().max() == 0 and z3.abs().max() == 0
    assert not torch.allclose(b2, z2) and not torch.allclose(b3, z3)
    assert len({id(bn) for bn in sapf.bn}) == 3  # a BatchNorm of its own per branch


def test_sapf_gamma_zero_at_init_gives_conv_bn_relu_of_relu_x():
    torch.manual_seed(0)
    sapf = SAPF(8).eval()
    assert isinstance(sapf.gamma, torch.nn.Parameter) and sapf.gamma.item() == 0.0
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        expected = sapf.conv_last(torch.relu(x))
        assert torch.allclose(sapf(x), expected, atol=1e-6)
        sapf.gamma.fill_(0.5)  # the identity no longer holds once gamma moves
        assert not torch.allclose(sapf(x), expected, atol=1e-3)


def test_sapf_reuses_first_attention_set_for_both_fusions():
    torch.manual_seed(0)
    sapf = SAPF(8, keep_unused=True).eval()
    sapf.gamma.data.fill_(1.0)
    x = torch.randn(1, 8, 16, 16)
    calls = {name: 0 for name in ("0", "1")}
    hooks = [m.register_forward_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1))
             for i, m in (("0", sapf.conv3x3_2[0]), ("1", sapf.conv3x3_2[1]))]  # fmt: skip
    with torch.no_grad():
        y = sapf(x)
    for h in hooks:
        h.remove()
    assert calls == {"0": 2, "1": 0}
    # the unused second set has no effect
    with torch.no_grad():
        for p in (*sapf.conv1x1[1].parameters(), *sapf.conv3x3_2[1].parameters()):
            p.add_(1.0)
        assert torch.equal(sapf(x), y)


# -- GPG --------------------------------------------------------------------------------------


def test_gpg_output_shapes_dilations_and_no_final_relu():
    torch.manual_seed(0)
    c2, c3, c4, c5 = (torch.randn(2, c, s, s) for c, s in ((64, 16), (128, 8), (256, 4), (512, 2)))
    cases = [
        (GPG((64, 128, 256, 512), 64), [c2, c3, c4, c5], (2, 64, 16, 16), (1, 2, 4, 8)),
        (GPG((128, 256, 512), 128), [c3, c4, c5], (2, 128, 8, 8), (1, 2, 4)),
        (GPG((256, 512), 256), [c4, c5], (2, 256, 4, 4), (1, 2)),
    ]
    for gpg, feats, shape, dilations in cases:
        gpg.eval()
        with torch.no_grad():
            out = gpg(feats)
        assert tuple(out.shape) == shape
        assert out.min() < 0  # ends with BN, no ReLU
        k = len(feats)
        for i, d in enumerate(dilations, start=1):
            dw = getattr(gpg, f"dilation{i}")[0].conv1
            assert dw.dilation == (d, d) and dw.padding == (d, d) and dw.groups == k * shape[1]
        if k < 4:
            assert getattr(gpg, f"dilation{k + 1}") is None
        assert sum(1 for n, _ in gpg.named_children() if n.startswith("dilation")) == k
    with pytest.raises(ValueError, match="takes 2 maps, got 3"):
        cases[2][0]([c3, c4, c5])


# -- the network ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def net() -> CPFNet:
    torch.manual_seed(0)
    return create_model("cpfnet").eval()


def test_forward_shape_and_log_softmax(net):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 2, 64, 64) and y.dtype == torch.float32
    assert torch.allclose(y.exp().sum(dim=1), torch.ones(2, 64, 64), atol=1e-5)
    assert (y <= 0).all()
    # non-square multiples of 32 work too
    with torch.no_grad():
        assert net(torch.randn(1, 3, 32, 96)).shape == (1, 2, 32, 96)


def _up(t: torch.Tensor, size=None) -> torch.Tensor:
    if size is None:
        return F.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=True)
    return F.interpolate(t, size=size, mode="bilinear", align_corners=True)


def test_wiring_equals_authors_forward_restated(net):
    """BaseNet.py's CPFNet.forward / GPG_3.forward / DecoderBlock.forward written out step by
    step on our submodules: ReLU placements, decoder5 without its 3x3, d1 = dec2(d2) + c1 with
    no ReLU, GPG concatenation order deepest first, log-softmax."""
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 64)
    e = net.encoder
    with torch.no_grad():
        c1 = torch.relu(e.bn1(e.conv1(x)))
        c2 = e.layer1(e.maxpool(c1))
        c3 = e.layer2(c2)
        c4 = e.layer3(c3)
        c5 = e.layer4(c4)
        g = net.mce_3
        feats = [_up(g.conv5(c5), c3.shape[-2:]), _up(g.conv4(c4), c3.shape[-2:]), g.conv3(c3)]
        cat = torch.cat(feats, dim=1)
        m3 = g.conv_out(torch.cat([g.dilation1(cat), g.dilation2(cat), g.dilation3(cat)], dim=1))
        assert torch.allclose(g([c3, c4, c5]), m3, atol=1e-6)
        m2 = net.mce_2([c2, c3, c4, c5])
        m4 = net.mce_4([c4, c5])
        d4 = torch.relu(net.decoder5.conv_1x1(_up(net.sap(c5))) + m4)
        d3 = torch.relu(net.decoder4.conv_1x1(_up(net.decoder4.conv_3x3(d4))) + m3)
        d2 = torch.relu(net.decoder3.conv_1x1(_up(net.decoder3.conv_3x3(d3))) + m2)
        d1 = net.decoder2.conv_1x1(_up(net.decoder2.conv_3x3(d2))) + c1
        head = net.main_head
        expected = torch.log_softmax(head.conv_1x1_2(head.conv_1x1_3x3(_up(d1))), dim=1)
        assert torch.allclose(net(x), expected, atol=1e-6)


def test_bad_sizes_raise_value_error_naming_the_size(net):
    with pytest.raises(ValueError, match=r"multiples of 32.*70x70.*96x96"):
        net(torch.randn(1, 3, 70, 70))
    with pytest.raises(ValueError, match=r"64x36"):
        net(torch.randn(1, 3, 64, 36))
    with pytest.raises(ValueError, match=r"\[1, 1, 64, 64\]"):
        net(torch.randn(1, 1, 64, 64))


def test_grey_input_is_repeated_to_rgb(net):
    grey = CPFNet(in_channels=1).eval()
    grey.load_state_dict(net.state_dict())
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(grey(x), net(x.repeat(1, 3, 1, 1)))


def _grad_names(model: CPFNet) -> tuple[set[str], set[str]]:
    model.train()
    x = torch.randn(2, 3, 32, 32)
    target = torch.randint(0, model.num_classes, (2, 32, 32))
    F.nll_loss(model(x), target).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and torch.isfinite(p.grad).all()}
    without = {n for n, _ in model.named_parameters()} - with_grad
    return with_grad, without


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    _, without = _grad_names(create_model("cpfnet"))
    assert without == set()


def test_keep_unused_only_dead_modules_lack_gradients():
    torch.manual_seed(0)
    _, without = _grad_names(create_model("cpfnet", keep_unused=True))
    assert without and all(n.startswith(UNUSED_PATTERNS) for n in without)
    model = create_model("cpfnet", keep_unused=True)
    dead = sum(p.numel() for n, p in model.named_parameters() if n.startswith(UNUSED_PATTERNS))
    assert dead == FULL_2 - USED_2
    assert {n for n, _ in model.named_parameters() if n.startswith(UNUSED_PATTERNS)} == without


# -- weights ----------------------------------------------------------------------------------


def test_encoder_weights_torchvision_file(tmp_path):
    # torchvision's resnet34 file: conv1/bn1/layer1..4 incl. BN num_batches_tracked, and fc.*
    state = random_state(torchvision_resnet_layout(), seed=1)
    path = tmp_path / "resnet34-333f7ec4.pth"
    torch.save(state, path)
    model = create_model("cpfnet", encoder_weights=str(path))
    enc = model.encoder.state_dict()
    assert set(enc) == set(state) - {"fc.weight", "fc.bias"}
    for key, value in enc.items():
        assert torch.equal(value, state[key]), key
    full = create_model("cpfnet", encoder_weights=str(path), keep_unused=True)
    assert torch.equal(full.encoder.fc.weight, state["fc.weight"])

    missing = dict(state)
    del missing["layer4.2.bn2.running_var"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): layer4\.2\.bn2\.running_var"):
        create_model("cpfnet", encoder_weights=str(tmp_path / "missing.pth"))
    extra = dict(state, **{"layer4.3.conv1.weight": torch.zeros(512, 512, 3, 3)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): layer4\.3\.conv1\.weight"):
        create_model("cpfnet", encoder_weights=str(tmp_path / "extra.pth"))


def scaled_random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Random tensors of the given shapes, scaled so a 34-layer forward pass stays finite:
    weights ~ N(0, 1 / fan_in), BN affine near (1, 0), variances in [0.5, 1.5], gamma 0.3."""
    g = torch.Generator().manual_seed(seed)
    state = random_state(shapes, seed)
    for key, value in state.items():
        if value.dim() >= 2:
            state[key] = value * (value[0].numel() ** -0.5)
        elif key.endswith(".gamma"):
            state[key] = torch.full_like(value, 0.3)
        elif key.endswith(".weight"):  # 1-D weights are BatchNorm scales
            state[key] = 1 + 0.1 * torch.randn(value.shape, generator=g)
        elif key.endswith(("bias", "running_mean")):
            state[key] = 0.1 * value
    return state


@pytest.fixture(scope="module")
def authors_state() -> dict[str, torch.Tensor]:
    return scaled_random_state(authors_layout(4), seed=2)


def test_load_original_round_trip(authors_state, tmp_path):
    # saved as the authors' train.py does: {"state_dict": DataParallel(model).state_dict()}
    path = tmp_path / "model_004_0.7985.pth.tar"
    torch.save({"epoch": 4, "state_dict": {f"module.{k}": v for k, v in authors_state.items()}}, path)
    a = load_original(path).eval()
    b = load_original(authors_state).eval()
    assert a.num_classes == 4 and a.keep_unused
    assert torch.equal(a.encoder.conv1.weight, authors_state["backbone.conv1.weight"])
    assert torch.equal(a.encoder.fc.bias, authors_state["backbone.fc.bias"])
    assert torch.equal(a.sap.gamma, authors_state["sap.gamma"])
    # the slim network with the used subset of the weights computes the same function
    slim = CPFNet(num_classes=4).eval()
    slim_state = {k: authors_state["backbone." + k[8:] if k.startswith("encoder.") else k] for k in slim.state_dict()}
    slim.load_state_dict(slim_state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ya, yb, ys = a(x), b(x), slim(x)
    assert ya.shape == (2, 4, 64, 64) and torch.isfinite(ya).all()
    assert torch.equal(ya, yb)
    assert torch.allclose(ya, ys, atol=1e-6)


def test_load_original_missing_extra_and_head_errors(authors_state):
    broken = {k: v for k, v in authors_state.items() if k != "mce_3.dilation2.0.pointwise.weight"}
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): mce_3\.dilation2\.0\.pointwise\.weight"):
        load_original(broken)
    # backbone keys are reported under our name encoder.*
    broken = {k: v for k, v in authors_state.items() if k != "backbone.layer2.1.conv2.weight"}
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): encoder\.layer2\.1\.conv2\.weight"):
        load_original(broken)
    extra = dict(authors_state, **{"decoder1.conv_1x1.conv.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): decoder1\.conv_1x1\.conv\.weight"):
        load_original(extra)
    no_head = {k: v for k, v in authors_state.items() if not k.startswith("main_head.conv_1x1_2")}
    with pytest.raises(CheckpointError, match=r"main_head\.conv_1x1_2\.weight"):
        load_original(no_head)


class TestConformanceCPFNet(ModelConformance):
    name = "cpfnet"
    kwargs = {}
    in_channels = 3
    sizes = [(64, 64), (64, 96)]
    bad_sizes = [(70, 64), (64, 36)]
    expected_params = {"default": USED_2, "keep_unused": FULL_2, "4 classes": USED_2 + 66}
    param_kwargs = {"default": {}, "keep_unused": {"keep_unused": True}, "4 classes": {"num_classes": 4}}
    export = "torchscript"
