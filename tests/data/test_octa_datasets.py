"""OCTA loaders (rose1, rose2, rossa, octa500).

ROSE is not available here (distributed on request), so ROSE-1 and ROSE-2 are tested on small
synthetic folders in their released layouts; ROSSA and OCTA-500 on the copies in
``shared/data`` (skipped when absent). Bad-input tests use synthetic folders for every loader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.morphology import skeletonize

from medseg.data import create_dataset, list_datasets
from medseg.data.base import data_root
from medseg.data.datasets.octa import (
    Octa500Dataset,
    Rose1Dataset,
    Rose2Dataset,
    RossaDataset,
    resize_centerline,
)
from medseg.data.transforms.preprocess import resize
from medseg.errors import ConfigError, DataError

EIGHT = np.ones((3, 3), dtype=int)  # 8-connectivity for ndimage.label


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _image(rng, hw) -> np.ndarray:
    img = rng.integers(0, 256, size=hw, dtype=np.uint8)
    img[0, 0], img[-1, -1] = 0, 255  # spans 0..255, so minmax == x / 255
    return img


def _label(rng, hw, p=0.1) -> np.ndarray:
    lab = (rng.random(hw) < p).astype(np.uint8) * 255
    lab[1, 1] = 255
    return lab


# --------------------------------------------------------------------------- synthetic layouts

ROSE1_IDS = {"train": ["01", "02", "03"], "test": ["31", "32"]}
HW1 = (40, 44)


def make_rose1(root: Path, seed: int = 0) -> dict:
    """ROSE-1/{SVC,DVC,SVC_DVC}/{train,test}/{img,gt[,thick_gt,thin_gt]} with .tif files (SVC_DVC
    labels as .png); returns the arrays written, keyed (layer, folder, id)."""
    rng = np.random.default_rng(seed)
    written = {}
    for layer in ("SVC", "DVC", "SVC_DVC"):
        subs = ["img", "gt"] + (["thick_gt", "thin_gt"] if layer == "SVC" else [])
        for split, ids in ROSE1_IDS.items():
            for i in ids:
                for sub in subs:
                    arr = _image(rng, HW1) if sub == "img" else _label(rng, HW1)
                    ext = ".png" if (layer == "SVC_DVC" and sub != "img") else ".tif"
                    _save(root / "ROSE-1" / layer / split / sub / f"{i}{ext}", arr)
                    written[(layer, sub, i)] = arr
    return written


def make_rose2(root: Path, hw=(105, 105), seed: int = 1) -> dict:
    """ROSE-2/{train,test}/{original,gt}/<id>.png with 1-px centerline labels."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, ids in {"train": ["1", "2"], "test": ["91"]}.items():
        for i in ids:
            img = _image(rng, hw)
            lab = np.zeros(hw, np.uint8)
            lab[hw[0] // 3, 5:-5] = 255  # horizontal line
            for k in range(min(hw) // 2, min(hw) - 10):  # diagonal, apart from the horizontal line
                lab[k, k] = 255
            _save(root / "ROSE-2" / split / "original" / f"{i}.png", img)
            _save(root / "ROSE-2" / split / "gt" / f"{i}.png", lab)
            written[("original", i)], written[("gt", i)] = img, lab
    return written


def make_simple(root: Path, folder: str, splits: dict[str, list[str]], ext: str, hw=(32, 32), seed: int = 2) -> dict:
    """<folder>/<split folder>/{image,label}/<id><ext> (ROSSA and OCTA-500 layouts)."""
    rng = np.random.default_rng(seed)
    written = {}
    for word, ids in splits.items():
        for i in ids:
            img, lab = _image(rng, hw), _label(rng, hw)
            _save(root / folder / word / "image" / f"{i}{ext}", img)
            _save(root / folder / word / "label" / f"{i}{ext}", lab)
            written[("image", i)], written[("label", i)] = img, lab
    return written


def make_rossa(root: Path) -> dict:
    return make_simple(root, "ROSSA", {"train_manual": ["1", "2"], "val": ["101"], "test": ["201", "202"]}, ".png")


def make_octa500(root: Path) -> dict:
    return make_simple(root, "OCTA500_3M", {"test": ["10451", "10452", "10453"]}, ".bmp", hw=(30, 30))


# --------------------------------------------------------------------------- registry


def test_registered_names():
    names = set(list_datasets())
    assert {"rose1", "rose2", "rossa", "octa500"} <= names


# --------------------------------------------------------------------------- ROSE-1


def test_rose1_svc_round_trip(tmp_path):
    w = make_rose1(tmp_path)
    ds = create_dataset("rose1", tmp_path / "ROSE-1", split="train", preprocess=[])
    assert ds.ids == ["01", "02", "03"] and ds.groups == ["01", "02", "03"]
    for c in ds:
        assert c.image.shape == (1, *HW1) and c.image.dtype == np.float32
        np.testing.assert_array_equal(c.image[0], w[("SVC", "img", c.id)].astype(np.float32))
        np.testing.assert_array_equal(c.mask, (w[("SVC", "gt", c.id)] > 127).astype(np.uint8))
        # SVC: manual centerline-level label from thin_gt
        np.testing.assert_array_equal(c.centerline, (w[("SVC", "thin_gt", c.id)] > 127).astype(np.uint8))
        assert c.fov.all() and c.meta["fov"] == "none"
        assert c.meta["layer"] == "SVC" and c.meta["label_level"] == "pixel"
        assert c.meta["centerline_source"] == "thin_gt"
        np.testing.assert_array_equal(c.display, w[("SVC", "img", c.id)])


def test_rose1_thick_label_and_default_pipeline(tmp_path):
    w = make_rose1(tmp_path)
    ds = create_dataset("rose1", tmp_path, split="test", label="thick_gt")  # parent folder accepted
    assert ds.ids == ["31", "32"]
    c = ds.get("32")
    np.testing.assert_array_equal(c.mask, (w[("SVC", "thick_gt", "32")] > 127).astype(np.uint8))
    np.testing.assert_array_equal(c.centerline, (w[("SVC", "thin_gt", "32")] > 127).astype(np.uint8))
    # default [gray, minmax] == x / 255 for an image spanning 0..255 (OCTA-Net's ToTensor)
    np.testing.assert_allclose(c.image[0], w[("SVC", "img", "32")] / 255.0, atol=1e-6)


def test_rose1_dvc_gt_is_centerline(tmp_path):
    w = make_rose1(tmp_path)
    ds = Rose1Dataset(tmp_path / "ROSE-1", split="test", layer="DVC", preprocess=[])
    for c in ds:
        want = (w[("DVC", "gt", c.id)] > 127).astype(np.uint8)
        np.testing.assert_array_equal(c.mask, want)
        np.testing.assert_array_equal(c.centerline, want)
        assert c.meta["label_level"] == "centerline" and c.meta["centerline_source"] == "gt"


def test_rose1_svc_dvc_png_labels_and_layer_folder_root(tmp_path):
    w = make_rose1(tmp_path)
    ds = Rose1Dataset(tmp_path / "ROSE-1" / "SVC_DVC", split="train", layer="SVC_DVC", preprocess=[])
    assert len(ds) == 3
    c = ds.get("02")
    np.testing.assert_array_equal(c.mask, (w[("SVC_DVC", "gt", "02")] > 127).astype(np.uint8))
    assert c.centerline is None and c.meta["label_level"] == "pixel"
    with pytest.raises(DataError, match="on request"):
        Rose1Dataset(tmp_path / "ROSE-1", split="train", layer="SVC_DVC", label="thin_gt")
    with pytest.raises(DataError, match="layer='SVC'"):
        Rose1Dataset(tmp_path / "ROSE-1" / "DVC", split="train", layer="SVC")


def test_rose1_options_refused(tmp_path):
    make_rose1(tmp_path)
    with pytest.raises(ConfigError, match="'DVC'"):
        Rose1Dataset(tmp_path / "ROSE-1", layer="dvc")
    with pytest.raises(ConfigError, match="DVC has only"):
        Rose1Dataset(tmp_path / "ROSE-1", layer="DVC", label="thin_gt")
    with pytest.raises(ConfigError, match="option"):
        Rose1Dataset(tmp_path / "ROSE-1", layers="SVC")


def test_rose1_pairing_problems_listed(tmp_path):
    make_rose1(tmp_path)
    base = tmp_path / "ROSE-1" / "SVC" / "train"
    (base / "gt" / "02.tif").unlink()
    (base / "thin_gt" / "03.tif").rename(base / "thin_gt" / "07.tif")
    inv = Rose1Dataset.inventory(tmp_path / "ROSE-1")
    msgs = [str(p) for p in inv.errors("train")]
    assert len(msgs) == 3
    assert any("02.tif" in m and "has no label" in m and "gt" in m for m in msgs)
    assert any("03.tif" in m and "thin_gt" in m for m in msgs)
    assert any("07.tif" in m and "has no image" in m for m in msgs)
    assert [r.id for r in inv.split("train")] == ["01"]
    with pytest.raises(DataError) as err:
        Rose1Dataset(tmp_path / "ROSE-1", split="train")
    assert "3 problems" in str(err.value) and "07.tif" in str(err.value)
    Rose1Dataset(tmp_path / "ROSE-1", split="test")  # the other split still loads


def test_rose1_missing_layer(tmp_path):
    (tmp_path / "ROSE-1" / "DVC").mkdir(parents=True)
    with pytest.raises(DataError, match="layer folder .*SVC is missing"):
        Rose1Dataset(tmp_path / "ROSE-1")


# --------------------------------------------------------------------------- ROSE-2


def _components(a: np.ndarray) -> int:
    return int(ndimage.label(a > 0, structure=EIGHT)[1])


def test_resize_centerline_keeps_lines_connected_and_thin():
    lab = np.zeros((840, 840), np.uint8)
    lab[402, 20:800] = 1  # row 402 is not sampled by a nearest 840 -> 512 resize (floor(i * 840 / 512))
    rr = np.arange(450, 830)
    lab[rr, ((rr - 450) * 0.7 + 20).astype(int)] = 1  # oblique line, 8-connected
    assert _components(lab) == 2
    out = resize_centerline(lab, (512, 512))
    assert out.shape == (512, 512) and out.dtype == np.uint8 and set(np.unique(out)) == {0, 1}
    assert _components(out) == 2
    np.testing.assert_array_equal(skeletonize(out > 0), out > 0)  # one pixel wide
    # the horizontal line (cols 20..799 -> 12..487) stays one pixel per column, all along
    assert (out[230:260, 13:487].sum(axis=0) == 1).all()
    # nearest-neighbour, as the pipeline's resize step does, breaks it
    from medseg.data.base import Case

    c = Case("x", lab[None].astype(np.float32), lab, np.ones(lab.shape, bool), lab)
    near = resize(c, (512, 512)).mask
    assert _components(near) > 2 and near.sum() < 0.5 * out.sum()  # 70 dashes, 140 of 708 px


def test_resize_centerline_upsampling_and_isolated_pixel():
    lab = np.zeros((20, 20), np.uint8)
    lab[5, 2:18] = 1
    lab[15, 15] = 1
    out = resize_centerline(lab, (50, 37))
    assert out.shape == (50, 37) and _components(out) == 2
    np.testing.assert_array_equal(skeletonize(out > 0), out > 0)
    assert resize_centerline(np.zeros((9, 9)), (4, 4)).sum() == 0


def test_rose2_native_round_trip(tmp_path):
    w = make_rose2(tmp_path)
    ds = Rose2Dataset(tmp_path / "ROSE-2", split="train", size=None, preprocess=[])
    assert ds.ids == ["1", "2"] and ds.groups == ["1", "2"]
    for c in ds:
        np.testing.assert_array_equal(c.image[0], w[("original", c.id)].astype(np.float32))
        want = (w[("gt", c.id)] > 127).astype(np.uint8)
        np.testing.assert_array_equal(c.mask, want)
        np.testing.assert_array_equal(c.centerline, want)
        assert c.meta["label_level"] == "centerline" and c.meta["label_resize"] is None


def test_rose2_default_resize(tmp_path):
    make_rose2(tmp_path, hw=(105, 105))
    ds = create_dataset("rose2", tmp_path / "ROSE-2", split="test", size=[64, 64])
    c = ds[0]
    assert c.image.shape == (1, 64, 64) and c.mask.shape == (64, 64) and c.display.shape == (64, 64)
    assert 0.0 <= c.image.min() and c.image.max() <= 1.0
    np.testing.assert_array_equal(c.mask, c.centerline)
    assert _components(c.mask) == 2  # the horizontal and the diagonal line survive
    np.testing.assert_array_equal(skeletonize(c.mask > 0), c.mask > 0)
    assert c.meta["native_size"] == (105, 105)
    assert Rose2Dataset.option_defaults["size"] == 512
    with pytest.raises(ConfigError, match="size"):
        Rose2Dataset(tmp_path / "ROSE-2", split="test", size=[0, 5])


# --------------------------------------------------------------------------- ROSSA / OCTA-500 synthetic


def test_rossa_synthetic_splits_round_trip(tmp_path):
    w = make_rossa(tmp_path)
    inv = RossaDataset.inventory(tmp_path / "ROSSA")
    assert inv.splits == ["train", "val", "test"] and not inv.errors()
    ds = RossaDataset(tmp_path / "ROSSA", split="train", preprocess=[], centerline=True)
    assert ds.ids == ["1", "2"]
    for c in ds:
        np.testing.assert_array_equal(c.image[0], w[("image", c.id)].astype(np.float32))
        np.testing.assert_array_equal(c.mask, (w[("label", c.id)] > 127).astype(np.uint8))
        assert c.centerline is not None and not (c.centerline & (1 - c.mask)).any()


def test_octa500_splits_from_present_folders(tmp_path):
    make_octa500(tmp_path)
    inv = Octa500Dataset.inventory(tmp_path / "OCTA500_3M")
    assert inv.splits == ["test"] and not inv.errors()
    assert {p.split for p in inv.problems if p.severity == "warning"} == {"train", "val"}
    with pytest.raises(ConfigError, match="no split 'train'"):
        Octa500Dataset(tmp_path / "OCTA500_3M", split="train")
    assert len(Octa500Dataset(tmp_path / "OCTA500_3M", split="test")) == 3


# --------------------------------------------------------------------------- bad input, every loader

LOADERS = {
    "rose1": (make_rose1, "ROSE-1", lambda r: r / "ROSE-1" / "SVC" / "test", "img", "gt", "31", ".tif", {}),
    "rose2": (make_rose2, "ROSE-2", lambda r: r / "ROSE-2" / "test", "original", "gt", "91", ".png", {"size": None}),
    "rossa": (make_rossa, "ROSSA", lambda r: r / "ROSSA" / "test", "image", "label", "201", ".png", {}),
    "octa500": (make_octa500, "OCTA500_3M", lambda r: r / "OCTA500_3M" / "test", "image", "label", "10451", ".bmp", {}),
}


@pytest.mark.parametrize("name", sorted(LOADERS))
@pytest.mark.parametrize("fault", ["missing_label", "label_size", "non_binary", "corrupt_image"])
def test_bad_input_names_the_file(tmp_path, name, fault):
    make, folder, split_dir, img_sub, lab_sub, cid, ext, opts = LOADERS[name]
    make(tmp_path)
    base = split_dir(tmp_path)
    img, lab = base / img_sub / f"{cid}{ext}", base / lab_sub / f"{cid}{ext}"
    before = {p: p.read_bytes() for p in (img, lab) if p.exists()}
    shape = np.asarray(Image.open(img)).shape
    if fault == "missing_label":
        lab.unlink()
        bad, words = img, "has no label"
    elif fault == "label_size":
        _save(lab, np.zeros((shape[0] + 3, shape[1]), np.uint8))
        bad, words = lab, "but image"
    elif fault == "non_binary":
        _save(lab, np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8))
        bad, words = lab, "not binary"
    else:
        img.write_bytes(img.read_bytes()[:60])
        bad, words = img, "cannot be decoded|not an image"
    with pytest.raises(DataError) as err:
        create_dataset(name, tmp_path / folder, split="test", **opts)
    msg = str(err.value)
    assert str(bad) in msg
    assert any(w in msg for w in words.split("|"))
    if fault == "label_size":
        assert str(img) in msg  # names both files
    for p, b in before.items():  # loading modified nothing (the file this test did not touch)
        if p != bad and p.exists():
            assert p.read_bytes() == b


def test_missing_folder_is_dataerror(tmp_path):
    for name, folder in (("rossa", "ROSSA"), ("octa500", "OCTA500_3M"), ("rose2", "ROSE-2")):
        with pytest.raises(DataError, match=str(tmp_path / folder)):
            create_dataset(name, tmp_path / folder, split="test")
        (tmp_path / folder).mkdir()
        with pytest.raises(DataError, match="holds none of the split folders"):
            create_dataset(name, tmp_path / folder, split="test")


# --------------------------------------------------------------------------- real ROSSA and OCTA-500


def _real(folder: str) -> Path:
    root = data_root()
    if root is None or not (root / folder).is_dir():
        pytest.skip(f"{folder} not in $MEDSEG_DATA or ../shared/data")
    return root / folder


def _fraction(c) -> float:
    return 100.0 * float(c.mask.mean())


def test_real_rossa_inventory_and_train_sample():
    root = _real("ROSSA")
    inv = RossaDataset.inventory(root)
    assert not inv.errors()
    assert {s: len(inv.split(s)) for s in inv.splits} == {"train": 100, "val": 100, "test": 100}
    assert [r.id for r in inv.split("train")] == [str(i) for i in range(1, 101)]
    assert [r.id for r in inv.split("test")][:2] == ["201", "202"]
    for r in inv.split("train")[::20]:  # 5 images
        (c,) = RossaDataset.read(r, RossaDataset.parse_options({}))
        assert c.shape == (320, 320) and c.image.shape == (1, 320, 320)
        assert set(np.unique(c.mask)) == {0, 1}
        assert 8.0 - 0.05 <= _fraction(c) <= 16.9 + 0.05, (r.id, _fraction(c))


def test_real_rossa_test_split_with_skeletons():
    ds = create_dataset("rossa", _real("ROSSA"), split="test", centerline=True)
    assert len(ds) == 100 and ds.ids[0] == "201" and ds.ids[-1] == "300"
    fr = []
    for c in ds:
        assert c.image.shape == (1, 320, 320) and c.image.dtype == np.float32
        assert c.image.min() == 0.0 and c.image.max() == 1.0
        assert set(np.unique(c.mask)) == {0, 1}
        fr.append(_fraction(c))
        cl = c.centerline
        assert cl.dtype == np.uint8 and cl.any() and not (cl & (1 - c.mask)).any()  # inside the mask
        np.testing.assert_array_equal(skeletonize(cl > 0), cl > 0)  # one pixel wide
    assert 5.7 - 0.05 <= min(fr) and max(fr) <= 15.9 + 0.05


def test_real_octa500_test_split():
    root = _real("OCTA500_3M")
    inv = Octa500Dataset.inventory(root)
    assert inv.splits == ["test"] and not inv.errors()
    assert [r.id for r in inv.split("test")] == [str(i) for i in range(10451, 10501)]
    opts = Octa500Dataset.parse_options({})
    for r in inv.split("test")[::10]:  # 5 images
        (c,) = Octa500Dataset.read(r, opts)
        assert c.shape == (304, 304)
        assert set(np.unique(c.mask)) == {0, 1}
        assert 4.7 - 0.05 <= _fraction(c) <= 9.4 + 0.05, (r.id, _fraction(c))
