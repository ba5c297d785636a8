"""`medseg data check`: the summary on a good folder, one line per planted defect, the cache,
and training refusing a dataset with errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data import _snapshot, _write_drive

from medseg.cli import main
from medseg.config import load_config
from medseg.data.check import check_cached, check_dataset
from medseg.errors import DataError
from medseg.workflows.train import train


@pytest.fixture
def fake_drive(tmp_path):
    root = _write_drive(tmp_path / "DRIVE", ids=("21", "22", "23"))
    _write_drive(root, "test", ids=("01", "02"))
    return root


def test_clean_folder_summary(fake_drive, capsys):
    assert main(["data", "check", "--dataset", "drive", "--data-root", str(fake_drive)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    row = next(line for line in lines if line.startswith("train"))
    assert "3/3" in row and "30x20" in row and "TIFF RGB" in row and "GIF P" in row and "{0,1}" in row
    assert next(line for line in lines if line.startswith("test")).split()[1] == "2/2"
    assert "OK: 0 errors" in out
    report = check_dataset("drive", fake_drive)
    train_split = report.splits[0]
    # each fake mask has 2 full rows of 30 px foreground out of 20x30
    assert train_split.foreground == pytest.approx({"mean": 0.1, "min": 0.1, "max": 0.1})
    assert train_split.class_fractions == pytest.approx({"0": 0.9, "1": 0.1})


def test_each_planted_defect_is_one_line(fake_drive, capsys, tmp_path):
    tr = fake_drive / "training"
    (tr / "1st_manual" / "21_manual1.gif").unlink()  # image without mask
    (tr / "images" / "22_training.tif").write_bytes(b"not a tiff at all")  # non-image with image extension
    Image.fromarray(np.zeros((10, 10), np.uint8), "L").save(tr / "mask" / "23_training_mask.gif")  # size mismatch
    Image.fromarray(np.zeros((20, 30), np.uint8), "L").save(fake_drive / "test" / "1st_manual" / "09_manual1.gif")
    before = _snapshot(fake_drive)
    out_json = tmp_path / "report.json"
    rc = main(["data", "check", "--dataset", "drive", "--data-root", str(fake_drive), "--json", str(out_json)])
    out = capsys.readouterr().out
    assert rc == 1
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 4, out
    assert any("21_training.tif" in e and "no vessel mask" in e for e in errors)
    assert any("22_training.tif" in e and "not an image" in e for e in errors)
    assert any("23_training_mask.gif" in e and "10x10 but image" in e for e in errors)
    assert any("09_manual1.gif" in e and "has no image" in e for e in errors)
    assert "FAILED: 4 errors" in out
    assert json.loads(out_json.read_text())["ok"] is False
    assert _snapshot(fake_drive) == before  # the check reads, never writes


def test_missing_root_and_unknown_dataset(tmp_path, capsys):
    assert main(["data", "check", "--dataset", "drive", "--data-root", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().out
    assert main(["data", "check", "--dataset", "driv", "--data-root", str(tmp_path)]) == 2
    assert "did you mean 'drive'" in capsys.readouterr().err
    assert main(["data", "check", "--dataset", "drive", "--set", "annotatr=2"]) == 2
    assert "did you mean 'annotator'" in capsys.readouterr().err


def test_cache_follows_file_changes(fake_drive):
    r1, cached1 = check_cached("drive", fake_drive)
    r2, cached2 = check_cached("drive", fake_drive)
    assert (cached1, cached2) == (False, True) and r2.to_dict() == r1.to_dict()
    # damaging a file changes its size/mtime: the cache is not reused
    (fake_drive / "training" / "images" / "21_training.tif").write_bytes(b"broken")
    r3, cached3 = check_cached("drive", fake_drive)
    assert not cached3 and not r3.ok


def test_training_refuses_a_dataset_with_errors(fake_drive, tmp_path):
    (fake_drive / "training" / "mask" / "22_training_mask.gif").unlink()
    cfg = load_config(
        None,
        [
            "data.dataset=drive",
            f"data.root={fake_drive}",
            "data.args={}",
            "model.args={base_channels: 4, depth: 2}",
            "data.patch_size=16",
            "train.max_steps=1",
            "eval.roi_size=16",
        ],
    )
    with pytest.raises(DataError, match=r"22_training.tif.*no FOV mask(.|\n)*medseg data check"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


# --------------------------------------------------------------------------- the real folders

REAL = {  # dataset -> (folder under ../shared/data, images per split)
    "drive": ("DRIVE", {"train": 20, "test": 20}),
    "chase_db1": ("CHASE_DB1", {"train": 20, "test": 8}),
    "rossa": ("ROSSA", {"train": 100, "val": 100, "test": 100}),
    "octa500": ("OCTA500_3M", {"test": 50}),
    "kvasir_seg": ("Kvasir-SEG", {"train": 880, "test": 120}),
    "cvc_clinicdb": ("CVC-ClinicDB", {"train": 25, "test": 25}),
    "msd": ("Hippocampus_MSD_Task04", {"train": 208, "test": 52}),
}


def _real(folder: str) -> Path:
    from medseg.data.base import data_root

    root = data_root()
    if root is None or not (root / folder).is_dir():
        pytest.skip(f"{folder} is not in ../shared/data (set $MEDSEG_DATA to the folder holding it)")
    return root / folder


@pytest.mark.parametrize("name", list(REAL))
def test_check_passes_on_every_real_folder(name):
    folder, counts = REAL[name]
    report = check_dataset(name, _real(folder))
    assert report.ok, report.text()
    assert {s.split: s.records for s in report.splits} == counts
    assert all(s.read_ok == s.records for s in report.splits)
    assert not [p for p in report.warnings if "empty" in p.message or "all foreground" in p.message] or name == "msd"


def test_check_reports_each_defect_planted_in_a_copy_of_real_data(tmp_path, capsys):
    import shutil

    src = _real("ROSSA")
    root = tmp_path / "ROSSA"
    for split, ids in (("train_manual", range(1, 6)), ("val", range(101, 103)), ("test", range(201, 203))):
        for sub in ("image", "label"):
            (root / split / sub).mkdir(parents=True)
            for i in ids:
                shutil.copyfile(src / split / sub / f"{i}.png", root / split / sub / f"{i}.png")
    assert check_dataset("rossa", root).ok
    planted = {
        "1.png": lambda: (root / "train_manual/image/1.png").write_bytes(
            (root / "train_manual/image/1.png").read_bytes()[:500]
        ),
        "2.png": lambda: (root / "train_manual/label/2.png").unlink(),
        "3.png": lambda: Image.fromarray(np.zeros((100, 100), np.uint8)).save(root / "train_manual/label/3.png"),
        "4.png": lambda: (root / "train_manual/image/4.png").write_text("not a png"),
        "102.png": lambda: Image.fromarray(
            np.tile(np.arange(320, dtype=np.uint16) % 256, (320, 1)).astype(np.uint8)
        ).save(root / "val/label/102.png"),
        "999.png": lambda: shutil.copyfile(root / "test/label/201.png", root / "test/label/999.png"),
    }
    for plant in planted.values():
        plant()
    assert main(["data", "check", "--dataset", "rossa", "--data-root", str(root)]) == 1
    errors = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error: ")]
    for name in planted:
        assert sum(f"/{name}" in e for e in errors) >= 1, (name, errors)
    assert len(errors) == len(planted), errors
