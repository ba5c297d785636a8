"""A short train + evaluate of DSCNet on the real DRIVE folder (skipped when it is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg.config import load_config
from medseg.workflows.train import train

REPO = Path(__file__).resolve().parents[2]
DRIVE = REPO.parent / "shared" / "data" / "DRIVE"

pytestmark = pytest.mark.skipif(
    not (DRIVE / "training").is_dir(), reason=f"DRIVE not found at {DRIVE} (CI and developer machines have it)"
)


def test_dscnet_short_train_and_evaluate_on_drive(tmp_path):
    cfg = load_config(
        REPO / "configs" / "drive" / "dscnet_cpu.yaml",
        [
            f"data.root={DRIVE}",
            "train.max_epochs=1",
            "data.samples_per_epoch=4",
            "data.patch_size=48",
            "train.batch_size=2",
            "train.progress_bar=false",
            "train.val_every_n_epochs=1",
            "model.args={n_basic_layer: 4, kernel_size: 3}",
            "eval.roi_size=256",
            "eval.overlap=0.0",
        ],
    )
    run = tmp_path / "drive"
    summary = train(cfg, run, evaluate_after=False)
    assert summary["steps"] == 2
    splits = json.loads((run / "splits.json").read_text())
    assert len(splits["train"]) == 16 and len(splits["validation"]) == 4
    assert all(21 <= int(i) <= 40 for i in splits["train"] + splits["validation"])  # never a test image

    from medseg.workflows.evaluate import evaluate

    metrics = evaluate(run, split="test", figures=False)
    assert metrics["dataset"] == "drive" and metrics["n_images"] == 20
    fov = metrics["fov"]["pooled"]
    assert 0.0 <= fov["dice"] <= 1.0 and 0.0 <= fov["auc_roc"] <= 1.0
    # The FOV holds 577,649 vessel pixels of the first observer over the 20 test images (mlscorecheck's
    # DRIVE experiment files, github.com/FalseNegativeLab/mlscorecheck, mlscorecheck/experiments/retina).
    rows = (run / "eval" / "test" / "per_image.csv").read_text().splitlines()
    header = rows[0].split(",")
    tp, fn = header.index("fov_tp"), header.index("fov_fn")
    assert sum(int(r.split(",")[tp]) + int(r.split(",")[fn]) for r in rows[1:]) == 577_649
