"""Conformance of the networks that ship with the model contract (tests/models/conformance.py):
U-Net and DSCNet. Networks added later subclass ModelConformance in their own test files."""

from __future__ import annotations

from conformance import ModelConformance


class TestConformanceUNet(ModelConformance):
    name = "unet"
    kwargs = {"base_channels": 8, "depth": 3}
    in_channels = 1
    # odd and non-square sizes: the decoder pads back before each concatenation
    sizes = [(64, 64), (48, 80), (37, 53)]
    bad_sizes = []  # any size works
    # unet.py docstring: the paper's network (1 in, 2 out, base 64, depth 4, transposed conv)
    # has 31,030,658 parameters without norm, 31,036,546 with the default BatchNorm.
    expected_params = {
        "paper config, BatchNorm": 31_036_546,
        "paper config, no norm": 31_030_658,
        "default (1 out channel)": 31_036_481,
    }
    param_kwargs = {  # in_channels defaults to 1, as in the paper
        "paper config, BatchNorm": {"out_channels": 2, "base_channels": 64, "depth": 4},
        "paper config, no norm": {"out_channels": 2, "base_channels": 64, "depth": 4, "norm": None},
        "default (1 out channel)": {},
    }
    export = "torchscript"


class TestConformanceDSCNet(ModelConformance):
    name = "dscnet"
    kwargs = {"n_basic_layer": 4}  # smallest width; kernel_size stays the paper's 9
    in_channels = 1
    sizes = [(64, 64), (48, 80)]
    bad_sizes = [(70, 64), (64, 36)]
    # dscnet.py: 2,094,169 registered with the defaults (484,832 of them in the unused
    # opposite-axis convs of every DSConv, kept for state-dict parity with the authors' code).
    expected_params = {"default": 2_094_169, "pro (GroupNorm offsets)": 2_094_169}
    param_kwargs = {"default": {}, "pro (GroupNorm offsets)": {"offset_norm": "group"}}
    allowed_unused = ("conv*x.dsc_conv_y.*", "conv*y.dsc_conv_x.*")
    export = "torchscript"
