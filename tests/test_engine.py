"""End to end on the built-in synthetic default: train, evaluate, predict, resume, DDP, errors.

These run real (tiny) trainings on the CPU: a few seconds each.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image

from medseg.cli import main
from medseg.config import load_config
from medseg.engine.checkpoint import load_model_from_checkpoint
from medseg.workflows.train import train

METRIC_KEYS = {
    "dice",
    "iou",
    "sensitivity",
    "specificity",
    "accuracy",
    "precision",
    "mcc",
    "auc_roc",
    "auc_pr",
    "cldice",
    "betti0_error",
    "betti1_error",
    "euler_error",
}

TINY = [
    "data.args={n_images: 6, size: 48}",
    "data.patch_size=32",
    "data.samples_per_epoch=8",
    "train.batch_size=4",
    "train.max_epochs=3",
    "train.progress_bar=false",
    "model.args={base_channels: 4, depth: 2}",
    "eval.roi_size=32",
]


def tiny_config(*extra: str):
    return load_config(None, TINY + list(extra))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    summary = train(tiny_config(), run)
    return run, summary


def test_run_directory_holds_everything(trained_run):
    run, summary = trained_run
    for rel in [
        "config.yaml",
        "splits.json",
        "train_summary.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "logs/csv/metrics.csv",
        "eval/test/metrics.json",
        "eval/test/per_image.csv",
        "figures/curves.png",
    ]:
        assert (run / rel).is_file(), rel
    assert any((run / "logs" / "tensorboard").iterdir())
    assert summary["steps"] == 3 * 2  # 8 samples / batch 4 = 2 steps per epoch
    splits = json.loads((run / "splits.json").read_text())
    assert set(splits["train"]).isdisjoint(splits["validation"]) and len(splits["validation"]) >= 1


def test_metrics_json_schema(trained_run):
    run, _ = trained_run
    m = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    for key in ("dataset", "split", "n_images", "threshold", "fov", "whole_image"):
        assert key in m
    assert m["dataset"] == "synthetic_vessels" and m["split"] == "test" and m["threshold"] == 0.5
    for region in ("fov", "whole_image"):
        for agg in ("per_image_mean", "pooled"):
            assert set(m[region][agg]) == METRIC_KEYS
    rows = list(csv.DictReader((run / "eval" / "test" / "per_image.csv").open()))
    assert len(rows) == m["n_images"]
    dice = [float(r["fov_dice"]) for r in rows]
    assert np.mean(dice) == pytest.approx(m["fov"]["per_image_mean"]["dice"], abs=1e-9)
    figs = {p.name for p in (run / "eval" / "test" / "figures").iterdir()}
    assert "curves.png" in figs and sum(n.endswith("_panel.png") for n in figs) == m["n_images"]


def test_best_checkpoint_is_the_best_validation_dice(trained_run):
    run, summary = trained_run
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False)
    rows = [r for r in csv.DictReader((run / "logs/csv/metrics.csv").open()) if r.get("val/dice")]
    best = max(float(r["val/dice"]) for r in rows)
    assert summary["best_val_dice"] == pytest.approx(best, abs=1e-6)
    cb = [v for k, v in ckpt["callbacks"].items() if "ModelCheckpoint" in k][0]
    assert float(cb["best_model_score"]) == pytest.approx(best, abs=1e-6)


def test_same_seed_same_metrics(tmp_path, trained_run):
    run, summary = trained_run
    again = train(tiny_config(), tmp_path / "again")
    assert again["eval"]["fov"]["pooled"] == summary["eval"]["fov"]["pooled"]


class CrashAfterEpoch(Callback):
    """Simulates a crash (power cut) at the start of epoch ``n``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.n:
            raise RuntimeError("simulated crash")


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=False)["state_dict"]


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    cfg = tiny_config("train.max_epochs=4", "schedule.warmup_steps=3")
    full = tmp_path / "full"
    train(cfg, full, evaluate_after=False)
    broken = tmp_path / "broken"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, broken, callbacks=[CrashAfterEpoch(2)], evaluate_after=False)
    assert torch.load(broken / "checkpoints/last.ckpt", weights_only=False)["epoch"] == 1
    summary = train(cfg, broken, resume=True, evaluate_after=False)
    assert summary["steps"] == 8
    a, b = _weights(full / "checkpoints/last.ckpt"), _weights(broken / "checkpoints/last.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_existing_run_is_never_overwritten(trained_run):
    run, _ = trained_run
    before = (run / "checkpoints" / "best.ckpt").read_bytes()
    assert main(["train", "--out", str(run), *sum((["--set", s] for s in TINY), [])]) == 2
    assert (run / "checkpoints" / "best.ckpt").read_bytes() == before


def test_predict_writes_16bit_probabilities_and_binary_masks(trained_run, tmp_path):
    from medseg.data import create_dataset

    run, _ = trained_run
    cases = create_dataset("synthetic_vessels", split="test", n_images=2, size=48)
    inp = tmp_path / "in"
    inp.mkdir()
    for case in cases:
        Image.fromarray(case.display).save(inp / f"{case.id}.png")
    out = tmp_path / "out"
    assert main(["predict", "-m", str(run / "checkpoints/best.ckpt"), "-i", str(inp), "-o", str(out)]) == 0
    for case in cases:
        prob = np.asarray(Image.open(out / f"{case.id}_prob.png"))
        mask = np.asarray(Image.open(out / f"{case.id}_mask.png"))
        assert prob.dtype == np.uint16 and prob.shape == case.mask.shape
        assert set(np.unique(mask)) <= {0, 255}
        # the mask is the unquantised probability >= 0.5; the 16-bit map can differ only within 1/65535 of it
        disagree = (mask > 0) != (prob >= 32768)
        assert np.all(np.abs(prob[disagree].astype(np.int64) - 32768) <= 1)


def test_predict_matches_the_model_on_the_same_input(trained_run, tmp_path):
    """The probability PNG is the model's output quantised to 1/65535."""
    from medseg.workflows.evaluate import infer_image
    from medseg.workflows.predict import prepare

    run, _ = trained_run
    model, cfg = load_model_from_checkpoint(run / "checkpoints/best.ckpt")
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (40, 56), dtype=np.uint8)
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(raw).save(inp / "x.png")
    main(["predict", "-m", str(run / "checkpoints/best.ckpt"), "-i", str(inp), "-o", str(tmp_path / "o")])
    written = np.asarray(Image.open(tmp_path / "o" / "x_prob.png")) / 65535.0
    expected = infer_image(model, prepare(raw, cfg, inp / "x.png"), cfg)
    assert np.abs(written - expected).max() <= 1 / 65535.0


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    cases = [
        (
            ["train", "--out", str(tmp_path / "a"), "--set", "model.name=dscent"],
            "unknown network 'dscent'; did you mean 'dscnet'",
        ),
        (["train", "--out", str(tmp_path / "b"), "--set", "optim.lrr=1"], "did you mean optim.lr"),
        (
            [
                "train",
                "--out",
                str(tmp_path / "c"),
                "--set",
                "data.dataset=drive",
                "--data-root",
                str(tmp_path / "nowhere"),
            ],
            "nowhere",
        ),
        (["evaluate", "--run", str(tmp_path / "none")], "does not exist"),
        (
            ["predict", "-m", str(tmp_path / "x.ckpt"), "-i", str(tmp_path), "-o", str(tmp_path / "o")],
            "holds no images",
        ),
        (["train", "--config", str(tmp_path / "missing.yaml")], "missing.yaml does not exist"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err, (argv, err)
        assert "Traceback" not in err
    assert not (tmp_path / "a").exists()


def test_models_lists_parameter_counts(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r["parameters"] for r in json.loads(capsys.readouterr().out)}
    assert rows["dscnet"] == 2_094_169
    assert "unet" in rows


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tmp_path):
    """Lightning DDP, 2 CPU processes launched by the CLI; each rank takes half the samples."""
    out = tmp_path / "ddp"
    args = [sys.executable, "-m", "medseg.cli", "train", "--out", str(out), "--no-eval"]
    for s in TINY + ["train.strategy=ddp", "train.accelerator=cpu", "train.devices=2", "train.max_epochs=2"]:
        args += ["--set", s]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2  # 8 samples over 2 ranks, batch 4 -> 1 step per epoch
    assert (out / "checkpoints" / "best.ckpt").is_file()


def test_dscnet_run_draws_its_dsconv_kernel_positions(tmp_path):
    cfg = tiny_config(
        "model.name=dscnet",
        "model.args={n_basic_layer: 4, kernel_size: 5}",
        "train.max_epochs=1",
        "data.args={n_images: 4, size: 48}",
    )
    metrics = train(cfg, tmp_path / "dsc")["eval"]
    figs = sorted(p.name for p in (tmp_path / "dsc" / "eval" / "test" / "figures").iterdir())
    assert any(n.endswith("_dsconv_kernels.png") for n in figs), figs
    assert metrics["network"] == "dscnet"


def test_dscnet_size_divisor_is_honoured_by_inference_and_figures():
    """DRIVE images are 565 wide, not a multiple of DSCNet's 8: windows and the kernel figure must cope."""
    from medseg.inference import check_roi
    from medseg.models import create_model
    from medseg.workflows.evaluate import kernel_coordinates_for

    model = create_model("dscnet", n_basic_layer=4, kernel_size=3).eval()
    assert model.size_divisor == 8
    with pytest.raises(ValueError, match="multiple of 8"):
        check_roi(model, 100)
    image = np.random.default_rng(0).normal(size=(1, 45, 61)).astype(np.float32)
    name, coords = kernel_coordinates_for(model, image)
    assert name == "conv0x" and coords.shape == (3, 45, 61, 2)


def test_densest_window_finds_the_vessel_cluster():
    from medseg.workflows.evaluate import densest_window

    mask = np.zeros((200, 300), dtype=np.uint8)
    mask[150:180, 40:70] = 1
    r, c = densest_window(mask, 50)
    assert r <= 150 and r + 50 >= 180 and c <= 40 and c + 50 >= 70
    assert densest_window(np.ones((20, 30), np.uint8), 96) == (0, 0)
    rng = np.random.default_rng(1)  # against a brute-force search, odd and even sizes
    for _ in range(50):
        h, w = (int(v) for v in rng.integers(5, 30, 2))
        size = int(rng.integers(1, 35))
        m = (rng.random((h, w)) < 0.3).astype(np.uint8)
        sh, sw = min(size, h), min(size, w)
        best = max(m[i : i + sh, j : j + sw].sum() for i in range(h - sh + 1) for j in range(w - sw + 1))
        r, c = densest_window(m, size)
        assert m[r : r + sh, c : c + sw].sum() == best


def test_predict_goes_on_past_unreadable_images_and_lists_them(trained_run, tmp_path, capsys):
    run, _ = trained_run
    inp = tmp_path / "in"
    inp.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (40, 56), dtype=np.uint8)).save(inp / name)
    (inp / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    status = main(
        [
            "predict",
            "-m",
            str(run / "checkpoints/best.ckpt"),
            "-i",
            str(inp),
            "-o",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "predicted 2 of 3 images" in err and "b.png" in err and "Traceback" not in err
    for stem in ("a", "c"):
        assert (tmp_path / "o" / f"{stem}_prob.png").is_file() and (tmp_path / "o" / f"{stem}_mask.png").is_file()
    assert not (tmp_path / "o" / "b_prob.png").exists()


def test_a_truncated_tiff_gives_one_clear_error_and_no_library_log_lines(tmp_path, caplog):
    import logging

    import tifffile

    from medseg.data.io import read_image
    from medseg.errors import DataError

    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    path.write_bytes(path.read_bytes()[:200])  # cuts a tag table: tifffile logs its TiffFileErrors
    with caplog.at_level(logging.DEBUG), pytest.raises(DataError, match="cut.tif"):
        read_image(path)
    assert not [r for r in caplog.records if r.name.startswith("tifffile") and r.levelno >= logging.WARNING]
