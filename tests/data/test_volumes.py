"""Volumes: NIfTI / DICOM readers and writers, per-volume intensity, the ``msd`` and ``dicom`` slice
datasets, patient-level splits and slice-by-slice volume prediction.

The real MSD Task04 Hippocampus copy is used when present (skipped otherwise, nothing copied);
everything else runs on tiny synthetic NIfTI volumes and DICOM series generated in tmp_path.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.data import create_dataset
from medseg.data.base import data_root
from medseg.data.datasets.volumes import DicomDataset, MsdDataset, slice_stacks
from medseg.data.io.dicom import read_dicom_series
from medseg.data.io.nifti import read_label_nifti, read_nifti
from medseg.data.io.volume import read_volume
from medseg.data.io.writeback import write_nifti_like
from medseg.data.transforms.intensity import normalize_intensity, parse_intensity
from medseg.errors import ConfigError, DataError
from medseg.inference.volume import predict_volume

# --------------------------------------------------------------------------- real Hippocampus


def _hippo_root() -> Path | None:
    root = data_root()
    if root is None or not (root / "Hippocampus_MSD_Task04" / "images").is_dir():
        return None
    return root / "Hippocampus_MSD_Task04"


HIPPO = _hippo_root()
needs_hippo = pytest.mark.skipif(
    HIPPO is None,
    reason="Hippocampus_MSD_Task04 not in $MEDSEG_DATA or ../shared/data (MSD Task04, medicaldecathlon.com)",
)


@pytest.fixture(scope="module")
def hippo_sets():
    return create_dataset("msd", split="train"), create_dataset("msd", split="test")


@needs_hippo
def test_hippocampus_inventory_and_split():
    inv = MsdDataset.inventory(HIPPO)
    assert inv.errors() == [] and len(inv.records) == 260
    train, test = inv.split("train"), inv.split("test")
    assert (len(train), len(test)) == (208, 52)
    assert not {r.patient for r in train} & {r.patient for r in test}
    assert all(r.patient == r.id for r in inv.records)
    assert {r.extra["num_classes"] for r in inv.records} == {3}
    again = MsdDataset.inventory(HIPPO)
    assert [r.id for r in again.split("test")] == [r.id for r in test]  # seeded: reproducible
    other = MsdDataset.inventory(HIPPO, seed=1)
    assert [r.id for r in other.split("test")] != [r.id for r in test]


@needs_hippo
def test_hippocampus_raw_labels():
    lab, aff, hdr, spacing = read_label_nifti(HIPPO / "labels" / "hippocampus_001.nii.gz")
    img, iaff, _, _ = read_nifti(HIPPO / "images" / "hippocampus_001.nii.gz")
    assert lab.dtype == np.uint8 and lab.shape == img.shape == (35, 51, 35)
    assert np.bincount(lab.ravel()).tolist() == [59527, 1324, 1624]  # SOURCE.md
    assert np.array_equal(aff, iaff) and spacing == (1.0, 1.0, 1.0)
    assert int(hdr["qform_code"]) == int(hdr["sform_code"]) == 1
    # the two float32 label files hold 0.0 / 1.0 / 2.0 and come back as uint8 class indices
    floats = [p for p in sorted((HIPPO / "labels").glob("*.nii.gz")) if nib.load(p).get_data_dtype() == np.float32]
    assert len(floats) == 2
    for p in floats:
        lab, *_ = read_label_nifti(p)
        assert lab.dtype == np.uint8 and set(np.unique(lab).tolist()) == {0, 1, 2}
        assert lab.shape == read_nifti(HIPPO / "images" / p.name)[0].shape


@needs_hippo
def test_hippocampus_slices(hippo_sets):
    train, test = hippo_sets
    inv = MsdDataset.inventory(HIPPO)
    for ds, split in ((train, "train"), (test, "test")):
        depth = sum(nib.load(r.image).shape[2] for r in inv.split(split))  # header only
        assert len(ds) == depth
        assert ds.num_classes == 3 and ds.in_channels == 1
        assert {c.id.split(":")[0] for c in ds} == {r.id for r in inv.split(split)}
    assert len(train) + len(test) == 9_270  # sum of the 260 volumes' last-axis sizes
    assert not set(train.groups) & set(test.groups)
    c = train.get("hippocampus_001:z017") if "hippocampus_001:z017" in train else test.get("hippocampus_001:z017")
    assert c.image.shape == (1, 35, 51) and c.mask.shape == (35, 51) and c.display.dtype == np.uint8
    assert c.meta["slice"] == 17 and c.meta["axis"] == 2 and c.meta["volume"].endswith("hippocampus_001.nii.gz")
    assert c.patient == "hippocampus_001"
    # per-volume percentile window: every slice in [0, 1], the volume reaches both ends
    vol = [x.image for x in (train if "hippocampus_001:z017" in train else test) if x.patient == "hippocampus_001"]
    stack = np.concatenate(vol)
    assert stack.min() == 0.0 and stack.max() == 1.0
    raw = read_label_nifti(HIPPO / "labels" / "hippocampus_001.nii.gz")[0]
    assert np.array_equal(c.mask, raw[:, :, 17])


@needs_hippo
def test_hippocampus_context(hippo_sets):
    test2d = hippo_sets[1]
    test25 = create_dataset("msd", split="test", context=1)
    assert test25.in_channels == 3 and test25.ids == test2d.ids
    for cid in test2d.ids[:40] + test2d.ids[-5:]:
        a, b = test2d.get(cid), test25.get(cid)
        assert np.array_equal(b.image[1], a.image[0])
    first = [c for c in test25 if c.meta["slice"] == 0][0]
    assert np.array_equal(first.image[0], first.image[1])  # border replicated


# --------------------------------------------------------------------------- synthetic NIfTI


def _affine(zooms=(0.7, 0.8, 2.5), origin=(-12.0, 30.5, 7.0)) -> np.ndarray:
    a = np.diag(list(zooms) + [1.0])
    a[:3, 3] = origin
    return a


def _save(path: Path, arr: np.ndarray, affine: np.ndarray | None = None, dtype=None) -> Path:
    img = nib.Nifti1Image(arr if dtype is None else arr.astype(dtype), _affine() if affine is None else affine)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _volume_pair(rng, shape=(9, 7, 6)):
    img = rng.normal(500, 200, size=shape).astype(np.float32)
    lab = np.zeros(shape, np.uint8)
    lab[2:6, 2:5, 1:4] = 1
    lab[3:5, 3:4, 2:3] = 2
    return img, lab


def _write_msd(root: Path, layout: str = "json", n: int = 5, shape=(9, 7, 6), modality: str = "MRI") -> Path:
    rng = np.random.default_rng(0)
    img_dir, lab_dir = ("images", "labels") if layout == "plain" else ("imagesTr", "labelsTr")
    entries = []
    for i in range(1, n + 1):
        img, lab = _volume_pair(rng, shape)
        if i == 2:
            lab[:] = 0  # a volume without foreground
        name = f"case_{i:03d}.nii.gz"
        _save(root / img_dir / name, img)
        _save(root / lab_dir / name, lab, dtype=np.float32 if i == 3 else np.uint8)
        entries.append({"image": f"./{img_dir}/{name}", "label": f"./{lab_dir}/{name}"})
    if layout == "json":
        meta = {
            "name": "Fake",
            "modality": {"0": modality},
            "labels": {"0": "background", "1": "a", "2": "b"},
            "numTraining": n,
            "training": entries,
            "test": [],
        }
        (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _snapshot(root: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_read_nifti_geometry(tmp_path):
    arr = np.arange(9 * 7 * 6, dtype=np.int16).reshape(9, 7, 6)
    p = _save(tmp_path / "v.nii.gz", arr)
    vol, aff, hdr, spacing = read_nifti(p)
    assert vol.dtype == np.float32 and vol.shape == (9, 7, 6) and np.array_equal(vol, arr)
    assert np.allclose(aff, _affine()) and spacing == pytest.approx((0.7, 0.8, 2.5))
    # a trailing singleton 4th axis is squeezed
    p4 = _save(tmp_path / "v4.nii", arr[..., None])
    assert read_nifti(p4)[0].shape == (9, 7, 6)


def test_read_nifti_refusals(tmp_path):
    p4 = _save(tmp_path / "fourd.nii.gz", np.zeros((4, 5, 6, 2), np.float32))
    with pytest.raises(DataError, match=r"fourd\.nii\.gz has shape \(4, 5, 6, 2\).*one 3-D volume per file"):
        read_nifti(p4)
    nan = np.ones((4, 5, 6), np.float32)
    nan[1, 2, 3] = np.nan
    pn = _save(tmp_path / "nan.nii.gz", nan)
    with pytest.raises(DataError, match=r"nan\.nii\.gz contains 1 NaN or infinite voxels"):
        read_nifti(pn)
    good = _save(tmp_path / "good.nii.gz", np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32))
    trunc = tmp_path / "trunc.nii.gz"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"trunc\.nii\.gz .*(truncated|not a readable)"):
        read_nifti(trunc)
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"this is not a volume")
    with pytest.raises(DataError, match=r"junk\.nii\.gz"):
        read_nifti(junk)
    with pytest.raises(DataError, match="does not exist"):
        read_nifti(tmp_path / "missing.nii.gz")
    soft = _save(tmp_path / "soft.nii.gz", np.full((3, 3, 3), 0.5, np.float32))
    with pytest.raises(DataError, match=r"soft\.nii\.gz holds non-integer values"):
        read_label_nifti(soft)
    lab = _save(tmp_path / "lab.nii.gz", np.array([0.0, 1.0, 2.0] * 9, np.float32).reshape(3, 3, 3))
    out = read_label_nifti(lab)[0]
    assert out.dtype == np.uint8 and np.bincount(out.ravel()).tolist() == [9, 9, 9]


def test_write_nifti_like_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    aff = np.array([[0.0, -0.9, 0.1, 40.0], [0.7, 0.0, 0.0, -20.0], [0.0, 0.05, 2.5, 11.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(rng.normal(size=(6, 5, 4)).astype(np.float32), aff)
    img.header.set_qform(aff, code=1)
    img.header.set_sform(aff, code=2)
    img.header.set_xyzt_units("mm", "msec")
    ref = tmp_path / "ref.nii.gz"
    nib.save(img, str(ref))
    before = hashlib.sha256(ref.read_bytes()).hexdigest()
    labels = rng.integers(0, 3, size=(6, 5, 4)).astype(np.uint8)
    out = write_nifti_like(labels, ref, tmp_path / "out" / "pred.nii.gz")
    back = nib.load(out)
    r = nib.load(ref)
    assert back.get_data_dtype() == np.uint8 and back.shape == (6, 5, 4)
    assert np.array_equal(np.asanyarray(back.dataobj), labels)
    assert np.allclose(back.affine, r.affine, atol=1e-6)
    assert int(back.header["qform_code"]) == 1 and int(back.header["sform_code"]) == 2
    assert np.allclose(back.header["pixdim"][1:4], r.header["pixdim"][1:4])
    assert back.header.get_xyzt_units() == ("mm", "msec")
    assert hashlib.sha256(ref.read_bytes()).hexdigest() == before
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["pred.nii.gz"]  # no temp file left
    with pytest.raises(ConfigError, match="reference image itself"):
        write_nifti_like(labels, ref, ref)
    with pytest.raises(DataError, match=r"shape \(6, 5, 3\).*\(6, 5, 4\)"):
        write_nifti_like(labels[..., :3], ref, tmp_path / "x.nii.gz")
    with pytest.raises(ConfigError, match=r"\.nii"):
        write_nifti_like(labels, ref, tmp_path / "x.png")
    b = write_nifti_like(labels.astype(bool), ref, tmp_path / "b.nii")
    assert nib.load(b).get_data_dtype() == np.uint8


def test_intensity_methods():
    rng = np.random.default_rng(3)
    v = rng.gamma(2.0, 300.0, size=(12, 10, 8)).astype(np.float32)
    from monai.transforms import NormalizeIntensity, ScaleIntensityRangePercentiles

    want = np.asarray(ScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True)(v[None]))[0]
    got = normalize_intensity(v, "percentile")
    assert np.allclose(got, want, atol=1e-5) and got.min() == 0.0 and got.max() == 1.0
    assert np.array_equal(normalize_intensity(v, "auto", "MR"), got)
    ct = np.array([-1000, -160, 40, 240, 3000], np.float32).reshape(1, 1, 5)
    assert normalize_intensity(ct, "auto", "CT").ravel().tolist() == pytest.approx([0, 0, 0.5, 1, 1])
    assert normalize_intensity(ct, {"hu_window": {"level": 0, "width": 2000}}).ravel().tolist() == pytest.approx(
        [0, 0.42, 0.52, 0.62, 1]
    )
    z = normalize_intensity(v, "zscore")
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3
    v0 = v.copy()
    v0[:3] = 0
    zn = normalize_intensity(v0, {"zscore": {"nonzero": True}})
    assert np.all(zn[:3] == 0) and abs(zn[3:].mean()) < 1e-4
    assert np.allclose(zn, np.asarray(NormalizeIntensity(nonzero=True)(v0[None]))[0], atol=1e-5)
    mm = normalize_intensity(v, "minmax")
    assert mm.min() == 0 and mm.max() == pytest.approx(1)
    assert np.array_equal(normalize_intensity(v, None), v)
    assert not normalize_intensity(np.full((3, 3, 3), 7.0), "percentile").any()
    with pytest.raises(ConfigError, match="did you mean 'percentile'"):
        parse_intensity("percentil")
    with pytest.raises(ConfigError, match="no option 'levl'"):
        parse_intensity({"hu_window": {"levl": 3}})


def test_slice_stacks_edges():
    v = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    s = slice_stacks(v, axis=2, context=1)
    assert s.shape == (4, 3, 2, 3)
    assert np.array_equal(s[0, 0], v[:, :, 0]) and np.array_equal(s[0, 2], v[:, :, 1])
    assert np.array_equal(s[3, 1], v[:, :, 3]) and np.array_equal(s[3, 2], v[:, :, 3])
    s0 = slice_stacks(v, axis=0, context=0)
    assert s0.shape == (2, 1, 3, 4) and np.array_equal(s0[1, 0], v[1])


@pytest.mark.parametrize("layout", ["json", "tr", "plain"])
def test_msd_layouts(tmp_path, layout):
    root = _write_msd(tmp_path / "Fake", layout)
    before = _snapshot(root)
    train = create_dataset("msd", root=root, split="train", test_fraction=0.4)
    test = create_dataset("msd", root=root, split="test", test_fraction=0.4)
    assert (len({c.patient for c in train}), len({c.patient for c in test})) == (3, 2)
    assert not set(train.groups) & set(test.groups)
    assert len(train) + len(test) == 5 * 6
    assert train.num_classes == 3 and train.in_channels == 1
    c = train[0]
    assert c.id.endswith(":z000") and c.image.dtype == np.float32 and c.mask.dtype == np.uint8
    assert c.fov.all() and c.meta["shape"] == (9, 7, 6) and c.meta["spacing"] == pytest.approx((0.7, 0.8, 2.5))
    assert _snapshot(root) == before  # nothing written into the dataset


def test_msd_options(tmp_path):
    root = _write_msd(tmp_path / "Fake", "json", modality="CT")
    inv = MsdDataset.inventory(root, test_fraction=0.4)
    assert inv.split_source.startswith("seeded patient split")
    train_ids = [r.id for r in inv.split("train")]
    full = create_dataset("msd", root=root, split="train", test_fraction=0.4)
    skip = create_dataset("msd", root=root, split="train", test_fraction=0.4, skip_empty=True)
    assert len(skip) == sum(1 for c in full if c.mask.any()) < len(full)
    test_full = create_dataset("msd", root=root, split="test", test_fraction=0.4)
    test_skip = create_dataset("msd", root=root, split="test", test_fraction=0.4, skip_empty=True)
    assert test_skip.ids == test_full.ids  # skip_empty never touches the test split
    binary = create_dataset("msd", root=root, split="train", test_fraction=0.4, classes="binary")
    assert binary.num_classes == 2 and max(int(c.mask.max()) for c in binary) == 1
    # modality CT from dataset.json -> HU window 40/400
    raw = read_nifti(root / "imagesTr" / f"{train_ids[0]}.nii.gz")[0]
    assert np.allclose(full[0].image[0], np.clip((raw[:, :, 0] + 160) / 400, 0, 1), atol=1e-6)
    ax0 = create_dataset("msd", root=root, split="train", test_fraction=0.4, slice_axis=0, context=2)
    assert ax0[0].id.endswith(":x000") and ax0[0].image.shape == (5, 7, 6)
    val = create_dataset("msd", root=root, split="val", test_fraction=0.2, val_fraction=0.2)
    assert len({c.patient for c in val}) == 1
    for bad in (
        {"slice_axis": 3},
        {"context": -1},
        {"classes": "multi"},
        {"test_fraction": 1.0},
        {"num_classes": 1},
        {"intensity": "histeq"},
        {"slicing": 2},
    ):
        with pytest.raises(ConfigError):
            create_dataset("msd", root=root, split="train", **bad)
    with pytest.raises(ConfigError, match="no split 'val'"):
        create_dataset("msd", root=root, split="val")


def test_msd_num_classes_without_json(tmp_path):
    root = _write_msd(tmp_path / "Fake", "plain")
    inv = MsdDataset.inventory(root)
    assert {r.extra["num_classes"] for r in inv.records} == {3}
    assert "max label" in inv.records[0].extra["classes_from"]
    with pytest.raises(DataError, match="class value 2 but the dataset has 2 classes"):
        create_dataset("msd", root=root, split="train", num_classes=2)


def _expect(root: Path, *needles: str, split="train", **kw) -> str:
    with pytest.raises(DataError) as info:
        create_dataset("msd", root=root, split=split, test_fraction=0.4, **kw)
    msg = str(info.value)
    for n in needles:
        assert n in msg, msg
    return msg


def _both_splits_error(root: Path, *needles: str) -> None:
    errors = []
    for split in ("train", "test"):
        try:
            create_dataset("msd", root=root, split=split, test_fraction=0.4)
        except DataError as exc:
            errors.append(str(exc))
    assert errors, "expected a DataError"
    for n in needles:
        assert any(n in e for e in errors), errors


def test_msd_bad_inputs(tmp_path):
    root = _write_msd(tmp_path / "A", "plain")
    _save(root / "labels" / "case_004.nii.gz", np.zeros((9, 7, 5), np.uint8))
    _both_splits_error(root, "labels/case_004.nii.gz has shape (9, 7, 5)", "images/case_004.nii.gz has shape (9, 7, 6)")

    root = _write_msd(tmp_path / "B", "plain")
    _save(root / "labels" / "case_001.nii.gz", np.zeros((9, 7, 6), np.uint8), affine=_affine(origin=(0, 0, 0)))
    _both_splits_error(
        root, "labels/case_001.nii.gz has affine", "images/case_001.nii.gz has affine", "not on the same voxel grid"
    )

    root = _write_msd(tmp_path / "C", "plain")
    p = root / "images" / "case_005.nii.gz"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _both_splits_error(root, "case_005.nii.gz")

    root = _write_msd(tmp_path / "D", "plain")
    (root / "labels" / "case_002.nii.gz").unlink()
    (root / "images" / "case_009.nii.gz").write_bytes((root / "images" / "case_001.nii.gz").read_bytes())
    msg = _expect(root, "2 problems", "case_002.nii.gz: image has no label", "case_009.nii.gz: image has no label")
    assert "images/case_002.nii.gz" in msg

    root = _write_msd(tmp_path / "E", "plain")
    nan = np.ones((9, 7, 6), np.float32)
    nan[0, 0, 0] = np.inf
    _save(root / "images" / "case_003.nii.gz", nan)
    _both_splits_error(root, "case_003.nii.gz contains 1 NaN or infinite voxels")

    root = _write_msd(tmp_path / "F", "json")
    (root / "imagesTr" / "case_004.nii.gz").unlink()
    _expect(root, "case_004.nii.gz: listed in dataset.json (training entry 3) but missing")

    root = _write_msd(tmp_path / "G", "plain")
    _save(root / "images" / "case_001.nii.gz", np.zeros((9, 7, 6, 2), np.float32))
    _both_splits_error(root, "case_001.nii.gz has shape (9, 7, 6, 2)")

    empty = tmp_path / "H"
    empty.mkdir()
    _expect(empty, "holds no MSD volumes")


# --------------------------------------------------------------------------- synthetic DICOM


def _write_slice(
    path: Path,
    pixels: np.ndarray,
    ipp,
    iop,
    pixel_spacing,
    series_uid: str,
    instance: int,
    slope=2.0,
    intercept=-1024.0,
    modality="CT",
    patient_id="P001",
    thickness=2.5,
) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
    ds.PixelSpacing = [f"{v:.4f}" for v in pixel_spacing]
    ds.SliceThickness = f"{thickness:.4f}"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.PixelData = pixels.astype("<i2").tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def make_series(
    folder: Path,
    n=6,
    rows=8,
    cols=7,
    iop=(1, 0, 0, 0, 1, 0),
    pixel_spacing=(0.8, 0.6),
    step=2.5,
    origin=(-10.0, 20.0, 30.0),
    series_uid="1.2.3.4.1",
    skip=(),
    seed=0,
    **kw,
) -> dict:
    """Write a CT series with shuffled, position-free file names; return the expected geometry."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    row, col = np.array(iop[:3], float), np.array(iop[3:], float)
    normal = np.cross(row, col)
    names = rng.permutation(n)
    raws, positions, files = [], [], []
    for k in range(n):
        raw = rng.integers(0, 1500, size=(rows, cols)).astype(np.int16)
        pos = np.array(origin) + k * step * normal
        if k in skip:
            continue
        name = f"IM{names[k]:04d}" + (".dcm" if k % 2 else "")
        _write_slice(folder / name, raw, pos, iop, pixel_spacing, series_uid, instance=k + 1, **kw)
        raws.append(raw)
        positions.append(pos)
        files.append(name)
    slope, intercept = kw.get("slope", 2.0), kw.get("intercept", -1024.0)
    hu = np.stack([(r.astype(np.float32) * slope + intercept).T for r in raws], axis=-1)
    return {"hu": hu, "positions": positions, "row": row, "col": col, "ps": pixel_spacing, "files": files}


def test_dicom_series_geometry(tmp_path):
    iop = (0.6, 0.8, 0.0, 0.0, 0.0, -1.0)  # oblique: rows along (0.6, 0.8, 0), columns downwards
    exp = make_series(tmp_path / "s", iop=iop)
    (tmp_path / "s" / "README.txt").write_text("exported by a viewer")
    with pytest.warns(UserWarning, match=r"skipped 1 file.*README\.txt \(not a DICOM file\)"):
        vol, aff, spacing, meta = read_dicom_series(tmp_path / "s")
    assert vol.shape == (7, 8, 6) and vol.dtype == np.float32
    assert np.array_equal(vol, exp["hu"])  # sorted by position, slope/intercept applied, HU
    assert vol.min() >= -1024 and meta["modality"] == "CT" and meta["rescale"] == (2.0, -1024.0)
    assert spacing == pytest.approx((0.6, 0.8, 2.5))
    for i, j, k in ((0, 0, 0), (3, 5, 4), (6, 7, 5)):
        lps = exp["positions"][k] + i * exp["ps"][1] * exp["row"] + j * exp["ps"][0] * exp["col"]
        ras = aff @ np.array([i, j, k, 1.0])
        assert np.allclose(ras[:3], lps * np.array([-1, -1, 1]), atol=1e-3)
    assert [Path(f).name for f in meta["files"]] == exp["files"]


def test_dicom_to_nifti(tmp_path):
    make_series(tmp_path / "s")
    vol, aff, _, _ = read_dicom_series(tmp_path / "s")
    labels = (vol > 0).astype(np.uint8)
    out = write_nifti_like(labels, tmp_path / "s", tmp_path / "out.nii.gz")
    back = nib.load(out)
    assert np.allclose(back.affine, aff, atol=1e-4) and back.shape == vol.shape
    assert int(back.header["qform_code"]) == int(back.header["sform_code"]) == 1
    assert np.array_equal(np.asanyarray(back.dataobj), labels)
    assert back.header.get_zooms() == pytest.approx((0.6, 0.8, 2.5))
    with pytest.raises(ConfigError, match="inside the DICOM series folder"):
        write_nifti_like(labels, tmp_path / "s", tmp_path / "s" / "seg.nii.gz")


def test_dicom_bad_series(tmp_path):
    make_series(tmp_path / "gap", n=7, skip=(3,))
    with pytest.raises(DataError, match=r"gap is missing a slice: the gap between IM\d{4}.* and IM\d{4}.* is 5 mm"):
        read_dicom_series(tmp_path / "gap")
    make_series(tmp_path / "mixed", n=3, series_uid="1.2.3.4.1")
    make_series(tmp_path / "mixed2", n=3, series_uid="1.2.3.4.2", seed=5)
    for p in (tmp_path / "mixed2").iterdir():
        p.rename(tmp_path / "mixed" / ("B" + p.name))
    with pytest.raises(DataError, match=r"mixes 2 series \(1\.2\.3\.4\.1: 3 files.*1\.2\.3\.4\.2: 3 files"):
        read_dicom_series(tmp_path / "mixed")
    make_series(tmp_path / "trunc", n=4)
    victim = sorted((tmp_path / "trunc").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-40])
    with pytest.raises(DataError, match=victim.name):
        read_dicom_series(tmp_path / "trunc")
    make_series(tmp_path / "short", n=4)
    victim = sorted((tmp_path / "short").iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:300])  # cut inside the header: pydicom reads it without error
    with pytest.raises(DataError, match=rf"{victim.name} is an image \(CT Image Storage\) without pixel data"):
        read_dicom_series(tmp_path / "short")
    with pytest.raises(DataError, match="is a DICOM file, not NIfTI"):
        read_nifti(sorted((tmp_path / "gap").iterdir())[0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty is empty"):
        read_dicom_series(tmp_path / "empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.dcm").write_text("not dicom")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match=r"holds no DICOM image .*a\.dcm \(not a DICOM file\)"):
            read_dicom_series(tmp_path / "text")
    make_series(tmp_path / "sizes", n=3)
    make_series(tmp_path / "other", n=3, rows=9, origin=(-10.0, 20.0, 40.0))
    for p in (tmp_path / "other").iterdir():
        p.rename(tmp_path / "sizes" / ("B" + p.name))
    with pytest.raises(DataError, match=r"is 8x7 \(rows x columns\) but BIM\d+(\.dcm)? is 9x7"):
        read_dicom_series(tmp_path / "sizes")
    make_series(tmp_path / "orient", n=3)
    make_series(tmp_path / "o2", n=3, iop=(0, 1, 0, 0, 0, -1), origin=(-10.0, 20.0, 40.0))
    for p in (tmp_path / "o2").iterdir():
        p.rename(tmp_path / "orient" / ("B" + p.name))
    with pytest.raises(DataError, match=r"IM\d{4}(\.dcm)? has ImageOrientationPatient .* but BIM\d{4}(\.dcm)? has"):
        read_dicom_series(tmp_path / "orient")
    with pytest.raises(DataError, match="does not exist"):
        read_dicom_series(tmp_path / "nowhere")


def _dicom_root(tmp_path: Path) -> Path:
    root = tmp_path / "DICOM"
    for s in range(4):
        exp = make_series(
            root / f"series{s}",
            n=5,
            series_uid=f"1.2.3.{s}",
            patient_id=f"P{s // 2}",
            seed=s,
            origin=(0.0, 0.0, 10.0 * s),
        )
        lab = (exp["hu"] > 900).astype(np.uint8)
        aff = read_dicom_series(root / f"series{s}")[1]
        if s == 1:  # same grid, J axis flipped (as another converter may write it)
            flip = np.eye(4)
            flip[1, 1], flip[1, 3] = -1, lab.shape[1] - 1
            _save(root / "labels" / f"series{s}.nii.gz", lab[:, ::-1, :].copy(), affine=aff @ flip)
        else:
            _save(root / "labels" / f"series{s}.nii.gz", lab, affine=aff)
    make_series(root / "unlabelled", n=3, series_uid="1.2.3.9", patient_id="P9")
    return root


def test_dicom_dataset(tmp_path):
    root = _dicom_root(tmp_path)
    inv = DicomDataset.inventory(root, test_fraction=0.5)
    assert [p.severity for p in inv.problems] == ["warning"] and "unlabelled" in str(inv.problems[0].path)
    assert sorted(r.patient for r in inv.records) == ["patient P0", "patient P0", "patient P1", "patient P1"]
    train = create_dataset("dicom", root=root, split="train", test_fraction=0.5)
    test = create_dataset("dicom", root=root, split="test", test_fraction=0.5)
    assert len(train) == len(test) == 10 and not set(train.groups) & set(test.groups)
    assert train.num_classes == 2 and train[0].image.shape == (1, 7, 8) and train[0].id.endswith(":z000")
    c = (train if "series1:z002" in train else test).get("series1:z002")
    hu = read_dicom_series(root / "series1")[0]
    assert np.array_equal(c.mask, (hu[:, :, 2] > 900).astype(np.uint8))  # flipped label reoriented
    assert np.allclose(c.image[0], np.clip((hu[:, :, 2] + 160) / 400, 0, 1), atol=1e-6)  # CT -> HU window
    by_series = DicomDataset.inventory(root, test_fraction=0.5, group_by="series")
    assert sorted(r.patient for r in by_series.records) == [f"series{s}" for s in range(4)]


def test_dicom_dataset_bad_label(tmp_path):
    root = _dicom_root(tmp_path)
    _save(root / "labels" / "series2.nii.gz", np.zeros((7, 8, 5), np.uint8))  # identity affine: other grid
    errors = []
    for split in ("train", "test"):
        try:
            create_dataset("dicom", root=root, split=split, test_fraction=0.5)
        except DataError as exc:
            errors.append(str(exc))
    assert any(
        "series2.nii.gz (shape (7, 8, 5)" in e and "is not on the voxel grid of DICOM series" in e for e in errors
    )
    (root / "labels" / "series2.nii.gz").unlink()
    _save(root / "labels" / "ghost.nii.gz", np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(DataError, match=r"ghost\.nii\.gz: label has no series folder"):
        create_dataset("dicom", root=root, split="train", test_fraction=0.5)


# --------------------------------------------------------------------------- volume prediction


def _threshold_fn(calls: list):
    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        mid = x[:, x.shape[1] // 2]
        fg = (mid > 0.5).float()
        return torch.stack([1 - fg, fg], dim=1)  # (N, 2, H, W) probabilities

    return fn


def test_predict_volume_nifti(tmp_path):
    rng = np.random.default_rng(4)
    i, j, k = np.meshgrid(np.arange(9), np.arange(7), np.arange(6), indexing="ij")
    img = (20 * i + 10 * j + 5 * k + rng.normal(0, 1, size=(9, 7, 6))).astype(np.float32)  # smooth ramp
    src = _save(tmp_path / "in.nii.gz", img)
    calls: list = []
    res = predict_volume(_threshold_fn(calls), src, tmp_path / "pred.nii.gz", context=1, batch_size=4)
    want = (normalize_intensity(img, "percentile") > 0.5).astype(np.uint8)
    assert np.array_equal(res.labels, want) and res.slices == 6
    assert calls == [(4, 3, 9, 7), (2, 3, 9, 7)]
    back = nib.load(res.path)
    assert np.array_equal(np.asanyarray(back.dataobj), want) and back.get_data_dtype() == np.uint8
    assert np.allclose(back.affine, nib.load(src).affine)
    # along axis 0, label-map output, resized input
    seen: list = []

    def labels_fn(x):
        seen.append(tuple(x.shape))
        return (x[:, 0] > 0.5).to(torch.int64)

    res0 = predict_volume(labels_fn, src, tmp_path / "p0.nii", slice_axis=0, size=(16, 16))
    assert res0.labels.shape == (9, 7, 6) and seen[0] == (9, 1, 16, 16)
    assert float((res0.labels == want).mean()) > 0.9  # resized there and back: edges may move
    one = predict_volume(lambda x: x[:, :1], src, tmp_path / "p1.nii.gz", threshold=0.5)
    assert np.array_equal(one.labels, want)
    with pytest.raises(ConfigError, match="reference image itself"):
        predict_volume(lambda x: x[:, :1], src, src)
    with pytest.raises(ValueError, match=r"expected \(N, K, H, W\)"):
        predict_volume(lambda x: x[:, 0, 0], src, tmp_path / "bad.nii.gz")


def test_predict_volume_dicom(tmp_path):
    exp = make_series(tmp_path / "ct", n=5)
    res = predict_volume(_threshold_fn([]), tmp_path / "ct", tmp_path / "ct_pred.nii.gz")
    hu = exp["hu"]
    assert res.modality == "CT" and res.intensity[0] == "hu_window"
    assert np.array_equal(res.labels, ((hu + 160) / 400 > 0.5).astype(np.uint8))
    back = nib.load(res.path)
    assert np.allclose(back.affine, read_dicom_series(tmp_path / "ct")[1], atol=1e-4)
    assert read_volume(res.path).array.shape == hu.shape
