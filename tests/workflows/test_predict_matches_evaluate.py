"""``medseg predict`` gives the probabilities ``medseg evaluate`` measured (real DRIVE and Kvasir-SEG).

A user who predicts the test images of a run and scores the maps with
``medseg evaluate --predictions`` must get the run's own numbers: the same preprocessing path,
the same FOV (given with ``--fov``, or computed by the one estimator), the same inference and
the same resizing back to the ground truth's size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.config import build_config
from medseg.engine.checkpoint import load_model_from_checkpoint
from medseg.engine.datamodule import load_split
from medseg.workflows.evaluate import evaluate, evaluate_predictions, foreground, predictor_for, resize_probability
from medseg.workflows.predict import predict_folder
from medseg.workflows.train import train

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
DRIVE = DATA / "DRIVE"
KVASIR = DATA / "Kvasir-SEG"

pytestmark = pytest.mark.slow


def _tiny_run(tmp_path: Path, recipe: dict) -> Path:
    base = {
        "seed": 0,
        "model": {"name": "unet", "args": {"base_channels": 8, "depth": 3}},
        "train": {
            "max_steps": 80,
            "max_epochs": 100,
            "batch_size": 4,
            "val_every_n_epochs": 1000,
            "progress_bar": False,
        },
        "optim": {"lr": 3e-3},
        "loss": {"name": "bce_dice"},
        "eval": {"figures": False},
    }
    for key, value in recipe.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    run = tmp_path / "run"
    train(build_config(base), run, evaluate_after=False)
    return run


def _evaluate_probabilities(run: Path) -> tuple[dict[str, np.ndarray], object]:
    """What evaluate measured: foreground probabilities at the ground truth's resolution."""
    model, cfg = load_model_from_checkpoint(run / "checkpoints" / "best.ckpt")
    cases = load_split(cfg, "test")
    probs = predictor_for([model], cfg).predict_many(c.image for c in cases)
    out = {}
    for case, p in zip(cases, probs):
        mask, _ = cases.reference(case)
        out[case.id] = resize_probability(foreground(p), mask.shape)
    return out, cases


@pytest.mark.skipif(not DRIVE.is_dir(), reason=f"DRIVE is not at {DRIVE} (see ../shared/data/README.md)")
def test_drive_predict_reproduces_evaluate(tmp_path):
    run = _tiny_run(
        tmp_path, {"data": {"dataset": "drive", "root": str(DRIVE), "patch_size": 64, "samples_per_epoch": 64}}
    )
    metrics = evaluate(run, figures=False, show_progress=False, report=False)
    assert metrics["protocol"] == "vessel" and metrics["n_images"] == 20
    reference, cases = _evaluate_probabilities(run)
    ckpt = run / "checkpoints" / "best.ckpt"

    # with the shipped FOV masks: the same probabilities, up to the 16-bit PNG's 1/65535 steps
    with_fov = tmp_path / "with_fov"
    predict_folder(ckpt, DRIVE / "test" / "images", with_fov, fov_dir=DRIVE / "test" / "mask", show_progress=False)
    for case in cases:
        written = np.asarray(Image.open(with_fov / f"{case.id}_test_prob.png")) / 65535.0
        assert np.abs(written - reference[case.id]).max() <= 1e-4, case.id
    again = evaluate_predictions(with_fov, "drive", DRIVE, figures=False, show_progress=False, report=False)
    for region in ("fov", "whole_image"):
        for key in ("dice", "auc_roc", "sensitivity"):
            assert again[region]["per_image_mean"][key] == pytest.approx(
                metrics[region]["per_image_mean"][key], abs=1e-3
            )

    # with the FOV computed from each image: the Dice a user gets without the masks is within 0.01
    estimated = tmp_path / "estimated"
    predict_folder(ckpt, DRIVE / "test" / "images", estimated, show_progress=False)
    est = evaluate_predictions(estimated, "drive", DRIVE, figures=False, show_progress=False, report=False)
    assert est["fov"]["per_image_mean"]["dice"] == pytest.approx(metrics["fov"]["per_image_mean"]["dice"], abs=0.01)
    assert est["fov"]["per_image_mean"]["auc_roc"] == pytest.approx(
        metrics["fov"]["per_image_mean"]["auc_roc"], abs=0.01
    )


@pytest.mark.skipif(not KVASIR.is_dir(), reason=f"Kvasir-SEG is not at {KVASIR} (see ../shared/data/README.md)")
def test_kvasir_predict_reproduces_evaluate_at_the_ground_truths_size(tmp_path):
    ids = sorted(p.stem for p in (KVASIR / "images").glob("*.jpg"))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ids[:24], "test": ids[24:34]}))
    run = _tiny_run(
        tmp_path,
        {
            "model": {"name": "unet", "args": {"in_channels": 3, "base_channels": 8, "depth": 3}},
            "data": {
                "dataset": "kvasir_seg",
                "root": str(KVASIR),
                "args": {"size": 64, "split_file": str(split)},
                "patch_size": 64,
                "samples_per_epoch": 32,
            },
        },
    )
    metrics = evaluate(run, figures=False, show_progress=False, report=False)
    assert metrics["protocol"] == "polyp" and metrics["n_images"] == 10
    assert "fov" not in metrics and "mdice" in metrics["mean"]
    reference, cases = _evaluate_probabilities(run)
    images = tmp_path / "images"
    images.mkdir()
    for cid in ids[24:34]:
        (images / f"{cid}.jpg").symlink_to(KVASIR / "images" / f"{cid}.jpg")
    out = tmp_path / "pred"
    predict_folder(run / "checkpoints" / "best.ckpt", images, out, show_progress=False)
    for case in cases:
        written = np.asarray(Image.open(out / f"{case.id}_prob.png")) / 65535.0
        assert written.shape == reference[case.id].shape == case.meta["reference_shape"]  # original frame size
        assert np.abs(written - reference[case.id]).max() <= 1e-4, case.id
    again = evaluate_predictions(
        out,
        "kvasir_seg",
        KVASIR,
        dataset_args={"size": 64, "split_file": str(split)},
        figures=False,
        show_progress=False,
        report=False,
    )
    for key in ("mdice", "miou", "s_alpha", "mae", "dice_at_05"):
        assert again["mean"][key] == pytest.approx(metrics["mean"][key], abs=2e-3), key
