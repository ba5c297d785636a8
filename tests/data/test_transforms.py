"""PatchDataset sampling and MONAI augmentation: reproducibility, alignment, padding, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch.utils.data import DataLoader

from medseg.data import AugmentConfig, Case, PatchDataset, SyntheticVessels, full_image_sample
from medseg.errors import ConfigError, DataError

GEOMETRIC = AugmentConfig.none()
GEOMETRIC.rot90_prob = 0.5
GEOMETRIC.flip_prob = 0.5
GEOMETRIC.rotate_prob = 1.0
GEOMETRIC.rotate_degrees = 30.0
GEOMETRIC.elastic_prob = 1.0
GEOMETRIC.elastic_magnitude = (1.0, 2.0)


@pytest.fixture(scope="module")
def cases() -> SyntheticVessels:
    return SyntheticVessels(split="train", n_images=3, size=96, seed=1)


def _case(image: np.ndarray, mask: np.ndarray, fov: np.ndarray | None = None, cid: str = "x") -> Case:
    fov = np.ones(mask.shape, bool) if fov is None else fov
    return Case(
        id=cid,
        image=image.astype(np.float32),
        mask=mask.astype(np.uint8),
        fov=fov,
        display=np.zeros(mask.shape, np.uint8),
    )


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in ("image", "mask", "fov"))


def test_output_contract(cases):
    ds = PatchDataset(cases, 48, samples_per_epoch=10, augment=AugmentConfig(), seed=0)
    assert len(ds) == 10
    s = ds[(0, 3)]
    assert set(s) == {"image", "mask", "fov"}
    assert s["image"].shape == (1, 48, 48) and s["mask"].shape == (1, 48, 48) and s["fov"].shape == (1, 48, 48)
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in s.values())
    rect = PatchDataset(cases, (32, 40), 4, AugmentConfig(), seed=0)
    assert rect[1]["image"].shape == (1, 32, 40)
    rgb = PatchDataset(SyntheticVessels(n_images=1, size=64, channels=3), 32, 2, AugmentConfig())
    assert rgb[0]["image"].shape == (3, 32, 32)


def test_same_key_same_sample(cases):
    a = PatchDataset(cases, 48, 50, AugmentConfig(), seed=7)
    b = PatchDataset(cases, 48, 50, AugmentConfig(), seed=7)
    first = a[(2, 5)]
    for i in range(10):  # other samples in between change nothing
        a[(1, i)]
    assert _same(first, a[(2, 5)])
    assert _same(first, b[(2, 5)])
    assert not _same(first, PatchDataset(cases, 48, 50, AugmentConfig(), seed=8)[(2, 5)])


def test_same_samples_in_worker_processes(cases):
    ds = PatchDataset(cases, 32, 8, AugmentConfig(), seed=3)
    keys = [(4, i) for i in range(8)]
    loader = DataLoader(ds, batch_size=4, sampler=keys, num_workers=2)
    batches = list(loader)
    direct = torch.stack([ds[k]["image"] for k in keys])
    assert torch.equal(torch.cat([b["image"] for b in batches]), direct)


def test_int_key_is_epoch_zero(cases):
    ds = PatchDataset(cases, 40, 6, AugmentConfig(), seed=0)
    assert _same(ds[4], ds[(0, 4)])
    ds.set_epoch(3)
    assert _same(ds[4], ds[(3, 4)])
    with pytest.raises(IndexError):
        ds[6]
    with pytest.raises(IndexError):
        ds[(0, -1)]
    with pytest.raises(ValueError):
        ds[(-1, 0)]


def test_epochs_give_different_crops(cases):
    ds = PatchDataset(cases, 32, 12, AugmentConfig.none(), seed=0)
    differ = sum(not _same(ds[(0, i)], ds[(1, i)]) for i in range(12))
    assert differ >= 10
    # without augmentation a patch is an exact crop of its case (index % len(cases))
    s = ds[(5, 4)]
    img = cases[4 % len(cases)].image[0]
    patch = s["image"][0].numpy()
    hits = [
        (y, x) for y in range(96 - 31) for x in range(96 - 31) if np.array_equal(img[y : y + 32, x : x + 32], patch)
    ]
    assert len(hits) == 1


def test_masks_stay_binary_under_rotation_and_elastic(cases):
    ds = PatchDataset(cases, 48, 20, GEOMETRIC, seed=0)
    for i in range(20):
        s = ds[i]
        for k in ("mask", "fov"):
            assert set(torch.unique(s[k]).tolist()) <= {0.0, 1.0}
    # the geometric transforms really did something: patches are not plain crops any more
    plain = PatchDataset(cases, 48, 20, AugmentConfig.none(), seed=0)
    assert sum(not _same(ds[i], plain[i]) for i in range(20)) >= 18


def test_image_and_mask_move_together():
    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.normal(size=(128, 128)), 5)
    field /= field.std()
    case = _case(field[None], field > 0)
    ds = PatchDataset([case], 64, 30, GEOMETRIC, seed=0)
    agreement, far_agreement, shuffled = [], [], []
    for i in range(30):
        s = ds[i]
        inside = s["fov"][0] > 0
        img_pos = s["image"][0] > 0
        m = s["mask"][0] > 0.5
        agreement.append((img_pos == m)[inside].float().mean().item())
        # away from the zero crossing, nearest (mask) and bilinear (image) must agree exactly
        far = inside & (s["image"][0].abs() > 0.3)
        far_agreement.append((img_pos == m)[far].float().mean().item())
        shuffled.append((img_pos == torch.flip(m, dims=[1]))[inside].float().mean().item())
    assert min(agreement) > 0.95, agreement  # bilinear vs nearest differ on the boundary only
    assert min(far_agreement) > 0.999, far_agreement
    assert np.mean(shuffled) < 0.8  # the check can tell misaligned pairs apart


def test_intensity_augmentation_touches_image_only():
    rng = np.random.default_rng(1)
    case = _case(rng.normal(size=(1, 64, 64)), rng.random((64, 64)) > 0.7)
    intensity = AugmentConfig.none()
    intensity.brightness_contrast_prob = intensity.gamma_prob = intensity.noise_prob = 1.0
    aug = PatchDataset([case], 32, 5, intensity, seed=0)
    plain = PatchDataset([case], 32, 5, AugmentConfig.none(), seed=0)
    for i in range(5):
        a, p = aug[i], plain[i]
        assert torch.equal(a["mask"], p["mask"]) and torch.equal(a["fov"], p["fov"])
        assert not torch.equal(a["image"], p["image"])


def test_padding_when_patch_exceeds_image():
    rng = np.random.default_rng(2)
    case = _case(rng.normal(size=(2, 20, 30)) + 5.0, np.ones((20, 30)))
    ds = PatchDataset([case], 48, 6, AugmentConfig.none(), seed=0)
    for i in range(6):
        s = ds[i]
        assert s["image"].shape == (2, 48, 48)
        assert s["fov"].sum() == 20 * 30 and s["mask"].sum() == 20 * 30
        outside = s["fov"][0] == 0
        assert (s["image"][:, outside] == 0).all() and (s["image"][:, ~outside] > 0).all()
    # rectangular: one side padded, the other cropped
    s = PatchDataset([case], (16, 40), 1, AugmentConfig.none())[0]
    assert s["image"].shape == (2, 16, 40) and s["fov"].sum() == 16 * 30


def test_foreground_prob():
    mask = np.zeros((128, 128))
    mask[100:104, 20:24] = 1
    case = _case(np.zeros((1, 128, 128)), mask)
    fg = PatchDataset([case], 16, 40, AugmentConfig(), seed=0, foreground_prob=1.0)
    assert all(fg[i]["mask"].sum() > 0 for i in range(40))
    uniform = PatchDataset([case], 16, 40, AugmentConfig.none(), seed=0, foreground_prob=0.0)
    assert sum(uniform[i]["mask"].sum() > 0 for i in range(40)) < 20


def test_augment_config():
    cfg = AugmentConfig.from_dict({"flip_prob": 0.1, "gamma": [0.8, 1.2]})
    assert cfg.flip_prob == 0.1 and cfg.gamma == (0.8, 1.2) and cfg.rot90_prob == 0.5
    assert AugmentConfig.from_dict(None) == AugmentConfig() == AugmentConfig.from_dict({})
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    none = AugmentConfig.none()
    assert all(getattr(none, k) == 0 for k in none.to_dict() if k.endswith("_prob"))
    with pytest.raises(ConfigError, match="'flip_prb'.*'flip_prob'"):
        AugmentConfig.from_dict({"flip_prb": 0.5})
    with pytest.raises(ConfigError, match="elastic_prob"):
        AugmentConfig.from_dict({"elastic_prob": 1.5})
    with pytest.raises(ConfigError, match="gamma"):
        AugmentConfig.from_dict({"gamma": 1.0})


def test_bad_arguments(cases):
    with pytest.raises(ConfigError):
        PatchDataset(cases, 0, 10)
    with pytest.raises(ConfigError):
        PatchDataset(cases, 32, 0)
    with pytest.raises(ConfigError):
        PatchDataset(cases, 32, 10, foreground_prob=2.0)
    with pytest.raises(DataError):
        PatchDataset([], 32, 10)


def test_full_image_sample(cases):
    c = cases[0]
    s = full_image_sample(c)
    assert s["id"] == c.id
    assert s["image"].shape == (1, 96, 96) and s["mask"].shape == (1, 96, 96) and s["fov"].shape == (1, 96, 96)
    assert all(s[k].dtype == torch.float32 for k in ("image", "mask", "fov"))
    assert torch.equal(s["mask"][0], torch.from_numpy(c.mask.astype(np.float32)))
    s["image"].zero_()
    assert c.image.any()  # a copy, the case is untouched


# --------------------------------------------------------------------------- colour jitter


def test_color_jitter_identity_grey_and_hue_turn():
    from medseg.data.transforms import color_jitter

    img = torch.rand(3, 5, 6)
    assert torch.allclose(color_jitter(img, 1.0, 0.0), img, atol=1e-5)
    grey = color_jitter(img, 0.0, 0.0)
    luma = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    for ch in grey:  # no chroma left: every channel equals the luminance
        assert torch.allclose(ch, luma, atol=1e-5)
    # luminance is kept by any jitter; a full turn is the identity; two half turns too
    j = color_jitter(img, 1.3, 0.2)
    assert torch.allclose(0.299 * j[0] + 0.587 * j[1] + 0.114 * j[2], luma, atol=1e-5)
    assert torch.allclose(color_jitter(img, 1.0, 1.0), img, atol=1e-5)
    assert torch.allclose(color_jitter(color_jitter(img, 1.0, 0.25), 1.0, -0.25), img, atol=1e-5)
    with pytest.raises(ValueError, match="3, H, W"):
        color_jitter(torch.rand(1, 4, 4), 1.0, 0.0)


def test_color_jitter_in_patches_only_for_rgb():
    cases = [
        Case(
            "a",
            np.random.default_rng(0).normal(size=(3, 24, 24)).astype(np.float32),
            np.zeros((24, 24), np.uint8),
            np.ones((24, 24), bool),
            np.zeros((24, 24, 3), np.uint8),
        )
    ]
    aug = AugmentConfig.none()
    aug.color_jitter_prob = 1.0
    aug.saturation = 0.5
    plain = PatchDataset(cases, 16, 4, AugmentConfig.none(), seed=1)
    jit = PatchDataset(cases, 16, 4, aug, seed=1)
    assert not torch.allclose(plain[0]["image"], jit[0]["image"])
    assert torch.equal(jit[(0, 1)]["image"], jit[(0, 1)]["image"])  # reproducible
    with pytest.raises(ConfigError, match="hue"):
        AugmentConfig.from_dict({"hue": 0.7})
