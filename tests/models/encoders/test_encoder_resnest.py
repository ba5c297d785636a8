"""Tests of medseg.models.encoders.resnest: ResNeSt-50 parameter count and key layout against the
published files (authors' resnest50-528c19ca.pth, timm resnest50d), strict loading, feature-map
shapes, gradient checkpointing, and the split-attention conv's radix softmax."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from weight_fixtures import random_state

from medseg.errors import CheckpointError
from medseg.models.encoders.resnest import ResNeStEncoder, SplAtConv2d, resnest50_encoder


def resnest50_published_shapes(with_fc: bool = True, with_nbt: bool = True) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the published ResNeSt-50 state dict, written out from the ResNeSt authors'
    resnet.py / splat.py (deep stem 32-32-64, Bottleneck conv1/bn1/conv2{conv,bn0,fc1,bn1,fc2}/
    conv3/bn3/downsample{1,2}, fc), independently of medseg's classes. timm's resnest50d uses the
    same names. ``()`` marks num_batches_tracked."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(name: str, c: int) -> None:
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{s}"] = (c,)
        if with_nbt:
            shapes[f"{name}.num_batches_tracked"] = ()

    shapes["conv1.0.weight"] = (32, 3, 3, 3)
    bn("conv1.1", 32)
    shapes["conv1.3.weight"] = (32, 32, 3, 3)
    bn("conv1.4", 32)
    shapes["conv1.6.weight"] = (64, 32, 3, 3)
    bn("bn1", 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            width, inter = planes, max(planes * 2 // 4, 32)
            shapes[f"{p}.conv1.weight"] = (width, inplanes, 1, 1)
            bn(f"{p}.bn1", width)
            shapes[f"{p}.conv2.conv.weight"] = (2 * width, width // 2, 3, 3)  # groups = radix 2
            bn(f"{p}.conv2.bn0", 2 * width)
            shapes[f"{p}.conv2.fc1.weight"] = (inter, width, 1, 1)
            shapes[f"{p}.conv2.fc1.bias"] = (inter,)
            bn(f"{p}.conv2.bn1", inter)
            shapes[f"{p}.conv2.fc2.weight"] = (2 * width, inter, 1, 1)
            shapes[f"{p}.conv2.fc2.bias"] = (2 * width,)
            shapes[f"{p}.conv3.weight"] = (4 * planes, width, 1, 1)
            bn(f"{p}.bn3", 4 * planes)
            if b == 0:
                shapes[f"{p}.downsample.1.weight"] = (4 * planes, inplanes, 1, 1)
                bn(f"{p}.downsample.2", 4 * planes)
            inplanes = 4 * planes
    if with_fc:
        shapes["fc.weight"] = (1000, 2048)
        shapes["fc.bias"] = (1000,)
    return shapes


random_state = partial(random_state, tracked=1000, scale=0.05)


@pytest.fixture(scope="module")
def encoder() -> ResNeStEncoder:
    torch.manual_seed(0)
    return resnest50_encoder()


def test_parameter_count(encoder):
    assert sum(p.numel() for p in encoder.parameters()) == 25_434_240
    with torch.device("meta"):
        full = resnest50_encoder(keep_fc=True)
    assert sum(p.numel() for p in full.parameters()) == 27_483_240  # paper: 27.5 M


def test_keys_and_shapes_equal_the_published_layout(encoder):
    ours = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    published = resnest50_published_shapes(with_fc=False)
    assert ours == published


def test_feature_maps_shapes_and_order(encoder):
    encoder.eval()
    with torch.no_grad():
        feats = encoder(torch.rand(2, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [
        (2, 64, 32, 48), (2, 256, 16, 24), (2, 512, 8, 12), (2, 1024, 4, 6), (2, 2048, 2, 3),
    ]  # fmt: skip
    assert encoder.out_channels == (64, 256, 512, 1024, 2048)
    assert encoder.reductions == (2, 4, 8, 16, 32)
    assert all(bool((f >= 0).all()) for f in feats)
    # x0 is the stem output after bn1 + ReLU and before the max-pool
    with torch.no_grad():
        x = torch.rand(1, 3, 32, 32)
        stem = F.relu(encoder.bn1(encoder.conv1(x)))
        assert torch.equal(encoder(x)[0], stem)
    with pytest.raises(ValueError, match="1, 32, 32"):
        encoder(torch.rand(1, 1, 32, 32))


def test_avd_and_avg_down_only_where_the_published_model_has_them(encoder):
    # layer1.0: stride 1, no avd; layer2..4 block 0: avd 3x3/s2 after the split-attention conv
    assert encoder.layer1[0].avd_layer is None
    for stage in (encoder.layer2, encoder.layer3, encoder.layer4):
        pool = stage[0].avd_layer
        assert isinstance(pool, torch.nn.AvgPool2d) and pool.kernel_size == 3 and pool.stride == 2
        assert isinstance(stage[0].downsample[0], torch.nn.AvgPool2d)
        assert all(b.avd_layer is None and b.downsample is None for b in stage[1:])


def test_load_authors_file_with_fc_and_num_batches_tracked(tmp_path):
    # The authors' resnest50-528c19ca.pth holds the classifier fc.*; the BN counters are included
    # here (a PyTorch state dict has them); the timm test below covers a file without them.
    state = random_state(resnest50_published_shapes(with_fc=True, with_nbt=True))
    path = tmp_path / "resnest50-528c19ca.pth"
    torch.save(state, path)
    enc = ResNeStEncoder().load_weights(path, layout="authors")
    loaded = enc.state_dict()
    assert set(loaded) == set(state) - {"fc.weight", "fc.bias"}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    # with keep_fc the classifier is loaded too
    full = ResNeStEncoder(keep_fc=True).load_weights(path)
    assert torch.equal(full.fc.weight, state["fc.weight"])


def test_load_timm_layout_safetensors_without_bn_counters(tmp_path):
    from safetensors.torch import save_file

    # timm's resnest50d keys are the authors' (see the module docstring); a re-saved file may
    # lack num_batches_tracked: they are filled with 0.
    state = random_state(resnest50_published_shapes(with_fc=True, with_nbt=False), seed=1)
    path = tmp_path / "resnest50d.safetensors"
    save_file(state, str(path))
    enc = ResNeStEncoder().load_weights(path, layout="timm")
    loaded = enc.state_dict()
    for k, v in loaded.items():
        if k.endswith("num_batches_tracked"):
            assert int(v) == 0
        else:
            assert torch.equal(v, state[k]), k
    # auto-detection from a DataParallel-prefixed mapping
    prefixed = {f"module.{k}": v for k, v in state.items()}
    auto = ResNeStEncoder().load_weights(prefixed)
    assert torch.equal(auto.layer3[5].conv2.fc2.weight, state["layer3.5.conv2.fc2.weight"])


def test_missing_and_extra_keys_are_listed(tmp_path):
    state = random_state(resnest50_published_shapes())
    missing = dict(state)
    del missing["layer2.0.conv2.fc1.weight"]
    path = tmp_path / "missing.pth"
    torch.save(missing, path)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): layer2\.0\.conv2\.fc1\.weight") as info:
        ResNeStEncoder().load_weights(path)
    assert "missing.pth" in str(info.value)
    extra = dict(state)
    extra["layer4.3.conv1.weight"] = torch.zeros(512, 2048, 1, 1)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): layer4\.3\.conv1\.weight"):
        ResNeStEncoder().load_weights(extra)
    partial_counters = dict(state)
    del partial_counters["bn1.num_batches_tracked"]
    with pytest.raises(CheckpointError, match=r"bn1\.num_batches_tracked"):
        ResNeStEncoder().load_weights(partial_counters)
    wrong = dict(state)
    wrong["layer1.0.conv2.conv.weight"] = torch.zeros(128, 64, 3, 3)  # groups ignored
    with pytest.raises(CheckpointError, match=r"layer1\.0\.conv2\.conv\.weight: file \(128, 64, 3, 3\)"):
        ResNeStEncoder().load_weights(wrong)


def test_plain_resnet_file_and_bad_layout_are_rejected():
    torchvision_like = {"conv1.weight": torch.zeros(64, 3, 7, 7), "bn1.weight": torch.zeros(64)}
    with pytest.raises(CheckpointError, match="plain ResNet"):
        ResNeStEncoder().load_weights(torchvision_like)
    with pytest.raises(ValueError, match="layout"):
        ResNeStEncoder().load_weights({}, layout="gluon")


def test_gradient_checkpointing_gives_equal_outputs_and_gradients():
    torch.manual_seed(0)
    enc = ResNeStEncoder(layers=(1, 1, 1, 1))
    x = torch.rand(2, 3, 32, 32)
    results = []
    for flag in (False, True):
        enc.zero_grad()
        enc.gradient_checkpointing = flag
        torch.manual_seed(1)
        out = enc(x)
        sum(o.square().mean() for o in out).backward()
        results.append(([o.detach() for o in out], enc.layer2[0].conv2.fc1.weight.grad.clone()))
    (o1, g1), (o2, g2) = results
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(o1, o2))
    assert torch.allclose(g1, g2, atol=1e-6) and g1.abs().sum() > 0


# -- split attention ---------------------------------------------------------------------------


def _attention_by_hand(m: SplAtConv2d, x: torch.Tensor):
    """Splits U_r and the raw fc2 output of an eval-mode SplAtConv2d, step by step."""
    u = F.relu(m.bn0(m.conv(x)))
    c = m.channels
    splits = [u[:, r * c : (r + 1) * c] for r in range(m.radix)]
    gap = sum(splits).mean(dim=(2, 3), keepdim=True)
    raw = m.fc2(F.relu(m.bn1(m.fc1(gap)))).flatten(1)  # (N, R*C)
    return splits, raw


def test_split_attention_radix_2_softmax_over_the_splits():
    torch.manual_seed(0)
    m = SplAtConv2d(8, 8, 3, padding=1, groups=1, bias=False, radix=2).eval()
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        splits, raw = _attention_by_hand(m, x)
        a0 = torch.exp(raw[:, :8]) / (torch.exp(raw[:, :8]) + torch.exp(raw[:, 8:]))
        expected = a0[:, :, None, None] * splits[0] + (1 - a0)[:, :, None, None] * splits[1]
        assert torch.allclose(m(x), expected, atol=1e-6)
        att = m.attention(F.adaptive_avg_pool2d(splits[0] + splits[1], 1))
        assert att.shape == (2, 2, 8)
        assert torch.allclose(att.sum(dim=1), torch.ones(2, 8))
        # with one group, the two published softmax layouts agree
        m.softmax_layout = "flat"
        assert torch.allclose(m(x), expected, atol=1e-6)
    assert m.fc1.out_channels == 32  # max(8 * 2 // 4, 32)


@pytest.mark.parametrize("layout", ["flat", "grouped"])
def test_split_attention_with_two_groups_reads_fc2_as_documented(layout):
    torch.manual_seed(0)
    c, k, r = 8, 2, 2
    m = SplAtConv2d(c, c, 3, padding=1, groups=k, radix=r, softmax_layout=layout).eval()
    x = torch.randn(2, c, 6, 6)
    with torch.no_grad():
        splits, raw = _attention_by_hand(m, x)
        a = torch.empty(2, r, c)
        if layout == "flat":  # fc2 output index = radix * C + channel
            a = torch.softmax(raw.view(2, r, c), dim=1)
        else:  # fc2 output index = (group, radix, channel-in-group)
            w = c // k
            for g in range(k):
                for j in range(w):
                    logits = torch.stack([raw[:, g * r * w + ri * w + j] for ri in range(r)], dim=1)
                    a[:, :, g * w + j] = torch.softmax(logits, dim=1)
        expected = sum(a[:, i, :, None, None] * splits[i] for i in range(r))
        assert torch.allclose(m(x), expected, atol=1e-6)


def test_split_attention_rejects_bad_settings():
    with pytest.raises(ValueError, match="radix"):
        SplAtConv2d(8, 8, radix=0)
    with pytest.raises(ValueError, match="softmax_layout"):
        SplAtConv2d(8, 8, softmax_layout="radix-major")
    with pytest.raises(ValueError, match="divisible by groups"):
        SplAtConv2d(9, 9, groups=2)
