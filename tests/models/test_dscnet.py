"""Tests of medseg.models.dscnet: parameter parity with the authors' code, shapes, size checks and
loading of state dicts laid out as the authors' S3_DSCNet.py / S3_DSCNet_pro.py save them."""

from __future__ import annotations

import pytest
import torch
from weight_fixtures import random_state

from medseg.errors import CheckpointError
from medseg.models import count_parameters, create_model
from medseg.models.dscnet import DSCNet, load_original


def authors_layout(
    n: int = 16, k: int = 9, in_ch: int = 1, n_classes: int = 1, variant: str = "original"
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the authors' 2D DSCNet state dict, written out from their source
    (EncoderConv/DecoderConv: conv, gn; DSConv: offset_conv, bn | gn_offset, dsc_conv_x,
    dsc_conv_y, gn), independently of medseg's classes. ``()`` marks num_batches_tracked."""
    blocks = [
        ("0", "conv1", in_ch, n), ("2", "conv3", n, 2 * n), ("4", "conv5", 2 * n, 4 * n),
        ("6", "conv7", 4 * n, 8 * n), ("12", "conv13", 12 * n, 4 * n),
        ("14", "conv15", 6 * n, 2 * n), ("16", "conv17", 3 * n, n),
    ]  # fmt: skip
    shapes: dict[str, tuple[int, ...]] = {}

    def plain(name: str, cin: int, cout: int) -> None:
        shapes[f"{name}.conv.weight"] = (cout, cin, 3, 3)
        shapes[f"{name}.conv.bias"] = (cout,)
        shapes[f"{name}.gn.weight"] = (cout,)
        shapes[f"{name}.gn.bias"] = (cout,)

    for prefix, fuse, cin, cout in blocks:
        plain(f"conv{prefix}0", cin, cout)
        for axis in "xy":
            d = f"conv{prefix}{axis}"
            shapes[f"{d}.offset_conv.weight"] = (2 * k, cin, 3, 3)
            shapes[f"{d}.offset_conv.bias"] = (2 * k,)
            if variant == "original":
                for s in ("weight", "bias", "running_mean", "running_var"):
                    shapes[f"{d}.bn.{s}"] = (2 * k,)
                shapes[f"{d}.bn.num_batches_tracked"] = ()
            else:
                shapes[f"{d}.gn_offset.weight"] = (2 * k,)
                shapes[f"{d}.gn_offset.bias"] = (2 * k,)
            shapes[f"{d}.dsc_conv_x.weight"] = (cout, cin, k, 1)
            shapes[f"{d}.dsc_conv_x.bias"] = (cout,)
            shapes[f"{d}.dsc_conv_y.weight"] = (cout, cin, 1, k)
            shapes[f"{d}.dsc_conv_y.bias"] = (cout,)
            shapes[f"{d}.gn.weight"] = (cout,)
            shapes[f"{d}.gn.bias"] = (cout,)
        plain(fuse, 3 * cout, cout)
    shapes["out_conv.weight"] = (n_classes, n, 1, 1)
    shapes["out_conv.bias"] = (n_classes,)
    return shapes


def test_parameter_counts():
    model = DSCNet()
    assert count_parameters(model) == 2_094_169
    # the authors' layout, counted independently, has the same number of parameters
    learnable = {k: s for k, s in authors_layout().items() if not any(b in k for b in ("running_", "num_batches"))}
    assert sum(torch.Size(s).numel() for s in learnable.values()) == 2_094_169
    model(torch.randn(1, 1, 16, 16)).sum().backward()
    used = sum(p.numel() for p in model.parameters() if p.grad is not None)
    assert used == 1_609_337


def test_forward_shapes_non_square_and_batch():
    torch.manual_seed(0)
    model = DSCNet()
    y = model(torch.randn(1, 1, 64, 96))
    assert y.shape == (1, 1, 64, 96) and y.dtype == torch.float32
    assert y.min() < 0 or y.max() > 1  # logits, not probabilities
    model.eval()
    with torch.no_grad():
        x = torch.randn(2, 1, 32, 24)
        both = model(x)
        singles = torch.cat([model(x[:1]), model(x[1:])])
        torch.testing.assert_close(both, singles, atol=1e-4, rtol=1e-4)


def test_pro_configuration_and_channels():
    model = DSCNet(
        in_channels=3, out_channels=2, n_basic_layer=8, kernel_size=5, offset_norm="group", padding_mode="border"
    )
    assert model(torch.randn(2, 3, 16, 24)).shape == (2, 2, 16, 24)


@pytest.mark.parametrize("size", [(60, 96), (64, 90), (4, 4)])
def test_size_not_divisible_by_8_raises(size):
    with pytest.raises(ValueError, match="divisible by 8") as info:
        DSCNet(n_basic_layer=4, kernel_size=3)(torch.randn(1, 1, *size))
    bad = size[0] if size[0] % 8 else size[1]
    assert f"={bad}" in str(info.value)
    assert f"{(bad // 8 + 1) * 8}" in str(info.value)


def test_create_model():
    model = create_model("dscnet", n_basic_layer=8, kernel_size=3)
    assert isinstance(model, DSCNet)
    assert count_parameters(create_model("dscnet")) == 2_094_169


@pytest.mark.parametrize("variant", ["original", "pro"])
def test_load_original_state_dict(variant):
    state = random_state(authors_layout(variant=variant))
    model = load_original(state)
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, msg=key)
    dsconv = model.conv0x
    assert dsconv.offset_norm == ("batch" if variant == "original" else "group")
    assert dsconv.padding_mode == ("original" if variant == "original" else "border")
    assert load_original(state, padding_mode="zeros").conv2y.padding_mode == "zeros"


def test_load_original_infers_shapes_and_reproduces_outputs():
    shapes = authors_layout(n=8, k=5, in_ch=3, n_classes=2, variant="original")
    state = random_state(shapes, seed=1)
    model = load_original(state).eval()
    inferred = (model.in_channels, model.out_channels, model.n_basic_layer, model.kernel_size)
    assert inferred == (3, 2, 8, 5)
    twin = DSCNet(3, 2, 8, 5, padding_mode="original").eval()
    twin.load_state_dict(state)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), twin(x))


def test_load_original_missing_and_unexpected_keys():
    state = random_state(authors_layout())
    del state["conv12y.dsc_conv_y.weight"]
    state["conv12y.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as info:
        load_original(state)
    msg = str(info.value)
    assert "conv12y.dsc_conv_y.weight" in msg and "conv12y.extra.weight" in msg
    assert "missing" in msg and "unexpected" in msg


def test_load_original_shape_mismatch():
    state = random_state(authors_layout())
    state["conv4x.dsc_conv_x.weight"] = torch.zeros(64, 32, 1, 9)
    with pytest.raises(CheckpointError, match=r"conv4x\.dsc_conv_x\.weight"):
        load_original(state)


def test_load_original_file_round_trip_with_module_prefix(tmp_path):
    state = random_state(authors_layout(variant="pro"), seed=2)
    path = tmp_path / "dscnet_pro.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    model = load_original(path)
    loaded = model.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, msg=key)
    torch.save({"model": state}, tmp_path / "wrapped.pt")
    assert isinstance(load_original(str(tmp_path / "wrapped.pt")), DSCNet)


def test_load_original_file_errors(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="nope.pth"):
        load_original(missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_original(garbage)
    unet_like = tmp_path / "other.pth"
    torch.save({"encoder.0.weight": torch.zeros(2)}, unet_like)
    with pytest.raises(CheckpointError, match="other.pth"):
        load_original(unet_like)
