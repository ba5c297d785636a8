"""The 3-D training path's data side: volume cases (``spatial_dims: 3``), 3-D patches
(foreground-biased, reproducible, MONAI-augmented), and the volume case's contract."""

from __future__ import annotations

import numpy as np
import pytest
from test_volume_train import _write_msd

from medseg.data import create_dataset
from medseg.data.base import Case
from medseg.data.transforms.augment import AugmentConfig
from medseg.data.transforms.patches3d import VolumePatchDataset, crop_padded
from medseg.errors import ConfigError, DataError


def _volume_case(shape=(10, 12, 14), blob=((6, 8), (3, 6), (9, 12)), cid="v") -> Case:
    mask = np.zeros(shape, np.uint8)
    mask[tuple(slice(a, b) for a, b in blob)] = 1
    image = (np.arange(np.prod(shape), dtype=np.float32).reshape(shape) / np.float32(np.prod(shape)))[None]
    return Case(
        id=cid,
        image=image,
        mask=mask,
        fov=np.ones(shape, bool),
        display=np.zeros(shape, np.uint8),
        meta={"volume": f"/nowhere/{cid}.nii.gz", "axis": None, "slice": None, "spacing": (1.0, 1.0, 1.0)},
    )


def test_crop_padded_by_hand():
    arr = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    out = crop_padded(arr, (-1, 1, 2), (3, 3, 3))
    assert out.shape == (1, 3, 3, 3)
    # depth -1 is outside (zeros); depth 0 and 1 hold rows 1..2 (row 3 outside), cols 2..3 (col 4 outside)
    assert not out[0, 0].any()
    np.testing.assert_array_equal(out[0, 1, :2, :2], arr[0, 0, 1:3, 2:4])
    np.testing.assert_array_equal(out[0, 2, :2, :2], arr[0, 1, 1:3, 2:4])
    assert not out[0, 1:, 2].any() and not out[0, 1:, :, 2].any()
    assert not crop_padded(arr, (5, 0, 0), (2, 2, 2)).any()  # entirely outside


def test_volume_case_contract():
    case = _volume_case()
    case.validate()
    assert case.shape == (10, 12, 14) and case.spatial_dims == 3
    bad = _volume_case()
    bad.image = bad.image[0]  # (D, H, W) without the channel axis
    with pytest.raises(DataError, match="image has shape"):
        bad.validate()


def test_patches_reproducible_and_shaped():
    cases = [_volume_case(cid="a"), _volume_case(cid="b", blob=((1, 3), (1, 3), (1, 3)))]
    aug = AugmentConfig(
        flip_prob=0.5, rot90_prob=0.5, rotate_prob=0.5, rotate_degrees=10.0, elastic_prob=0.0, noise_prob=0.5
    )
    ds = VolumePatchDataset(cases, 8, samples_per_epoch=6, augment=aug, seed=3, foreground_prob=0.5)
    a, b = ds[(2, 4)], ds[(2, 4)]
    assert a["image"].shape == (1, 8, 8, 8) and a["mask"].shape == (1, 8, 8, 8) and a["fov"].shape == (1, 8, 8, 8)
    for k in a:
        assert np.array_equal(a[k].numpy(), b[k].numpy())  # same key, same sample (any process)
    assert not np.array_equal(ds[(2, 4)]["image"].numpy(), ds[(3, 4)]["image"].numpy())
    # nearest-neighbour resampling keeps the label map a label map through rotations
    for i in range(6):
        assert set(np.unique(ds[(0, i)]["mask"].numpy())) <= {0.0, 1.0}
    assert VolumePatchDataset(cases, (4, 6, 8), 2).__getitem__(0)["image"].shape == (1, 4, 6, 8)


def test_foreground_bias_centres_patches_on_foreground():
    # a single foreground voxel in a 30^3 volume: uniform 6^3 crops almost never hold it
    case = _volume_case(shape=(30, 30, 30), blob=((20, 21), (4, 5), (25, 26)))
    none = AugmentConfig.none()
    biased = VolumePatchDataset([case], 6, 20, augment=none, seed=0, foreground_prob=1.0)
    assert all(biased[i]["mask"].sum() == 1 for i in range(20))
    uniform = VolumePatchDataset([case], 6, 20, augment=none, seed=0, foreground_prob=0.0)
    assert sum(float(uniform[i]["mask"].sum()) for i in range(20)) < 5
    # the crop holds the image's own voxels at the centred place: voxel (20, 4, 25) sits at (3, 3, 3)
    # except where the box is clamped into the volume (row 4 - 3 = 1 >= 0, so no clamping here)
    s = biased[0]
    assert s["mask"][0, 3, 3, 3] == 1
    assert np.isclose(float(s["image"][0, 3, 3, 3]), case.image[0, 20, 4, 25])


def test_small_volume_is_zero_padded():
    case = _volume_case(shape=(4, 5, 6), blob=((1, 2), (1, 2), (1, 2)))
    s = VolumePatchDataset([case], 8, 1, augment=AugmentConfig.none())[0]
    assert s["fov"].sum() == 4 * 5 * 6  # the volume's voxels; padding has fov 0


def test_refusals():
    case = _volume_case()
    with pytest.raises(ConfigError, match="elastic_prob"):
        VolumePatchDataset([case], 8, 1, augment=AugmentConfig(elastic_prob=0.2))
    with pytest.raises(ConfigError, match=r"\(D, H, W\)"):
        VolumePatchDataset([case], (8, 8), 1)
    flat = Case(
        id="img",
        image=np.zeros((1, 8, 8), np.float32),
        mask=np.zeros((8, 8), np.uint8),
        fov=np.ones((8, 8), bool),
        display=np.zeros((8, 8), np.uint8),
    )
    with pytest.raises(DataError, match="volume cases"):
        VolumePatchDataset([flat], 8, 1)


def test_msd_whole_volumes(tmp_path):
    root = _write_msd(tmp_path / "msd", n=5, shape=(12, 10, 6))
    ds = create_dataset("msd", root=root, split="train", spatial_dims=3, classes="binary", test_fraction=0.2)
    slices = create_dataset("msd", root=root, split="train", classes="binary", test_fraction=0.2)
    assert len(ds) == 4 and len(slices) == 4 * 6  # one case per volume; one per slice along axis 2
    case = ds[0]
    assert case.image.shape == (1, 12, 10, 6) and case.mask.shape == (12, 10, 6) and case.id == "vol_000"
    # the same normalised intensities as the slice cases, in the volume's own array order
    first = [c for c in slices if c.id.startswith("vol_000:")]
    np.testing.assert_array_equal(case.image[0], np.stack([c.image[0] for c in first], axis=2))
    np.testing.assert_array_equal(case.mask, np.stack([c.mask for c in first], axis=2))
    with pytest.raises(ConfigError, match="context must be 0"):
        create_dataset("msd", root=root, split="train", spatial_dims=3, context=1)
    with pytest.raises(ConfigError, match="spatial_dims must be 2"):
        create_dataset("msd", root=root, split="train", spatial_dims=4)
