"""The generic ``folder`` dataset on small synthetic folders: round trips (binary, multi-class
palette PNGs, grey/RGB, TIFF via tifffile, split subfolders, seeded patient-level splits) and bad
input (each ends in a DataError or ConfigError naming the file)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from medseg.data import create_dataset
from medseg.data.datasets.folder import FolderDataset
from medseg.data.io.masks import read_label_map, read_mask
from medseg.errors import ConfigError, DataError

H, W = 20, 28


def _grey(rng) -> np.ndarray:
    return rng.integers(0, 256, (H, W), dtype=np.uint8)


def _rgb(rng) -> np.ndarray:
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _labels(rng, k: int) -> np.ndarray:
    lab = np.zeros((H, W), np.uint8)
    for c in range(1, k):
        y, x = rng.integers(0, H - 5), rng.integers(0, W - 5)
        lab[y : y + 5, x : x + 5] = c
    return lab


def _write(folder: Path, stems, rng, *, image="grey", mask="binary255", ext=".png", mask_ext=".png") -> dict:
    """Write images/ and masks/ under ``folder``; returns stem -> (image array, label array)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    out = {}
    for s in stems:
        img = _grey(rng) if image == "grey" else _rgb(rng)
        Image.fromarray(img).save(folder / "images" / f"{s}{ext}")
        lab = _labels(rng, 2 if mask.startswith("binary") else 4)
        stored = lab * 255 if mask == "binary255" else lab
        Image.fromarray(stored).save(folder / "masks" / f"{s}{mask_ext}")
        out[s] = (img, lab)
    return out


# --------------------------------------------------------------------------- round trips


def test_flat_binary_round_trip_and_seeded_split(tmp_path):
    rng = np.random.default_rng(0)
    data = _write(tmp_path, [f"img{i}" for i in range(10)], rng)
    inv = FolderDataset.inventory(tmp_path)
    assert inv.problems == [] and inv.splits == ["train", "test"]
    assert [len(inv.split(s)) for s in inv.splits] == [8, 2]
    assert inv.split_source.startswith("seeded over patients (seed 0")
    again = FolderDataset.inventory(tmp_path)
    assert [(r.id, r.split) for r in again.records] == [(r.id, r.split) for r in inv.records]
    other = FolderDataset.inventory(tmp_path, seed=5)
    assert {r.id for r in other.split("test")} != {r.id for r in inv.split("test")}
    ds = create_dataset("folder", tmp_path, split="test")
    assert len(ds) == 2 and ds.in_channels == 1 and ds.num_classes == 2
    for c in ds:
        img, lab = data[c.id]
        assert np.array_equal(c.mask, lab) and c.mask.dtype == np.uint8
        assert c.image.shape == (1, H, W) and abs(float(c.image.mean())) < 1e-4 and abs(float(c.image.std()) - 1) < 1e-3
        assert np.array_equal(c.display, img) and c.fov.all() and c.patient is None
    everything = FolderDataset(tmp_path, "train", test_fraction=0.0)
    assert len(everything) == 10


def test_binary_01_masks_tiff_and_jpeg(tmp_path):
    rng = np.random.default_rng(1)
    data = _write(tmp_path / "a", ["x", "y"], rng, mask="binary01")
    ds = FolderDataset(tmp_path / "a", "train", test_fraction=0.0)
    assert all(np.array_equal(c.mask, data[c.id][1]) for c in ds)
    # RGB TIFF with the CVC-ClinicDB header quirk (Pillow refuses it): read via tifffile
    root = tmp_path / "b"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    img = _rgb(rng)
    tifffile.imwrite(root / "images" / "f1.tif", img, photometric="minisblack", planarconfig="contig")
    lab = _labels(rng, 2)
    tifffile.imwrite(root / "masks" / "f1.tif", lab * 255)
    (c,) = FolderDataset(root, "train", test_fraction=0.0, preprocess=[])
    assert c.image.shape == (3, H, W) and np.array_equal(c.image, np.moveaxis(img, -1, 0).astype(np.float32))
    assert np.array_equal(c.mask, lab)
    # JPEG masks need a tolerance for compression noise
    root = tmp_path / "c"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(_rgb(rng)).save(root / "images" / "j.jpg")
    noisy = np.zeros((H, W), np.uint8)
    noisy[3:15, 4:20] = 255
    Image.fromarray(noisy).save(root / "masks" / "j.jpg", quality=40)
    stored = np.asarray(Image.open(root / "masks" / "j.jpg"))
    assert ((stored > 0) & (stored < 255)).mean() > 0.01  # noisier than binarize_mask's default 1 %
    with pytest.raises(DataError, match=r"j\.jpg is not binary"):
        FolderDataset(root, "train", test_fraction=0.0)
    (c,) = FolderDataset(root, "train", test_fraction=0.0, max_intermediate=1.0)
    assert np.array_equal(c.mask, (stored > stored.max() / 2).astype(np.uint8))


def test_multiclass_palette_pngs(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    palette = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12)
    truth = {}
    for s in ("p1", "p2", "p3"):
        Image.fromarray(_rgb(rng)).save(tmp_path / "images" / f"{s}.png")
        lab = _labels(rng, 4)
        im = Image.fromarray(lab, mode="P")
        im.putpalette(palette)
        im.save(tmp_path / "masks" / f"{s}.png")
        truth[s] = lab
    assert Image.open(tmp_path / "masks" / "p1.png").mode == "P"
    ds = FolderDataset(tmp_path, "train", labels="multiclass", num_classes=4, test_fraction=0.0)
    assert ds.num_classes == 4 and ds.in_channels == 3
    for c in ds:
        assert np.array_equal(c.mask, truth[c.id])  # indices, not the palette colours' luminance
        assert set(np.unique(c.mask)) == {0, 1, 2, 3}
    # grey label maps 0..3 work too; out-of-range values name the file and the values
    Image.fromarray(truth["p2"]).save(tmp_path / "masks" / "p2.png")
    assert np.array_equal(read_label_map(tmp_path / "masks" / "p2.png", 4), truth["p2"])
    with pytest.raises(DataError, match=r"masks/p\d\.png has label values 3 outside 0\.\.2 \(num_classes=3\)"):
        FolderDataset(tmp_path, "train", labels="multiclass", num_classes=3, test_fraction=0.0)
    Image.fromarray(truth["p3"] * 60).save(tmp_path / "masks" / "p3.png")
    with pytest.raises(DataError, match=r"p3\.png has label values 60, 120, 180 outside 0\.\.3"):
        read_label_map(tmp_path / "masks" / "p3.png", 4)
    # colour-coded RGB label maps are refused in multiclass mode
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    Image.fromarray(colours[truth["p3"]]).save(tmp_path / "masks" / "p3.png")
    with pytest.raises(DataError, match=r"p3\.png is a colour image"):
        read_label_map(tmp_path / "masks" / "p3.png", 4)


def test_channels_auto_rgb_gray(tmp_path):
    rng = np.random.default_rng(3)
    _write(tmp_path, ["g1", "g2"], rng, image="grey")
    _write(tmp_path, ["c1", "c2"], rng, image="rgb")
    with pytest.raises(DataError, match="mixes grey and colour images"):
        FolderDataset(tmp_path, "train", test_fraction=0.0)
    rgb = FolderDataset(tmp_path, "train", test_fraction=0.0, channels="rgb")
    assert rgb.in_channels == 3 and all(c.image.shape == (3, H, W) for c in rgb)
    g = rgb.get("g1")
    assert np.array_equal(g.image[0], g.image[1]) and np.array_equal(g.image[1], g.image[2])
    gray = FolderDataset(tmp_path, "train", test_fraction=0.0, channels="gray")
    assert gray.in_channels == 1 and gray.get("c1").display.shape == (H, W, 3)
    raw = FolderDataset(tmp_path, "train", test_fraction=0.0, channels="gray", preprocess=["gray"])
    c1 = np.asarray(Image.open(tmp_path / "images" / "c1.png"), np.float32)
    np.testing.assert_allclose(raw.get("c1").image[0], c1 @ np.array([0.299, 0.587, 0.114], np.float32), atol=1e-3)


def test_split_subfolders(tmp_path):
    rng = np.random.default_rng(4)
    _write(tmp_path / "test", ["t1", "t2"], rng)
    _write(tmp_path / "train", ["a1", "a2", "a3"], rng)
    _write(tmp_path / "val", ["v1"], rng)
    (tmp_path / "notes").mkdir()
    inv = FolderDataset.inventory(tmp_path)
    assert inv.problems == [] and inv.splits == ["train", "val", "test"]
    assert inv.split_source == "layout (train/, val/, test/)"
    assert [r.id for r in FolderDataset(tmp_path, "val")] == ["v1"]
    assert FolderDataset(tmp_path, "train").ids == ["a1", "a2", "a3"]
    with pytest.raises(ConfigError, match="no split 'testing'; did you mean 'test'"):
        FolderDataset(tmp_path, "testing")
    # the same id in two split folders is refused
    _write(tmp_path / "val", ["a1"], rng)
    with pytest.raises(DataError, match="id 'a1' is in split 'train' and in split 'val'"):
        FolderDataset(tmp_path, "val")


def test_patient_pattern_keeps_patients_whole(tmp_path):
    rng = np.random.default_rng(5)
    stems = [f"pat{p:02d}_slice{s}" for p in range(10) for s in range(3)]
    _write(tmp_path, stems + ["odd"], rng)
    for seed in range(5):
        inv = FolderDataset.inventory(tmp_path, patient_pattern=r"^(\w+?)_", seed=seed)
        assert inv.errors() == []
        where: dict[str, set] = {}
        for r in inv.records:
            where.setdefault(r.group, set()).add(r.split)
        assert all(len(s) == 1 for s in where.values())
        assert len(where) == 11  # 10 patients + "odd" on its own
        assert sum(1 for s in where.values() if s == {"test"}) == 2  # round(0.2 * 11)
    warn = [p for p in inv.problems if p.severity == "warning"]
    assert len(warn) == 1 and "odd" in str(warn[0].path) and "does not match patient_pattern" in warn[0].message
    ds = FolderDataset(tmp_path, "test", patient_pattern=r"^(\w+?)_")
    assert all(c.patient is None or c.id.startswith(c.patient + "_") for c in ds)
    three = FolderDataset.inventory(tmp_path, patient_pattern=r"^(\w+?)_", test_fraction=0.2, val_fraction=0.2)
    assert three.splits == ["train", "val", "test"]
    # patients straddling split subfolders are refused
    sub = tmp_path / "sub"
    _write(sub / "train", ["p1_a", "p2_a"], rng)
    _write(sub / "test", ["p1_b"], rng)
    for split in ("train", "test"):  # a leaky split refuses every load, not only the second split's
        with pytest.raises(DataError, match=r"patient 'p1' is in split 'train' \(p1_a\) and in split 'test' \(p1_b\)"):
            FolderDataset(sub, split, patient_pattern=r"^(\w+?)_")


def test_split_file_on_flat_folder(tmp_path):
    rng = np.random.default_rng(6)
    _write(tmp_path / "d", ["a", "b", "c"], rng)
    sf = tmp_path / "split.json"
    sf.write_text(json.dumps({"train": ["a", "c"], "holdout": ["b"]}))
    assert FolderDataset(tmp_path / "d", "holdout", split_file=sf).ids == ["b"]
    sf.write_text(json.dumps({"train": ["a", "zz"]}))
    with pytest.raises(DataError, match="lists id 'zz'"):
        FolderDataset(tmp_path / "d", "train", split_file=sf)


# --------------------------------------------------------------------------- bad input


def test_unpaired_files_listed_together(tmp_path):
    rng = np.random.default_rng(7)
    _write(tmp_path, ["a", "b", "c"], rng)
    (tmp_path / "masks" / "b.png").unlink()
    Image.fromarray(_labels(rng, 2) * 255).save(tmp_path / "masks" / "ghost.png")
    Image.fromarray(_grey(rng)).save(tmp_path / "images" / "c.jpg")  # two images with stem "c"
    with pytest.raises(DataError) as err:
        FolderDataset(tmp_path, "train")
    msg = str(err.value)
    assert "has 3 problems" in msg
    assert "b.png: image has no mask" in msg and "ghost.png: mask has no image" in msg
    assert "image has the same id 'c'" in msg


def test_size_mismatch_and_corrupt(tmp_path):
    rng = np.random.default_rng(8)
    _write(tmp_path, ["a", "b"], rng)
    Image.fromarray(np.zeros((H + 2, W), np.uint8)).save(tmp_path / "masks" / "a.png")
    (tmp_path / "masks" / "b.png").write_bytes(b"\x89PNG broken")
    inv = FolderDataset.inventory(tmp_path, test_fraction=0.0)
    recs = {r.id: r for r in inv.records}
    opts = FolderDataset.parse_options({})
    with pytest.raises(DataError, match=rf"a\.png is {W}x{H + 2} but image .*a\.png is {W}x{H}"):
        FolderDataset.read(recs["a"], opts)
    with pytest.raises(DataError, match=r"masks/b\.png"):
        FolderDataset.read(recs["b"], opts)


def test_colour_masks_in_binary_mode(tmp_path):
    rng = np.random.default_rng(9)
    _write(tmp_path, ["r"], rng, image="rgb")
    lab = _labels(rng, 2)
    red = np.zeros((H, W, 3), np.uint8)
    red[lab == 1] = (255, 0, 0)
    Image.fromarray(red).save(tmp_path / "masks" / "r.png")
    # one colour on black: luminance threshold (red = 76 > 38)
    assert np.array_equal(read_mask(tmp_path / "masks" / "r.png"), lab)
    (c,) = FolderDataset(tmp_path, "train", test_fraction=0.0)
    assert np.array_equal(c.mask, lab)
    # several colours: not binary, and the message says it is a colour mask
    two = red.copy()
    two[: H // 2][lab[: H // 2] == 0] = (0, 255, 0)
    Image.fromarray(two).save(tmp_path / "masks" / "r.png")
    with pytest.raises(DataError, match=r"r\.png is not binary.*colour mask"):
        FolderDataset(tmp_path, "train", test_fraction=0.0)


def test_bad_options(tmp_path):
    rng = np.random.default_rng(10)
    _write(tmp_path, ["a", "b"], rng)
    cases = [
        ({"labels": "multiclass"}, "needs num_classes"),
        ({"labels": "multiclass", "num_classes": 300}, "needs num_classes"),
        ({"num_classes": 3}, "labels='binary' has 2 classes"),
        ({"labels": "soft"}, "labels must be"),
        ({"channels": "green"}, "channels must be"),
        ({"patient_pattern": "("}, "not a valid regular expression"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"test_fraction": 0.6, "val_fraction": 0.5}, "must be < 1"),
        ({"seed": 1.5}, "seed must be an int"),
        ({"max_intermediate": 2}, "max_intermediate"),
        ({"colour": "rgb"}, "has no option 'colour'"),
    ]
    for opts, msg in cases:
        with pytest.raises(ConfigError, match=msg):
            FolderDataset(tmp_path, "train", **opts)
    with pytest.raises(ConfigError, match="needs root"):
        create_dataset("folder", None, split="train")
    with pytest.raises(DataError, match="does not exist"):
        FolderDataset(tmp_path / "nope", "train")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images/ folder and no split subfolders"):
        FolderDataset(empty, "train")
    (empty / "images").mkdir()
    with pytest.raises(DataError, match="images/ but no masks/"):
        FolderDataset(empty, "train")
    (empty / "masks").mkdir()
    with pytest.raises(DataError, match="holds no image files"):
        FolderDataset(empty, "train")
    one = tmp_path / "one"
    _write(one, ["only"], rng)
    with pytest.raises(DataError, match="1 patients cannot fill"):
        FolderDataset(one, "train")
