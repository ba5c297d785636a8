"""The built-in synthetic vessel dataset: determinism, splits, geometry and realism checks."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label
from skimage.morphology import skeletonize

from medseg.data import SyntheticVessels, create_dataset, generate_vessel_case, list_datasets
from medseg.errors import ConfigError


@pytest.fixture(scope="module")
def train() -> SyntheticVessels:
    return SyntheticVessels(split="train", seed=0)


@pytest.fixture(scope="module")
def test_split() -> SyntheticVessels:
    return SyntheticVessels(split="test", seed=0)


def test_defaults_and_registry(train, test_split):
    assert len(train) == 16 and len(test_split) == 8
    assert train.name == "synthetic_vessels" and train.split == "train"
    assert train.ids[0] == "train_000" and test_split.ids[-1] == "test_007"
    assert {"drive", "synthetic_vessels"} <= set(list_datasets())
    ds = create_dataset("synthetic_vessels", split="test", n_images=2, size=64)
    assert len(ds) == 2 and ds[0].image.shape == (1, 64, 64)


def test_shapes_dtypes_values(train):
    for c in train:
        assert c.image.dtype == np.float32 and c.image.shape == (1, 128, 128)
        assert c.mask.dtype == np.uint8 and set(np.unique(c.mask)) <= {0, 1}
        assert c.fov.dtype == np.bool_ and c.fov.shape == (128, 128)
        assert c.display.dtype == np.uint8 and c.display.shape == (128, 128)
        assert c.path is None
        inside = c.image[0][c.fov]
        assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-4
        assert not c.image[0][~c.fov].any()  # 0 outside the FOV
        assert not c.mask[~c.fov].any()
        # raw image: dark outside the FOV (~0.02 * 255)
        assert c.display[~c.fov].mean() < 12 and c.display[c.fov].mean() > 60


def test_rgb_and_rectangular():
    c = generate_vessel_case(seed=3, split="train", index=1, size=(96, 128), channels=3)
    assert c.image.shape == (3, 96, 128) and c.display.shape == (96, 128, 3)
    assert c.mask.shape == c.fov.shape == (96, 128)
    # vessels darkest (most contrast) in green, like a fundus photograph
    m, f = c.mask.astype(bool), c.fov & ~c.mask.astype(bool)
    contrast = [
        (c.display[..., k][f].mean() - c.display[..., k][m].mean()) / c.display[..., k][f].mean() for k in range(3)
    ]
    assert contrast[1] > contrast[0]


def test_deterministic_per_seed():
    a = SyntheticVessels(split="train", n_images=3, seed=5)
    b = SyntheticVessels(split="train", n_images=3, seed=5)
    c = SyntheticVessels(split="train", n_images=3, seed=6)
    for x, y, z in zip(a, b, c):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask)
        assert np.array_equal(x.display, y.display) and np.array_equal(x.fov, y.fov)
        assert not np.array_equal(x.mask, z.mask)
    # image i does not depend on how many images are generated
    assert np.array_equal(SyntheticVessels(split="train", n_images=1, seed=5)[0].image, a[0].image)


def test_train_and_test_differ(train, test_split):
    for t in test_split:
        for s in train:
            assert not np.array_equal(t.mask, s.mask)
    assert not np.array_equal(train[0].display, test_split[0].display)


def test_vessel_fraction_in_range(train, test_split):
    fractions = [c.mask[c.fov].mean() for c in list(train) + list(test_split)]
    assert min(fractions) >= 0.08 and max(fractions) <= 0.15, fractions


def test_fov_is_a_centred_disc(train):
    for c in train:
        h, w = c.fov.shape
        yy, xx = np.mgrid[0:h, 0:w]
        cy, cx = yy[c.fov].mean(), xx[c.fov].mean()
        assert abs(cy - (h - 1) / 2) < 0.5 and abs(cx - (w - 1) / 2) < 0.5
        r = np.sqrt(c.fov.sum() / np.pi)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        iou = (disc & c.fov).sum() / (disc | c.fov).sum()
        assert iou > 0.98 and 0.4 * min(h, w) < r < 0.5 * min(h, w)


def test_several_vessel_trees(train):
    counts = []
    for c in train:
        lab = label(c.mask, connectivity=2)
        sizes = np.bincount(lab.ravel())[1:]
        counts.append(int((sizes >= 15).sum()))
        assert sizes.max() > 0.3 * c.mask.sum()  # one big tree from the optic disc
    assert min(counts) >= 2 and np.mean(counts) >= 2.5, counts


def test_widths_vary(train):
    for c in train:
        m = c.mask.astype(bool)
        radius = ndimage.distance_transform_edt(m)[skeletonize(m)]
        assert np.percentile(radius, 10) <= 1.0  # 1-2 px wide capillaries
        assert radius.max() >= 2.0  # 3-4 px wide main vessels


def test_contrast_varies(train):
    ratios = []
    for c in train:
        img = c.display.astype(np.float64)
        inner = ndimage.binary_erosion(c.fov, iterations=4) & c.mask.astype(bool)
        background = ndimage.grey_closing(img, size=7)  # removes thin dark vessels
        contrast = (background - img)[inner] / np.maximum(background[inner], 1.0)
        p10, p90 = np.percentile(contrast, [10, 90])
        ratios.append(p90 / max(p10, 1e-3))
    assert min(ratios) > 2.0, ratios


def test_not_trivially_thresholdable(train):
    """The best global threshold is far from a perfect segmentation (but there is signal)."""
    for c in train:
        v, g = c.image[0][c.fov], c.mask[c.fov].astype(bool)
        best = 0.0
        for t in np.quantile(v, np.linspace(0.01, 0.4, 40)):
            p = v < t
            best = max(best, 2 * (p & g).sum() / (p.sum() + g.sum()))
        assert 0.15 < best < 0.75, (c.id, best)


def test_generation_time():
    start = time.process_time()
    SyntheticVessels(split="train", n_images=16, seed=11)
    SyntheticVessels(split="test", n_images=8, seed=11)
    assert time.process_time() - start < 2.0


@pytest.mark.parametrize(
    "kwargs", [{"channels": 2}, {"size": 8}, {"size": (64, 64, 3)}, {"n_images": 0}, {"split": "val"}, {"seed": -1}]
)
def test_bad_options(kwargs):
    with pytest.raises(ConfigError):
        SyntheticVessels(**{"n_images": 1, **kwargs})


def test_unknown_option_is_config_error():
    with pytest.raises(ConfigError, match="n_imgs"):
        create_dataset("synthetic_vessels", n_imgs=3)
