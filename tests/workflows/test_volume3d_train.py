"""The 3-D training path end to end: whole volumes (``data.args.spatial_dims: 3``), 3-D patches,
a 3-D network, 3-D sliding-window validation and evaluation with the volume protocol per case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_volume_train import _write_msd

from medseg.cli import main

HIPPO = Path(__file__).resolve().parents[3] / "shared" / "data" / "Hippocampus_MSD_Task04"


def _argv(root: Path, run: Path, epochs: int, *overrides: str) -> list[str]:
    keys = [
        "data.dataset=msd",
        f"data.root={root}",
        "data.patch_size=16",
        "data.val_fraction=0.25",
        "data.foreground_prob=0.7",
        "data.augment={flip_prob: 0.5, rot90_prob: 0.5, rotate_prob: 0.0, elastic_prob: 0.0}",
        "train.batch_size=4",
        "train.progress_bar=false",
        "model.name=unet3d",
        "model.args={features: [4, 4, 8, 8, 16, 4]}",
        "eval.roi_size=16",
        "eval.overlap=0.25",
        "eval.figures=false",
        "eval.protocol=volume",
        "optim.lr=0.01",
        "loss.name=ce_dice",
        *overrides,
    ]
    return ["train", "--out", str(run), "--max-epochs", str(epochs), *[a for k in keys for a in ("--set", k)]]


@pytest.mark.slow
def test_3d_unet_trains_on_synthetic_volumes_and_evaluates_per_volume(tmp_path, capsys):
    # one ellipsoid of about 7% of each 32^3 volume
    root = _write_msd(tmp_path / "msd", n=6, shape=(32, 32, 32), radii=(8, 9, 7), centres=((12, 12, 12), (20, 20, 20)))
    run = tmp_path / "run"
    args = "data.args={spatial_dims: 3, classes: binary, test_fraction: 0.34}"
    rc = main(_argv(root, run, 20, args, "data.samples_per_epoch=16", "data.patch_size=32", "eval.roi_size=32"))
    assert rc == 0, capsys.readouterr().err
    splits = json.loads((run / "splits.json").read_text())
    assert all(":" not in i for ids in splits.values() for i in ids)  # volume ids, not slice ids
    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    assert metrics["protocol"] == "volume" and metrics["network"] == "unet3d"
    assert metrics["n_cases"] == 2 and metrics["classes"] == ["blob"]
    # a bright ellipsoid on noise: a few dozen 3-D steps find it
    assert metrics["mean"]["blob"]["dice"] > 0.6, metrics["mean"]
    # `medseg predict` segments each volume whole (3-D windows) and `evaluate --predictions` scores
    # its NIfTI files exactly as the run's evaluation scored the checkpoint
    src, pred = tmp_path / "test_images", tmp_path / "pred"
    src.mkdir()
    rows = (run / "eval" / "test" / "per_case.csv").read_text().splitlines()[1:]
    for vid in [r.split(",")[0] for r in rows]:
        (src / f"{vid}.nii.gz").symlink_to(root / "imagesTr" / f"{vid}.nii.gz")
    ckpt = run / "checkpoints" / "best.ckpt"
    assert main(["predict", "-m", str(ckpt), "-i", str(src), "-o", str(pred), "--no-progress"]) == 0
    data = ["--dataset", "msd", "--data-root", str(root), "--set", "classes=binary", "--set", "spatial_dims=3"]
    argv = ["evaluate", "--predictions", str(pred), *data, "--set", "test_fraction=0.34", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    again = json.loads((pred / "eval-test" / "metrics.json").read_text())
    for key in ("dice", "hd95", "nsd"):
        assert again["mean"]["blob"][key] == pytest.approx(metrics["mean"]["blob"][key], abs=1e-6), key


def test_2d_network_on_volume_cases_is_refused(tmp_path, capsys):
    root = _write_msd(tmp_path / "msd", n=4, shape=(16, 16, 8))
    argv = _argv(root, tmp_path / "run", 1, "data.args={spatial_dims: 3, classes: binary}", "model.name=unet")
    assert main([*argv, "--set", "model.args={base_channels: 4, depth: 2}"]) == 2
    err = capsys.readouterr().err
    assert "network 'unet' is 2-D but dataset 'msd' gives volumes" in err and "unet3d" in err


@pytest.mark.slow
@pytest.mark.skipif(not HIPPO.is_dir(), reason=f"MSD Task04 Hippocampus not found at {HIPPO}")
def test_3d_train_and_evaluate_on_real_hippocampus_volumes(tmp_path, capsys):
    run = tmp_path / "run"
    argv = _argv(
        HIPPO,
        run,
        3,
        "data.args={spatial_dims: 3, classes: all}",
        "data.samples_per_epoch=24",
        "data.patch_size=32",
        "eval.roi_size=32",
        "eval.class_names=[background, anterior, posterior]",
        "train.val_every_n_epochs=3",
    )
    rc = main(argv)
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    assert metrics["n_cases"] == 52  # the seeded 208/52 patient split, one case per volume
    assert metrics["classes"] == ["anterior", "posterior"]
    for cls in ("anterior", "posterior"):
        assert 0.0 <= metrics["mean"][cls]["dice"] <= 1.0 and metrics["mean"][cls]["hd95"] > 0
    rows = (run / "eval" / "test" / "per_case.csv").read_text().splitlines()
    assert len(rows) == 1 + 52 and rows[1].startswith("hippocampus_")
