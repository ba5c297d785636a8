"""DRIVE loader on the real data (skipped when absent), CaseDataset, and bad-input handling on
small synthetic folders in the DRIVE layout (no DRIVE file is copied anywhere)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.data import Case, CaseDataset, DriveDataset, create_dataset, list_datasets
from medseg.data.io import binarize_mask, read_image, read_mask
from medseg.errors import ConfigError, DataError


def _drive_root() -> Path | None:
    env = os.environ.get("MEDSEG_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    root = base / "DRIVE"
    return root if (root / "training").is_dir() and (root / "test").is_dir() else None


DRIVE = _drive_root()
needs_drive = pytest.mark.skipif(
    DRIVE is None,
    reason="DRIVE not found in $MEDSEG_DATA/DRIVE or <repo>/../shared/data/DRIVE (obtain it from its official site)",
)


# --------------------------------------------------------------------------- real DRIVE


@pytest.fixture(scope="module")
def drive_test() -> DriveDataset:
    return DriveDataset(DRIVE, split="test")


@pytest.fixture(scope="module")
def drive_train() -> DriveDataset:
    return DriveDataset(DRIVE, split="train")


def _counts(ds, fov_only=True):
    p = n = 0
    for c in ds:
        m = c.mask.astype(bool)
        region = c.fov if fov_only else np.ones_like(c.fov)
        p += int((m & region).sum())
        n += int((~m & region).sum())
    return p, n


@needs_drive
def test_drive_test_split(drive_test):
    assert len(drive_test) == 20
    assert drive_test.ids == [f"{i:02d}" for i in range(1, 21)]
    c = drive_test[0]
    assert c.image.shape == (1, 584, 565) and c.image.dtype == np.float32
    assert c.mask.shape == (584, 565) and c.mask.dtype == np.uint8
    assert c.fov.dtype == np.bool_ and c.display.shape == (584, 565, 3) and c.display.dtype == np.uint8
    assert c.path.endswith("01_test.tif")
    # mlscorecheck reference counts (github.com/FalseNegativeLab/mlscorecheck, mlscorecheck/experiments/retina)
    assert _counts(drive_test) == (577_649, 3_960_494)
    assert _counts(drive_test, fov_only=False)[0] == 577_945
    assert _counts(drive_test.subset(["01"])) == (29_412, 194_965)


@needs_drive
def test_drive_train_split(drive_train):
    assert len(drive_train) == 20 and drive_train.ids == [str(i) for i in range(21, 41)]
    assert _counts(drive_train) == (569_415, 3_971_591)


@needs_drive
def test_drive_zscore_inside_fov(drive_train):
    for c in drive_train:
        inside = c.image[0][c.fov]
        assert abs(float(inside.mean())) < 1e-3 and abs(float(inside.std()) - 1) < 1e-3
        assert not c.image[0][~c.fov].any()
    # green channel of the raw image
    c = drive_train[0]
    g = c.display[..., 1].astype(np.float64)
    expected = (g - g[c.fov].mean()) / g[c.fov].std()
    assert np.allclose(c.image[0][c.fov], expected[c.fov], atol=1e-4)


@needs_drive
def test_drive_rgb_and_gray():
    rgb = DriveDataset(DRIVE, split="test", channels="rgb")
    assert rgb[0].image.shape == (3, 584, 565)
    for k in range(3):
        inside = rgb[0].image[k][rgb[0].fov]
        assert abs(inside.mean()) < 1e-3 and abs(inside.std() - 1) < 1e-3
    gray = create_dataset("drive", root=DRIVE, split="test", channels="gray")
    assert gray[0].image.shape == (1, 584, 565)
    assert not np.allclose(gray[0].image, DriveDataset(DRIVE, split="test").subset(["01"])[0].image)


@needs_drive
def test_drive_second_annotator(drive_test):
    second = DriveDataset(DRIVE, split="test", annotator=2)
    assert second.ids == drive_test.ids
    p, n = _counts(second)
    assert 0.08 < p / (p + n) < 0.13  # 12.3 % inside the FOV
    for c, ref in zip(second, drive_test):
        frac = c.mask[c.fov].mean()
        assert 0.06 < frac < 0.16
        agree = (c.mask == ref.mask)[c.fov].mean()
        assert agree > 0.9  # two humans agree on most pixels, but not all
        assert not np.array_equal(c.mask, ref.mask)
    with pytest.raises(ConfigError, match="test split"):
        DriveDataset(DRIVE, split="train", annotator=2)


@needs_drive
def test_drive_palette_gif_read_through_palette():
    path = DRIVE / "test" / "2nd_manual" / "01_manual2.gif"
    with Image.open(path) as im:
        assert im.mode == "P" and set(np.unique(np.asarray(im))) == {0, 1}
    m = read_mask(path)
    assert m.dtype == np.uint8 and 0.05 < m.mean() < 0.15


@needs_drive
def test_drive_default_root_from_env(monkeypatch):
    monkeypatch.setenv("MEDSEG_DATA", str(DRIVE.parent))
    ds = create_dataset("drive", split="test")
    assert len(ds) == 20


# --------------------------------------------------------------------------- CaseDataset


def _case(cid: str, h: int = 8, w: int = 10, c: int = 1) -> Case:
    return Case(
        id=cid,
        image=np.zeros((c, h, w), np.float32),
        mask=np.zeros((h, w), np.uint8),
        fov=np.ones((h, w), bool),
        display=np.zeros((h, w), np.uint8),
    )


def test_case_dataset_subset_and_lookup():
    ds = CaseDataset([_case(i) for i in ("a", "b", "c")], name="toy", split="train")
    sub = ds.subset(["c", "a"])
    assert sub.ids == ["c", "a"] and sub.name == "toy" and sub.split == "train"
    assert sub[0] is ds[2] and "a" in ds and "z" not in ds
    assert ds[1:].ids == ["b", "c"] and [c.id for c in ds] == ["a", "b", "c"]
    with pytest.raises(DataError, match="'cc'.*did you mean 'c'"):
        ds.subset(["cc"])
    with pytest.raises(DataError, match="repeated"):
        ds.subset(["a", "a"])
    with pytest.raises(IndexError):
        ds[3]


def test_case_dataset_validates():
    with pytest.raises(DataError, match="duplicate"):
        CaseDataset([_case("a"), _case("a")])
    with pytest.raises(DataError, match="no images"):
        CaseDataset([])
    bad = _case("x")
    bad.mask = bad.mask.astype(bool)
    with pytest.raises(DataError, match="mask must be uint8"):
        CaseDataset([bad])
    bad = _case("y")
    bad.fov = np.ones((8, 9), bool)
    with pytest.raises(DataError, match="shapes disagree"):
        CaseDataset([bad])
    with pytest.raises(DataError, match="channel"):
        CaseDataset([_case("a", c=1), _case("b", c=3)])


def test_unknown_dataset_name():
    with pytest.raises(ConfigError, match="'driv'.*did you mean 'drive'"):
        create_dataset("driv", root="/nonexistent")
    assert "drive" in list_datasets()


# --------------------------------------------------------------------------- bad input


def _write_drive(root: Path, split: str = "training", ids=("21", "22"), hw=(20, 30)) -> Path:
    """A tiny fake dataset in the DRIVE layout (random pixels, not DRIVE data)."""
    rng = np.random.default_rng(0)
    base = root / split
    for sub in ("images", "1st_manual", "mask") + (("2nd_manual",) if split == "test" else ()):
        (base / sub).mkdir(parents=True, exist_ok=True)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    fov = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (min(h, w) / 2) ** 2).astype(np.uint8) * 255
    for cid in ids:
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(base / "images" / f"{cid}_{split}.tif", compression="tiff_lzw")
        gt = np.zeros((h, w), np.uint8)
        gt[h // 2 - 1 : h // 2 + 1, :] = 255
        Image.fromarray(gt, "L").save(base / "1st_manual" / f"{cid}_manual1.gif")
        Image.fromarray(fov, "L").save(base / "mask" / f"{cid}_{split}_mask.gif")
        if split == "test":  # palette GIF, indices {0, 1} -> grey 3 / 253, like DRIVE's
            pal = Image.fromarray((gt > 0).astype(np.uint8), "P")
            pal.putpalette([3, 3, 3, 253, 253, 253])
            pal.save(base / "2nd_manual" / f"{cid}_manual2.gif")
    return root


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def fake_drive(tmp_path):
    root = _write_drive(tmp_path / "DRIVE")
    _write_drive(root, "test", ids=("01", "02"))
    return root


def _expect_error(root: Path, *needles: str, split: str = "train", **kwargs) -> str:
    before = _snapshot(root) if root.exists() else {}
    with pytest.raises(DataError) as info:
        DriveDataset(root, split=split, **kwargs)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, (needle, msg)
    assert (_snapshot(root) if root.exists() else {}) == before  # nothing was modified
    return msg


def test_fake_drive_loads(fake_drive):
    before = _snapshot(fake_drive)
    ds = DriveDataset(fake_drive, split="train", channels="rgb")
    assert ds.ids == ["21", "22"] and ds[0].image.shape == (3, 20, 30)
    assert ds[0].mask.sum() == 2 * 30 and set(np.unique(ds[0].mask)) == {0, 1}
    second = DriveDataset(fake_drive, split="test", annotator=2)
    first = DriveDataset(fake_drive, split="test", annotator=1)
    assert np.array_equal(second[0].mask, first[0].mask)
    # a folder holding DRIVE/ is accepted as root too
    assert DriveDataset(fake_drive.parent, split="test").ids == ["01", "02"]
    assert _snapshot(fake_drive) == before


def test_missing_mask(fake_drive):
    (fake_drive / "training" / "1st_manual" / "22_manual1.gif").unlink()
    _expect_error(fake_drive, "22_training.tif", "no vessel mask", "22_manual1.gif")


def test_missing_fov(fake_drive):
    (fake_drive / "training" / "mask" / "21_training_mask.gif").unlink()
    _expect_error(fake_drive, "21_training.tif", "no FOV mask", "21_training_mask.gif")


def test_mask_without_image(fake_drive):
    src = fake_drive / "training" / "1st_manual" / "21_manual1.gif"
    (fake_drive / "training" / "1st_manual" / "23_manual1.gif").write_bytes(src.read_bytes())
    _expect_error(fake_drive, "23_manual1.gif", "has no image", "23_training.tif")


def test_truncated_tiff(fake_drive):
    path = fake_drive / "training" / "images" / "22_training.tif"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect_error(fake_drive, str(path), "truncated")


def test_truncated_uncompressed_tiff(fake_drive):
    path = fake_drive / "training" / "images" / "21_training.tif"
    Image.fromarray(np.zeros((200, 300, 3), np.uint8)).save(path)  # strip data after the header
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect_error(fake_drive, str(path), "truncated")


def test_non_image_with_tif_extension(fake_drive):
    path = fake_drive / "training" / "images" / "21_training.tif"
    path.write_text("this is not an image\n")
    _expect_error(fake_drive, str(path), "not an image")


def test_mask_of_another_size(fake_drive):
    path = fake_drive / "training" / "1st_manual" / "21_manual1.gif"
    Image.fromarray(np.zeros((10, 20), np.uint8), "L").save(path)
    _expect_error(fake_drive, "mask", str(path), "is 20x10 but image", "21_training.tif", "is 30x20")


def test_fov_of_another_size(fake_drive):
    path = fake_drive / "training" / "mask" / "22_training_mask.gif"
    Image.fromarray(np.full((21, 30), 255, np.uint8), "L").save(path)
    _expect_error(fake_drive, str(path), "is 30x21 but image")


def test_non_binary_mask(fake_drive):
    path = fake_drive / "training" / "1st_manual" / "21_manual1.gif"
    Image.fromarray(np.tile(np.arange(30, dtype=np.uint8) * 8, (20, 1)), "L").save(path)
    _expect_error(fake_drive, str(path), "not binary")


def test_empty_image_folder(fake_drive):
    for p in (fake_drive / "training" / "images").iterdir():
        p.unlink()
    _expect_error(fake_drive, str(fake_drive / "training" / "images"), "holds no images")


def test_missing_split_folder(tmp_path):
    root = _write_drive(tmp_path / "DRIVE")  # training only
    _expect_error(root, "'test'", str(root / "test"), split="test")


def test_missing_subfolder(fake_drive):
    for p in (fake_drive / "test" / "2nd_manual").iterdir():
        p.unlink()
    (fake_drive / "test" / "2nd_manual").rmdir()
    _expect_error(fake_drive, "2nd_manual", split="test", annotator=2)


def test_missing_root(tmp_path):
    _expect_error(tmp_path / "nowhere", "does not exist", str(tmp_path / "nowhere"))


def test_all_problems_listed_together(fake_drive):
    (fake_drive / "training" / "1st_manual" / "21_manual1.gif").unlink()
    (fake_drive / "training" / "mask" / "22_training_mask.gif").unlink()
    msg = _expect_error(fake_drive, "2 problems", "21_manual1.gif", "22_training_mask.gif")
    assert msg.count("\n") >= 2


def test_bad_options(fake_drive):
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        DriveDataset(fake_drive, split="trian")
    with pytest.raises(ConfigError, match="channels"):
        DriveDataset(fake_drive, channels="red")
    with pytest.raises(ConfigError, match="annotator"):
        DriveDataset(fake_drive, split="test", annotator=3)


# --------------------------------------------------------------------------- readers


def test_binarize_rules():
    assert binarize_mask(np.array([[0, 1], [1, 0]], np.uint8)).tolist() == [[0, 1], [1, 0]]
    assert binarize_mask(np.array([[0, 255], [127, 128]], np.uint8), max_intermediate=1.0).tolist() == [[0, 1], [0, 1]]
    assert binarize_mask(np.array([[3, 253]], np.uint8)).tolist() == [[0, 1]]
    assert binarize_mask(np.full((2, 2), 255, np.uint8)).all()
    assert not binarize_mask(np.zeros((2, 2), np.uint8)).any()
    with pytest.raises(DataError, match="not binary"):
        binarize_mask(np.arange(100, dtype=np.uint8).reshape(10, 10), "x.png")


def test_palette_order_does_not_matter(tmp_path):
    idx = np.zeros((4, 5), np.uint8)
    idx[1] = 1
    pal = Image.fromarray(idx, "P")
    pal.putpalette([255, 255, 255, 0, 0, 0])  # index 0 is white: foreground
    pal.save(tmp_path / "inv.gif")
    assert read_mask(tmp_path / "inv.gif").tolist() == (idx == 0).astype(np.uint8).tolist()


def test_read_image_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(DataError, match="not a file"):
        read_image(tmp_path)
    deep = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000  # 16-bit values are kept, not rescaled
    Image.fromarray(deep).save(tmp_path / "deep.png")
    got = read_image(tmp_path / "deep.png")
    assert got.dtype == np.uint16 and got.tolist() == deep.tolist()
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(tmp_path / "alpha.png")
    assert read_image(tmp_path / "alpha.png").shape == (4, 4, 3)
