"""Tests of medseg.models.unet3d (MONAI's BasicUNet as a registered 3D network) and of the volume
half of the one size check (medseg.models.contract, spatial_dims 3). Expected messages and
parameter counts are written out by hand."""

from __future__ import annotations

import pytest
import torch
from conformance import ModelConformance

from medseg.models import count_parameters, create_model
from medseg.models.contract import NetworkContract, check_contract, check_input_size, check_spatial_size
from medseg.models.unet3d import MONAI_FEATURES, UNet3D

SMALL = (4, 4, 8, 16, 32, 4)


class TestConformanceUNet3D(ModelConformance):
    name = "unet3d"
    kwargs = {"features": SMALL}  # MONAI's layout at 1/8 of its widths
    in_channels = 1
    spatial_dims = 3
    # non-cubic; 16^3 would leave one voxel at the 1/16 bottleneck, which instance norm refuses in training
    sizes = [(32, 16, 16), (16, 32, 48)]
    bad_sizes = [(16, 16, 24), (20, 16, 16)]
    expected_params = {"default (MONAI: 1 in, 2 out)": 5_749_410, "one output channel": 5_749_377}
    param_kwargs = {"default (MONAI: 1 in, 2 out)": {}, "one output channel": {"out_channels": 1}}
    export = "torchscript"


def basic_unet_parameters(c_in: int, c_out: int, f: tuple[int, ...]) -> int:
    """Parameters of MONAI's BasicUNet (spatial_dims 3), counted from its layer list
    (monai/networks/nets/basic_unet.py): TwoConv = 2 x (3x3x3 conv with bias + affine instance
    norm); Down = max-pool + TwoConv; UpCat = 2x2x2 transposed conv (to in/2 channels, or to in
    for the last, ``halves=False``) + TwoConv(cat + up channels); head 1x1x1 conv."""

    def two(a: int, b: int) -> int:
        return (a * 27 * b + b + 2 * b) + (b * 27 * b + b + 2 * b)

    def upcat(c: int, cat: int, out: int, halves: bool = True) -> int:
        up = c // 2 if halves else c
        return c * up * 8 + up + two(cat + up, out)

    return (
        two(c_in, f[0])
        + two(f[0], f[1]) + two(f[1], f[2]) + two(f[2], f[3]) + two(f[3], f[4])
        + upcat(f[4], f[3], f[3]) + upcat(f[3], f[2], f[2]) + upcat(f[2], f[1], f[1])
        + upcat(f[1], f[0], f[5], halves=False)
        + f[5] * c_out + c_out
    )  # fmt: skip


def test_parameter_count_from_the_layer_list():
    assert basic_unet_parameters(1, 2, MONAI_FEATURES) == 5_749_410
    assert count_parameters(UNet3D(2, 3, SMALL)) == basic_unet_parameters(2, 3, SMALL)


def test_declarations_and_defaults():
    with torch.device("meta"):
        model = create_model("unet3d")
    assert isinstance(model, NetworkContract)
    check_contract(model)
    assert (model.spatial_dims, model.size_divisor, model.output_activation) == (3, 16, "auto")
    assert (model.in_channels, model.out_channels, model.features) == (1, 2, MONAI_FEATURES)


def test_equals_monai_basic_unet_with_the_same_weights():
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    ref = BasicUNet(spatial_dims=3, in_channels=2, out_channels=3, features=SMALL).eval()
    model = UNet3D(2, 3, SMALL).eval()
    assert list(model.state_dict()) == [f"net.{k}" for k in ref.state_dict()]
    model.net.load_state_dict(ref.state_dict())  # a MONAI checkpoint loads into .net
    x = torch.randn(1, 2, 16, 32, 16)
    with torch.no_grad():
        y = model(x)
        assert torch.equal(y, ref(x))
    assert y.shape == (1, 3, 16, 32, 16)
    assert float(y.min()) < 0.0  # logits, no activation


@pytest.mark.parametrize("features", [(4, 4, 8, 16, 32), (4, 4, 8, 16, 32, 0), 8])
def test_features_must_be_six_positive_ints(features):
    with pytest.raises(ValueError, match="six ints >= 1"):
        UNet3D(features=features)


# -- the one size check for volumes (medseg.models.contract, spatial_dims 3) ---------------------


def test_volume_size_message():
    with pytest.raises(ValueError) as info:
        check_spatial_size([16, 16, 20], 8, "DSCNet3D", "three 2x poolings")
    assert str(info.value) == (
        "DSCNet3D needs D, H and W divisible by 8, i.e. multiples of 8 (three 2x poolings); input "
        "16x16x20 has W=20 (nearest valid: 16 or 24); e.g. 16x16x24 works. Resize, pad or crop the "
        "volume, or use sliding-window inference with a window that is a multiple of 8."
    )


def test_volume_check_on_tensors_names_every_bad_side():
    check_input_size(torch.zeros(1, 1, 32, 16, 48), 16, "UNet3D", spatial_dims=3)
    with pytest.raises(ValueError) as info:
        check_input_size(torch.zeros(1, 1, 4, 16, 40), 16, "UNet3D", "four 2x poolings", spatial_dims=3)
    msg = str(info.value)
    assert msg.startswith("UNet3D needs D, H and W divisible by 16, i.e. multiples of 16 (four 2x poolings);")
    assert "input 4x16x40 has D=4 (nearest valid: 16), W=40 (nearest valid: 32 or 48); e.g. 16x16x48 works." in msg


def test_volume_check_refuses_an_image_batch_and_other_ranks():
    with pytest.raises(ValueError) as info:
        check_input_size(torch.zeros(2, 1, 16, 16), 8, "DSCNet3D", spatial_dims=3)
    assert str(info.value) == (
        "DSCNet3D expects a volume (N, C, D, H, W), got shape (2, 1, 16, 16) (a 4-D tensor is a "
        "batch of 2D images (N, C, H, W); add the depth axis D)"
    )
    with pytest.raises(ValueError, match=r"^Net expects a volume \(N, C, D, H, W\), got shape \(16, 16, 16\)$"):
        check_input_size(torch.zeros(16, 16, 16), 8, "Net", spatial_dims=3)
    # the 2D check is unchanged: a volume to a 2D network
    with pytest.raises(ValueError, match=r"^DSCNet expects an \(N, C, H, W\) tensor, got shape \(1, 1, 8, 8, 8\)$"):
        check_input_size(torch.zeros(1, 1, 8, 8, 8), 8, "DSCNet")
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3, got 1"):
        check_input_size(torch.zeros(1, 1, 8), 8, "Net", spatial_dims=1)


def test_scripted_volume_check_keeps_its_message():
    scripted = torch.jit.script(check_input_size)
    scripted(torch.zeros(1, 1, 16, 16, 16), 16, "UNet3D", "", "", 3)
    with pytest.raises(Exception, match=r"input 16x24x16 has H=24 \(nearest valid: 16 or 32\)"):
        scripted(torch.zeros(1, 1, 16, 24, 16), 16, "UNet3D", "", "", 3)


def test_check_contract_requires_spatial_dims_2_or_3():
    model = UNet3D(features=SMALL)
    model.spatial_dims = 4
    with pytest.raises(TypeError, match=r"spatial_dims must be 2 \(images\) or 3 \(volumes\), got 4"):
        check_contract(model)
    model.spatial_dims = True  # a bool is not a rank
    with pytest.raises(TypeError, match="got True"):
        check_contract(model)
