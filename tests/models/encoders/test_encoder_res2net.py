"""Tests of medseg.models.encoders.res2net: Res2Net-50 v1b 26w 4s in the layout of the authors'
ImageNet file ``res2net50_v1b_26w_4s-3cf99910.pth`` (shapes, counts, strict weight loading)."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from weight_fixtures import random_state

from medseg.errors import CheckpointError
from medseg.models.encoders import set_gradient_checkpointing
from medseg.models.encoders.res2net import Bottle2neck, res2net50_v1b_26w_4s


def published_layout(with_fc: bool = True, with_counters: bool = True) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the authors' ``res2net50_v1b_26w_4s-3cf99910.pth``, written out from
    ``Res2Net_v1b.py`` (independently of medseg's classes). ``()`` marks num_batches_tracked.

    The published file holds ``fc.weight``/``fc.bias`` (the authors' loader is strict on a
    network with ``fc``) and BatchNorm ``num_batches_tracked`` (users of PyTorch < 0.4.1 report
    them as unexpected keys, github.com/Res2Net/Res2Net-PretrainedModels/issues/5)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(name: str, c: int) -> None:
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{s}"] = (c,)
        if with_counters:
            shapes[f"{name}.num_batches_tracked"] = ()

    shapes["conv1.0.weight"] = (32, 3, 3, 3)
    bn("conv1.1", 32)
    shapes["conv1.3.weight"] = (32, 32, 3, 3)
    bn("conv1.4", 32)
    shapes["conv1.6.weight"] = (64, 32, 3, 3)
    bn("bn1", 64)
    inplanes = 64
    for li, (planes, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
        width = math.floor(planes * 26 / 64)
        for b in range(blocks):
            p = f"layer{li}.{b}"
            cin = inplanes if b == 0 else planes * 4
            shapes[f"{p}.conv1.weight"] = (width * 4, cin, 1, 1)
            bn(f"{p}.bn1", width * 4)
            for i in range(3):
                shapes[f"{p}.convs.{i}.weight"] = (width, width, 3, 3)
                bn(f"{p}.bns.{i}", width)
            shapes[f"{p}.conv3.weight"] = (planes * 4, width * 4, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                shapes[f"{p}.downsample.1.weight"] = (planes * 4, cin, 1, 1)
                bn(f"{p}.downsample.2", planes * 4)
        inplanes = planes * 4
    if with_fc:
        shapes["fc.weight"] = (1000, 2048)
        shapes["fc.bias"] = (1000,)
    return shapes


random_state = partial(random_state, tracked=12345)


def test_parameter_counts_with_and_without_fc():
    assert sum(p.numel() for p in res2net50_v1b_26w_4s().parameters()) == 23_669_352
    assert sum(p.numel() for p in res2net50_v1b_26w_4s(keep_fc=True).parameters()) == 25_718_352


def test_state_dict_keys_and_shapes_equal_the_published_layout():
    ours = {k: tuple(v.shape) for k, v in res2net50_v1b_26w_4s(keep_fc=True).state_dict().items()}
    assert ours == published_layout()
    no_fc = {k: tuple(v.shape) for k, v in res2net50_v1b_26w_4s().state_dict().items()}
    assert no_fc == published_layout(with_fc=False)


@pytest.mark.parametrize("size", [(64, 64), (64, 96), (65, 33)])
def test_feature_shapes_round_up_at_every_stride(size):
    enc = res2net50_v1b_26w_4s().eval()
    h, w = size
    with torch.no_grad():
        feats = enc(torch.randn(2, 3, h, w))
    assert enc.out_channels == (64, 256, 512, 1024, 2048)
    assert enc.reductions == (2, 4, 8, 16, 32)
    assert len(feats) == 5
    for f, c, r in zip(feats, enc.out_channels, enc.reductions):
        assert tuple(f.shape) == (2, c, math.ceil(h / r), math.ceil(w / r))
    assert float(feats[0].min()) >= 0.0  # stem output is after bn1 + ReLU


def test_stage_block_pools_last_split_and_normal_block_passes_it_on():
    torch.manual_seed(0)
    shortcut = torch.nn.Conv2d(16, 32, 1)
    block = Bottle2neck(16, 8, 1, shortcut, base_width=64, scale=4, stype="stage")
    block.eval()
    captured = {}
    block.conv3.register_forward_hook(lambda m, i, o: captured.setdefault("in", i[0]))
    x = torch.randn(1, 16, 6, 6)
    with torch.no_grad():
        block(x)
        split3 = torch.relu(block.bn1(block.conv1(x)))[:, 24:32]
        pooled = torch.nn.functional.avg_pool2d(split3, 3, 1, 1, count_include_pad=True)
    torch.testing.assert_close(captured["in"][:, 24:32], pooled)
    assert not torch.allclose(pooled, split3)
    normal = Bottle2neck(32, 8, base_width=64, scale=4).eval()
    captured.clear()
    normal.conv3.register_forward_hook(lambda m, i, o: captured.setdefault("in", i[0]))
    y = torch.randn(1, 32, 6, 6)
    with torch.no_grad():
        normal(y)
        out1 = torch.relu(normal.bn1(normal.conv1(y)))
        s0 = torch.relu(normal.bns[0](normal.convs[0](out1[:, 0:8])))
        s1 = torch.relu(normal.bns[1](normal.convs[1](s0 + out1[:, 8:16])))  # hierarchical add
    torch.testing.assert_close(captured["in"][:, 24:32], out1[:, 24:32])
    torch.testing.assert_close(captured["in"][:, 8:16], s1)


def test_load_weights_strict_from_published_layout_file(tmp_path):
    state = random_state(published_layout())
    path = tmp_path / "res2net50_v1b_26w_4s-3cf99910.pth"
    torch.save(state, path)
    enc = res2net50_v1b_26w_4s().load_weights(str(path))
    ours = enc.state_dict()
    assert "fc.weight" not in ours
    for k, v in ours.items():
        assert torch.equal(v, state[k]), k
    with_fc = res2net50_v1b_26w_4s(keep_fc=True).load_weights(str(path))
    assert torch.equal(with_fc.fc.weight, state["fc.weight"])


def test_load_weights_errors_name_missing_and_extra_keys(tmp_path):
    state = random_state(published_layout())
    missing = dict(state)
    del missing["layer3.2.bns.1.running_var"]
    with pytest.raises(CheckpointError, match=r"missing keys.*layer3\.2\.bns\.1\.running_var"):
        res2net50_v1b_26w_4s().load_weights(missing)
    extra = dict(state, **{"layer4.3.conv1.weight": torch.zeros(1)})
    path = tmp_path / "extra.pth"
    torch.save(extra, path)
    with pytest.raises(CheckpointError, match=r"unexpected keys.*layer4\.3\.conv1\.weight") as info:
        res2net50_v1b_26w_4s().load_weights(str(path))
    assert "extra.pth" in str(info.value)
    no_fc = {k: v for k, v in state.items() if not k.startswith("fc.")}
    with pytest.raises(CheckpointError, match=r"fc\.bias, fc\.weight"):
        res2net50_v1b_26w_4s(keep_fc=True).load_weights(no_fc)


def test_legacy_file_without_counters_loads_and_partial_counters_do_not():
    legacy = random_state(published_layout(with_counters=False))
    enc = res2net50_v1b_26w_4s().load_weights(legacy)
    assert int(enc.bn1.num_batches_tracked) == 0
    torch.testing.assert_close(enc.layer2[0].bn3.running_mean, legacy["layer2.0.bn3.running_mean"])
    partial = random_state(published_layout())
    del partial["bn1.num_batches_tracked"]
    with pytest.raises(CheckpointError, match=r"bn1\.num_batches_tracked"):
        res2net50_v1b_26w_4s().load_weights(partial)


def test_gradient_checkpointing_gives_same_outputs_and_grads():
    torch.manual_seed(0)
    enc = res2net50_v1b_26w_4s().train()
    x = torch.randn(2, 3, 32, 32)
    ref = enc(x)
    sum(f.mean() for f in ref).backward()
    grads = {n: p.grad.clone() for n, p in enc.named_parameters()}
    enc.zero_grad(set_to_none=True)
    assert set_gradient_checkpointing(enc, True) == 1
    out = enc(x)
    for a, b in zip(ref, out):
        torch.testing.assert_close(a, b)
    sum(f.mean() for f in out).backward()
    for n, p in enc.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], msg=n)
