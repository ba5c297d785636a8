"""Tests of medseg.models.dense_unet (H-DenseUNet's 2D DenseUNet, the compact dense-block U-Net)
and medseg.models.encoders.densenet (DenseNet-161 in torchvision's layout).

DenseNet-161 is heavy on CPU: the full network is built a few times and run forward only at
64x64 / 64x96 with batch 2; checkpointing equivalence is checked on a tiny DenseNet config that
runs the same code."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from conformance import ModelConformance
from weight_fixtures import random_state

from medseg.errors import CheckpointError
from medseg.models import count_parameters, create_model
from medseg.models.dense_unet import DenseBlockUNet, DenseUNet
from medseg.models.encoders import set_gradient_checkpointing
from medseg.models.encoders.densenet import DenseNetEncoder, densenet161, remap_legacy_keys

DENSENET161 = dict(growth=48, init=96, blocks=(6, 12, 36, 24), bn_size=4)


def torchvision_layout(old_style: bool, num_batches_tracked: bool) -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's ``densenet161`` state dict, written out from the DenseNet-BC
    definition independently of medseg's classes; ``()`` marks num_batches_tracked.

    ``old_style``: the published ``densenet161-8d451a50.pth`` names dense-layer modules
    ``norm.1``/``conv.1``/``norm.2``/``conv.2`` and, saved before PyTorch 0.4.1, has no
    ``num_batches_tracked`` buffers; a state dict saved from a current torchvision model has
    ``norm1``/``conv1``/... and the buffers. Both include ``classifier.weight``/``.bias``."""
    k, c, bn = DENSENET161["growth"], DENSENET161["init"], DENSENET161["bn_size"]
    shapes: dict[str, tuple[int, ...]] = {}

    def norm(name: str, ch: int) -> None:
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{s}"] = (ch,)
        if num_batches_tracked:
            shapes[f"{name}.num_batches_tracked"] = ()

    shapes["features.conv0.weight"] = (c, 3, 7, 7)
    norm("features.norm0", c)
    for b, n_layers in enumerate(DENSENET161["blocks"], start=1):
        for layer in range(1, n_layers + 1):
            p = f"features.denseblock{b}.denselayer{layer}"
            names = ("norm.1", "conv.1", "norm.2", "conv.2") if old_style else None
            n1, c1, n2, c2 = names or ("norm1", "conv1", "norm2", "conv2")
            norm(f"{p}.{n1}", c)
            shapes[f"{p}.{c1}.weight"] = (bn * k, c, 1, 1)
            norm(f"{p}.{n2}", bn * k)
            shapes[f"{p}.{c2}.weight"] = (k, bn * k, 3, 3)
            c += k
        if b < len(DENSENET161["blocks"]):
            norm(f"features.transition{b}.norm", c)
            shapes[f"features.transition{b}.conv.weight"] = (c // 2, c, 1, 1)
            c //= 2
    norm("features.norm5", c)
    shapes["classifier.weight"] = (1000, c)
    shapes["classifier.bias"] = (1000,)
    return shapes


random_state = partial(random_state, tracked=7, scale=0.02)


@pytest.fixture(scope="module")
def net() -> DenseUNet:
    torch.manual_seed(0)
    return create_model("dense_unet")


@pytest.fixture(scope="module")
def encoder() -> DenseNetEncoder:
    return densenet161()


@pytest.fixture(scope="module")
def new_style_state() -> dict[str, torch.Tensor]:
    return random_state(torchvision_layout(old_style=False, num_batches_tracked=True), seed=1)


@pytest.fixture(scope="module")
def old_style_state() -> dict[str, torch.Tensor]:
    return random_state(torchvision_layout(old_style=True, num_batches_tracked=False), seed=2)


# ------------------------------------------------------------------------------------------------
# H-DenseUNet 2D DenseUNet: structure and parameter counts


def keras_decoder_parameters(num_classes: int = 3) -> int:
    """Trainable parameters of the decoder layers of ``denseunet.py`` (Keras shapes: kernel
    (kh, kw, c_in, c_out) + bias; BatchNormalization gamma + beta), listed from the source."""
    convs = [  # name, kernel, c_in, c_out
        ("line0", 1, 2112, 2208), ("conv_up0", 3, 2208, 768), ("conv_up1", 3, 768, 384),
        ("conv_up2", 3, 384, 96), ("conv_up3", 3, 96, 96), ("conv_up4", 3, 96, 64),
        ("dense167classifer", 1, 64, num_classes),
    ]  # fmt: skip
    bns = [768, 384, 96, 96, 64]  # bn_up0 ... bn_up4
    return sum(k * k * ci * co + co for _, k, ci, co in convs) + sum(2 * c for c in bns)


def test_dense_unet_parameter_counts(net):
    assert net.in_channels == 3 and net.num_classes == 3
    assert count_parameters(net) == 49_527_843
    assert count_parameters(net.encoder) == 26_472_000
    assert count_parameters(net) - count_parameters(net.encoder) == 23_055_843
    assert keras_decoder_parameters() == 23_055_843
    # torchvision densenet161 = 28,681,000 including its 2208 -> 1000 classifier
    layout = torchvision_layout(old_style=False, num_batches_tracked=True)
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    learnable = sum(
        torch.Size(s).numel() for k, s in layout.items() if not k.startswith("classifier.") and not k.endswith(buffers)
    )
    assert learnable == 26_472_000
    assert learnable + 1000 * 2208 + 1000 == 28_681_000
    # The Keras encoder has a Scale (gamma, beta) after every BN: 219,936 more trainable weights.
    bns = [m for m in net.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    bn_affine = sum(2 * m.num_features for m in bns)
    assert bn_affine == 219_936


def test_dense_unet_parameter_counts_other_options():
    assert count_parameters(create_model("dense_unet", num_classes=2)) == 49_527_778
    five = create_model("dense_unet", in_channels=5)  # conv0 (96, 5, 7, 7): +2 * 96 * 49
    assert count_parameters(five) == 49_537_251
    assert five.encoder.features.conv0.weight.shape == (96, 5, 7, 7)


def test_decoder_layer_widths(net):
    expected = {
        "line0": (2208, 2112, 1, 1), "conv_up0": (768, 2208, 3, 3), "conv_up1": (384, 768, 3, 3),
        "conv_up2": (96, 384, 3, 3), "conv_up3": (96, 96, 3, 3), "conv_up4": (64, 96, 3, 3),
        "classifier": (3, 64, 1, 1),
    }  # fmt: skip
    for name, shape in expected.items():
        conv = getattr(net, name)
        assert tuple(conv.weight.shape) == shape, name
        assert conv.bias is not None, name
    assert [getattr(net, f"bn_up{i}").eps for i in range(5)] == [1e-3] * 5
    assert net.dropout.p == 0.3


def test_encoder_features_at_64(encoder):
    encoder.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = encoder(x)
        f = encoder.features
        stem = f.relu0(f.norm0(f.conv0(x)))
        block1 = f.denseblock1(f.pool0(stem))
    assert encoder.out_channels == (96, 384, 768, 2112, 2208)
    assert encoder.reductions == (2, 4, 8, 16, 32)
    assert [tuple(t.shape) for t in feats] == [
        (2, 96, 32, 32), (2, 384, 16, 16), (2, 768, 8, 8), (2, 2112, 4, 4), (2, 2208, 2, 2)
    ]  # fmt: skip
    # taps as H-DenseUNet's box list: stem after ReLU, block 1 *before* transition 1's BN-ReLU
    torch.testing.assert_close(feats[0], stem)
    torch.testing.assert_close(feats[1], block1)
    assert (feats[1] < 0).any()  # raw concatenation, no ReLU applied
    assert (feats[4] >= 0).all()  # norm5 + ReLU


def test_dense_unet_forward_backward_64x96(net):
    net.train()
    net.zero_grad(set_to_none=True)
    x = torch.randn(2, 3, 64, 96)
    out = net(x)
    assert out.shape == (2, 3, 64, 96) and out.dtype == torch.float32
    torch.testing.assert_close(out.softmax(1).sum(1), torch.ones(2, 64, 96))
    target = torch.randint(0, 3, (2, 64, 96))
    F.cross_entropy(out, target).backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad
    zero = [n for n, p in net.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero
    net.zero_grad(set_to_none=True)


def test_grey_input_repeats_to_three_slices(net):
    net.eval()
    grey = create_model("dense_unet", in_channels=1).eval()
    assert grey.state_dict().keys() == net.state_dict().keys()
    grey.load_state_dict(net.state_dict())
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        out = grey(x)
        ref = net(x.repeat(1, 3, 1, 1))
    assert out.shape == (2, 3, 64, 64)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize(
    "size, bad",
    [
        ((64, 70), "W=70 (nearest valid: 64 or 96)"),
        ((48, 64), "H=48 (nearest valid: 32 or 64)"),
        ((16, 32), "H=16 (nearest valid: 32)"),
    ],
)
def test_dense_unet_bad_size(net, size, bad):
    with pytest.raises(ValueError, match="divisible by 32") as info:
        net(torch.randn(1, 3, *size))
    assert bad in str(info.value)
    assert DenseUNet.size_divisor == 32


def test_dense_unet_wrong_channels(net):
    with pytest.raises(ValueError, match="in_channels=3 .* 1 channels"):
        net(torch.randn(1, 1, 64, 64))


def test_set_gradient_checkpointing_reaches_encoder(net):
    assert set_gradient_checkpointing(net, True) >= 1
    assert net.encoder.gradient_checkpointing
    set_gradient_checkpointing(net, False)
    assert not net.encoder.gradient_checkpointing


@pytest.mark.parametrize("mode", ["blocks", "layers"])
def test_checkpointing_keeps_outputs_and_gradients(mode):
    torch.manual_seed(0)
    enc = DenseNetEncoder(growth_rate=8, block_config=(2, 3, 2, 2), num_init_features=16, bn_size=2)
    x = torch.randn(2, 3, 32, 32)

    def run() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        enc.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        feats = enc(x)
        sum(f.square().mean() for f in feats).backward()
        return [f.detach() for f in feats], [p.grad.clone() for p in enc.parameters()]

    enc.train()
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    ref_feats, ref_grads = run()
    ref_state = {k: v.clone() for k, v in enc.state_dict().items()}
    enc.load_state_dict(state)  # same BN running statistics before the second pass
    if mode == "blocks":
        enc.gradient_checkpointing = True
    else:
        enc.memory_efficient = True
        assert all(m.memory_efficient for m in enc.modules() if hasattr(m, "drop_rate"))
    feats, grads = run()
    for a, b in zip(feats, ref_feats):
        torch.testing.assert_close(a, b)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)
    # BN running statistics are NOT compared: the recomputation in the backward pass updates them
    # a second time (torch.utils.checkpoint re-runs the BN forward in training mode).
    assert ref_state.keys() == enc.state_dict().keys()


# ------------------------------------------------------------------------------------------------
# Loading torchvision's DenseNet-161 weights


def test_remap_legacy_keys_touches_only_dense_layers():
    t = torch.zeros(1)
    out = remap_legacy_keys({
        "features.denseblock2.denselayer11.norm.1.running_var": t,
        "features.denseblock2.denselayer11.conv.2.weight": t,
        "features.transition1.norm.weight": t,
        "features.norm5.bias": t,
    })  # fmt: skip
    assert sorted(out) == sorted([
        "features.denseblock2.denselayer11.norm1.running_var",
        "features.denseblock2.denselayer11.conv2.weight",
        "features.transition1.norm.weight",
        "features.norm5.bias",
    ])  # fmt: skip


def test_load_new_style_file_through_encoder_weights(tmp_path, new_style_state):
    path = tmp_path / "densenet161_new.pth"
    torch.save(new_style_state, path)
    model = create_model("dense_unet", encoder_weights=str(path))
    own = model.encoder.state_dict()
    assert set(own) == {k for k in new_style_state if not k.startswith("classifier.")}
    for key, value in own.items():
        assert torch.equal(value, new_style_state[key]), key


def test_load_published_old_style_file(tmp_path, encoder, old_style_state):
    assert "features.denseblock1.denselayer1.norm.1.weight" in old_style_state
    assert not any(k.endswith("num_batches_tracked") for k in old_style_state)
    path = tmp_path / "densenet161-8d451a50.pth"
    torch.save(old_style_state, path)
    encoder.load_weights(str(path))
    own = encoder.state_dict()
    renamed = remap_legacy_keys(old_style_state)
    for key, value in own.items():
        if key.endswith("num_batches_tracked"):
            assert int(value) == 0, key
        else:
            assert torch.equal(value, renamed[key]), key
    assert torch.equal(
        own["features.denseblock4.denselayer24.conv2.weight"],
        old_style_state["features.denseblock4.denselayer24.conv.2.weight"],
    )


def test_missing_and_unexpected_keys_new_style(encoder, new_style_state):
    state = dict(new_style_state)
    del state["features.denseblock3.denselayer36.conv2.weight"]
    state["features.denseblock5.denselayer1.conv1.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        encoder.load_weights(state)
    msg = str(info.value)
    assert "missing keys (1): features.denseblock3.denselayer36.conv2.weight" in msg
    assert "unexpected keys (1): features.denseblock5.denselayer1.conv1.weight" in msg
    # a file that has num_batches_tracked buffers must have all of them
    state = dict(new_style_state)
    del state["features.norm5.num_batches_tracked"]
    missing = r"missing keys \(1\): features.norm5.num_batches_tracked"
    with pytest.raises(CheckpointError, match=missing):
        encoder.load_weights(state)


def test_missing_and_unexpected_keys_old_style(tmp_path, encoder, old_style_state):
    state = dict(old_style_state)
    del state["features.denseblock2.denselayer5.norm.2.running_mean"]
    state["features.extra.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        encoder.load_weights(str(path))
    msg = str(info.value)
    assert "broken.pth" in msg
    assert "missing keys (1): features.denseblock2.denselayer5.norm2.running_mean" in msg
    assert "unexpected keys (1): features.extra.weight" in msg


def test_shape_mismatch_and_unreadable_file(tmp_path, encoder, new_style_state):
    state = dict(new_style_state)
    state["features.norm5.weight"] = torch.zeros(100)
    mismatch = r"features.norm5.weight: file \(100,\) vs network \(2208,\)"
    with pytest.raises(CheckpointError, match=mismatch):
        encoder.load_weights(state)
    with pytest.raises(CheckpointError, match="not found"):
        encoder.load_weights(str(tmp_path / "nope.pth"))


def test_encoder_weights_for_five_slices_average_conv0(old_style_state):
    enc = densenet161(in_channels=5).load_weights(old_style_state)
    rgb = old_style_state["features.conv0.weight"]
    expected = rgb.mean(1, keepdim=True).repeat(1, 5, 1, 1) * (3 / 5)
    torch.testing.assert_close(enc.features.conv0.weight.detach(), expected)
    # a constant input gives the same stem response as the RGB kernel on a constant RGB image
    torch.testing.assert_close(
        enc.features.conv0.weight.sum(1), rgb.sum(1), rtol=1e-5, atol=1e-6
    )  # fmt: skip
    assert torch.equal(enc.features.norm5.weight, old_style_state["features.norm5.weight"])


# ------------------------------------------------------------------------------------------------
# Compact dense-block U-Net


def test_compact_defaults_and_parameter_count():
    model = create_model("dense_block_unet")
    assert isinstance(model, DenseBlockUNet)
    assert model.in_channels == 1 and model.num_classes == 2 and model.size_divisor == 16
    assert count_parameters(model) == 940_098
    assert count_parameters(create_model("dense_block_unet", growth_rate=12)) == 547_240
    assert count_parameters(create_model("dense_block_unet", depth=3)) == 693_042


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"growth_rate": 12, "init_features": 24},
        {"layers_per_block": (2, 3, 4, 5, 6, 5, 4, 3, 2), "growth_rate": 8},
    ],
)
def test_compact_channel_arithmetic(kwargs):
    model = DenseBlockUNet(**kwargs)
    k = model.bottleneck.growth_rate
    blocks = model.dense_blocks()
    assert len(blocks) == 2 * model.depth + 1
    layers = kwargs.get("layers_per_block", (4,) * 9)
    for i, block in enumerate(blocks):
        assert block.num_layers == layers[i]
        assert block.out_channels == block.in_channels + layers[i] * k
        # every layer of the block sees the input and all earlier layers
        for j, layer in enumerate(block.layers):
            assert layer.conv.in_channels == block.in_channels + j * k
            assert layer.conv.out_channels == k
    # encoder: transition down reads the block output; decoder: up-conv + skip feed the block
    for block, td in zip(model.down_blocks, model.transitions_down):
        assert td.conv.in_channels == block.out_channels
    skips = [b.out_channels for b in model.down_blocks][::-1]
    below = [model.bottleneck, *model.up_blocks[:-1]]
    for up, block, skip, prev in zip(model.transitions_up, model.up_blocks, skips, below):
        assert up.in_channels == prev.out_channels
        assert up.out_channels == prev.num_layers * k
        assert block.in_channels == up.out_channels + skip
    assert model.head[-1].in_channels == model.up_blocks[-1].out_channels
    # the arithmetic holds when run: every block's output has out_channels channels
    seen = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append((m.out_channels, o.shape[1]))) for b in blocks]
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 1, 32, 32))
    for h in hooks:
        h.remove()
    assert len(seen) == len(blocks) and all(a == b for a, b in seen)


def test_compact_default_widths():
    model = DenseBlockUNet()
    widths = [(b.in_channels, b.out_channels) for b in model.dense_blocks()]
    assert widths == [
        (32, 96), (48, 112), (56, 120), (60, 124), (62, 126),
        (188, 252), (184, 248), (176, 240), (160, 224),
    ]  # fmt: skip


@pytest.mark.parametrize("size, backward", [((64, 64), False), ((64, 96), True)])
def test_compact_forward_backward(size, backward):
    torch.manual_seed(0)
    model = create_model("dense_block_unet").train(backward)
    x = torch.randn(2, 1, *size)
    with torch.set_grad_enabled(backward):
        out = model(x)
    assert out.shape == (2, 2, *size) and out.dtype == torch.float32
    torch.testing.assert_close(out.softmax(1).sum(1), torch.ones(2, *size))
    if not backward:
        return
    F.cross_entropy(out, torch.randint(0, 2, (2, *size))).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_compact_bad_size_and_arguments():
    model = DenseBlockUNet()
    with pytest.raises(ValueError, match=r"divisible by 16.*W=72 \(nearest valid: 64 or 80\)"):
        model(torch.randn(1, 1, 64, 72))
    with pytest.raises(ValueError, match="in_channels=1"):
        model(torch.randn(1, 3, 64, 64))
    shallow = DenseBlockUNet(depth=3)
    assert shallow.size_divisor == 8
    assert shallow(torch.randn(1, 1, 72, 40)).shape == (1, 2, 72, 40)
    with pytest.raises(ValueError, match="needs 9 counts"):
        DenseBlockUNet(layers_per_block=(4, 4, 4))
    with pytest.raises(ValueError, match="compression"):
        DenseBlockUNet(compression=0.0)


# ------------------------------------------------------------------------------------------------
# The model contract (tests/models/conformance.py)

TINY_DENSENET = {
    "growth_rate": 8, "block_config": (2, 2, 2, 2), "num_init_features": 16, "bn_size": 2
}  # fmt: skip


def test_tiny_encoder_config_keeps_the_construction():
    model = create_model("dense_unet", **TINY_DENSENET)
    c0, c1, c2, c3, c4 = model.encoder.out_channels
    assert (c0, c1, c2, c3, c4) == (16, 32, 32, 32, 32)  # 16 + 2 * 8, halved, + 2 * 8, ...
    assert model.line0.weight.shape[:2] == (c4, c3)
    assert [getattr(model, f"conv_up{i}").out_channels for i in range(5)] == [c2, c1, c0, c0, 64]
    with pytest.raises(ValueError, match="4 dense blocks"):
        create_model("dense_unet", block_config=(6, 12, 36))


class TestConformanceDenseUNet(ModelConformance):
    name = "dense_unet"
    # DenseNet-161 is too heavy for ten CPU forwards: the behavioural tests use a tiny DenseNet
    # with the same construction (the real one is run above at 64x64 and 64x96).
    kwargs = TINY_DENSENET
    in_channels = 3
    sizes = [(64, 64), (64, 96)]
    bad_sizes = [(70, 64), (64, 48)]
    expected_params = {
        "default (3 slices, 3 classes)": 49_527_843,
        "2 classes": 49_527_778,
        "1 slice": 49_527_843,
        "5 slices": 49_537_251,
    }
    param_kwargs = {
        "default (3 slices, 3 classes)": {},
        "2 classes": {"num_classes": 2},
        "1 slice": {"in_channels": 1},
        "5 slices": {"in_channels": 5},
    }
    export = "torch.export"


class TestConformanceDenseBlockUNet(ModelConformance):
    name = "dense_block_unet"
    kwargs = {"growth_rate": 4, "init_features": 8, "layers_per_block": 2}  # light, depth 4
    in_channels = 1
    sizes = [(64, 64), (64, 96)]
    bad_sizes = [(72, 64), (64, 40)]
    expected_params = {"default": 940_098, "3 classes": 940_323, "growth 12": 547_240}
    param_kwargs = {
        "default": {}, "3 classes": {"num_classes": 3}, "growth 12": {"growth_rate": 12}
    }  # fmt: skip
    export = "torch.export"
