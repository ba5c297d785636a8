"""The preprocessing pipeline: each step against a hand computation, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data.base import Case
from medseg.data.transforms.preprocess import IMAGENET_MEAN, IMAGENET_STD, Pipeline, parse_steps
from medseg.errors import ConfigError, DataError


def _case(c=3, h=6, w=8, seed=0) -> Case:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (c, h, w)).astype(np.float32)
    mask = np.zeros((h, w), np.uint8)
    mask[2:4, 3:6] = 1
    fov = np.zeros((h, w), bool)
    fov[1:5, 1:7] = True
    disp = np.moveaxis(img, 0, -1).astype(np.uint8) if c == 3 else img[0].astype(np.uint8)
    return Case("x", img, mask, fov, disp, centerline=mask.copy())


def test_channel_steps():
    c = _case()
    assert np.array_equal(Pipeline(["green"])(c).image, c.image[1:2])
    gray = Pipeline(["gray"])(c).image[0]
    assert np.allclose(gray, 0.299 * c.image[0] + 0.587 * c.image[1] + 0.114 * c.image[2], atol=1e-4)
    g = _case(c=1)
    assert np.array_equal(Pipeline(["rgb"])(g).image, np.repeat(g.image, 3, 0))
    assert Pipeline(["green"])(g).image.shape == (1, 6, 8)  # grey passes


def test_zscore_minmax_percentile_hu():
    c = _case(c=1)
    z = Pipeline(["zscore"])(c).image[0]
    inside = z[c.fov]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-4 and (z[~c.fov] == 0).all()
    zi = Pipeline([{"zscore": {"region": "image"}}])(c).image[0]
    assert abs(zi.mean()) < 1e-5 and abs(zi.std() - 1) < 1e-4
    m = Pipeline(["minmax"])(c).image[0]
    ref = (c.image[0] - c.image[0].min()) / (c.image[0].max() - c.image[0].min())
    assert np.allclose(m, ref, atol=1e-6)
    p = Pipeline([{"percentile": {"lower": 10, "upper": 90}}])(c).image[0]
    lo, hi = np.percentile(c.image[0], [10, 90])
    assert np.allclose(p, np.clip((c.image[0] - lo) / (hi - lo), 0, 1), atol=1e-5)
    ct = _case(c=1)
    ct.image = np.array([[[-1000.0, -160.0, 40.0, 240.0, 3000.0]]], np.float32)
    ct.mask = ct.fov = None  # not used by the step
    from medseg.data.transforms.preprocess import hu_window

    out = hu_window(ct, level=40, width=400).image[0, 0]
    assert np.allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])


def test_imagenet_against_hand_computation():
    c = _case()
    out = Pipeline(["imagenet"])(c).image
    for i in range(3):
        ref = (c.image[i] / 255.0 - IMAGENET_MEAN[i]) / IMAGENET_STD[i]
        assert np.allclose(out[i], ref, atol=1e-5)
    with pytest.raises(DataError, match="3-channel"):
        Pipeline(["imagenet"])(_case(c=1))


def test_resize_keeps_labels_binary_and_sizes():
    c = _case(h=20, w=30)
    c.mask[:] = 0
    c.mask[5:15, 10:20] = 1
    c.centerline = c.mask.copy()
    r = Pipeline([{"resize": {"size": [10, 15]}}])(c)
    assert r.image.shape == (3, 10, 15) and r.mask.shape == (10, 15) and r.fov.shape == (10, 15)
    assert r.display.shape == (10, 15, 3) and r.display.dtype == np.uint8
    assert set(np.unique(r.mask)) <= {0, 1} and r.mask.sum() == 25  # 10x10 block -> 5x5
    assert r.mask.dtype == np.uint8 and r.fov.dtype == bool and r.centerline.shape == (10, 15)


def test_clahe_and_denoise():
    c = _case(c=1, h=32, w=32)
    out = Pipeline([{"clahe": {"clip_limit": 0.02}}])(c).image
    assert out.shape == (1, 32, 32) and out.min() >= 0 and out.max() <= 1
    d = Pipeline([{"denoise": {"sigma": 1.5}}])(c).image
    assert d.std() < c.image.std()  # smoothing lowers the variance of white noise
    assert abs(d.mean() - c.image.mean()) < 0.05 * c.image.mean()


def test_pipeline_errors():
    with pytest.raises(ConfigError, match="did you mean 'zscore'"):
        parse_steps(["zscor"])
    with pytest.raises(ConfigError, match="no option 'sigm'"):
        parse_steps([{"denoise": {"sigm": 1}}])
    with pytest.raises(ConfigError, match="list of steps"):
        parse_steps("zscore")
    assert Pipeline([{"name": "clahe", "clip_limit": 0.02}, "zscore"]).describe() == [
        {"clahe": {"clip_limit": 0.02}},
        "zscore",
    ]
    with pytest.raises(ConfigError, match="width"):
        Pipeline([{"hu_window": {"width": 0}}])(_case(c=1))


def test_steps_do_not_modify_their_input():
    from medseg.data.transforms.preprocess import STEPS

    for name in STEPS:
        c = _case(c=3, h=12, w=12)
        before = c.image.copy()
        opts = {"size": [6, 6]} if name == "resize" else {}
        STEPS[name](c, **opts)
        assert np.array_equal(c.image, before), name
