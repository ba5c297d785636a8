"""Tests of medseg.models.encoders.resnet: torchvision's key layout and parameter counts, the five
feature maps, strict loading of torchvision-layout weight files, gradient checkpointing."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from weight_fixtures import random_state

from medseg.errors import CheckpointError
from medseg.models.encoders.resnet import resnet18_encoder, resnet34_encoder, resnet50_encoder


def torchvision_resnet_layout(
    blocks: tuple[int, ...] = (3, 4, 6, 3), bottleneck: bool = False, fc: bool = True, nbt: bool = True
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's ``resnet18/34/50`` state dict, written out from torchvision's
    ``models/resnet.py`` layout independently of medseg's classes. ``fc.*`` and the BatchNorm
    ``num_batches_tracked`` buffers (``()``) are in torchvision's current file
    (``resnet34-b627a593.pth``); the 2017 file ``resnet34-333f7ec4.pth`` has no
    ``num_batches_tracked`` (``nbt=False``)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(name: str, c: int) -> None:
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{s}"] = (c,)
        if nbt:
            shapes[f"{name}.num_batches_tracked"] = ()

    e = 4 if bottleneck else 1
    shapes["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    inp = 64
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for j in range(n):
            p = f"layer{i}.{j}"
            if bottleneck:
                shapes[f"{p}.conv1.weight"] = (planes, inp, 1, 1)
                bn(f"{p}.bn1", planes)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
                shapes[f"{p}.conv3.weight"] = (planes * e, planes, 1, 1)
                bn(f"{p}.bn3", planes * e)
            else:
                shapes[f"{p}.conv1.weight"] = (planes, inp, 3, 3)
                bn(f"{p}.bn1", planes)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
            if j == 0 and (i > 1 or inp != planes * e):
                shapes[f"{p}.downsample.0.weight"] = (planes * e, inp, 1, 1)
                bn(f"{p}.downsample.1", planes * e)
            inp = planes * e
    if fc:
        shapes["fc.weight"] = (1000, 512 * e)
        shapes["fc.bias"] = (1000,)
    return shapes


random_state = partial(random_state, tracked=12345, scale=1.0)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_equal_torchvision():
    # torchvision's documented counts: resnet18 11,689,512; resnet34 21,797,672; resnet50 25,557,032
    assert n_params(resnet34_encoder(keep_fc=True)) == 21_797_672
    assert n_params(resnet34_encoder()) == 21_797_672 - 513_000
    assert n_params(resnet18_encoder(keep_fc=True)) == 11_689_512
    assert n_params(resnet50_encoder(keep_fc=True)) == 25_557_032


@pytest.mark.parametrize(
    "builder, blocks, bottleneck",
    [
        (resnet18_encoder, (2, 2, 2, 2), False),
        (resnet34_encoder, (3, 4, 6, 3), False),
        (resnet50_encoder, (3, 4, 6, 3), True),
    ],
)
def test_state_dict_layout_equals_torchvision(builder, blocks, bottleneck):
    ours = {k: tuple(v.shape) for k, v in builder(keep_fc=True).state_dict().items()}
    assert ours == torchvision_resnet_layout(blocks, bottleneck)
    no_fc = {k: tuple(v.shape) for k, v in builder().state_dict().items()}
    assert no_fc == torchvision_resnet_layout(blocks, bottleneck, fc=False)


def test_forward_returns_five_maps_shallowest_first():
    enc = resnet34_encoder().eval()
    assert enc.out_channels == (64, 64, 128, 256, 512)
    assert enc.reductions == (2, 4, 8, 16, 32)
    with torch.no_grad():
        feats = enc(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [
        (2, 64, 32, 32), (2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2),
    ]  # fmt: skip
    # the first map is the stem's ReLU output (before the max-pool)
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        stem = torch.relu(enc.bn1(enc.conv1(x)))
        assert torch.equal(enc(x)[0], stem)
    assert resnet50_encoder().out_channels == (64, 256, 512, 1024, 2048)


def test_wrong_channel_count_raises():
    with pytest.raises(ValueError, match=r"\[1, 1, 64, 64\]"):
        resnet34_encoder()(torch.randn(1, 1, 64, 64))


def test_load_weights_torchvision_file(tmp_path):
    state = random_state(torchvision_resnet_layout())
    path = tmp_path / "resnet34-333f7ec4.pth"
    torch.save(state, path)
    enc = resnet34_encoder().load_weights(path)
    ours = enc.state_dict()
    assert "fc.weight" not in ours
    for key, value in ours.items():
        assert torch.equal(value, state[key]), key
    # keep_fc loads the classifier too
    enc_fc = resnet34_encoder(keep_fc=True).load_weights(path)
    assert torch.equal(enc_fc.fc.weight, state["fc.weight"])


def test_load_weights_file_without_num_batches_tracked():
    # resnet34-333f7ec4.pth predates PyTorch 0.4.1: no num_batches_tracked buffers at all.
    state = random_state(torchvision_resnet_layout(nbt=False))
    enc = resnet34_encoder().load_weights(state)
    assert torch.equal(enc.layer3[1].bn2.running_var, state["layer3.1.bn2.running_var"])
    assert int(enc.bn1.num_batches_tracked) == 0


def test_load_weights_missing_unexpected_and_shape_errors(tmp_path):
    state = random_state(torchvision_resnet_layout())
    broken = dict(state)
    del broken["layer2.0.downsample.0.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): layer2\.0\.downsample\.0\.weight"):
        resnet34_encoder().load_weights(broken)
    extra = dict(state, **{"layer5.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): layer5\.0\.conv1\.weight"):
        resnet34_encoder().load_weights(extra)
    wrong = dict(state, **{"conv1.weight": torch.zeros(64, 1, 7, 7)})
    with pytest.raises(CheckpointError, match=r"conv1\.weight: file \(64, 1, 7, 7\)"):
        resnet34_encoder().load_weights(wrong)
    no_fc = {k: v for k, v in state.items() if not k.startswith("fc.")}
    with pytest.raises(CheckpointError, match=r"fc\.bias, fc\.weight"):
        resnet34_encoder(keep_fc=True).load_weights(no_fc)
    some_nbt = dict(state)
    del some_nbt["bn1.num_batches_tracked"]
    with pytest.raises(CheckpointError, match=r"bn1\.num_batches_tracked"):
        resnet34_encoder().load_weights(some_nbt)
    with pytest.raises(CheckpointError, match="not found"):
        resnet34_encoder().load_weights(tmp_path / "absent.pth")


def test_gradient_checkpointing_gives_same_output_and_gradients():
    torch.manual_seed(0)
    enc = resnet18_encoder()
    x = torch.randn(2, 3, 32, 32)
    grads = []
    outs = []
    for flag in (False, True):
        enc.zero_grad(set_to_none=True)
        enc.gradient_checkpointing = flag
        feats = enc(x)
        loss = sum((f * (i + 1)).mean() for i, f in enumerate(feats))
        loss.backward()
        outs.append(feats[-1].detach())
        grads.append(enc.layer1[0].conv1.weight.grad.clone())
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
