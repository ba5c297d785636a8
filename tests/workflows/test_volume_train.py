"""2.5-D training on NIfTI volumes end to end: train on slices with adjacent-slice channels,
then `medseg predict` a volume back into NIfTI with the source's affine and header."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.cli import main


def _write_msd(
    root: Path, n: int = 6, shape=(24, 24, 8), radii=(5.0, 6.0, 2.5), centres=((8, 8, 3), (16, 16, 5))
) -> Path:
    """Synthetic MRI-like volumes in the Decathlon layout: a bright ellipsoid = label 1 (semi-axes
    ``radii`` voxels, centre uniform in the box ``centres``)."""
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 30.0]
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    for i in range(n):
        c = rng.uniform(*centres)
        r = radii
        lab = (((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1).astype(np.uint8)
        img = (200.0 + 600.0 * lab + rng.normal(0, 40, shape)).astype(np.float32)
        for arr, folder in ((img, "imagesTr"), (lab, "labelsTr")):
            nii = nib.Nifti1Image(arr, affine)
            nii.header.set_qform(affine, code=1)
            nii.header.set_sform(affine, code=1)
            nib.save(nii, root / folder / f"vol_{i:03d}.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "name": "synthetic",
                "modality": {"0": "MRI"},
                "labels": {"0": "background", "1": "blob"},
                "training": [
                    {"image": f"./imagesTr/vol_{i:03d}.nii.gz", "label": f"./labelsTr/vol_{i:03d}.nii.gz"}
                    for i in range(n)
                ],
            }
        )
    )
    return root


def _train_argv(root: Path, run: Path, *overrides: str) -> list[str]:
    """``medseg train`` of a tiny 2.5-D U-Net on the synthetic volumes, plus ``overrides``."""
    keys = [
        "data.dataset=msd",
        f"data.root={root}",
        "data.args={classes: binary, context: 1, test_fraction: 0.34}",
        "data.patch_size=16",
        "data.samples_per_epoch=32",
        "data.val_fraction=0.25",
        "data.augment={}",
        "train.batch_size=8",
        "train.progress_bar=false",
        "model.name=unet",
        "model.args={base_channels: 8, depth: 2}",
        "eval.roi_size=16",
        "optim.lr=0.01",
        *overrides,
    ]
    return ["train", "--out", str(run), "--max-epochs", "4", *[a for k in keys for a in ("--set", k)]]


@pytest.mark.slow
def test_train_on_25d_slices_and_predict_nifti(tmp_path, capsys):
    root = _write_msd(tmp_path / "msd")
    run = tmp_path / "run"
    # per-slice pixel metrics here; the volume protocol is tested below
    rc = main(_train_argv(root, run, "eval.figures=false", "eval.protocol=vessel"))
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "data check of msd (ran): 0 errors" in out
    splits = json.loads((run / "splits.json").read_text())
    vols = lambda ids: {i.split(":")[0] for i in ids}  # noqa: E731
    assert not vols(splits["train"]) & vols(splits["validation"])  # validation carved by patient
    assert (run / "data_check.json").is_file()
    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    assert metrics["n_images"] == 2 * 8  # 2 test volumes x 8 slices
    assert metrics["fov"]["per_image_mean"]["dice"] > 0.5  # an easy task: it learned something
    # predict a volume: NIfTI out, with the source's affine, header and shape
    src = root / "imagesTr" / "vol_000.nii.gz"
    pred_dir = tmp_path / "pred"
    assert main(["predict", "-m", str(run / "checkpoints" / "best.ckpt"), "-i", str(src), "-o", str(pred_dir)]) == 0
    seg = nib.load(pred_dir / "vol_000_seg.nii.gz")
    ref = nib.load(src)
    assert seg.shape == ref.shape and np.allclose(seg.affine, ref.affine)
    assert int(seg.header["qform_code"]) == 1 and np.allclose(seg.header.get_zooms(), ref.header.get_zooms())
    lab = np.asarray(nib.load(root / "labelsTr" / "vol_000.nii.gz").dataobj)
    pred = np.asarray(seg.dataobj)
    assert set(np.unique(pred)) <= {0, 1}
    dice = 2 * (pred & lab).sum() / (pred.sum() + lab.sum())
    assert dice > 0.5


@pytest.mark.slow
def test_volume_protocol_scores_volumes_in_mm_and_predictions_score_the_same(tmp_path, capsys):
    """Default protocol of msd data: per volume, Dice / HD95 / NSD in mm from the header's
    spacing; `medseg predict` + `medseg evaluate --predictions` give the run's numbers."""
    root = _write_msd(tmp_path / "msd")
    run = tmp_path / "run"
    rc = main(_train_argv(root, run, "eval.nsd_tolerance_mm=2.0"))
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "volume protocol: HD95 in mm, NSD at 2.0 mm" in out and "FOV" not in out
    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    assert metrics["protocol"] == "volume" and metrics["n_cases"] == 2 and metrics["classes"] == ["blob"]
    assert metrics["nsd_tolerance_mm"] == 2.0
    blob = metrics["mean"]["blob"]
    assert blob["dice"] > 0.5 and 0.0 <= blob["hd95"] < 20.0 and 0.0 < blob["nsd"] <= 1.0
    rows = (run / "eval" / "test" / "per_case.csv").read_text().splitlines()
    assert rows[0].startswith("id,blob_dice,blob_hd95,blob_hd95_pooled,blob_nsd") and len(rows) == 3
    assert (run / "report.html").is_file()

    test_ids = sorted(r.split(",")[0] for r in rows[1:])
    src = tmp_path / "test_images"
    src.mkdir()
    for vid in test_ids:
        (src / f"{vid}.nii.gz").symlink_to(root / "imagesTr" / f"{vid}.nii.gz")
    pred = tmp_path / "pred"
    assert (
        main(
            ["predict", "-m", str(run / "checkpoints" / "best.ckpt"), "-i", str(src), "-o", str(pred), "--no-progress"]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                "--predictions",
                str(pred),
                "--dataset",
                "msd",
                "--data-root",
                str(root),
                "--set",
                "classes=binary",
                "--set",
                "context=1",
                "--set",
                "test_fraction=0.34",
                "--eval-set",
                "nsd_tolerance_mm=2.0",
                "--no-progress",
            ]
        )
        == 0
    )
    again = json.loads((pred / "eval-test" / "metrics.json").read_text())
    for key in ("dice", "hd95", "hd95_pooled", "nsd"):
        assert again["mean"]["blob"][key] == pytest.approx(blob[key], abs=1e-6), key
