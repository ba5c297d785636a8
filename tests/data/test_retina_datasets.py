"""CHASE_DB1 and STARE loaders and the FOV-from-image helper.

Real CHASE_DB1 tests run on ../shared/data/CHASE_DB1 (skipped when absent). STARE is not
available here: it is tested on small synthetic folders in its released layout (plain and
gzipped PPMs), written to tmp_path. No dataset file is copied anywhere.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.data import create_dataset, list_datasets
from medseg.data.base import data_root
from medseg.data.datasets.chase_db1 import ChaseDB1Dataset
from medseg.data.datasets.stare import LABELLED_IDS, StareDataset, read_stare_image, read_stare_mask
from medseg.data.io import probe, read_image, read_mask
from medseg.data.transforms.fov import fov_from_image
from medseg.errors import ConfigError, DataError


def _chase_root() -> Path | None:
    base = data_root()
    root = None if base is None else base / "CHASE_DB1"
    return root if root is not None and (root / "Image_01L.jpg").is_file() else None


CHASE = _chase_root()
needs_chase = pytest.mark.skipif(CHASE is None, reason="CHASE_DB1 not in $MEDSEG_DATA or ../shared/data")
CHASE_TRAIN = [f"Image_{c:02d}{e}" for c in range(1, 11) for e in "LR"]
CHASE_TEST = [f"Image_{c:02d}{e}" for c in range(11, 15) for e in "LR"]


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _fundus(h: int, w: int, seed: int, radius: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A fundus-like uint8 RGB image (textured bright disc on a dark noisy frame) and its disc."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    r = min(h, w) * 0.45 if radius is None else radius
    disc = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 <= r * r
    img = rng.integers(0, 6, (h, w, 3)).astype(np.uint8)  # frame: JPEG-like noise 0..5
    tex = rng.integers(0, 60, (h, w, 3))
    base = np.array([150, 70, 30])
    img[disc] = (base + tex[disc]).clip(0, 255).astype(np.uint8)
    return img, disc


# --------------------------------------------------------------------------- FOV helper


def test_fov_noise_free_disc_exact_away_from_rim():
    h, w = 200, 240
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.hypot(yy - 99.5, xx - 119.5)
    disc = dist <= 85
    img = np.zeros((h, w, 3), np.uint8)
    img[disc] = (160, 80, 40)
    fov = fov_from_image(img)
    assert fov.dtype == np.bool_ and fov.shape == (h, w)
    assert (fov == disc)[np.abs(dist - 85) > 1.5].all()  # exact except on the rim itself
    iou = (fov & disc).sum() / (fov | disc).sum()
    assert iou > 0.995


def test_fov_cleans_lesions_specks_and_labels():
    h, w = 200, 240
    img, disc = _fundus(h, w, seed=1)
    yy, xx = np.mgrid[0:h, 0:w]
    lesion = (yy - 100) ** 2 + (xx - 140) ** 2 <= 8**2  # dark lesion inside: a hole to fill
    img[lesion] = 2
    img[2:5, 2:5] = 255  # bright speck on the frame
    img[185:195, 5:45] = 220  # burnt-in label in a corner, not touching the disc
    img[60:61, :] = np.where(disc[60:61, :, None], img[60:61, :], 200)  # 1-px bright line: a bridge
    fov = fov_from_image(img)
    assert fov[lesion].all()
    assert not fov[:10, :10].any() and not fov[180:, :50].any()
    assert not fov[60, :5].any() and not fov[60, -5:].any()
    iou = (fov & disc).sum() / (fov | disc).sum()
    assert iou > 0.99
    from scipy import ndimage as ndi

    assert ndi.label(fov)[1] == 1 and np.array_equal(ndi.binary_fill_holes(fov), fov)


def test_fov_clipped_circle_keeps_straight_edges():
    # circle wider than the frame is high: cut at top and bottom, as on many fundus cameras
    img, disc = _fundus(120, 200, seed=2, radius=75)
    assert disc[0].any() and disc[-1].any()
    fov = fov_from_image(img)
    assert np.array_equal(fov[0, 85:115], disc[0, 85:115]) and np.array_equal(fov[-1, 85:115], disc[-1, 85:115])
    assert (fov & disc).sum() / (fov | disc).sum() > 0.99


def test_fov_grey_and_bad_inputs():
    img, disc = _fundus(60, 80, seed=3)
    grey_fov = fov_from_image(img[..., 0])
    assert np.array_equal(grey_fov, fov_from_image(img))
    with pytest.raises(DataError, match=r"x\.png.*constant"):
        fov_from_image(np.full((20, 20, 3), 7, np.uint8), path="x.png")
    with pytest.raises(DataError, match="uint8"):
        fov_from_image(img.astype(np.float32))
    with pytest.raises(DataError, match=r"\(20, 20, 4\)"):
        fov_from_image(np.zeros((20, 20, 4), np.uint8))
    with pytest.raises(ValueError, match="fraction"):
        fov_from_image(img, fraction=1.5)


@needs_chase
def test_fov_on_real_chase():
    total = inside = 0
    for cid in CHASE_TRAIN + CHASE_TEST:
        fov = fov_from_image(read_image(CHASE / f"{cid}.jpg"))
        vessels = read_mask(CHASE / f"{cid}_1stHO.png").astype(bool)
        assert 0.55 <= fov.mean() <= 0.90, (cid, fov.mean())
        assert (vessels & fov).sum() >= 0.99 * vessels.sum(), cid
        total += int(vessels.sum())
        inside += int((vessels & fov).sum())
    assert inside >= 0.998 * total


# --------------------------------------------------------------------------- real CHASE_DB1


@needs_chase
def test_chase_inventory_split_and_sizes():
    inv = ChaseDB1Dataset.inventory(CHASE)
    assert [p for p in inv.problems if p.severity == "error"] == []
    assert [r.id for r in inv.split("train")] == CHASE_TRAIN
    assert [r.id for r in inv.split("test")] == CHASE_TEST
    assert len(inv.records) == 28
    train_children = {r.patient for r in inv.split("train")}
    test_children = {r.patient for r in inv.split("test")}
    assert train_children == {f"{c:02d}" for c in range(1, 11)}
    assert test_children == {f"{c:02d}" for c in range(11, 15)}
    assert not train_children & test_children  # both eyes of each child in one split
    for r in inv.records:
        assert r.mask.name == f"{r.id}_1stHO.png"
        assert probe(r.image)["size"] == (999, 960) and probe(r.mask)["size"] == (999, 960)
    second = ChaseDB1Dataset.inventory(CHASE, annotator=2)
    assert all(r.mask.name == f"{r.id}_2ndHO.png" for r in second.records)


@needs_chase
def test_chase_reference_vessel_count():
    # mlscorecheck: CHASE_DB1 first observer, 28 images, all pixels: P = 1,861,974
    inv = ChaseDB1Dataset.inventory(CHASE)
    total = 0
    for r in inv.records:
        m = read_mask(r.mask)
        assert m.dtype == np.uint8 and m.shape == (960, 999) and set(np.unique(m)) == {0, 1}
        total += int(m.sum())
    assert total == 1_861_974


@needs_chase
def test_chase_test_split_loads_zscored():
    ds = create_dataset("chase_db1", split="test")
    assert ds.ids == CHASE_TEST and ds.groups == ["11", "11", "12", "12", "13", "13", "14", "14"]
    for c in ds:
        assert c.image.dtype == np.float32 and c.image.shape == (1, 960, 999)
        assert c.display.shape == (960, 999, 3) and c.display.dtype == np.uint8
        inside = c.image[0][c.fov].astype(np.float64)
        assert abs(inside.mean()) < 1e-3 and abs(inside.std() - 1) < 1e-3
        assert (c.image[0][~c.fov] == 0).all() and 0.55 < c.fov.mean() < 0.9
        # green channel of the stored JPEG, affinely mapped
        g = c.display[..., 1][c.fov].astype(np.float64)
        assert np.allclose((g - g.mean()) / g.std(), inside, atol=1e-4)
    assert "chase_db1" in list_datasets() and "stare" in list_datasets()


# --------------------------------------------------------------------------- synthetic CHASE_DB1


def _write_chase(root: Path, ids=("Image_01L", "Image_01R", "Image_11L"), hw=(48, 50)) -> Path:
    """A tiny fake CHASE_DB1 folder (synthetic pixels in the release's flat layout)."""
    root.mkdir(parents=True, exist_ok=True)
    h, w = hw
    for i, cid in enumerate(ids):
        img, disc = _fundus(h, w, seed=10 + i)
        Image.fromarray(img).save(root / f"{cid}.jpg", quality=95)
        for k, obs in enumerate(("1st", "2nd")):
            gt = np.zeros((h, w), bool)
            gt[h // 2 + k, 5:-5] = True
            gt[5:-5, w // 2] = True
            Image.fromarray(gt).save(root / f"{cid}_{obs}HO.png")  # mode '1', as released
    (root / "SOURCE.md").write_text("not an image\n")
    return root


@pytest.fixture
def fake_chase(tmp_path):
    return _write_chase(tmp_path / "CHASE_DB1")


def _chase_error(root: Path, *needles: str, split: str = "train", **kw) -> str:
    before = _snapshot(root)
    with pytest.raises(DataError) as info:
        ChaseDB1Dataset(root, split=split, **kw)
    msg = str(info.value)
    for n in needles:
        assert n in msg, (n, msg)
    assert _snapshot(root) == before
    return msg


def test_fake_chase_loads_and_round_trips(fake_chase):
    before = _snapshot(fake_chase)
    train = ChaseDB1Dataset(fake_chase, split="train", fov="none")
    assert train.ids == ["Image_01L", "Image_01R"] and train.groups == ["01", "01"]
    test = create_dataset("chase_db1", root=fake_chase, split="test", channels="rgb")
    assert test.ids == ["Image_11L"] and test[0].image.shape == (3, 48, 50)
    c = train[0]
    stored = np.asarray(Image.open(fake_chase / "Image_01L.jpg"))
    assert np.array_equal(c.display, stored)
    assert c.fov.all() and (c.image[0] != 0).any()
    written = np.asarray(Image.open(fake_chase / "Image_01L_1stHO.png")).astype(np.uint8)
    assert np.array_equal(c.mask, written) and c.mask.sum() == 40 + 38 - 1  # row + column, one shared pixel
    second = ChaseDB1Dataset(fake_chase, split="train", annotator=2, fov="none")
    assert np.array_equal(second[0].mask, np.asarray(Image.open(fake_chase / "Image_01L_2ndHO.png")).astype(np.uint8))
    assert not np.array_equal(second[0].mask, c.mask)
    # computed FOV on the synthetic disc, z-score over it
    comp = ChaseDB1Dataset(fake_chase, split="train")
    _, disc = _fundus(48, 50, seed=10)
    # JPEG ringing (and 2x chroma subsampling of red) widens the bright rim by about a pixel,
    # a large share of a 48x50 disc: the whole disc is in, and the rim is at most ~1 px wider
    assert comp[0].fov[disc].all() and (comp[0].fov & disc).sum() / (comp[0].fov | disc).sum() > 0.85
    inside = comp[0].image[0][comp[0].fov]
    assert abs(float(inside.mean())) < 1e-4 and abs(float(inside.std()) - 1) < 1e-3
    assert _snapshot(fake_chase) == before


def test_fake_chase_split_file_and_options(fake_chase, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["Image_11L"], "test": ["Image_01L", "Image_01R"]}))
    ds = ChaseDB1Dataset(fake_chase, split="test", split_file=split, fov="none")
    assert ds.ids == ["Image_01L", "Image_01R"]
    with pytest.raises(ConfigError, match="annotator"):
        ChaseDB1Dataset(fake_chase, annotator=3)
    with pytest.raises(ConfigError, match="did you mean 'computed'"):
        ChaseDB1Dataset(fake_chase, fov="compute")
    with pytest.raises(ConfigError, match="channels"):
        ChaseDB1Dataset(fake_chase, channels="red")
    with pytest.raises(ConfigError, match="no option 'annotater'"):
        ChaseDB1Dataset(fake_chase, annotater=2)
    with pytest.raises(ConfigError, match="no split 'val'"):
        ChaseDB1Dataset(fake_chase, split="val")
    # a parent folder holding CHASE_DB1/ is accepted as root
    assert ChaseDB1Dataset(fake_chase.parent, split="test", fov="none").ids == ["Image_11L"]


def test_fake_chase_split_file_splitting_a_child_is_refused(fake_chase, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["Image_01L"], "test": ["Image_01R", "Image_11L"]}))
    _chase_error(
        fake_chase,
        "patient '01' is in split 'train' (Image_01L) and in split 'test' (Image_01R)",
        split="test",
        split_file=split,
    )


def test_fake_chase_image_without_mask(fake_chase):
    (fake_chase / "Image_01R_1stHO.png").unlink()
    _chase_error(fake_chase, "Image_01R.jpg", "has no vessel mask", "Image_01R_1stHO.png")
    # the other split and the other annotator still load
    assert ChaseDB1Dataset(fake_chase, split="test", fov="none").ids == ["Image_11L"]
    assert len(ChaseDB1Dataset(fake_chase, split="train", annotator=2, fov="none")) == 2


def test_fake_chase_mask_without_image(fake_chase):
    (fake_chase / "Image_01L.jpg").unlink()
    _chase_error(fake_chase, "Image_01L_1stHO.png", "mask has no image")
    inv = ChaseDB1Dataset.inventory(fake_chase)
    orphan_2nd = [p for p in inv.problems if Path(p.path).name == "Image_01L_2ndHO.png"]
    assert len(orphan_2nd) == 1 and orphan_2nd[0].severity == "warning"


def test_fake_chase_size_mismatch(fake_chase):
    Image.fromarray(np.zeros((40, 50), bool)).save(fake_chase / "Image_01R_1stHO.png")
    _chase_error(fake_chase, "Image_01R_1stHO.png", "50x40", "Image_01R.jpg", "50x48")


@pytest.mark.parametrize("victim", ["Image_01L.jpg", "Image_01L_1stHO.png"])
def test_fake_chase_corrupt_file(fake_chase, victim):
    p = fake_chase / victim
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])  # truncated
    _chase_error(fake_chase, victim)


def test_fake_chase_not_an_image_and_empty_folder(fake_chase, tmp_path):
    (fake_chase / "Image_01R.jpg").write_text("hello")
    _chase_error(fake_chase, "Image_01R.jpg", "not an image")
    empty = tmp_path / "empty"
    empty.mkdir()
    _chase_error(empty, "holds no CHASE_DB1 image")
    with pytest.raises(DataError, match="missing.*does not exist"):
        ChaseDB1Dataset(tmp_path / "missing")


def test_fake_chase_grey_image_rejected(fake_chase):
    img = np.asarray(Image.open(fake_chase / "Image_01L.jpg").convert("L"))
    Image.fromarray(img).save(fake_chase / "Image_01L.jpg")
    _chase_error(fake_chase, "Image_01L.jpg", "8-bit RGB")


# --------------------------------------------------------------------------- synthetic STARE


def _ppm_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PPM")
    return buf.getvalue()


def _put(path: Path, arr: np.ndarray, gz: bool) -> Path:
    data = _ppm_bytes(arr)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def _write_stare(root: Path, ids=LABELLED_IDS, hw=(26, 30), unlabelled=("im0006", "im0010")) -> dict:
    """A tiny fake STARE folder (synthetic pixels) in the release's layout. Even positions are
    gzipped, odd ones plain; AH labels are RGB PPMs (P6), VK labels grey (P5). Returns the
    written arrays by id."""
    h, w = hw
    for d in ("stare-images", "labels-ah", "labels-vk"):
        (root / d).mkdir(parents=True, exist_ok=True)
    written = {}
    for i, cid in enumerate(ids):
        gz = i % 2 == 0
        img, _ = _fundus(h, w, seed=100 + i)
        ah = np.zeros((h, w), np.uint8)
        ah[h // 2, 3:-3] = 255
        ah[3:-3, (i % (w - 6)) + 3] = 255
        vk = np.zeros((h, w), np.uint8)
        vk[h // 2 - 1 : h // 2 + 1, 3:-3] = 255
        _put(root / "stare-images" / f"{cid}.ppm", img, gz)
        _put(root / "labels-ah" / f"{cid}.ah.ppm", np.repeat(ah[..., None], 3, axis=2), gz)
        _put(root / "labels-vk" / f"{cid}.vk.ppm", vk, not gz)
        written[cid] = (img, ah // 255, vk // 255)
    for j, cid in enumerate(unlabelled):
        _put(root / "stare-images" / f"{cid}.ppm", _fundus(h, w, seed=500 + j)[0], j % 2 == 0)
    (root / "README.txt").write_text("synthetic\n")
    return written


@pytest.fixture
def fake_stare(tmp_path):
    root = tmp_path / "STARE"
    written = _write_stare(root)
    return root, written


def _stare_error(root: Path, *needles: str, split: str = "train", **kw) -> str:
    before = _snapshot(root)
    with pytest.raises(DataError) as info:
        StareDataset(root, split=split, **kw)
    msg = str(info.value)
    for n in needles:
        assert n in msg, (n, msg)
    assert _snapshot(root) == before
    return msg


def test_fake_stare_split_and_round_trip(fake_stare):
    root, written = fake_stare
    before = _snapshot(root)
    train = StareDataset(root, split="train", fov="none")
    test = create_dataset("stare", root=root, split="test", fov="none")
    assert train.ids == list(LABELLED_IDS[:10]) and test.ids == list(LABELLED_IDS[10:])
    assert train.ids[-1] == "im0139" and test.ids[0] == "im0162"
    for ds in (train, test):
        for c in ds:
            img, ah, _ = written[c.id]
            assert np.array_equal(c.display, img)  # gz and plain decode to the written pixels
            assert np.array_equal(c.mask, ah) and c.mask.dtype == np.uint8
            assert c.image.shape == (1, 26, 30) and c.image.dtype == np.float32 and c.fov.all()
            assert c.patient is None
    assert train[0].path.endswith("im0001.ppm.gz") and train[1].path.endswith("im0002.ppm")
    # raw read keeps the stored values
    rec = StareDataset.inventory(root).split("train")[0]
    raw = StareDataset.read(rec, {"fov": "none"})[0]
    assert np.array_equal(raw.image, np.moveaxis(written["im0001"][0], -1, 0).astype(np.float32))
    vk = StareDataset(root, split="test", annotator=2, fov="none", channels="rgb")
    assert all(np.array_equal(c.mask, written[c.id][2]) for c in vk) and vk[0].image.shape[0] == 3
    assert _snapshot(root) == before


def test_fake_stare_computed_fov_and_warnings(fake_stare):
    root, _ = fake_stare
    ds = StareDataset(root, split="train")
    _, disc = _fundus(26, 30, seed=100)
    c = ds[0]
    assert (c.fov & disc).sum() / (c.fov | disc).sum() > 0.9
    inside = c.image[0][c.fov]
    assert abs(float(inside.mean())) < 1e-4 and (c.image[0][~c.fov] == 0).all()
    inv = StareDataset.inventory(root)
    assert inv.errors() == []
    warns = [str(p) for p in inv.problems if p.severity == "warning"]
    assert len(warns) == 1 and "2 images without manual labels ignored (im0006, im0010)" in warns[0]


def test_stare_readers_gz_and_plain(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    lab = (np.random.default_rng(1).random((7, 9)) > 0.7).astype(np.uint8)
    for gz in (False, True):
        assert np.array_equal(read_stare_image(_put(tmp_path / f"a{gz}.ppm", rgb, gz)), rgb)
        assert np.array_equal(read_stare_mask(_put(tmp_path / f"m{gz}.ppm", lab * 255, gz)), lab)
        rgb_lab = np.repeat(lab[..., None] * 255, 3, axis=2)
        assert np.array_equal(read_stare_mask(_put(tmp_path / f"c{gz}.ppm", rgb_lab, gz)), lab)


def test_fake_stare_label_without_image(fake_stare):
    root, _ = fake_stare
    (root / "stare-images" / "im0044.ppm").unlink()
    _stare_error(root, "im0044.ah.ppm", "label has no image", "expected")
    assert len(StareDataset(root, split="test", fov="none")) == 10  # the other split still loads


def test_fake_stare_image_without_label(fake_stare):
    root, _ = fake_stare
    (root / "labels-ah" / "im0324.ah.ppm").unlink()
    _stare_error(root, "im0324.ppm", "has no label", "labels-ah", split="test")
    assert len(StareDataset(root, split="test", annotator=2, fov="none")) == 10


def test_fake_stare_non_labelled_label_and_duplicates(fake_stare):
    root, written = fake_stare
    _put(root / "labels-ah" / "im0006.ah.ppm", np.zeros((26, 30), np.uint8), True)
    _put(root / "stare-images" / "im0001.ppm", written["im0001"][0], False)  # plain beside .gz
    inv = StareDataset.inventory(root)
    assert inv.errors() == []
    msgs = [str(p) for p in inv.problems]
    assert any("im0006.ah.ppm.gz" in m and "not one of the 20 labelled" in m for m in msgs)
    assert any("im0001.ppm.gz" in m and "also stored uncompressed" in m for m in msgs)
    assert "1 image without manual labels ignored (im0010)" in " ".join(msgs)
    assert StareDataset(root, split="train", fov="none")[0].path.endswith("im0001.ppm")


def test_fake_stare_partial_copy(tmp_path):
    root = tmp_path / "STARE"
    written = _write_stare(root, ids=("im0002", "im0163"), unlabelled=())
    inv = StareDataset.inventory(root)
    assert inv.errors() == [] and [r.id for r in inv.records] == ["im0002", "im0163"]
    assert any("18 of the 20 labelled images are absent" in str(p) for p in inv.problems)
    assert StareDataset(root, split="test", fov="none").ids == ["im0163"]
    assert np.array_equal(StareDataset(root, fov="none")[0].mask, written["im0002"][1])


def test_fake_stare_layout_errors(tmp_path):
    root = tmp_path / "STARE"
    _write_stare(root, ids=("im0001",), unlabelled=())
    import shutil

    shutil.rmtree(root / "labels-vk")
    _stare_error(root, "labels-vk", "has no 'labels-vk' folder", annotator=2)
    for p in (root / "stare-images").iterdir():
        p.unlink()
    for p in (root / "labels-ah").iterdir():
        p.unlink()
    _stare_error(root, "holds none of the 20 labelled STARE images")
    with pytest.raises(DataError, match="does not exist"):
        StareDataset(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="annotator"):
        StareDataset(root, annotator="vk")


def test_fake_stare_size_mismatch(fake_stare):
    root, _ = fake_stare
    (root / "labels-ah" / "im0002.ah.ppm").write_bytes(_ppm_bytes(np.zeros((20, 30, 3), np.uint8)))
    _stare_error(root, "im0002.ah.ppm", "30x20", "im0002.ppm", "30x26")


@pytest.mark.parametrize(
    "victim, content, needle",
    [
        ("stare-images/im0003.ppm.gz", b"not gzip at all", "cannot be decompressed"),
        ("stare-images/im0003.ppm.gz", None, "cannot be decompressed"),  # truncated gzip stream
        ("stare-images/im0003.ppm.gz", gzip.compress(b"hello world"), "not an image"),
        ("labels-ah/im0004.ah.ppm", b"P6\n30 26\n255\n\x00\x01", "cannot be decoded"),  # truncated PPM
        ("labels-ah/im0005.ah.ppm.gz", gzip.compress(b"P6\n30 26\n255\n\x00"), "cannot be decoded"),
    ],
)
def test_fake_stare_corrupt_files(fake_stare, victim, content, needle):
    root, _ = fake_stare
    p = root / victim
    if content is None:
        data = p.read_bytes()
        content = data[: len(data) // 2]
    p.write_bytes(content)
    _stare_error(root, p.name, needle)


def test_fake_stare_non_binary_label(fake_stare):
    root, _ = fake_stare
    ramp = np.tile(np.linspace(0, 255, 30).astype(np.uint8), (26, 1))
    (root / "labels-ah" / "im0002.ah.ppm").write_bytes(_ppm_bytes(ramp))
    _stare_error(root, "im0002.ah.ppm", "not binary")
