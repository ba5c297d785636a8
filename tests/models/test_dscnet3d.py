"""Tests of medseg.models.dscnet3d: parameter parity with the authors' 3D code, shapes, size checks
and strict loading of state dicts laid out as the authors' 3D S3_DSCNet.py saves them."""

from __future__ import annotations

import pytest
import torch
from conformance import ModelConformance
from weight_fixtures import random_state

from medseg.errors import CheckpointError
from medseg.models import count_parameters
from medseg.models.dscnet3d import DSCNet3D, load_original

# the authors' DSConv allocates three axis convs and a full KxKxK conv and uses one axis conv
UNUSED = (
    "conv*.dcn_conv.*",
    "conv*x.dcn_conv_y.*", "conv*x.dcn_conv_z.*",
    "conv*y.dcn_conv_x.*", "conv*y.dcn_conv_z.*",
    "conv*z.dcn_conv_x.*", "conv*z.dcn_conv_y.*",
)  # fmt: skip


class TestConformanceDSCNet3D(ModelConformance):
    name = "dscnet3d"
    kwargs = {"n_basic_layer": 4}  # smallest width; kernel_size stays the authors' 3
    in_channels = 1
    spatial_dims = 3
    sizes = [(16, 16, 16), (8, 16, 24)]  # cubic and not
    bad_sizes = [(16, 16, 20), (12, 16, 16)]
    # dscnet3d.py: 7,225,923 with the KiPA config (equal to the authors' class, counted by running it);
    # the GroupNorm offsets have as many parameters as BatchNorm (which adds buffers only).
    expected_params = {
        "default (KiPA: 1 in, 3 out, n=16, K=3)": 7_225_923,
        "group-norm offsets": 7_225_923,
        "kernel_size 9 (the config's value)": 66_632_835,
    }
    param_kwargs = {
        "default (KiPA: 1 in, 3 out, n=16, K=3)": {},
        "group-norm offsets": {"offset_norm": "group"},
        "kernel_size 9 (the config's value)": {"kernel_size": 9},
    }
    allowed_unused = UNUSED
    export = "torchscript"  # traced (the blocks are looked up by name)
    onnx_opset = 20  # ONNX GridSample takes 5-D inputs from opset 20


def authors_layout(n: int = 16, k: int = 3, in_ch: int = 1, n_classes: int = 3) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the authors' 3D DSCNet state dict, in their registration order, written out
    from their source (S3_DSCNet.py: EncoderConv/DecoderConv = conv, gn; S3_DSConv.py DCN_Conv =
    offset_conv, bn, dcn_conv_x, dcn_conv_y, dcn_conv_z, dcn_conv, gn), independently of medseg's
    classes. ``()`` marks num_batches_tracked."""
    blocks = [
        ("0", "conv1", in_ch, n), ("2", "conv3", n, 2 * n), ("4", "conv5", 2 * n, 4 * n),
        ("6", "conv7", 4 * n, 8 * n), ("12", "conv13", 12 * n, 4 * n),
        ("14", "conv15", 6 * n, 2 * n), ("16", "conv17", 3 * n, n),
    ]  # fmt: skip
    shapes: dict[str, tuple[int, ...]] = {}

    def plain(name: str, cin: int, cout: int) -> None:
        shapes[f"{name}.conv.weight"] = (cout, cin, 3, 3, 3)
        shapes[f"{name}.conv.bias"] = (cout,)
        shapes[f"{name}.gn.weight"] = (cout,)
        shapes[f"{name}.gn.bias"] = (cout,)

    for prefix, fuse, cin, cout in blocks:
        plain(f"conv{prefix}0", cin, cout)
        for axis in "xyz":
            d = f"conv{prefix}{axis}"
            shapes[f"{d}.offset_conv.weight"] = (6 * k, cin, 3, 3, 3)
            shapes[f"{d}.offset_conv.bias"] = (6 * k,)
            for s in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{d}.bn.{s}"] = (6 * k,)
            shapes[f"{d}.bn.num_batches_tracked"] = ()
            for conv, kernel in (("x", (1, 1, k)), ("y", (1, k, 1)), ("z", (k, 1, 1)), ("", (k, k, k))):
                name = f"{d}.dcn_conv_{conv}" if conv else f"{d}.dcn_conv"
                shapes[f"{name}.weight"] = (cout, cin, *kernel)
                shapes[f"{name}.bias"] = (cout,)
            shapes[f"{d}.gn.weight"] = (cout,)
            shapes[f"{d}.gn.bias"] = (cout,)
        plain(fuse, 4 * cout, cout)
    shapes["out_conv.weight"] = (n_classes, n, 1, 1, 1)
    shapes["out_conv.bias"] = (n_classes,)
    return shapes


def _learnable(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(torch.Size(s).numel() for k, s in shapes.items() if "running_" not in k and "num_batches" not in k)


def test_parameter_counts_equal_the_authors_layout():
    assert _learnable(authors_layout()) == 7_225_923
    assert _learnable(authors_layout(k=9)) == 66_632_835
    model = DSCNet3D()
    assert count_parameters(model) == 7_225_923
    # used: everything but dcn_conv and two of the three axis convs of every DSConv
    model(torch.randn(1, 1, 16, 16, 16)).sum().backward()
    used = sum(p.numel() for p in model.parameters() if p.grad is not None)
    assert used == 4_560_051


def test_state_dict_keys_and_order_are_the_authors():
    with torch.device("meta"):
        model = DSCNet3D(in_channels=2, out_channels=5, n_basic_layer=8, kernel_size=5)
    layout = authors_layout(n=8, k=5, in_ch=2, n_classes=5)
    state = model.state_dict()
    assert list(state) == list(layout)
    assert {k: tuple(v.shape) for k, v in state.items()} == layout


def test_defaults_declarations_and_logits():
    torch.manual_seed(0)
    model = DSCNet3D(n_basic_layer=4).eval()
    assert (model.spatial_dims, model.size_divisor, model.output_activation) == (3, 8, "auto")
    assert (model.in_channels, model.out_channels, model.kernel_size) == (1, 3, 3)
    assert model.conv0x.padding_mode == "original" and model.conv0x.offset_norm == "batch"
    assert [model.conv4x.morph, model.conv4y.morph, model.conv4z.morph] == [0, 1, 2]
    with torch.no_grad():
        y = model(torch.randn(1, 1, 8, 16, 24))
    assert y.shape == (1, 3, 8, 16, 24) and y.dtype == torch.float32
    assert float(y.min()) < 0.0  # logits, not the authors' softmax probabilities


def test_kernel_size_9_and_channels():
    model = DSCNet3D(in_channels=2, out_channels=2, n_basic_layer=4, kernel_size=9)
    assert model.conv2z.dcn_conv_z.weight.shape == (8, 4, 9, 1, 1)
    assert model(torch.randn(1, 2, 16, 8, 8)).shape == (1, 2, 16, 8, 8)


def _reference_rigid_forward(model: DSCNet3D, x: torch.Tensor) -> torch.Tensor:
    """The authors' network wiring, restated with functional ops and ``model``'s weights, for
    rigid DSConvs (``if_offset=False``: a 1x1xK / 1xKx1 / Kx1x1 conv with zero padding, the
    authors' DSConv with zero offsets): branches [3x3x3, x, y, z] concatenated, fused; max-pool
    2; decoder: trilinear x2 (align_corners=True), cat([upsampled, skip]); 1x1x1 head."""
    import torch.nn.functional as F

    def plain(m, t):
        return F.relu(
            F.group_norm(F.conv3d(t, m.conv.weight, m.conv.bias, padding=1), m.gn.num_groups, m.gn.weight, m.gn.bias)
        )

    def rigid(m, t, conv, pad):
        return F.relu(
            F.group_norm(F.conv3d(t, conv.weight, conv.bias, padding=pad), m.gn.num_groups, m.gn.weight, m.gn.bias)
        )

    c = model.kernel_size // 2

    def block(p, fuse, t):
        b = [
            plain(getattr(model, f"conv{p}0"), t),
            rigid(getattr(model, f"conv{p}x"), t, getattr(model, f"conv{p}x").dcn_conv_x, (0, 0, c)),
            rigid(getattr(model, f"conv{p}y"), t, getattr(model, f"conv{p}y").dcn_conv_y, (0, c, 0)),
            rigid(getattr(model, f"conv{p}z"), t, getattr(model, f"conv{p}z").dcn_conv_z, (c, 0, 0)),
        ]
        return plain(getattr(model, fuse), torch.cat(b, 1))

    x0 = block("0", "conv1", x)
    x1 = block("2", "conv3", F.max_pool3d(x0, 2))
    x2 = block("4", "conv5", F.max_pool3d(x1, 2))
    x3 = block("6", "conv7", F.max_pool3d(x2, 2))
    up = lambda t: F.interpolate(t, scale_factor=2, mode="trilinear", align_corners=True)  # noqa: E731
    y = block("12", "conv13", torch.cat([up(x3), x2], 1))
    y = block("14", "conv15", torch.cat([up(y), x1], 1))
    y = block("16", "conv17", torch.cat([up(y), x0], 1))
    return F.conv3d(y, model.out_conv.weight, model.out_conv.bias)


def test_wiring_equals_the_authors_with_rigid_dsconvs():
    torch.manual_seed(0)
    model = DSCNet3D(in_channels=2, out_channels=3, n_basic_layer=4, kernel_size=5, if_offset=False).eval()
    x = torch.randn(2, 2, 8, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference_rigid_forward(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [0, 6, 18])
def test_width_must_be_a_multiple_of_4(n):
    with pytest.raises(ValueError, match="multiple of 4"):
        DSCNet3D(n_basic_layer=n)


def test_image_batch_and_bad_sizes_are_refused():
    model = DSCNet3D(n_basic_layer=4)
    with pytest.raises(ValueError, match=r"DSCNet3D expects a volume \(N, C, D, H, W\), got shape \(1, 1, 16, 16\)"):
        model(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError) as info:
        model(torch.randn(1, 1, 16, 12, 16))
    assert "input 16x12x16 has H=12 (nearest valid: 8 or 16); e.g. 16x16x16 works." in str(info.value)


# -- loading the authors' state dicts ------------------------------------------------------------


def test_load_original_state_dict():
    state = random_state(authors_layout(), seed=0)
    model = load_original(state)
    loaded = model.state_dict()
    assert list(loaded) == list(state)
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, msg=key)
    assert model.conv0z.padding_mode == "original"  # padding_mode None -> the authors' boundary
    assert load_original(state, padding_mode="zeros").conv6y.padding_mode == "zeros"


def test_load_original_infers_shapes_and_reproduces_outputs():
    state = random_state(authors_layout(n=4, k=5, in_ch=2, n_classes=2), seed=1)
    model = load_original(state).eval()
    inferred = (model.in_channels, model.out_channels, model.n_basic_layer, model.kernel_size)
    assert inferred == (2, 2, 4, 5)
    twin = DSCNet3D(2, 2, 4, 5).eval()
    twin.load_state_dict(state)
    x = torch.randn(1, 2, 8, 8, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), twin(x), rtol=0, atol=0)


def test_load_original_missing_and_unexpected_keys():
    state = random_state(authors_layout())
    del state["conv14z.dcn_conv.weight"]
    state["conv14z.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as info:
        load_original(state)
    msg = str(info.value)
    assert "conv14z.dcn_conv.weight" in msg and "conv14z.extra.weight" in msg
    assert "missing" in msg and "unexpected" in msg


def test_load_original_shape_mismatch(tmp_path):
    state = random_state(authors_layout())
    state["conv4y.dcn_conv_y.weight"] = torch.zeros(64, 32, 3, 1, 1)  # a z kernel where y belongs
    path = tmp_path / "kipa.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_original(path)
    msg = str(info.value)
    assert "kipa.pth" in msg
    assert "conv4y.dcn_conv_y.weight: file (64, 32, 3, 1, 1) vs network (64, 32, 1, 3, 1)" in msg


def test_load_original_file_round_trip_with_module_prefix(tmp_path):
    state = random_state(authors_layout(n=4), seed=2)
    path = tmp_path / "DSCNet_KIPA_max"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    loaded = load_original(path).state_dict()
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, msg=key)


def test_load_original_refuses_other_networks(tmp_path):
    two_d = {  # the shape-bearing keys of the authors' 2D DSCNet (4-D conv weights)
        "conv00.conv.weight": torch.zeros(16, 1, 3, 3),
        "out_conv.weight": torch.zeros(1, 16, 1, 1),
        "conv0x.offset_conv.weight": torch.zeros(18, 1, 3, 3),
    }
    with pytest.raises(CheckpointError, match=r"4-D \(16, 1, 3, 3\): a 2D DSCNet state dict"):
        load_original(two_d)
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="nope.pth"):
        load_original(missing)
    other = tmp_path / "other.pth"
    torch.save({"encoder.0.weight": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match=r"other\.pth.*missing keys needed to infer its shape"):
        load_original(other)
    state = random_state(authors_layout(n=4))
    state["conv0x.offset_conv.weight"] = torch.zeros(17, 1, 3, 3, 3)  # not 6K offset channels
    with pytest.raises(CheckpointError, match="6K output channels"):
        load_original(state)
