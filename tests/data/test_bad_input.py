"""The bad-input corpus: every case ends in a clear error naming the file, or in correct handling.

Each case damages a fresh synthetic folder (2-D: the generic ``folder`` layout; volumes: the
Decathlon layout; DICOM: series folders), then runs ``medseg data check`` on it. Errors must
come out as ``error: ...`` lines naming the file, with exit status 1, and loading the dataset
must raise a DataError naming it too; handled cases must check clean (warnings allowed) and load
with the documented values. No case may leave a raw traceback, and no file may change.

The corpus holds what users actually send (issue 10): EXIF-rotated photos, 1-pixel images,
images of 20,000 px side, folders mixing 0/1 and 0/255 masks, names with spaces, accents, CJK
and macOS (NFD) normalisation, symbolic links (linked folders, broken links, loops), a dataset on
a read-only file system, hidden files, upper-case extensions, JPEG and GIF masks, multi-frame
TIFFs, empty files. ``test_corpus_size`` counts the cases (parametrisations included).
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import os
import shutil
import signal
import stat
import struct
import sys
import time
import unicodedata
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from test_volumes import make_series

from medseg.cli import main
from medseg.data import create_dataset
from medseg.data.check import check_cached, check_dataset
from medseg.errors import ConfigError, DataError

H, W = 16, 20

#: Handled (non-error) cases: test function name -> number of cases it runs (its parametrisations).
HANDLED: dict[str, int] = {}


def handled(fn):
    """Register a test of handled cases for :func:`test_corpus_size` (counts its parametrisations)."""
    n = 1
    for mark in getattr(fn, "pytestmark", []):
        if mark.name == "parametrize":
            n *= len(mark.args[1])
    HANDLED[fn.__name__] = n
    return fn


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _tree(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (files, folders, links; links not followed): kind, content hash, mode."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            q = Path(dirpath) / name
            st = q.lstat()
            digest = hashlib.sha256(q.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
            out[str(q.relative_to(root))] = (stat.S_IFMT(st.st_mode), digest, st.st_size, st.st_mtime_ns)
    return out


def _all_cases(root: Path, **opts) -> dict:
    return {
        c.id: c
        for s in ("train", "test")
        for c in create_dataset("folder", root=root, split=s, test_fraction=0.5, **opts)
    }


def _rect_mask(h: int = H, w: int = W, value: int = 255) -> np.ndarray:
    lab = np.zeros((h, w), np.uint8)
    lab[4:10, 5:12] = value
    return lab


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def write_huge_png(path: Path, width: int, height: int) -> Path:
    """A 1-bit all-black PNG of ``width`` x ``height`` written row by row (no big array: 20000 x
    20000 takes ~50 KB on disk and well under a second)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(6)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


# --------------------------------------------------------------------------- 2-D folder layouts


def _folder(root: Path, n: int = 4, rgb: bool = False) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img = rng.integers(0, 256, (H, W, 3) if rgb else (H, W), dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / f"c{i}.png")
        lab = np.zeros((H, W), np.uint8)
        lab[4:10, 5:12] = 255
        Image.fromarray(lab).save(root / "masks" / f"c{i}.png")
    return root


def corrupt_png(root):
    (root / "images" / "c1.png").write_bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes())
    return "c1.png"


def truncated_png(root):
    p = root / "images" / "c2.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:200])
    return "c2.png"


def text_with_image_extension(root):
    (root / "images" / "c0.png").write_text("this is a text file, not an image\n")
    return "c0.png"


def image_without_mask(root):
    (root / "masks" / "c3.png").unlink()
    return "c3.png"


def mask_without_image(root):
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "masks" / "c9.png")
    return "c9.png"


def size_mismatch(root):
    Image.fromarray(np.zeros((H + 3, W), np.uint8)).save(root / "masks" / "c1.png")
    return "c1.png"


def multi_colour_rgb_mask(root):
    lab = np.zeros((H, W, 3), np.uint8)
    lab[2:6, 2:6] = (255, 0, 0)
    lab[8:12, 8:12] = (0, 255, 0)
    lab[12:15, 2:9] = (0, 0, 255)
    Image.fromarray(lab).save(root / "masks" / "c2.png")
    return "c2.png"


def soft_mask(root):
    Image.fromarray(np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))).save(root / "masks" / "c0.png")
    return "c0.png"


def labels_outside_the_set(root):  # multi-class label map 0..2 with a stray 7
    lab = np.zeros((H, W), np.uint8)
    lab[2:5, 2:5] = 1
    lab[8:10, 8:10] = 7
    for i in range(4):
        ok = np.zeros((H, W), np.uint8)
        ok[2:5, 2:5], ok[8:10, 8:10] = 1, 2
        Image.fromarray(lab if i == 3 else ok).save(root / "masks" / f"c{i}.png")
    return "c3.png"


def nan_float_image(root):
    import tifffile

    for i in range(4):
        (root / "images" / f"c{i}.png").unlink()
        arr = np.random.default_rng(i).random((H, W)).astype(np.float32)
        if i == 1:
            arr[3, 4] = np.nan
        tifffile.imwrite(root / "images" / f"c{i}.tif", arr)
    return "c1.tif"


def mixed_grey_and_rgb(root):
    Image.fromarray(np.zeros((H, W, 3), np.uint8) + 90).save(root / "images" / "c2.png")
    return "c2.png"


def unreadable_file(root, monkeypatch):
    target = str(root / "images" / "c1.png")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p) == target else real(p, mode, *a, **k))
    return "c1.png"


def empty_folder(root):
    for p in list((root / "images").iterdir()) + list((root / "masks").iterdir()):
        p.unlink()
    return "images"


def exif_rotated_mask_mismatch(root):
    """A phone photo (EXIF Orientation 6) whose mask was drawn on the rotated view: W and H swapped."""
    (root / "images" / "c1.png").unlink()
    stored = np.random.default_rng(5).integers(0, 256, (H, W), dtype=np.uint8)
    Image.fromarray(stored).save(root / "images" / "c1.jpg", exif=_exif(6), quality=95)
    Image.fromarray(_rect_mask(W, H)).save(root / "masks" / "c1.png")  # the displayed size, 16x20
    return "c1.jpg"


def huge_image(root):
    """A 20000 x 20000 image (400 Mpx, 1.2 GB as RGB): refused from its header, never decoded."""
    (root / "images" / "c2.png").unlink()
    t0 = time.perf_counter()
    write_huge_png(root / "images" / "c2.png", 20000, 20000)
    assert time.perf_counter() - t0 < 2.0 and (root / "images" / "c2.png").stat().st_size < 200_000
    return "c2.png"


def above_limit_below_bomb(root, monkeypatch):
    """Between Pillow's limit and twice it Pillow only warns (and would decode): medseg refuses."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # the corpus images are 20x16 = 320 px
    Image.fromarray(np.zeros((20, 24), np.uint8) + 7).save(root / "images" / "c2.png")  # 480 px
    Image.fromarray(_rect_mask(20, 24)).save(root / "masks" / "c2.png")
    return "c2.png"


def broken_symlink(root):
    (root / "images" / "c1.png").unlink()
    (root / "images" / "c1.png").symlink_to(root.parent / "moved-away.png")
    return "c1.png"


def symlink_loop_file(root):
    (root / "masks" / "c2.png").unlink()
    (root / "masks" / "c2.png").symlink_to("c2.png")  # points at itself
    return "c2.png"


def names_differ_in_letter_case(root):
    (root / "images" / "c3.png").rename(root / "images" / "C3.png")
    return "C3.png"


def zero_byte_file(root):
    (root / "images" / "c0.png").write_bytes(b"")
    return "c0.png"


def jpeg_mask(root):
    """A mask saved as JPEG: ringing at every edge puts many pixels between 0 and 255."""
    (root / "masks" / "c1.png").unlink()
    Image.fromarray(_rect_mask()).save(root / "masks" / "c1.jpg", quality=75)
    return "c1.jpg"


def two_frame_tiff(root):
    (root / "images" / "c2.png").unlink()
    a, b = (Image.fromarray(np.full((H, W), v, np.uint8)) for v in (40, 200))
    a.save(root / "images" / "c2.tif", save_all=True, append_images=[b])
    return "c2.tif"


ERRORS_2D: dict[str, tuple[Callable, dict, str | tuple[str, ...]]] = {
    # name: (damage, dataset options, words the message must hold besides the file name)
    "corrupt image": (corrupt_png, {}, "not an image"),
    "truncated image": (truncated_png, {}, "truncated"),
    "non-image with image extension": (text_with_image_extension, {}, "not an image"),
    "image without mask": (image_without_mask, {}, "no mask"),
    "mask without image": (mask_without_image, {}, "no image"),
    "size mismatch": (size_mismatch, {}, "20x19"),
    "multi-colour RGB mask": (multi_colour_rgb_mask, {}, "not binary"),
    "soft (non-binary) mask": (soft_mask, {}, "not binary"),
    "label values outside the set": (labels_outside_the_set, {"labels": "multiclass", "num_classes": 3}, "7"),
    "NaN pixels": (nan_float_image, {}, "NaN"),
    "mixed grey and RGB": (mixed_grey_and_rgb, {}, "grey and colour"),
    "unreadable file": (unreadable_file, {}, "permission denied"),
    "empty folder": (empty_folder, {}, "no"),
    # what users send (issue 10)
    "EXIF-rotated image, mask drawn on the rotated view": (
        exif_rotated_mask_mismatch,
        {},
        ("EXIF Orientation 6", "16x20", "exif_transpose"),
    ),
    "image of 20,000 px side": (
        huge_image,
        {},
        ("20000x20000", "too large", f"{Image.MAX_IMAGE_PIXELS:,}", "MEDSEG_MAX_IMAGE_PIXELS"),
    ),
    "image above the pixel limit, below Pillow's error": (above_limit_below_bomb, {}, ("24x20", "limit of 400")),
    "broken symbolic link": (broken_symlink, {}, ("broken symbolic link", "moved-away.png")),
    "symbolic link loop (a file)": (symlink_loop_file, {}, "symbolic link loop"),
    "image and mask names differ only in letter case": (names_differ_in_letter_case, {}, ("letter case", "c3.png")),
    "0-byte file": (zero_byte_file, {}, "is empty (0 bytes)"),
    "JPEG mask with compression artefacts": (jpeg_mask, {}, ("not binary", "JPEG", "max_intermediate=1.0")),
    "2-frame TIFF image": (two_frame_tiff, {}, "2 frames"),
}


@pytest.mark.parametrize("case", list(ERRORS_2D))
def test_2d_defect_is_reported(case, tmp_path, monkeypatch, capsys):
    root = _folder(tmp_path / "data")
    damage, opts, words = ERRORS_2D[case]
    words = (words,) if isinstance(words, str) else words
    name = damage(root, monkeypatch) if len(inspect.signature(damage).parameters) == 2 else damage(root)
    before = _snapshot(root)
    args = ["data", "check", "--dataset", "folder", "--data-root", str(root), "--set", "test_fraction=0.5"]
    for k, v in opts.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 1
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert errors and any(name in e and all(w in e for w in words) for e in errors), out
    assert "Traceback" not in out and "unexpected" not in out, out
    # loading either split fails with a DataError, never a raw exception, when the bad file is in it
    messages = []
    for split in ("train", "test"):
        try:
            create_dataset("folder", root=root, split=split, test_fraction=0.5, **opts)
        except DataError as exc:
            messages.append(str(exc))
    assert any(name in m for m in messages), messages
    assert _snapshot(root) == before


@handled
def test_palette_mask_with_index_values_is_read_through_its_palette(tmp_path):
    root = _folder(tmp_path / "data")
    idx = np.zeros((H, W), np.uint8)
    idx[3:7, 3:9] = 1
    pal = Image.fromarray(idx, "P")
    pal.putpalette([0, 0, 0, 255, 255, 255])  # DRIVE 2nd_manual style: indices {0, 1}
    pal.save(root / "masks" / "c0.png")
    assert check_dataset("folder", root, test_fraction=0.5).ok
    ds = {c.id: c for s in ("train", "test") for c in create_dataset("folder", root=root, split=s, test_fraction=0.5)}
    assert np.array_equal(ds["c0"].mask, idx)


@handled
@pytest.mark.parametrize("value", [0, 255])
def test_empty_and_full_masks_load_with_a_warning(tmp_path, value):
    root = _folder(tmp_path / "data")
    Image.fromarray(np.full((H, W), value, np.uint8)).save(root / "masks" / "c1.png")
    report = check_dataset("folder", root, test_fraction=0.5)
    assert report.ok
    word = "empty" if value == 0 else "all foreground"
    assert any("c1.png" in str(p) and word in p.message for p in report.warnings)
    ds = {c.id: c for s in ("train", "test") for c in create_dataset("folder", root=root, split=s, test_fraction=0.5)}
    assert ds["c1"].mask.sum() == (0 if value == 0 else H * W)


@handled
def test_16bit_images_keep_their_values(tmp_path):
    root = _folder(tmp_path / "data")
    deep = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 150).astype(np.uint16)
    for i in range(4):
        Image.fromarray(deep).save(root / "images" / f"c{i}.png")
    assert check_dataset("folder", root, test_fraction=0.5).ok
    c = create_dataset("folder", root=root, split="train", test_fraction=0.5, preprocess=[])[0]
    assert c.image.dtype == np.float32 and c.image[0].tolist() == deep.astype(np.float32).tolist()
    assert c.display.dtype == np.uint8 and c.display.max() == 255


@handled
def test_cmyk_images_are_read_as_rgb(tmp_path):
    root = _folder(tmp_path / "data", rgb=True)
    rgb = np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)
    for i in range(4):
        (root / "images" / f"c{i}.png").unlink()
        Image.fromarray(rgb).convert("CMYK").save(root / "images" / f"c{i}.tif")
    assert check_dataset("folder", root, test_fraction=0.5).ok
    c = create_dataset("folder", root=root, split="train", test_fraction=0.5, preprocess=[])[0]
    assert c.image.shape == (3, H, W)
    assert np.abs(c.image - np.moveaxis(rgb, -1, 0)).max() <= 1.0  # CMYK round trip within 1 level


@handled
def test_mixed_grey_and_rgb_load_as_rgb_when_asked(tmp_path):
    root = _folder(tmp_path / "data")
    mixed_grey_and_rgb(root)
    ds = create_dataset("folder", root=root, split="train", test_fraction=0.5, channels="rgb")
    assert ds.in_channels == 3


# --------------------------------------------------------------------------- volumes


def _msd(root: Path, n: int = 4, shape=(8, 7, 5)) -> Path:
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n):
        img = rng.normal(500, 50, shape).astype(np.float32)
        lab = np.zeros(shape, np.uint8)
        lab[2:5, 2:5, 1:4] = 1
        nib.save(nib.Nifti1Image(img, np.eye(4)), root / "imagesTr" / f"v{i}.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), root / "labelsTr" / f"v{i}.nii.gz")
    return root


def four_d_volume(root):
    nib.save(nib.Nifti1Image(np.zeros((8, 7, 5, 2), np.float32), np.eye(4)), root / "imagesTr" / "v1.nii.gz")
    return "v1.nii.gz", "4"


def label_shape_differs(root):
    nib.save(nib.Nifti1Image(np.zeros((8, 7, 6), np.uint8), np.eye(4)), root / "labelsTr" / "v2.nii.gz")
    return "v2.nii.gz", "shape"


def label_affine_differs(root):
    aff = np.eye(4)
    aff[0, 3] = 5.0
    nib.save(nib.Nifti1Image(np.zeros((8, 7, 5), np.uint8), aff), root / "labelsTr" / "v0.nii.gz")
    return "v0.nii.gz", "affine"


def nan_voxels(root):
    arr = np.ones((8, 7, 5), np.float32)
    arr[1, 1, 1] = np.inf
    nib.save(nib.Nifti1Image(arr, np.eye(4)), root / "imagesTr" / "v3.nii.gz")
    return "v3.nii.gz", "NaN"


def truncated_nifti(root):
    p = root / "imagesTr" / "v1.nii.gz"
    p.write_bytes(p.read_bytes()[:120])
    return "v1.nii.gz", "not a readable NIfTI"


VOLUME_ERRORS = {
    "4-D NIfTI": four_d_volume,
    "label shape differs": label_shape_differs,
    "label affine differs": label_affine_differs,
    "NaN/Inf voxels": nan_voxels,
    "truncated NIfTI": truncated_nifti,
}


@pytest.mark.parametrize("case", list(VOLUME_ERRORS))
def test_volume_defect_is_reported(case, tmp_path, capsys):
    root = _msd(tmp_path / "msd")
    name, words = VOLUME_ERRORS[case](root)
    before = _snapshot(root)
    assert main(["data", "check", "--dataset", "msd", "--data-root", str(root), "--set", "test_fraction=0.5"]) == 1
    out = capsys.readouterr().out
    assert any(name in line and words in line for line in out.splitlines() if line.startswith("error: ")), out
    assert _snapshot(root) == before


def _dicom_root(root: Path, damage: str) -> Path:
    for s in range(2):
        skip = (2,) if (damage == "missing slice" and s == 0) else ()
        exp = make_series(root / f"series{s}", n=5, series_uid=f"1.2.3.{s}", patient_id=f"P{s}", seed=s, skip=skip)
        from medseg.data.io.dicom import read_dicom_series

        aff = np.eye(4) if skip else read_dicom_series(root / f"series{s}")[1]  # a gapped series cannot be read
        (root / "labels").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image((exp["hu"] > 900).astype(np.uint8), aff), root / "labels" / f"series{s}.nii.gz")
    if damage == "mixed series":
        make_series(root / "series1", n=2, series_uid="9.9.9", patient_id="P1", seed=7, origin=(0.0, 0.0, 80.0))
    return root


DICOM_ERRORS = [("missing slice", "gap"), ("mixed series", "9.9.9")]


@pytest.mark.parametrize("damage,words", DICOM_ERRORS)
def test_dicom_defect_is_reported(damage, words, tmp_path, capsys):
    root = _dicom_root(tmp_path / "dicom", damage)
    before = _snapshot(root)
    rc = main(["data", "check", "--dataset", "dicom", "--data-root", str(root), "--set", "test_fraction=0.5"])
    out = capsys.readouterr().out
    assert rc == 1
    assert any(words in line and "series" in line for line in out.splitlines() if line.startswith("error: ")), out
    assert _snapshot(root) == before


# --------------------------------------------------------------------------- what users send: handled cases


@handled
@pytest.mark.parametrize("fmt,orientation", [("jpg", 6), ("png", 8)])
def test_exif_rotated_image_is_read_as_stored_with_a_warning(fmt, orientation, tmp_path, capsys):
    root = _folder(tmp_path / "data")
    (root / "images" / "c1.png").unlink()
    stored = np.random.default_rng(6).integers(0, 256, (H, W), dtype=np.uint8)
    Image.fromarray(stored).save(root / "images" / f"c1.{fmt}", exif=_exif(orientation))
    before = _snapshot(root)
    assert main(["data", "check", "--dataset", "folder", "--data-root", str(root), "--set", "test_fraction=0.5"]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning: ")]
    assert any(f"c1.{fmt}" in w and f"EXIF Orientation {orientation}" in w and "as stored" in w for w in warnings), (
        warnings
    )
    case = _all_cases(root, preprocess=[])["c1"]
    with Image.open(root / "images" / f"c1.{fmt}") as im:
        as_stored = np.asarray(im)
    assert case.image.shape == (1, H, W)  # not (1, W, H): the rotation is not applied
    assert np.array_equal(case.image[0], as_stored.astype(np.float32))
    if fmt == "png":  # lossless: exactly the array that was saved
        assert np.array_equal(case.image[0], stored.astype(np.float32))
    assert np.array_equal(case.mask, _rect_mask() // 255)
    assert _snapshot(root) == before


@handled
def test_one_pixel_image_loads_with_a_warning_and_pads_in_training(tmp_path):
    from medseg.data.transforms import PatchDataset

    root = _folder(tmp_path / "data")
    Image.fromarray(np.full((1, 1), 200, np.uint8)).save(root / "images" / "c1.png")
    Image.fromarray(np.full((1, 1), 255, np.uint8)).save(root / "masks" / "c1.png")
    report = check_dataset("folder", root, test_fraction=0.5)
    assert report.ok, report.text()
    assert any("c1.png" in str(p) and "1x1 pixels" in p.message for p in report.warnings), report.text()
    case = _all_cases(root)["c1"]
    assert case.image.shape == (1, 1, 1) and np.isfinite(case.image).all()
    assert case.mask.tolist() == [[1]]
    sample = PatchDataset([case], patch_size=8, samples_per_epoch=2)[0]
    assert sample["image"].shape == (1, 8, 8) and sample["mask"].sum().item() == 1.0  # zero-padded


@handled
def test_long_thin_strip_loads(tmp_path):
    """20000 x 8 is 160,000 pixels: long, but not large; it loads like any image."""
    root = _folder(tmp_path / "data")
    strip = np.tile(np.arange(20000, dtype=np.uint32) % 251, (8, 1)).astype(np.uint8)
    Image.fromarray(strip).save(root / "images" / "c0.png")
    lab = np.zeros((8, 20000), np.uint8)
    lab[2:6, 19000:19500] = 255
    Image.fromarray(lab).save(root / "masks" / "c0.png")
    report = check_dataset("folder", root, test_fraction=0.5)
    assert report.ok and not any("c0.png" in str(p) for p in report.problems), report.text()
    case = _all_cases(root, preprocess=[])["c0"]
    assert case.image.shape == (1, 8, 20000) and np.array_equal(case.image[0], strip.astype(np.float32))
    assert int(case.mask.sum()) == 4 * 500


@handled
def test_pixel_limit_can_be_raised_with_the_environment(tmp_path, monkeypatch):
    root = _folder(tmp_path / "data")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # restored after the test, whatever medseg sets
    report = check_dataset("folder", root, test_fraction=0.5)
    assert not report.ok and all(
        "too large" in p.message and "MEDSEG_MAX_IMAGE_PIXELS" in p.message for p in report.errors
    ), report.text()
    monkeypatch.setenv("MEDSEG_MAX_IMAGE_PIXELS", "1000")
    assert check_dataset("folder", root, test_fraction=0.5).ok
    assert len(_all_cases(root)) == 4
    monkeypatch.setenv("MEDSEG_MAX_IMAGE_PIXELS", "0")  # no limit
    assert len(_all_cases(root)) == 4
    monkeypatch.setenv("MEDSEG_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ConfigError, match="MEDSEG_MAX_IMAGE_PIXELS"):
        create_dataset("folder", root=root, split="train", test_fraction=0.5)


@handled
def test_masks_mixing_0_1_and_0_255_each_load_as_0_1(tmp_path):
    root = _folder(tmp_path / "data")
    expected = {}
    for i in range(4):
        lab = np.zeros((H, W), np.uint8)
        lab[i : i + 3, 2 * i : 2 * i + 5] = 1
        if i == 1:
            lab[:] = 0
            lab[7, 9] = 1  # a 0/1 mask with a single foreground pixel
        expected[f"c{i}"] = lab.copy()
        Image.fromarray(lab if i < 2 else lab * 255).save(root / "masks" / f"c{i}.png")
    report = check_dataset("folder", root, test_fraction=0.5)
    assert report.ok, report.text()
    assert any(
        "mix value encodings" in p.message and "2 0/1" in p.message and "2 0/255" in p.message for p in report.warnings
    ), report.text()
    cases = _all_cases(root)
    for cid, lab in expected.items():
        assert cases[cid].mask.dtype == np.uint8 and np.array_equal(cases[cid].mask, lab), cid
    assert int(cases["c1"].mask.sum()) == 1  # max 1 is foreground, not "below 255/2"


@handled
def test_names_with_spaces_and_non_ascii_characters(tmp_path, capsys):
    root = _folder(tmp_path / "data")
    names = {"c0": "case 01", "c1": "patient_é_ü_中"}
    for old, new in names.items():
        for sub in ("images", "masks"):
            (root / sub / f"{old}.png").rename(root / sub / f"{new}.png")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "masks" / "patient_é_ü_中.png")  # empty: a warning
    assert main(["data", "check", "--dataset", "folder", "--data-root", str(root), "--set", "test_fraction=0.5"]) == 0
    out = capsys.readouterr().out
    assert any(
        line.startswith("warning: ") and "patient_é_ü_中.png" in line and "empty" in line for line in out.splitlines()
    ), out
    cases = _all_cases(root, preprocess=[])
    assert set(cases) == {"case 01", "patient_é_ü_中", "c2", "c3"}
    with Image.open(root / "images" / "case 01.png") as im:
        assert np.array_equal(cases["case 01"].image[0], np.asarray(im).astype(np.float32))
    assert np.array_equal(cases["case 01"].mask, _rect_mask() // 255)
    assert cases["patient_é_ü_中"].mask.sum() == 0 and cases["patient_é_ü_中"].path.endswith("patient_é_ü_中.png")


@handled
def test_nfc_and_nfd_names_are_paired(tmp_path):
    """macOS writes "é" as e + combining accent (NFD); a mask named there pairs with the NFC image."""
    root = _folder(tmp_path / "data")
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    (root / "images" / "c0.png").rename(root / "images" / f"{nfc}.png")
    lab = np.zeros((H, W), np.uint8)
    lab[1:3, 1:15] = 255
    (root / "masks" / "c0.png").unlink()
    Image.fromarray(lab).save(root / "masks" / f"{nfd}.png")
    assert f"{nfd}.png" in os.listdir(root / "masks") and f"{nfc}.png" in os.listdir(root / "images")
    report = check_dataset("folder", root, test_fraction=0.5)
    assert report.ok and not report.problems, report.text()
    cases = _all_cases(root)
    assert nfc in cases and np.array_equal(cases[nfc].mask, lab // 255)


@handled
def test_symlinked_folder_and_file_load(tmp_path):
    root = _folder(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(str(root / "images"), str(elsewhere / "imgs"))
    (root / "images").symlink_to(elsewhere / "imgs", target_is_directory=True)
    lab = np.zeros((H, W), np.uint8)
    lab[0:4, 0:4] = 255
    Image.fromarray(lab).save(elsewhere / "c2-mask.png")
    (root / "masks" / "c2.png").unlink()
    (root / "masks" / "c2.png").symlink_to(elsewhere / "c2-mask.png")
    before = _snapshot(elsewhere)
    report = check_dataset("folder", root, test_fraction=0.5)
    assert report.ok and not report.problems, report.text()
    cases = _all_cases(root, preprocess=[])
    assert len(cases) == 4 and np.array_equal(cases["c2"].mask, lab // 255)
    with Image.open(elsewhere / "imgs" / "c3.png") as im:
        assert np.array_equal(cases["c3"].image[0], np.asarray(im).astype(np.float32))
    assert _snapshot(elsewhere) == before


@contextmanager
def _deadline(seconds: int):
    """Fail (instead of hanging the suite) if the block runs longer than ``seconds``."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a symbolic link loop is followed")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@handled
def test_symlink_loops_do_not_recurse(tmp_path, capsys):
    root = _folder(tmp_path / "data")
    (root / "images" / "again").symlink_to(root / "images", target_is_directory=True)  # a folder linking to itself
    (root / "masks" / "up").symlink_to(root, target_is_directory=True)  # to a folder above it
    (root / "back").symlink_to(root, target_is_directory=True)  # looks like a split subfolder holding images/
    with _deadline(30):
        assert (
            main(["data", "check", "--dataset", "folder", "--data-root", str(root), "--set", "test_fraction=0.5"]) == 0
        )
        out = capsys.readouterr().out
        cases = _all_cases(root)
    assert "warning" not in out.split("OK:")[0].lower() and "OK: 0 errors, 0 warnings" in out, out
    assert sorted(cases) == ["c0", "c1", "c2", "c3"]


# read-only file system: an audit hook refuses every write under the dataset folder (this works as
# root too, where chmod does not stop writes), on top of chmod -R a-w for ordinary users
_GUARD: dict = {"root": None, "attempts": []}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_WRITE_EVENTS = (
    "os.mkdir",
    "os.rename",
    "os.remove",
    "os.rmdir",
    "os.symlink",
    "os.link",
    "os.truncate",
    "os.chmod",
    "os.chown",
    "os.utime",
    "shutil.copyfile",
    "shutil.copytree",
    "shutil.rmtree",
    "shutil.move",
)


def _audit(event: str, args: tuple) -> None:
    root = _GUARD["root"]
    if root is None:
        return
    if event == "open":
        path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        paths = [path] if writes else []
    elif event in _WRITE_EVENTS:
        paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
    else:
        return
    for path in paths:
        if isinstance(path, int):
            continue
        full = os.path.realpath(os.path.abspath(os.fsdecode(path)))
        if full == root or full.startswith(root + os.sep):
            _GUARD["attempts"].append((event, full))
            raise PermissionError(errno.EROFS, "Read-only file system", full)


@contextmanager
def read_only(root: Path):
    """``root`` as on a read-only file system; yields the list of refused write attempts."""
    if not getattr(read_only, "installed", False):
        sys.addaudithook(_audit)
        read_only.installed = True
    modes = {p: p.lstat().st_mode for p in [root, *root.rglob("*")] if not p.is_symlink()}
    for p, mode in sorted(modes.items(), key=lambda kv: -len(kv[0].parts)):
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    _GUARD["root"], _GUARD["attempts"] = os.path.realpath(root), []
    try:
        yield _GUARD["attempts"]
    finally:
        _GUARD["root"] = None
        for p, mode in modes.items():
            p.chmod(mode)


@handled
def test_dataset_on_a_read_only_file_system(tmp_path, monkeypatch, capsys):
    root = _folder(tmp_path / "data")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "masks" / "c1.png")  # a warning to report
    before = _tree(root)
    with read_only(root) as attempts:
        with pytest.raises(PermissionError):  # the guard works, for root too
            (root / "probe.txt").write_text("x")
        attempts.clear()
        assert (
            main(["data", "check", "--dataset", "folder", "--data-root", str(root), "--set", "test_fraction=0.5"]) == 0
        )
        assert "OK: 0 errors, 1 warning" in capsys.readouterr().out
        assert len(_all_cases(root)) == 4
        report, cached = check_cached("folder", root, test_fraction=0.5)  # cache under $MEDSEG_CACHE, elsewhere
        assert report.ok and not cached
        assert check_cached("folder", root, test_fraction=0.5)[1]
        assert attempts == []  # nothing even tried to write into the dataset
        # a cache pointed into the read-only folder is skipped, with a note, and the check still runs
        monkeypatch.setenv("MEDSEG_CACHE", str(root / ".medseg-cache"))
        report, cached = check_cached("folder", root, test_fraction=0.5)
        assert report.ok and not cached and len(report.warnings) == 1
        assert "cannot be written" in capsys.readouterr().err
    assert _tree(root) == before


@handled
def test_hidden_and_system_files_are_ignored(tmp_path):
    root = _folder(tmp_path / "data")
    junk = np.random.default_rng(8).integers(0, 256, 500, dtype=np.uint8).tobytes()
    for sub in ("images", "masks"):
        (root / sub / ".DS_Store").write_bytes(junk)
        (root / sub / "._c1.png").write_bytes(b"\x00\x05\x16\x07" + junk)  # AppleDouble resource fork
        (root / sub / "Thumbs.db").write_bytes(junk)
        (root / sub / "desktop.ini").write_text("[.ShellClassInfo]\n")
        (root / sub / ".ipynb_checkpoints").mkdir()
        (root / sub / "@eaDir").mkdir()  # Synology thumbnails folder
    (root / "__MACOSX").mkdir()
    report = check_dataset("folder", root, test_fraction=0.5)
    assert report.ok and not report.problems, report.text()
    assert sorted(_all_cases(root)) == ["c0", "c1", "c2", "c3"]


@handled
def test_upper_case_extensions_are_images(tmp_path):
    root = _folder(tmp_path / "data")
    (root / "images" / "c0.png").rename(root / "images" / "c0.PNG")
    (root / "masks" / "c0.png").rename(root / "masks" / "c0.Png")
    with Image.open(root / "images" / "c1.png") as im:
        img1 = np.asarray(im).copy()
    (root / "images" / "c1.png").unlink()
    Image.fromarray(img1).save(root / "images" / "c1.TIFF")
    (root / "masks" / "c1.png").unlink()
    Image.fromarray(_rect_mask()).save(root / "masks" / "c1.BMP")
    report = check_dataset("folder", root, test_fraction=0.5)
    assert report.ok and not report.problems, report.text()
    cases = _all_cases(root, preprocess=[])
    assert sorted(cases) == ["c0", "c1", "c2", "c3"]
    assert np.array_equal(cases["c1"].image[0], img1.astype(np.float32))
    assert np.array_equal(cases["c1"].mask, _rect_mask() // 255) and np.array_equal(
        cases["c0"].mask, _rect_mask() // 255
    )


@handled
def test_jpeg_mask_is_thresholded_with_a_warning_when_allowed(tmp_path):
    root = _folder(tmp_path / "data")
    jpeg_mask(root)
    with Image.open(root / "masks" / "c1.jpg") as im:
        values = np.asarray(im)
    assert ((values > 0) & (values < 255)).mean() > 0.01  # really lossy: refused by default (see ERRORS_2D)
    report = check_dataset("folder", root, test_fraction=0.5, max_intermediate=1.0)
    assert report.ok, report.text()
    assert any("c1.jpg" in str(p) and "JPEG" in p.message and "thresholded" in p.message for p in report.warnings), (
        report.text()
    )
    mask = _all_cases(root, max_intermediate=1.0)["c1"].mask
    assert set(np.unique(mask).tolist()) == {0, 1}
    assert int((mask != _rect_mask() // 255).sum()) <= 2  # the rectangle, up to a pixel or two of ringing


@handled
@pytest.mark.parametrize("kind", ["grey GIF", "palette GIF (DRIVE 2nd_manual style)"])
def test_gif_masks(kind, tmp_path):
    root = _folder(tmp_path / "data")
    (root / "masks" / "c2.png").unlink()
    lab = _rect_mask()
    if kind == "grey GIF":
        Image.fromarray(lab).save(root / "masks" / "c2.gif")
    else:
        pal = Image.fromarray(lab // 255, "P")
        pal.putpalette([3, 3, 3, 253, 253, 253])
        pal.save(root / "masks" / "c2.gif")
    with Image.open(root / "masks" / "c2.gif") as im:
        assert im.format == "GIF"
    report = check_dataset("folder", root, test_fraction=0.5)
    assert report.ok, report.text()
    assert np.array_equal(_all_cases(root)["c2"].mask, lab // 255)


# --------------------------------------------------------------------------- medseg predict on tiny and huge images


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The built-in default recipe (synthetic vessels, FOV computed) trained for one step."""
    run = tmp_path_factory.mktemp("bad-input") / "run"
    assert (
        main(
            [
                "train",
                "--out",
                str(run),
                "--max-steps",
                "1",
                "--no-eval",
                "--set",
                "train.progress_bar=false",
                "--set",
                "data.samples_per_epoch=8",
                "--set",
                "model.args={base_channels: 4, depth: 2}",
            ]
        )
        == 0
    )
    return run / "checkpoints" / "last.ckpt"


def _fundus_like(size: int = 32) -> np.ndarray:
    """A bright disc on black (what the default recipe's FOV estimator expects), RGB uint8."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.4) ** 2
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[disc] = (180, 90, 40)
    rgb[disc, 1] += np.random.default_rng(9).integers(0, 40, int(disc.sum()), dtype=np.uint8)
    return rgb


@handled
def test_predict_a_one_pixel_image_with_its_fov_gives_one_pixel_maps(tiny_checkpoint, tmp_path):
    inp, fov, out = tmp_path / "in", tmp_path / "fov", tmp_path / "out"
    inp.mkdir()
    fov.mkdir()
    Image.fromarray(np.full((1, 1, 3), 120, np.uint8)).save(inp / "dot.png")
    Image.fromarray(np.full((1, 1), 255, np.uint8)).save(fov / "dot_mask.png")
    assert (
        main(
            ["predict", "-m", str(tiny_checkpoint), "-i", str(inp), "-o", str(out), "--fov", str(fov), "--no-progress"]
        )
        == 0
    )
    with Image.open(out / "dot_prob.png") as prob, Image.open(out / "dot_mask.png") as mask:
        assert prob.size == (1, 1) and mask.size == (1, 1)
        p = np.asarray(prob)
        assert p.dtype == np.uint16 and 0 <= int(p[0, 0]) <= 65535
        assert int(np.asarray(mask)[0, 0]) in (0, 255)


@handled
def test_predict_refuses_a_one_pixel_image_whose_fov_it_cannot_compute(tiny_checkpoint, tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    Image.fromarray(np.full((1, 1, 3), 120, np.uint8)).save(inp / "dot.png")
    Image.fromarray(_fundus_like()).save(inp / "eye.png")
    assert main(["predict", "-m", str(tiny_checkpoint), "-i", str(inp), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "dot.png" in err and "1x1 pixels" in err and "--fov" in err and "Traceback" not in err, err
    assert (out / "eye_prob.png").is_file() and not (out / "dot_prob.png").exists()


@handled
def test_predict_refuses_huge_images_without_decoding_them(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    Image.fromarray(_fundus_like()).save(inp / "eye.png")  # 1,024 px
    write_huge_png(inp / "slide.png", 20000, 20000)  # 400 Mpx: beyond Pillow's own error
    Image.fromarray(_fundus_like(40)).save(inp / "big.png")  # 1,600 px: above the lowered limit, under twice it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)
    import medseg.inference as inference

    shapes = []
    real = inference.whole_image_probabilities
    monkeypatch.setattr(
        inference, "whole_image_probabilities", lambda m, x: shapes.append(tuple(x.shape)) or real(m, x)
    )
    assert main(["predict", "-m", str(tiny_checkpoint), "-i", str(inp), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "slide.png" in err and "20000x20000" in err and "big.png" in err and "40x40" in err, err
    assert err.count("too large") == 2 and "2 could not be read" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["eye_mask.png", "eye_prob.png"]
    assert shapes and all(s[-2] * s[-1] <= 32 * 32 for s in shapes)  # only the small image went through the net


def test_corpus_size():
    """The issue asks for at least 40 bad-input cases: the error cases of the three tables plus
    every case of the handled-case tests registered with ``@handled`` (parametrisations counted)."""
    module = sys.modules[__name__]
    for name in HANDLED:  # each registered test exists and is collected as a test
        assert name.startswith("test_") and callable(getattr(module, name)), name
    errors = len(ERRORS_2D) + len(VOLUME_ERRORS) + len(DICOM_ERRORS)
    total = errors + sum(HANDLED.values())
    assert total >= 40, total
