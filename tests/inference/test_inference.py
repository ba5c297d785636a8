"""The pure inference layer: whole image vs sliding window, TTA, ensembles, method choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from medseg.errors import ConfigError
from medseg.inference import (
    TTA_TRANSFORMS,
    Predictor,
    inference_method,
    parse_tta,
    predict_probabilities,
    whole_image_probabilities,
)
from medseg.models import create_model


class Pointwise(nn.Module):
    """A 1x1 convolution: no spatial context, so every inference method must agree exactly."""

    size_divisor = 8

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-1] % self.size_divisor == 0 and x.shape[-2] % self.size_divisor == 0
        return self.conv(x)


class LeftBiased(nn.Module):
    """Logit = the pixel's value minus its left neighbour's: not flip-equivariant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] - torch.roll(x[:, :1], 1, dims=-1)


def test_every_tta_transform_is_undone_by_its_inverse():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    for name, (forward, inverse) in TTA_TRANSFORMS.items():
        assert torch.equal(inverse(forward(x)), x), name
    # the eight transforms are the eight distinct symmetries of a square
    sq = torch.arange(9.0).reshape(1, 1, 3, 3)
    images = {tuple(f(sq).flatten().tolist()) for f, _ in TTA_TRANSFORMS.values()}
    assert len(images) == 8


def test_parse_tta_sets_names_and_errors():
    assert parse_tta(None) == ("identity",)
    assert parse_tta("flips") == ("identity", "hflip", "vflip")
    assert parse_tta(True) == ("identity", "hflip", "vflip", "rot90", "rot180", "rot270")
    assert parse_tta("hflip,rot90,hflip") == ("identity", "hflip", "rot90")
    assert len(parse_tta("d4")) == 8
    with pytest.raises(ConfigError, match="unknown test-time augmentation 'hflp'"):
        parse_tta("hflp")


def test_whole_image_equals_sliding_window_without_spatial_context():
    model = Pointwise().eval()
    x = torch.randn(2, 2, 37, 50)
    whole = whole_image_probabilities(model, x)
    slid = predict_probabilities(model, x, roi_size=16, overlap=0.5)
    assert whole.shape == (2, 1, 37, 50)
    assert torch.allclose(whole, slid, atol=1e-6)
    assert torch.allclose(whole, torch.sigmoid(model.conv(x)), atol=1e-6)


def test_tta_averages_probabilities_after_undoing_each_transform():
    model = LeftBiased()
    x = torch.randn(1, 1, 32, 40)  # >= MIN_FORWARD_SIDE: no padding, so roll() wraps as in `expected`
    pred = Predictor(model, method="whole", tta="hflip")
    expected = (torch.sigmoid(model(x)) + torch.sigmoid(model(x.flip(-1))).flip(-1)) / 2
    assert torch.allclose(pred(x), expected, atol=1e-6)
    # an equivariant network is unchanged by TTA
    pw = Pointwise()
    y = torch.randn(1, 2, 16, 24)
    assert torch.allclose(Predictor(pw, method="whole", tta="d4")(y), Predictor(pw, method="whole")(y), atol=1e-6)
    assert Predictor(model, tta="flips").describe()["tta"] == ["identity", "hflip", "vflip"]


def test_ensemble_averages_members_probabilities():
    a, b = Pointwise(0), Pointwise(1)
    x = torch.randn(3, 2, 8, 8)
    got = Predictor([a, b], method="whole")(x)
    want = (torch.sigmoid(a.conv(x)) + torch.sigmoid(b.conv(x))) / 2
    assert torch.allclose(got, want, atol=1e-6)
    assert Predictor([a, b]).describe()["ensemble"] == 2


def test_predict_many_batches_images_of_one_size_and_keeps_order():
    model = Pointwise()
    images = [
        np.random.default_rng(i).normal(size=(2, h, 16)).astype(np.float32) for i, h in enumerate((8, 8, 8, 16, 8))
    ]
    pred = Predictor(model, method="whole", batch_size=2)
    out = list(pred.predict_many(images))
    assert [o.shape for o in out] == [(1, img.shape[1], 16) for img in images]
    for img, o in zip(images, out):
        assert np.allclose(o, torch.sigmoid(model.conv(torch.from_numpy(img)[None]))[0].detach().numpy(), atol=1e-6)


def test_auto_method_keeps_windows_for_extent_dependent_normalisation():
    assert (
        inference_method(create_model("dscnet", in_channels=1, out_channels=1, n_basic_layer=4)) == "sliding"
    )  # GroupNorm
    assert inference_method(create_model("unet", base_channels=4, depth=2)) == "whole"  # BatchNorm
    assert inference_method(Pointwise(), "sliding") == "sliding"
    with pytest.raises(ConfigError, match="inference method"):
        inference_method(Pointwise(), "tiles")


def test_unknown_device_and_missing_gpu_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown device"):
        Predictor(Pointwise(), device="tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            Predictor(Pointwise(), device="cuda")


def test_automatic_batch_size_stacks_small_images_only_and_changes_nothing():
    pred = Predictor(Pointwise(), method="whole", batch_size=0)
    assert pred.batch_for((1, 584, 565)) == 1  # a DRIVE image: one per pass
    assert pred.batch_for((3, 35, 50)) == 64  # hippocampus slices: 64 per pass
    assert pred.batch_for((3, 192, 192)) == 7
    images = [np.random.default_rng(i).normal(size=(2, 16, 16)).astype(np.float32) for i in range(5)]
    auto = list(pred.predict_many(images))
    one = list(Predictor(Pointwise(), method="whole", batch_size=1).predict_many(images))
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(auto, one))
    with pytest.raises(ConfigError, match="batch size"):
        Predictor(Pointwise(), batch_size=-1)


def test_images_below_the_minimum_side_are_padded_for_the_forward_pass_and_cropped_back():
    """A 1x1 and a 5x40 image go through a network that cannot take fewer than 32 px (a stand-in
    for a U-Net of depth 5): padded to 32 with zeros, cropped back to their own size."""
    from medseg.inference import MIN_FORWARD_SIDE

    class NeedsSide(nn.Module):
        def forward(self, x):
            assert min(x.shape[-2:]) >= MIN_FORWARD_SIDE, x.shape
            return x[:, :1] * 2.0

    for shape in ((1, 1, 1, 1), (1, 1, 5, 40)):
        x = torch.randn(shape)
        out = Predictor(NeedsSide(), method="whole")(x)
        assert out.shape == shape and torch.allclose(out, torch.sigmoid(2 * x), atol=1e-6)
