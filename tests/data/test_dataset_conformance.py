"""Every registered dataset passes :class:`dataset_conformance.DatasetConformance`: its layout is
found, every split reads with the expected counts, shapes and dtypes, ``medseg data check``
reports no problem, and the folder is left untouched.

Each class writes a tiny synthetic folder in the dataset's released layout with the writers of
the dataset's own test file (random pixels, never real dataset files); no test here needs
``../shared/data``. ``test_every_registered_dataset_has_a_conformance_class`` fails for a
registered dataset without a class here, so a new dataset plugin cannot skip the checks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from dataset_conformance import (
    DatasetConformance,
    conformance_classes,
    registered_names,
    snapshot_diff,
    tree_snapshot,
)
from test_data import _write_drive
from test_folder_dataset import H as FOLDER_H
from test_folder_dataset import W as FOLDER_W
from test_folder_dataset import _write as _write_folder
from test_octa_datasets import HW1, make_rose1, make_rose2, make_rossa, make_simple
from test_polyp_datasets import _clinic_like, _kvasir_like
from test_retina_datasets import _write_chase, _write_stare
from test_volumes import _save as _save_nifti
from test_volumes import _write_msd, make_series

from medseg.data import create_dataset
from medseg.data.check import check_dataset
from medseg.data.io.dicom import read_dicom_series
from medseg.data.records import shipped_split

# --------------------------------------------------------------------------- retina


def write_drive(base: Path) -> Path:
    root = base / "DRIVE"
    _write_drive(root, "training", ids=("21", "22", "23"), hw=(32, 40))
    _write_drive(root, "test", ids=("01", "02"), hw=(32, 40))  # with 2nd_manual/, as released
    return root


class TestDriveConformance(DatasetConformance):
    """DRIVE/{training,test}/{images,1st_manual,mask}: 3 + 2 RGB TIFFs, GIF vessel and FOV masks."""

    name = "drive"
    counts = {"train": 3, "test": 2}
    image_shape = (1, 32, 40)  # default channels="green"

    def make_layout(self, tmp_path):
        return write_drive(tmp_path)


class TestStareConformance(DatasetConformance):
    """STARE/{stare-images,labels-ah,labels-vk}: all 20 labelled ids (fewer is a data-check
    warning), half gzipped, half plain PPM; default 10/10 split, computed FOV."""

    name = "stare"
    counts = {"train": 10, "test": 10}
    image_shape = (1, 32, 40)

    def make_layout(self, tmp_path):
        root = tmp_path / "STARE"
        _write_stare(root, hw=(32, 40), unlabelled=())  # unlabelled extras would be a warning
        return root


class TestChaseDB1Conformance(DatasetConformance):
    """CHASE_DB1 flat folder: Image_XXY.jpg with _1stHO/_2ndHO PNGs; children 01-02 train
    (3 images), child 11 test (2); computed FOV."""

    name = "chase_db1"
    counts = {"train": 3, "test": 2}
    image_shape = (1, 32, 40)

    def make_layout(self, tmp_path):
        return _write_chase(
            tmp_path / "CHASE_DB1", ids=("Image_01L", "Image_01R", "Image_02L", "Image_11L", "Image_11R"), hw=(32, 40)
        )


# --------------------------------------------------------------------------- OCTA


class TestRose1Conformance(DatasetConformance):
    """ROSE-1/{SVC,DVC,SVC_DVC}/{train,test}/{img,gt[,thick_gt,thin_gt]}: 3 + 2 TIFFs per layer
    (default layer SVC, manual centerlines from thin_gt)."""

    name = "rose1"
    counts = {"train": 3, "test": 2}
    image_shape = (1, *HW1)  # 40 x 44

    def make_layout(self, tmp_path):
        make_rose1(tmp_path)
        return tmp_path / "ROSE-1"


class TestRose2Conformance(DatasetConformance):
    """ROSE-2/{train,test}/{original,gt}: 2 + 1 PNGs of 40x44 with 1-px centerline labels,
    resized while reading to size [32, 40] (centerline-preserving resize)."""

    name = "rose2"
    options = {"size": [32, 40]}
    counts = {"train": 2, "test": 1}
    image_shape = (1, 32, 40)

    def make_layout(self, tmp_path):
        make_rose2(tmp_path, hw=(40, 44))
        return tmp_path / "ROSE-2"


class TestRossaConformance(DatasetConformance):
    """ROSSA/{train_manual,val,test}/{image,label}/<n>.png: 2 + 1 + 2 grey PNGs, 32x32."""

    name = "rossa"
    counts = {"train": 2, "val": 1, "test": 2}
    image_shape = (1, 32, 32)

    def make_layout(self, tmp_path):
        make_rossa(tmp_path)
        return tmp_path / "ROSSA"


class TestOcta500Conformance(DatasetConformance):
    """OCTA500_3M/{train,val,test}/{image,label}/<subject>.bmp: 2 + 1 + 2 BMPs (all three split
    folders: a missing one is a data-check warning)."""

    name = "octa500"
    counts = {"train": 2, "val": 1, "test": 2}
    image_shape = (1, 32, 40)

    def make_layout(self, tmp_path):
        make_simple(
            tmp_path,
            "OCTA500_3M",
            {"train": ["10301", "10302"], "val": ["10441"], "test": ["10451", "10452"]},
            ".bmp",
            hw=(32, 40),
        )
        return tmp_path / "OCTA500_3M"


# --------------------------------------------------------------------------- polyp


class TestKvasirSegConformance(DatasetConformance):
    """Kvasir-SEG/{images,masks}/<id>.jpg with the 1,000 ids of the release: the shipped
    published split needs every one of them (a partial copy is an error), so each is a tiny
    24x32 JPEG frame with a noisy JPEG mask; size [24, 32] keeps the native size (no resize)."""

    name = "kvasir_seg"
    options = {"size": [24, 32]}
    counts = {"train": 880, "test": 120}
    image_shape = (3, 24, 32)

    def make_layout(self, tmp_path):
        spec = shipped_split("kvasir_seg_published")
        return _kvasir_like(tmp_path, spec["train"] + spec["test"], np.random.default_rng(0))


class TestCvcClinicDbConformance(DatasetConformance):
    """CVC-ClinicDB/{images,masks}/<frame>.tif: 2 frames of each of sequences 1-5 (RGB TIFFs with
    the release's MinIsBlack header quirk, masks with stray grey values); the seeded split by
    sequence puts 1 of the 5 sequences in test; resized to [32, 40]."""

    name = "cvc_clinicdb"
    options = {"size": [32, 40]}
    counts = {"train": 8, "test": 2}
    image_shape = (3, 32, 40)

    def make_layout(self, tmp_path):
        return _clinic_like(tmp_path, [1, 2, 26, 27, 51, 52, 68, 69, 79, 80], np.random.default_rng(0))


# --------------------------------------------------------------------------- generic folder


class TestFolderConformance(DatasetConformance):
    """folder, split-subfolder layout <root>/{train,test}/{images,masks}: 3 + 2 grey PNGs with
    4-class label maps (labels="multiclass")."""

    name = "folder"
    options = {"labels": "multiclass", "num_classes": 4}
    counts = {"train": 3, "test": 2}
    image_shape = (1, FOLDER_H, FOLDER_W)  # 20 x 28
    num_classes = 4
    marks_root = False  # any folder may hold a folder dataset

    def make_layout(self, tmp_path):
        rng = np.random.default_rng(0)
        root = tmp_path / "data"
        _write_folder(root / "train", ["a1", "a2", "a3"], rng, mask="multiclass")
        _write_folder(root / "test", ["b1", "b2"], rng, mask="multiclass")
        return root


class TestFolderFlatConformance(DatasetConformance):
    """folder, flat layout <root>/{images,masks}: 5 grey PNGs with 0/255 masks, seeded split
    (test_fraction 0.2: 4 train, 1 test)."""

    name = "folder"
    counts = {"train": 4, "test": 1}
    image_shape = (1, FOLDER_H, FOLDER_W)
    marks_root = False

    def make_layout(self, tmp_path):
        root = tmp_path / "flat"
        _write_folder(root, [f"img{i}" for i in range(5)], np.random.default_rng(1))
        return root


# --------------------------------------------------------------------------- volumes


class TestMsdConformance(DatasetConformance):
    """MSD layout dataset.json + imagesTr/ + labelsTr/: 5 MR volumes 9x7x6 with labels 0..2 (one
    without foreground, one stored as float32), sliced along axis 2: 6 slices per volume; the
    seeded patient split puts 1 volume in test."""

    name = "msd"
    counts = {"train": 24, "test": 6}
    image_shape = (1, 9, 7)
    num_classes = 3  # dataset.json "labels"

    def make_layout(self, tmp_path):
        return _write_msd(tmp_path / "Hippocampus_MSD_Task04")


class TestDicomConformance(DatasetConformance):
    """<root>/<series>/ DICOM CT slices + <root>/labels/<series>.nii.gz: 3 series of 4 slices,
    12 rows x 10 columns, one patient each (medseg's array order: (columns, rows, slices), so a
    slice is 10 x 12); the seeded patient split puts 1 series in test."""

    name = "dicom"
    counts = {"train": 8, "test": 4}
    image_shape = (1, 10, 12)

    def make_layout(self, tmp_path):
        root = tmp_path / "DICOM"
        for s in range(3):
            series = root / f"series{s}"
            make_series(
                series,
                n=4,
                rows=12,
                cols=10,
                series_uid=f"1.2.3.{s}",
                patient_id=f"P{s}",
                seed=s,
                origin=(0.0, 0.0, 10.0 * s),
            )
            hu, affine, _, _ = read_dicom_series(series)
            _save_nifti(root / "labels" / f"series{s}.nii.gz", (hu > 900).astype(np.uint8), affine=affine)
        return root


# --------------------------------------------------------------------------- generated


class TestSyntheticVesselsConformance(DatasetConformance):
    """synthetic_vessels: generated, no files (make_layout returns None; the file-specific checks
    skip, and data check must refuse it)."""

    name = "synthetic_vessels"
    options = {"n_images": 2, "size": (32, 40)}
    counts = {"train": 2, "test": 2}
    image_shape = (1, 32, 40)

    def make_layout(self, tmp_path):
        return None


# --------------------------------------------------------------------------- completeness


def test_every_registered_dataset_has_a_conformance_class():
    names = set(registered_names())
    covered = {c.name for c in conformance_classes()}
    missing = sorted(names - covered)
    assert not missing, (
        f"registered datasets without a DatasetConformance subclass: {', '.join(missing)}; add a "
        "Test<Name>Conformance(DatasetConformance) to tests/data/test_dataset_conformance.py (see "
        "tests/data/dataset_conformance.py)"
    )
    unknown = sorted(covered - names)
    assert not unknown, f"DatasetConformance subclasses name unregistered datasets: {', '.join(unknown)}"
    assert len(names) >= 13


# --------------------------------------------------------------------------- the checks can fail


@pytest.fixture
def drive_layout(tmp_path):
    root = write_drive(tmp_path)
    return tmp_path, root, tree_snapshot(tmp_path)


def _loaded(root: Path) -> dict:
    return {s: create_dataset("drive", root=root, split=s) for s in ("train", "test")}


def test_wrong_count_shape_or_class_count_fails(drive_layout):
    _, root, _ = drive_layout
    loaded = _loaded(root)
    TestDriveConformance().test_read(drive_layout, loaded)  # the right expectations pass

    class _WrongCount(TestDriveConformance):
        counts = {"train": 4, "test": 2}

    class _WrongShape(TestDriveConformance):
        image_shape = (3, 32, 40)

    class _WrongClasses(TestDriveConformance):
        num_classes = 3

    class _MissingSplit(TestDriveConformance):
        counts = {"train": 3}

    for bad in (_WrongCount, _WrongShape, _WrongClasses, _MissingSplit):
        with pytest.raises(AssertionError):
            bad().test_read(drive_layout, {s: loaded[s] for s in bad.counts})


def test_data_check_problem_fails(drive_layout):
    _, root, _ = drive_layout
    (root / "test" / "1st_manual" / "02_manual1.gif").unlink()  # an image without its mask
    with pytest.raises(AssertionError, match="no vessel mask"):
        TestDriveConformance().test_data_check(drive_layout, check_dataset("drive", root))


def test_snapshot_sees_every_change(drive_layout):
    base, root, before = drive_layout
    inst = TestDriveConformance()
    loaded = _loaded(root)
    report = check_dataset("drive", root)
    inst.test_folder_untouched(drive_layout, loaded, report)  # reading changed nothing
    gif = root / "training" / "mask" / "21_training_mask.gif"
    st, original = gif.stat(), gif.read_bytes()
    changed = bytearray(original)
    changed[-2] ^= 1
    gif.write_bytes(bytes(changed))  # same size, same mtime (restored below), other bytes
    os.utime(gif, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "modified: DRIVE/training/mask/21_training_mask.gif" in snapshot_diff(before, tree_snapshot(base))
    gif.write_bytes(original)  # the original bytes back ...
    assert tree_snapshot(base) != before  # ... but a new mtime
    os.utime(gif, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert tree_snapshot(base) == before
    (root / ".medseg-cache").mkdir()  # a new (hidden, empty) folder
    assert snapshot_diff(before, tree_snapshot(base)) == "created: DRIVE/.medseg-cache"
    with pytest.raises(AssertionError, match="created: DRIVE/.medseg-cache"):
        inst.test_folder_untouched(drive_layout, loaded, report)
    (root / ".medseg-cache").rmdir()
    (base / "index.json").write_text("{}")  # beside the dataset folder counts too
    assert snapshot_diff(before, tree_snapshot(base)) == "created: index.json"
