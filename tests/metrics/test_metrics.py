"""Tests of medseg.metrics: hand-computed pixel metrics, exact AUCs, clDice, Betti numbers and
the retinal-vessel protocol."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from skimage.measure import euler_number
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

from medseg.metrics import (
    VESSEL_METRICS,
    auc_pr,
    auc_roc,
    betti_errors,
    betti_numbers,
    cldice,
    cldice_counts,
    confusion_counts,
    evaluate_vessels,
    pixel_metrics,
)

# pred/target of 3x4 pixels, counted by hand:
#   TP at (0,0),(1,0); FP at (0,1),(2,2); FN at (1,1); TN the 7 others.
PRED = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]], dtype=bool)
TARGET = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)


def approx(x):
    return pytest.approx(x, rel=1e-12, abs=1e-12)


# ------------------------------------------------------------------ confusion matrix / metrics


def test_confusion_counts_by_hand():
    assert confusion_counts(PRED, TARGET) == {"tp": 2, "fp": 2, "fn": 1, "tn": 7}
    # 0/1 integer input is accepted
    assert confusion_counts(PRED.astype(np.uint8), TARGET.astype(np.float32)) == {
        "tp": 2,
        "fp": 2,
        "fn": 1,
        "tn": 7,
    }


def test_pixel_metrics_by_hand():
    m = pixel_metrics(tp=2, fp=2, fn=1, tn=7)
    assert set(m) == {"dice", "iou", "sensitivity", "specificity", "accuracy", "precision", "mcc"}
    assert m["dice"] == approx(4 / 7)  # 2*2 / (2*2 + 2 + 1)
    assert m["iou"] == approx(2 / 5)  # 2 / (2 + 2 + 1)
    assert m["sensitivity"] == approx(2 / 3)
    assert m["specificity"] == approx(7 / 9)
    assert m["accuracy"] == approx(9 / 12)
    assert m["precision"] == approx(2 / 4)
    # (2*7 - 2*1) / sqrt(4 * 3 * 9 * 8) = 12 / sqrt(864) = 1 / sqrt(6)
    assert m["mcc"] == approx(1 / math.sqrt(6))
    assert all(type(v) is float for v in m.values())


def test_region_restriction():
    region = np.zeros_like(PRED)
    region[:, :2] = True  # first two columns: 6 pixels
    assert confusion_counts(PRED, TARGET, region) == {"tp": 2, "fp": 1, "fn": 1, "tn": 2}
    empty = np.zeros_like(PRED)
    assert confusion_counts(PRED, TARGET, empty) == {"tp": 0, "fp": 0, "fn": 0, "tn": 0}


def test_empty_both():
    z = np.zeros((3, 4), bool)
    cm = confusion_counts(z, z)
    assert cm == {"tp": 0, "fp": 0, "fn": 0, "tn": 12}
    assert pixel_metrics(**cm) == {
        "dice": 1.0,
        "iou": 1.0,
        "sensitivity": 1.0,
        "specificity": 1.0,
        "accuracy": 1.0,
        "precision": 1.0,
        "mcc": 1.0,
    }
    # empty region: everything vacuously perfect
    assert set(pixel_metrics(0, 0, 0, 0).values()) == {1.0}


def test_empty_target_with_false_positives():
    z = np.zeros((3, 4), bool)
    pred = z.copy()
    pred[0, :2] = True
    cm = confusion_counts(pred, z)
    assert cm == {"tp": 0, "fp": 2, "fn": 0, "tn": 10}
    m = pixel_metrics(**cm)
    assert m["dice"] == 0.0 and m["iou"] == 0.0
    assert m["sensitivity"] == 1.0  # no positives to find
    assert m["specificity"] == approx(10 / 12)
    assert m["accuracy"] == approx(10 / 12)
    assert m["precision"] == 0.0
    assert m["mcc"] == 0.0  # TP+FN = 0 and pred != target


def test_empty_prediction_with_false_negatives():
    z = np.zeros((3, 4), bool)
    target = z.copy()
    target[2, 1:] = True
    cm = confusion_counts(z, target)
    assert cm == {"tp": 0, "fp": 0, "fn": 3, "tn": 9}
    m = pixel_metrics(**cm)
    assert m["dice"] == 0.0 and m["iou"] == 0.0
    assert m["sensitivity"] == 0.0
    assert m["specificity"] == 1.0
    assert m["accuracy"] == approx(9 / 12)
    assert m["precision"] == 0.0  # nothing predicted but something to find
    assert m["mcc"] == 0.0


def test_all_foreground_exact_prediction_mcc():
    # pred == target, but TN + FP = 0 makes the MCC denominator 0 -> 1.0 by policy
    m = pixel_metrics(tp=5, fp=0, fn=0, tn=0)
    assert m["mcc"] == 1.0 and m["specificity"] == 1.0 and m["dice"] == 1.0
    assert pixel_metrics(tp=3, fp=0, fn=0, tn=9)["mcc"] == 1.0


def test_pixel_metrics_rejects_negative_counts():
    with pytest.raises(ValueError, match="fp"):
        pixel_metrics(1, -1, 0, 0)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 3\)"):
        confusion_counts(PRED, TARGET.T)
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        confusion_counts(PRED, TARGET, np.ones((2, 2), bool))
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 3\)"):
        auc_roc(PRED.astype(float), TARGET.T)
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 3\)"):
        cldice(PRED, TARGET.T)


def test_non_binary_input_rejected():
    with pytest.raises(ValueError, match="binary"):
        confusion_counts(PRED * 0.7, TARGET)


# ------------------------------------------------------------------------------------- AUCs


def test_auc_by_hand_with_ties():
    prob = np.array([0.9, 0.8, 0.8, 0.5, 0.5, 0.2])
    target = np.array([1, 1, 0, 1, 0, 0])
    # positives 0.9, 0.8, 0.5 vs negatives 0.8, 0.5, 0.2 (ties count 1/2):
    #   0.9 -> 3; 0.8 -> 0.5 + 1 + 1; 0.5 -> 0 + 0.5 + 1   => 7 / 9
    assert auc_roc(prob, target) == approx(7 / 9)
    # thresholds 0.9, 0.8, 0.5, 0.2: (R, P) = (1/3, 1), (2/3, 2/3), (1, 3/5), (1, 1/2)
    # AP = 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/5 + 0 = 34/45
    assert auc_pr(prob, target) == approx(34 / 45)
    # region keeps the first four pixels: positives 0.9, 0.8, 0.5 vs negative 0.8
    #   0.9 -> 1; 0.8 -> 0.5 (tie); 0.5 -> 0   => 1.5 / 3
    region = np.array([1, 1, 1, 1, 0, 0], bool)
    assert auc_roc(prob, target, region) == approx(1.5 / 3)


def test_auc_perfect_and_reversed():
    prob = np.array([0.1, 0.2, 0.7, 0.9])
    target = np.array([0, 0, 1, 1])
    assert auc_roc(prob, target) == 1.0 and auc_pr(prob, target) == 1.0
    assert auc_roc(1 - prob, target) == 0.0


@pytest.mark.parametrize("levels", [None, 20])
def test_auc_against_torchmetrics(levels):
    rng = np.random.default_rng(0)
    prob = rng.random((64, 80)).astype(np.float32)
    if levels:  # many ties
        prob = np.round(prob * levels) / levels
    target = rng.random(prob.shape) < 0.15 + 0.5 * prob
    p_t, t_t = torch.from_numpy(prob.astype(np.float64)), torch.from_numpy(target).long()
    assert auc_roc(prob, target) == pytest.approx(binary_auroc(p_t, t_t).item(), abs=1e-6)
    assert auc_pr(prob, target) == pytest.approx(binary_average_precision(p_t, t_t).item(), abs=1e-6)
    region = rng.random(prob.shape) < 0.6
    r = torch.from_numpy(region)
    assert auc_roc(prob, target, region) == pytest.approx(binary_auroc(p_t[r], t_t[r]).item(), abs=1e-6)
    assert auc_pr(prob, target, region) == pytest.approx(binary_average_precision(p_t[r], t_t[r]).item(), abs=1e-6)


def test_auc_single_class_is_nan():
    prob = np.array([[0.1, 0.7], [0.3, 0.9]])
    assert math.isnan(auc_roc(prob, np.zeros((2, 2), bool)))
    assert math.isnan(auc_pr(prob, np.zeros((2, 2), bool)))
    assert math.isnan(auc_roc(prob, np.ones((2, 2), bool)))
    assert math.isnan(auc_pr(prob, np.ones((2, 2), bool)))
    target = np.array([[1, 0], [0, 0]], bool)
    region = np.array([[0, 1], [1, 1]], bool)  # only negatives inside
    assert math.isnan(auc_roc(prob, target, region))


# ------------------------------------------------------------------------------- topology


def _hline(shape, row, c0, c1):
    m = np.zeros(shape, bool)
    m[row, c0 : c1 + 1] = True
    return m


def test_cldice_lines():
    shape = (12, 20)
    line = _hline(shape, 5, 2, 17)  # 16 px, its own skeleton
    # a thin line inside a 3-px band (Dice 2*16/(16+48) = 0.5). Zhang thinning of the band
    # leaves row 5, cols 2..15 (14 px) plus a one-pixel corner spur at (4, 16):
    #   Tprec = 16/16, Tsens = 14/15 -> 2 * (14/15) / (1 + 14/15) = 28/29
    band = np.zeros(shape, bool)
    band[4:7, 2:18] = True
    assert cldice_counts(line, band) == {
        "skel_pred": 16,
        "skel_pred_in_target": 16,
        "skel_target": 15,
        "skel_target_in_pred": 14,
    }
    assert cldice(line, band) == approx(28 / 29)
    # a line shifted by two rows shares nothing
    assert cldice(line, _hline(shape, 7, 2, 17)) == 0.0
    # half the line: Tprec = 8/8, Tsens = 8/16 -> 2 * 0.5 / 1.5 = 2/3
    half = _hline(shape, 5, 2, 9)
    assert cldice(half, line) == approx(2 / 3)
    assert cldice_counts(half, line) == {
        "skel_pred": 8,
        "skel_pred_in_target": 8,
        "skel_target": 16,
        "skel_target_in_pred": 8,
    }


def test_cldice_cross():
    shape = (21, 21)
    horizontal = _hline(shape, 10, 2, 18)  # 17 px
    cross = horizontal.copy()
    cross[2:19, 10] = True  # 33 px, a 1-px plus is its own skeleton
    # Tprec = 17/17, Tsens = 17/33 -> 2 * (17/33) / (1 + 17/33) = 34/50
    assert cldice(horizontal, cross) == approx(34 / 50)
    assert cldice(cross, horizontal) == approx(34 / 50)  # symmetric
    assert cldice(cross, cross) == 1.0


def test_cldice_empty_policy():
    z = np.zeros((8, 8), bool)
    blob = z.copy()
    blob[2:5, 2:5] = True
    assert cldice(z, z) == 1.0
    assert cldice(blob, z) == 0.0
    assert cldice(z, blob) == 0.0


def _ring():
    m = np.zeros((11, 11), bool)
    m[2:9, 2:9] = True
    m[4:7, 4:7] = False
    return m


def test_betti_hand_made_shapes():
    assert betti_numbers(_ring()) == (1, 1)
    blobs = np.zeros((10, 12), bool)
    blobs[1:4, 1:4] = True
    blobs[5:9, 6:11] = True
    assert betti_numbers(blobs) == (2, 0)
    diag = np.zeros((6, 6), bool)
    diag[2, 2] = diag[3, 3] = True
    assert betti_numbers(diag, connectivity=8) == (1, 0)
    assert betti_numbers(diag, connectivity=4) == (2, 0)
    # a diamond of diagonal neighbours: one 8-connected loop around a 4-enclosed hole, but
    # four 4-components whose "hole" leaks out through 8-connected background
    diamond = np.zeros((5, 5), bool)
    diamond[1, 2] = diamond[2, 1] = diamond[2, 3] = diamond[3, 2] = True
    assert betti_numbers(diamond, 8) == (1, 1)
    assert betti_numbers(diamond, 4) == (4, 0)
    assert betti_numbers(np.zeros((4, 4), bool)) == (0, 0)
    two_holes = np.ones((5, 7), bool)
    two_holes[2, 2] = two_holes[2, 4] = False
    assert betti_numbers(two_holes) == (1, 2)
    with pytest.raises(ValueError, match="connectivity"):
        betti_numbers(diag, connectivity=6)


def test_betti_matches_euler_number():
    rng = np.random.default_rng(1)
    for _ in range(5):
        m = rng.random((40, 50)) < 0.45
        b0, b1 = betti_numbers(m, 8)
        assert b0 - b1 == euler_number(m, connectivity=2)
        b0, b1 = betti_numbers(m, 4)
        assert b0 - b1 == euler_number(m, connectivity=1)


def test_betti_errors():
    blobs = np.zeros((11, 11), bool)
    blobs[1:3, 1:3] = True
    blobs[7:9, 7:9] = True
    assert betti_errors(blobs, _ring()) == (1, 1)  # (2, 0) vs (1, 1)
    assert betti_errors(_ring(), _ring()) == (0, 0)
    with pytest.raises(ValueError, match=r"\(11, 11\).*\(5, 5\)"):
        betti_errors(blobs, np.zeros((5, 5), bool))


# ---------------------------------------------------------------------------------- protocol


def _two_cases():
    """Image A: TP 1, FP 0, FN 1, TN 2 (Dice 2/3); image B: TP 1, FP 2, FN 0, TN 1 (Dice 1/2)."""
    pred_a = np.array([[1, 0], [0, 0]], np.float32)
    target_a = np.array([[1, 1], [0, 0]], bool)
    pred_b = np.array([[1, 1], [1, 0]], np.float32)
    target_b = np.array([[1, 0], [0, 0]], bool)
    return [("a", pred_a, target_a, np.ones((2, 2), bool)), ("b", pred_b, target_b, None)]


def test_evaluate_pooled_vs_per_image_mean_by_hand():
    summary, rows = evaluate_vessels(_two_cases())
    for region in ("fov", "whole_image"):
        mean = summary[region]["per_image_mean"]
        pooled = summary[region]["pooled"]
        assert mean["dice"] == approx((2 / 3 + 1 / 2) / 2)  # 7/12
        assert pooled["dice"] == approx(4 / 7)  # TP 2, FP 2, FN 1, TN 3
        assert mean["sensitivity"] == approx((1 / 2 + 1) / 2)
        assert pooled["sensitivity"] == approx(2 / 3)
        assert mean["precision"] == approx((1 + 1 / 3) / 2)
        assert pooled["precision"] == approx(2 / 4)
        assert mean["accuracy"] == approx(0.625) and pooled["accuracy"] == approx(5 / 8)
    assert [r["id"] for r in rows] == ["a", "b"]
    assert (rows[0]["fov_tp"], rows[0]["fov_fp"], rows[0]["fov_fn"], rows[0]["fov_tn"]) == (
        1,
        0,
        1,
        2,
    )
    assert rows[1]["whole_image_dice"] == approx(0.5)
    # fov=None: the FOV is the whole image, and the conventions say so
    assert summary["conventions"]["fov_missing"] == ["b"]
    for m in VESSEL_METRICS:
        assert rows[1][f"fov_{m}"] == rows[1][f"whole_image_{m}"]


def _synthetic_case(rng, shape=(48, 56)):
    target = np.zeros(shape, bool)
    target[10, 4:50] = True
    target[8:40, 30] = True
    target[30:32, 5:25] = True
    prob = np.clip(0.65 * target + 0.45 * rng.random(shape), 0, 1).astype(np.float32)
    prob[prob.shape[0] - 3 :, :4] = 0.9  # false positives in a corner outside the FOV
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    fov = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (0.48 * shape[1]) ** 2
    return prob, target, fov


def test_evaluate_schema_and_json():
    rng = np.random.default_rng(3)
    p1, t1, f1 = _synthetic_case(rng)
    p2, t2, _ = _synthetic_case(rng, (40, 44))
    summary, rows = evaluate_vessels([("c1", p1, t1, f1), ("c2", p2, t2, None)], threshold=0.5)
    assert set(summary) == {"threshold", "n_images", "fov", "whole_image", "conventions"}
    assert summary["threshold"] == 0.5 and summary["n_images"] == 2
    for region in ("fov", "whole_image"):
        assert set(summary[region]) == {"per_image_mean", "pooled"}
        for agg in ("per_image_mean", "pooled"):
            block = summary[region][agg]
            assert list(block) == list(VESSEL_METRICS)
            assert set(block) == {
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
            assert all(type(v) in (int, float) for v in block.values())
    conv = summary["conventions"]
    assert conv["threshold_comparison"] == ">="
    assert "average precision" in conv["auc_pr"]
    assert "skeletonize" in conv["cldice_skeleton"]
    assert conv["betti_connectivity"] == "8-connected foreground, 4-connected background (holes)"
    json.dumps(summary, allow_nan=False)
    json.dumps(rows, allow_nan=False)
    expected_keys = (
        ["id"]
        + [f"fov_{m}" for m in VESSEL_METRICS]
        + [f"whole_image_{m}" for m in VESSEL_METRICS]
        + ["fov_tp", "fov_fp", "fov_fn", "fov_tn"]
    )
    assert all(list(r) == expected_keys for r in rows)
    # FOV excludes the corner false positives; counts add up to the FOV size
    r = rows[0]
    assert r["fov_tp"] + r["fov_fp"] + r["fov_fn"] + r["fov_tn"] == int(f1.sum())
    assert r["fov_precision"] > r["whole_image_precision"]
    # pooled AUC = AUC over the concatenated pixels of the region
    p_cat = np.concatenate([p1[f1], p2.ravel()])
    t_cat = np.concatenate([t1[f1], t2.ravel()])
    assert summary["fov"]["pooled"]["auc_roc"] == approx(auc_roc(p_cat, t_cat))
    assert summary["fov"]["pooled"]["auc_pr"] == approx(auc_pr(p_cat, t_cat))
    # topology in the FOV section is computed on masked maps
    assert r["fov_cldice"] == approx(cldice((p1 >= 0.5) & f1, t1 & f1))
    assert r["whole_image_cldice"] == approx(cldice(p1 >= 0.5, t1))
    b = betti_errors(p1 >= 0.5, t1)
    assert (r["whole_image_betti0_error"], r["whole_image_betti1_error"]) == b
    # pooled Betti errors are the mean over images
    assert summary["fov"]["pooled"]["betti0_error"] == approx(
        (rows[0]["fov_betti0_error"] + rows[1]["fov_betti0_error"]) / 2
    )
    # pooled clDice from summed skeleton counts
    c1 = cldice_counts(p1 >= 0.5, t1)
    c2 = cldice_counts(p2 >= 0.5, t2)
    tprec = (c1["skel_pred_in_target"] + c2["skel_pred_in_target"]) / (c1["skel_pred"] + c2["skel_pred"])
    tsens = (c1["skel_target_in_pred"] + c2["skel_target_in_pred"]) / (c1["skel_target"] + c2["skel_target"])
    assert summary["whole_image"]["pooled"]["cldice"] == approx(2 * tprec * tsens / (tprec + tsens))


def test_evaluate_single_class_auc_is_none():
    prob = np.full((6, 6), 0.2, np.float32)
    prob[0, 0] = 0.8
    target = np.zeros((6, 6), bool)
    target[0, 0] = True
    fov = np.zeros((6, 6), bool)
    fov[3:, 3:] = True  # only background inside the FOV
    summary, rows = evaluate_vessels([("x", prob, target, fov)])
    assert rows[0]["fov_auc_roc"] is None and rows[0]["fov_auc_pr"] is None
    assert summary["fov"]["per_image_mean"]["auc_roc"] is None
    assert summary["fov"]["pooled"]["auc_roc"] is None
    assert summary["whole_image"]["pooled"]["auc_roc"] == 1.0
    json.dumps(summary, allow_nan=False)


def test_evaluate_threshold_is_greater_equal():
    prob = np.array([[0.5, 0.49]], np.float32)
    target = np.array([[1, 0]], bool)
    _, rows = evaluate_vessels([("t", prob, target, None)], threshold=0.5)
    assert rows[0]["fov_tp"] == 1 and rows[0]["fov_fp"] == 0


def test_evaluate_accepts_mappings_and_objects():
    class Case:
        def __init__(self, case_id, prob, target):
            self.case_id, self.prob, self.target = case_id, prob, target

    p = np.array([[0.9, 0.1]], np.float32)
    t = np.array([[1, 0]], np.uint8)
    _, rows = evaluate_vessels([{"id": "m", "prob": p, "target": t}, Case("o", p, t)])
    assert [r["id"] for r in rows] == ["m", "o"]


def test_evaluate_errors():
    p = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 6\)"):
        evaluate_vessels([("a", p, np.zeros((4, 6), bool), None)])
    with pytest.raises(ValueError, match=r"fov.*\(4, 5\).*\(3, 5\)|\(4, 5\).*fov.*\(3, 5\)"):
        evaluate_vessels([("a", p, np.zeros((4, 5), bool), np.ones((3, 5), bool))])
    with pytest.raises(ValueError, match="no cases"):
        evaluate_vessels([])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate_vessels([("a", p + 3.0, np.zeros((4, 5), bool), None)])
    with pytest.raises(ValueError, match="connectivity"):
        evaluate_vessels([("a", p, np.zeros((4, 5), bool), None)], connectivity=6)
