"""Kvasir-SEG and CVC-ClinicDB loaders: the real copies in ../shared/data (skipped when absent;
inventories without decoding, a few decoded files, one loaded split) and small synthetic folders
in the same layouts for bad input (no real file is copied anywhere)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import medseg.data.datasets.polyp as polyp_module
from medseg.data import create_dataset
from medseg.data.base import data_root
from medseg.data.datasets.polyp import (
    CLINICDB_FRAMES,
    CvcClinicDbDataset,
    KvasirSegDataset,
    clinicdb_sequence,
    threshold_polyp_mask,
)
from medseg.data.io import read_image, read_label
from medseg.data.records import natural_key, shipped_split
from medseg.data.transforms.preprocess import IMAGENET_MEAN, IMAGENET_STD, Pipeline
from medseg.errors import ConfigError, DataError

SPLIT_JSON = Path(polyp_module.__file__).with_name("splits") / "kvasir_seg.json"


def _real(name: str) -> Path:
    root = data_root()
    if root is None or not (root / name / "images").is_dir():
        pytest.skip(f"{name} not in $MEDSEG_DATA or ../shared/data (obtain it from its official site)")
    return root / name


@pytest.fixture(scope="module")
def kvasir_root() -> Path:
    return _real("Kvasir-SEG")


@pytest.fixture(scope="module")
def clinic_root() -> Path:
    return _real("CVC-ClinicDB")


# --------------------------------------------------------------------------- shipped split (no data needed)


def test_shipped_kvasir_split_file():
    spec = shipped_split("kvasir_seg")
    assert list(spec) == ["train", "test"]
    assert len(spec["train"]) == 880 and len(spec["test"]) == 120
    assert not set(spec["train"]) & set(spec["test"])
    raw = json.loads(SPLIT_JSON.read_text())
    assert set(raw) == {"train", "test"}  # provenance lives in the docstring, not in the file
    # the documented recipe regenerates it: natural order, default_rng(2026) permutation, 880 | 120
    ids = sorted(spec["train"] + spec["test"], key=natural_key)
    perm = np.random.default_rng(2026).permutation(len(ids))
    assert spec["train"] == sorted((ids[i] for i in perm[:880]), key=natural_key)
    assert spec["test"] == sorted((ids[i] for i in perm[880:]), key=natural_key)


def test_published_kvasir_split_is_the_authors_lists_and_the_default():
    """The authors' train.txt / val.txt (DebeshJha/2020-MediaEval-Medico-polyp-segmentation,
    kvasir-seg-train-val/): 880 / 120, disjoint; val.txt's first ids are in "test"."""
    from medseg.data.datasets.polyp import KvasirSegDataset

    pub = shipped_split("kvasir_seg_published")
    assert len(pub["train"]) == 880 and len(pub["test"]) == 120 and not set(pub["train"]) & set(pub["test"])
    assert {"cju0s690hkp960855tjuaqvv0", "cju0sr5ghl0nd08789uzf1raf"} <= set(pub["test"])
    ours = shipped_split("kvasir_seg")
    assert set(pub["train"]) | set(pub["test"]) == set(ours["train"]) | set(ours["test"])
    assert len(set(pub["test"]) & set(ours["test"])) == 15
    assert KvasirSegDataset.option_defaults["split_list"] == "published"
    with pytest.raises(ConfigError, match="split_list must be one of published, medseg, got 'pranet'"):
        KvasirSegDataset._split_list({"split_list": "pranet"})


def test_kvasir_split_list_selects_the_lists(kvasir_root):
    from medseg.data.datasets.polyp import KvasirSegDataset

    for which, name in (("published", "kvasir_seg_published"), ("medseg", "kvasir_seg")):
        inv = KvasirSegDataset.inventory(kvasir_root, split_list=which)
        assert sorted(r.id for r in inv.records if r.split == "test") == sorted(shipped_split(name)["test"])
        assert name in inv.split_source


# --------------------------------------------------------------------------- real Kvasir-SEG


def test_kvasir_inventory(kvasir_root):
    inv = KvasirSegDataset.inventory(kvasir_root)
    assert inv.problems == []
    assert len(inv.records) == 1000
    assert [len(inv.split(s)) for s in ("train", "test")] == [880, 120]
    stems = {p.stem for p in (kvasir_root / "images").iterdir() if p.suffix == ".jpg"}
    spec = shipped_split("kvasir_seg_published")  # the default split_list
    assert set(spec["train"]) | set(spec["test"]) == stems == {r.id for r in inv.records}
    train, test = {r.id for r in inv.split("train")}, {r.id for r in inv.split("test")}
    assert not train & test
    assert [r.id for r in inv.split("test")] == spec["test"]
    assert all(r.mask == kvasir_root / "masks" / f"{r.id}.jpg" and r.patient is None for r in inv.records)
    again = KvasirSegDataset.inventory(kvasir_root)
    assert [(r.id, r.split) for r in again.records] == [(r.id, r.split) for r in inv.records]


def test_kvasir_decode_few(kvasir_root):
    inv = KvasirSegDataset.inventory(kvasir_root)
    for r in inv.records[::250]:
        (case,) = KvasirSegDataset.read(r, {"size": 352})
        h, w = case.shape
        assert case.image.shape == (3, h, w) and case.image.dtype == np.float32
        assert 0 <= case.image.min() and case.image.max() <= 255
        assert case.display.shape == (h, w, 3) and case.meta["original_size"] == (h, w)
        assert set(np.unique(case.mask)) <= {0, 1}
        assert 0.005 <= case.mask.mean() <= 0.81
        grey = read_label(r.mask)
        assert np.array_equal(case.mask, (grey > 127).astype(np.uint8))


@pytest.fixture(scope="module")
def kvasir_test(kvasir_root):
    return create_dataset("kvasir_seg", kvasir_root, split="test")


def test_kvasir_test_split_loads(kvasir_test):
    assert len(kvasir_test) == 120
    assert kvasir_test.ids == shipped_split("kvasir_seg_published")["test"]
    assert kvasir_test.in_channels == 3 and kvasir_test.num_classes == 2
    for c in kvasir_test:
        assert c.image.shape == (3, 352, 352) and c.image.dtype == np.float32
        assert c.mask.shape == (352, 352) and c.mask.dtype == np.uint8 and c.mask.max() == 1
        assert c.display.shape == (352, 352, 3) and c.display.dtype == np.uint8
    # ImageNet-normalised: roughly zero-centred over the split, far outside the 0..255 range
    means = np.mean([c.image.mean(axis=(1, 2)) for c in kvasir_test], axis=0)
    assert np.all(np.abs(means) < 1.5) and min(c.image.min() for c in kvasir_test) < -1.5


def test_kvasir_imagenet_by_hand(kvasir_test, kvasir_root):
    case = kvasir_test[0]
    record = next(r for r in KvasirSegDataset.inventory(kvasir_root).records if r.id == case.id)
    (raw,) = KvasirSegDataset.read(record, {"size": 352})
    resized = Pipeline(["rgb", {"resize": {"size": [352, 352]}}])(raw).image
    mean = np.array(IMAGENET_MEAN, np.float64)[:, None, None]
    std = np.array(IMAGENET_STD, np.float64)[:, None, None]
    expected = (resized.astype(np.float64) / 255.0 - mean) / std
    np.testing.assert_allclose(case.image, expected, atol=1e-5)
    assert mean[0, 0, 0] == 0.485 and std[2, 0, 0] == 0.225


# --------------------------------------------------------------------------- real CVC-ClinicDB


def test_clinicdb_inventory(clinic_root):
    inv = CvcClinicDbDataset.inventory(clinic_root)
    assert inv.problems == []
    assert sorted((r.id for r in inv.records), key=int) == [str(i) for i in range(1, 51)]
    for r in inv.records:
        assert r.patient == ("seq01" if int(r.id) <= 25 else "seq02")
    by_split = {s: {r.patient for r in inv.split(s)} for s in inv.splits}
    assert sorted(inv.splits) == ["test", "train"]
    assert all(len(v) == 1 for v in by_split.values()) and by_split["train"] != by_split["test"]
    assert [len(inv.split(s)) for s in inv.splits] == [25, 25]


def test_clinicdb_decode(clinic_root):
    inv = CvcClinicDbDataset.inventory(clinic_root)
    by_id = {r.id: r for r in inv.records}
    raw = read_image(by_id["1"].image)  # Pillow refuses this TIFF; tifffile gives RGB
    assert raw.shape == (288, 384, 3) and raw.dtype == np.uint8
    assert not np.array_equal(raw[..., 0], raw[..., 1]) and not np.array_equal(raw[..., 1], raw[..., 2])
    assert abs(float(raw[..., 0].mean()) - float(raw[..., 2].mean())) > 10  # colour, not grey copied 3x
    for fid in ("1", "10", "26", "50"):
        (case,) = CvcClinicDbDataset.read(by_id[fid], CvcClinicDbDataset.parse_options({}))
        assert case.shape == (288, 384) and case.image.shape == (3, 288, 384)
        assert set(np.unique(case.mask)) == {0, 1}
        assert 0.013 <= case.mask.mean() <= 0.485
        assert case.patient == ("seq01" if int(fid) <= 25 else "seq02")
    # frame 1 holds stray grey values (e.g. 11) besides 0/255: they are background
    grey = read_label(by_id["1"].mask)
    stray = (grey > 0) & (grey < 255)
    assert stray.any()
    (case,) = CvcClinicDbDataset.read(by_id["1"], CvcClinicDbDataset.parse_options({}))
    assert np.array_equal(case.mask, (grey > 127).astype(np.uint8))
    assert case.mask[stray & (grey < 128)].max(initial=0) == 0


def test_clinicdb_loads(clinic_root):
    ds = create_dataset("cvc_clinicdb", clinic_root, split="test")
    assert len(ds) == 25 and len(set(ds.groups)) == 1
    c = ds[0]
    assert c.image.shape == (3, 352, 352) and c.mask.shape == (352, 352) and c.display.shape == (352, 352, 3)
    assert c.meta["original_size"] == (288, 384)


# --------------------------------------------------------------------------- synthetic: rules


def test_clinicdb_sequence_table():
    seqs = [clinicdb_sequence(f) for f in range(1, CLINICDB_FRAMES + 1)]
    assert seqs[0] == seqs[24] == 1 and seqs[25] == seqs[49] == 2
    assert clinicdb_sequence(51) == 3 and clinicdb_sequence(200) == clinicdb_sequence(205) == 10
    assert clinicdb_sequence(612) == 29 and clinicdb_sequence(613) is None and clinicdb_sequence(0) is None
    assert seqs == sorted(seqs) and set(seqs) == set(range(1, 30))
    assert sum(1 for s in seqs if s == 10) == 6 and sum(1 for s in seqs if s == 29) == 21


def test_threshold_polyp_mask():
    v = np.zeros((10, 10), np.uint8)
    v[:5] = 250
    v[5:, :3] = 9  # JPEG-like noise on both sides
    v[:2, :2] = 242
    out = threshold_polyp_mask(v, "m.jpg")
    assert out.dtype == np.uint8 and out.sum() == 50 and out[5:].max() == 0
    assert np.array_equal(threshold_polyp_mask((v > 127).astype(np.uint8)), out)  # 0/1 masks
    soft = np.tile(np.linspace(0, 255, 10).astype(np.uint8), (10, 1))
    with pytest.raises(DataError, match=r"soft\.png.*not a binary mask"):
        threshold_polyp_mask(soft, "soft.png")
    with pytest.raises(DataError, match="uint16"):
        threshold_polyp_mask(v.astype(np.uint16) * 257, "m16.png")


# --------------------------------------------------------------------------- synthetic folders


def _rgb(rng, h=24, w=32) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mask(rng, h=24, w=32) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[4 : 4 + int(rng.integers(4, 12)), 6:20] = 255
    return m


def _kvasir_like(tmp: Path, ids, rng) -> Path:
    root = tmp / "Kvasir-SEG"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in ids:
        Image.fromarray(_rgb(rng)).save(root / "images" / f"{i}.jpg", quality=95)
        m = _mask(rng)
        Image.fromarray(np.stack([m] * 3, -1)).save(root / "masks" / f"{i}.jpg", quality=75)  # JPEG noise
    return root


def test_kvasir_synthetic_with_split_file(tmp_path):
    rng = np.random.default_rng(0)
    root = _kvasir_like(tmp_path, ["a1", "a2", "b1"], rng)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["a1", "a2"], "test": ["b1"]}))
    ds = KvasirSegDataset(root, "train", split_file=split, size=[32, 48])
    assert ds.ids == ["a1", "a2"] and ds[0].image.shape == (3, 32, 48) and ds[0].display.shape == (32, 48, 3)
    assert set(np.unique(ds[0].mask)) == {0, 1}
    # without the split file: the shipped list does not know these ids -> one clear error
    with pytest.raises(DataError, match="none of the 3 images is in the shipped Kvasir-SEG split"):
        KvasirSegDataset(root, "train")


def test_kvasir_synthetic_partial_release(tmp_path):
    rng = np.random.default_rng(1)
    test_ids = shipped_split("kvasir_seg_published")["test"]
    root = _kvasir_like(tmp_path, test_ids[:2] + ["extra"], rng)
    inv = KvasirSegDataset.inventory(root)
    assert [r.id for r in inv.records] == test_ids[:2]
    missing = [p for p in inv.errors() if "is missing" in p.message]
    assert len(missing) == 998 and all(p.split in ("train", "test") for p in missing)
    warn = [p for p in inv.problems if p.severity == "warning"]
    assert len(warn) == 1 and "extra" in str(warn[0].path)
    with pytest.raises(DataError, match="has 118 problems"):
        KvasirSegDataset(root, "test")


def test_kvasir_synthetic_bad_files(tmp_path):
    rng = np.random.default_rng(2)
    root = _kvasir_like(tmp_path, ["a", "b", "c", "d"], rng)
    split = tmp_path / "s.json"
    split.write_text(json.dumps({"train": ["a", "b", "c", "d"]}))
    Image.fromarray(_mask(rng, 20, 32)).save(root / "masks" / "b.jpg")  # size mismatch
    Image.fromarray(_rgb(rng)[..., 0]).save(root / "images" / "c.jpg")  # grey frame
    (root / "masks" / "d.jpg").write_bytes(b"not a jpeg")
    inv = KvasirSegDataset.inventory(root, split_file=split)
    recs = {r.id: r for r in inv.records}
    opts = KvasirSegDataset.parse_options({})
    assert KvasirSegDataset.read(recs["a"], opts)[0].mask.max() == 1
    with pytest.raises(DataError, match=r"b\.jpg is 32x20 but image .*b\.jpg is 32x24"):
        KvasirSegDataset.read(recs["b"], opts)
    with pytest.raises(DataError, match=r"c\.jpg is grey"):
        KvasirSegDataset.read(recs["c"], opts)
    with pytest.raises(DataError, match=r"d\.jpg"):
        KvasirSegDataset.read(recs["d"], opts)
    (root / "masks" / "a.jpg").unlink()
    (root / "masks" / "zz.jpg").write_bytes((root / "masks" / "b.jpg").read_bytes())
    with pytest.raises(DataError) as err:
        KvasirSegDataset(root, "train", split_file=split)
    assert "a.jpg: image has no mask" in str(err.value) and "zz.jpg: mask has no image" in str(err.value)
    with pytest.raises(ConfigError, match="size"):
        KvasirSegDataset(root, "train", split_file=split, size=[0, 3])


def _clinic_like(tmp: Path, frames, rng, dirs=("images", "masks")) -> Path:
    root = tmp / "CVC-ClinicDB"
    (root / dirs[0]).mkdir(parents=True)
    (root / dirs[1]).mkdir()
    for f in frames:
        # RGB written with Photometric MinIsBlack, the header quirk of the release (Pillow refuses it)
        tifffile.imwrite(root / dirs[0] / f"{f}.tif", _rgb(rng), photometric="minisblack", planarconfig="contig")
        m = _mask(rng)
        m[0, :4] = 11  # stray grey values as in the release
        tifffile.imwrite(root / dirs[1] / f"{f}.tif", m)
    return root


def test_clinicdb_synthetic_split_by_sequence(tmp_path):
    rng = np.random.default_rng(3)
    frames = [1, 2, 3, 26, 27, 51, 68, 79, 104, 127, 600]
    root = _clinic_like(tmp_path, frames, rng)
    for seed in range(6):
        inv = CvcClinicDbDataset.inventory(root, seed=seed)
        assert inv.errors() == []
        where: dict[str, set] = {}
        for r in inv.records:
            where.setdefault(r.patient, set()).add(r.split)
        assert all(len(s) == 1 for s in where.values())
        assert len(where) == 8 and sum(1 for s in where.values() if s == {"test"}) == 2  # round(0.2 * 8)
    inv = CvcClinicDbDataset.inventory(root, test_fraction=0.3, val_fraction=0.2, seed=1)
    assert sorted(inv.splits) == ["test", "train", "val"]
    assert [r.patient for r in inv.records if r.id in ("1", "2", "3")] == ["seq01"] * 3
    assert {r.id: r.patient for r in inv.records}["600"] == "seq29"
    ds = CvcClinicDbDataset(root, "train", size=64)
    assert ds[0].image.shape == (3, 64, 64) and set(np.unique(ds[0].mask)) == {0, 1}
    raw = CvcClinicDbDataset.read(inv.records[0], CvcClinicDbDataset.parse_options({}))[0]
    assert raw.mask[0, :4].max() == 0 and raw.image.shape == (3, 24, 32)


def test_clinicdb_synthetic_layouts_and_errors(tmp_path):
    rng = np.random.default_rng(4)
    root = _clinic_like(tmp_path, [1, 30, "extra"], rng, dirs=("Original", "Ground Truth"))
    inv = CvcClinicDbDataset.inventory(root)
    assert inv.errors() == [] and {r.id for r in inv.records} == {"1", "30", "extra"}
    warn = [p for p in inv.problems if p.severity == "warning"]
    assert len(warn) == 1 and "video sequence is unknown" in warn[0].message
    assert {r.id: r.patient for r in inv.records}["extra"] is None
    with pytest.raises(ConfigError, match="test_fraction"):
        CvcClinicDbDataset(root, "train", test_fraction=1.5)
    with pytest.raises(ConfigError, match="seed"):
        CvcClinicDbDataset(root, "train", seed="x")
    # only one sequence cannot fill train and test
    one = _clinic_like(tmp_path / "one", [1, 2], rng)
    with pytest.raises(DataError, match="1 patients cannot fill"):
        CvcClinicDbDataset(one, "train")
    # folders swapped (as in some public copies): the image is grey
    swapped = tmp_path / "sw" / "CVC-ClinicDB"
    (swapped / "images").mkdir(parents=True)
    (swapped / "masks").mkdir()
    for f in (1, 30):
        tifffile.imwrite(swapped / "images" / f"{f}.tif", _mask(rng))
        tifffile.imwrite(swapped / "masks" / f"{f}.tif", _rgb(rng), photometric="rgb")
    split_of_1 = next(r.split for r in CvcClinicDbDataset.inventory(swapped).records if r.id == "1")
    with pytest.raises(DataError, match=r"1\.tif is grey.*swapped"):
        CvcClinicDbDataset(swapped, split_of_1)
