"""The network contract (:mod:`medseg.models.contract`): every registered network has a
conformance test, the one size check words its error as documented, and single-output networks
get ``forward_outputs`` for free. Expected values are computed by hand."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from conformance import ModelConformance

from medseg.models import MODELS, create_model, list_models
from medseg.models.contract import (
    NetworkContract,
    check_contract,
    check_input_size,
    check_size,
    nearest_sizes,
    single_output,
)

TESTS = Path(__file__).resolve().parents[1]  # tests/


def _conformance_names() -> set[str]:
    """``name`` of every :class:`ModelConformance` subclass defined in tests/**/test_*.py.

    Imports each test module that mentions ModelConformance (pytest's default "prepend" import
    mode names them by file stem, so a module pytest already imported is not imported twice),
    then walks the subclasses."""
    for path in sorted(TESTS.rglob("test_*.py")):
        if path.stem != Path(__file__).stem and "ModelConformance" in path.read_text(encoding="utf-8"):
            importlib.import_module(path.stem)
    names, stack = set(), list(ModelConformance.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.name:
            names.add(cls.name)
    return names


def test_every_registered_network_has_a_conformance_test():
    covered = _conformance_names()
    missing = sorted(set(list_models()) - covered)
    assert not missing, (
        f"registered networks without a ModelConformance subclass in tests/: {missing}; add one "
        "(see tests/models/conformance.py) to the network's test file or tests/models/test_conformance.py"
    )
    unknown = sorted(covered - set(list_models()))
    assert not unknown, f"ModelConformance subclasses name unregistered networks: {unknown}"


def test_every_registered_network_is_a_network_contract():
    for name in list_models():
        cls = MODELS.get(name)
        assert isinstance(cls, type) and issubclass(cls, NetworkContract), name
        with torch.device("meta"):
            check_contract(create_model(name))


# -- the one size check --------------------------------------------------------------------------


def test_nearest_sizes():
    assert nearest_sizes(70, 32) == (64, 96)
    assert nearest_sizes(64, 32) == (64, 64)
    assert nearest_sizes(16, 32) == (32, 32)  # at least one multiple
    assert nearest_sizes(0, 8) == (8, 8)
    assert nearest_sizes(565, 8) == (560, 568)  # a DRIVE image's width


@pytest.mark.parametrize("h, w, d", [(64, 96, 32), (48, 80, 8), (37, 53, 1), (16, 16, 16), (1, 1, 1)])
def test_divisible_sizes_pass(h, w, d):
    check_size(h, w, d, "Net")
    check_input_size(torch.zeros(2, 3, h, w), d, "Net")


def test_one_bad_side_message():
    with pytest.raises(ValueError) as info:
        check_size(70, 64, 32, "PraNet", "encoder stride 32")
    assert str(info.value) == (
        "PraNet needs H and W divisible by 32, i.e. multiples of 32 (encoder stride 32); input "
        "70x64 has H=70 (nearest valid: 64 or 96); e.g. 96x64 works. Resize, pad or crop the "
        "image, or use sliding-window inference with a window that is a multiple of 32."
    )


def test_both_sides_bad_below_the_divisor_and_a_note():
    # 16 < 32: the only nearest valid size is 32; 100 lies between 96 and 128
    with pytest.raises(ValueError) as info:
        check_size(16, 100, 32, "Net", note="Resize to 352x352.")
    assert str(info.value) == (
        "Net needs H and W divisible by 32, i.e. multiples of 32; input 16x100 has "
        "H=16 (nearest valid: 32), W=100 (nearest valid: 96 or 128); e.g. 32x128 works. Resize, "
        "pad or crop the image, or use sliding-window inference with a window that is a multiple "
        "of 32. Resize to 352x352."
    )


def test_tensor_check_names_h_w_divisor_and_network():
    with pytest.raises(ValueError) as info:
        check_input_size(torch.zeros(1, 1, 64, 72), 16, "DenseBlockUNet", "4 2x downsamplings")
    msg = str(info.value)
    assert msg.startswith("DenseBlockUNet needs H and W divisible by 16, i.e. multiples of 16 (4 2x")
    assert "input 64x72 has W=72 (nearest valid: 64 or 80); e.g. 64x80 works." in msg
    with pytest.raises(ValueError, match=r"H=0 \(nearest valid: 8\)"):
        check_input_size(torch.zeros(1, 1, 0, 8), 8, "Net")


def test_tensor_check_refuses_other_than_4d():
    with pytest.raises(ValueError) as info:
        check_input_size(torch.zeros(3, 64, 64), 8, "DSCNet")
    assert str(info.value) == "DSCNet expects an (N, C, H, W) tensor, got shape (3, 64, 64)"


def test_the_check_compiles_with_torchscript_and_keeps_its_message():
    scripted = torch.jit.script(check_input_size)
    scripted(torch.zeros(1, 3, 64, 64), 32, "CPFNet", "", "")
    with pytest.raises(Exception, match=r"input 70x64 has H=70 \(nearest valid: 64 or 96\)"):
        scripted(torch.zeros(1, 3, 70, 64), 32, "CPFNet", "", "")


# -- declarations and the default forward_outputs ------------------------------------------------


class Tiny(NetworkContract):
    """(N, 2, H, W) -> (N, 1, H, W): one 3x3 conv, any size."""

    def __init__(self) -> None:
        super().__init__()
        self.in_channels, self.out_channels = 2, 1
        self.conv = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_defaults_and_forward_outputs_of_a_single_output_network():
    torch.manual_seed(0)
    model = Tiny().eval()
    assert model.size_divisor == 1 and model.output_activation == "auto"
    check_contract(model)
    assert list(model.state_dict()) == ["conv.weight", "conv.bias"]  # the base adds nothing
    x = torch.randn(2, 2, 5, 7)
    with torch.no_grad():
        outs = model.forward_outputs(x)
        main = model(x)
    assert list(outs) == ["out"]
    assert outs["out"].shape == (2, 1, 5, 7) and outs["out"].dtype == torch.float32
    assert torch.equal(outs["out"], main)


def test_check_contract_names_what_is_missing_or_wrong():
    with pytest.raises(TypeError) as info:
        check_contract(nn.Identity())
    msg = str(info.value)
    assert msg.startswith("Identity does not keep the network contract")
    for part in ("in_channels", "out_channels", "size_divisor", "output_activation", "forward_outputs"):
        assert part in msg, part
    model = Tiny()
    model.in_channels = True  # a bool is not a channel count
    model.output_activation = "sigmoid"
    with pytest.raises(TypeError) as info:
        check_contract(model)
    msg = str(info.value)
    assert "in_channels must be an int >= 1, got True" in msg
    assert "output_activation must be one of ('auto', 'none'), got 'sigmoid'" in msg
    assert "out_channels" not in msg and "size_divisor" not in msg


def test_num_classes_networks_expose_out_channels():
    with torch.device("meta"):
        cpf = create_model("cpfnet", num_classes=4)
        alias = create_model("cpfnet", out_planes=3)
        dense = create_model("dense_block_unet", num_classes=3)
    assert (cpf.num_classes, cpf.out_channels) == (4, 4)
    assert (alias.num_classes, alias.out_channels) == (3, 3)
    assert (dense.num_classes, dense.out_channels) == (3, 3)


def test_single_output_tells_the_default_forward_outputs_apart():
    class Two(Tiny):
        def forward_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            out = self.conv(x)
            return {"out": out, "aux": out}

    assert single_output(Tiny()) and single_output(nn.Conv2d(1, 1, 1))
    assert not single_output(Two())
    with torch.device("meta"):
        assert single_output(create_model("unet")) and single_output(create_model("cpfnet"))
        assert not single_output(create_model("pranet"))


def test_skip_init_builds_the_same_network_and_restores_init():
    """``skip_init`` (used by ``medseg models``) leaves shapes and counts unchanged and puts every
    ``torch.nn.init`` function back, even when the block raises."""
    import torch.nn.init as init

    from medseg.models import count_parameters, create_model, skip_init

    before = init.kaiming_normal_
    with skip_init():
        fast = create_model("dscnet")
        assert init.kaiming_normal_ is not before
    ref = create_model("dscnet")
    assert init.kaiming_normal_ is before
    assert count_parameters(fast) == count_parameters(ref) == 2_094_169
    assert {k: v.shape for k, v in fast.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    with pytest.raises(RuntimeError), skip_init():
        raise RuntimeError("inside")
    assert init.kaiming_normal_ is before
