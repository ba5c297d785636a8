"""``medseg evaluate --predictions``: scoring another tool's maps against a dataset's ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medseg.cli import main
from medseg.errors import DataError
from medseg.workflows.evaluate import evaluate_predictions, find_predictions, read_probability_map


def _folder_dataset(root, n=3, size=(24, 32)):
    """A `folder` dataset: images/ and masks/ by stem, all in one split (test_fraction 0)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    masks = {}
    for i in range(n):
        img = rng.integers(0, 255, size, dtype=np.uint8)
        mask = np.zeros(size, np.uint8)
        mask[4 + i : 12 + i, 5:20] = 1
        Image.fromarray(img).save(root / "images" / f"c{i}.png")
        Image.fromarray(mask * 255).save(root / "masks" / f"c{i}.png")
        masks[f"c{i}"] = mask
    return masks


def test_perfect_8bit_predictions_score_dice_one_and_unmatched_files_warn(tmp_path, capsys):
    masks = _folder_dataset(tmp_path / "data")
    pred = tmp_path / "pred"
    pred.mkdir()
    for cid, m in masks.items():
        Image.fromarray(m * 255).save(pred / f"{cid}.png")  # binary masks written 0/255
    Image.fromarray(masks["c0"] * 255).save(pred / "stranger.png")
    m = evaluate_predictions(
        pred,
        "folder",
        tmp_path / "data",
        split="train",
        dataset_args={"test_fraction": 0.0},
        figures=False,
        show_progress=False,
    )
    assert m["protocol"] == "vessel" and m["n_images"] == 3 and m["predictions"] == str(pred)
    assert m["fov"]["per_image_mean"]["dice"] == pytest.approx(1.0)
    assert "stranger.png" in capsys.readouterr().err
    written = json.loads((pred / "eval-train" / "metrics.json").read_text())
    assert written["fov"]["pooled"]["dice"] == pytest.approx(1.0)
    rows = (pred / "eval-train" / "per_image.csv").read_text().splitlines()
    assert rows[0].startswith("id,") and len(rows) == 4


def test_16bit_probability_maps_are_read_as_value_over_65535(tmp_path):
    a = np.array([[0, 65535], [32768, 1]], np.uint16)
    Image.fromarray(a).save(tmp_path / "p_prob.png")
    got = read_probability_map(tmp_path / "p_prob.png")
    assert got.dtype == np.float32 and np.allclose(got, a / 65535.0)
    Image.fromarray(np.array([[0, 1]], np.uint8)).save(tmp_path / "m.png")
    assert read_probability_map(tmp_path / "m.png").tolist() == [[0.0, 1.0]]  # a 0/1 mask
    Image.fromarray(np.array([[0, 51]], np.uint8)).save(tmp_path / "q.png")
    assert np.allclose(read_probability_map(tmp_path / "q.png"), [[0.0, 0.2]])  # 8-bit map: value / 255


def test_a_case_without_prediction_is_an_error_naming_it_before_any_metric(tmp_path):
    masks = _folder_dataset(tmp_path / "data")
    pred = tmp_path / "pred"
    pred.mkdir()
    Image.fromarray(masks["c0"] * 255).save(pred / "c0_prob.png")
    with pytest.raises(DataError, match=r"no prediction for 2 case\(s\): c1 .*c2"):
        evaluate_predictions(pred, "folder", tmp_path / "data", split="train", dataset_args={"test_fraction": 0.0})
    assert not (pred / "eval-train").exists()


def test_a_prediction_of_the_wrong_size_is_an_error_naming_the_file(tmp_path):
    masks = _folder_dataset(tmp_path / "data")
    pred = tmp_path / "pred"
    pred.mkdir()
    for cid, m in masks.items():
        Image.fromarray(m * 255).save(pred / f"{cid}.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(pred / "c1.png")
    with pytest.raises(DataError, match=r"c1.png is 10x10 \(HxW\), the ground truth of case c1 is 24x32"):
        evaluate_predictions(pred, "folder", tmp_path / "data", split="train", dataset_args={"test_fraction": 0.0})
    assert not (pred / "eval-train").exists()


def test_find_predictions_prefers_prob_maps_and_matches_source_stems(tmp_path):
    for name in ("01_test_prob.png", "01_test.png", "02.png", "03_mask.png"):
        Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / name)
    found, unmatched = find_predictions(tmp_path, {"01": ["01", "01_test"], "02": ["02"], "03": ["03"]}, volumes=False)
    assert {k: v.name for k, v in found.items()} == {"01": "01_test_prob.png", "02": "02.png", "03": "03_mask.png"}
    assert [p.name for p in unmatched] == ["01_test.png"]


def test_cli_evaluate_predictions_prints_the_protocol_and_errors_are_one_line(tmp_path, capsys):
    masks = _folder_dataset(tmp_path / "data")
    pred = tmp_path / "pred"
    pred.mkdir()
    for cid, m in masks.items():
        Image.fromarray(m * 255).save(pred / f"{cid}.png")
    argv = [
        "evaluate",
        "--predictions",
        str(pred),
        "--dataset",
        "folder",
        "--data-root",
        str(tmp_path / "data"),
        "--split",
        "train",
        "--set",
        "test_fraction=0",
        "-o",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "vessel protocol" in out and "dice 1.0000" in out
    assert (tmp_path / "out" / "metrics.json").is_file()
    assert main(["evaluate", "--predictions", str(pred), "--data-root", str(tmp_path)]) == 2
    assert "needs --dataset" in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                "--predictions",
                str(pred),
                "--dataset",
                "folder",
                "--data-root",
                str(tmp_path / "data"),
                "--split",
                "train",
                "--set",
                "test_fraction=0",
                "--protocol",
                "polyps",
            ]
        )
        == 2
    )
    assert "did you mean 'polyp'" in capsys.readouterr().err
