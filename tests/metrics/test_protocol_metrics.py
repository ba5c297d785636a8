"""Tests of the community protocols in medseg.metrics: OCTA-Net (octa.py), PraNet (polyp.py),
CT/MRI volumes (volume.py), and the Euler-characteristic error / AUC agreement of the vessel
protocol. Numbers are checked against hand-computed cases and against the reference packages
(sklearn, OpenCV, pysodmetrics, MONAI, scipy, torch)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi

from medseg.metrics import (
    OCTA_METRICS,
    POLYP_METRICS,
    VESSEL_METRICS,
    VOLUME_METRICS,
    auc_pr,
    auc_roc,
    betti_numbers,
    cldice,
    euler_characteristic,
    evaluate_octa,
    evaluate_polyp,
    evaluate_vessels,
    evaluate_volumes,
    octa_metrics,
    otsu_binarize,
    prepare_polyp_prediction,
    volume_case_metrics,
)


def approx(x, rel=1e-12, abs=1e-12):
    return pytest.approx(x, rel=rel, abs=abs)


# =========================================================================================
# OCTA (OCTA-Net evaluation/utils.py, code/OCTA-Net/test.py)


def _brute_otsu(img: np.ndarray) -> int:
    """Otsu by exhaustive search: the first t maximising the between-class variance of
    {<= t} vs {> t} (OpenCV's convention)."""
    hist = np.bincount(img.ravel(), minlength=256).astype(np.float64)
    prob = hist / hist.sum()
    levels = np.arange(256)
    best, best_t = -1.0, 0
    for t in range(256):
        w0 = prob[: t + 1].sum()
        w1 = 1.0 - w0
        if w0 <= 0 or w1 <= 0:
            continue
        m0 = (prob[: t + 1] * levels[: t + 1]).sum() / w0
        m1 = (prob[t + 1 :] * levels[t + 1 :]).sum() / w1
        var = w0 * w1 * (m0 - m1) ** 2
        if var > best + 1e-12:
            best, best_t = var, t
    return best_t


def test_otsu_matches_exhaustive_search():
    rng = np.random.default_rng(0)
    for _ in range(5):
        fg = rng.random((40, 50)) < 0.3
        prob = np.where(fg, rng.normal(0.7, 0.15, fg.shape), rng.normal(0.25, 0.1, fg.shape))
        prob = np.clip(prob, 0, 1).astype(np.float32)
        binary, thr = otsu_binarize(prob)
        img = np.array(prob * 255, np.uint8)
        t = _brute_otsu(img)
        assert thr == approx(t / 255)
        assert binary.dtype == bool and binary.shape == prob.shape
        assert np.array_equal(binary, img > t)  # strict >, on the truncated 8-bit map


def test_otsu_truncates_not_rounds():
    # 0.5 * 255 = 127.5: truncated to 127 (authors' np.array(x * 255, np.uint8)), which Otsu
    # groups with 0 (t = 127, pixel background). Rounded to 128 it would be foreground (t = 0).
    prob = np.array([[0.0] * 6 + [1.0] * 6 + [0.5]])
    binary, thr = otsu_binarize(prob)
    assert thr == approx(127 / 255)
    assert not binary[0, -1]
    assert binary[0, 6:12].all() and not binary[0, :6].any()
    # 0.999 * 255 = 254.7 -> 254
    binary, thr = otsu_binarize(np.array([[0.0, 0.999], [0.0, 0.999]]))
    assert thr == 0.0 and binary[:, 1].all()


def test_otsu_constant_map_quirk():
    # OpenCV's Otsu returns t = 0 for a constant map: a constant map > 0 is all foreground
    binary, thr = otsu_binarize(np.full((4, 4), 0.3))
    assert thr == 0.0 and binary.all()
    binary, _ = otsu_binarize(np.zeros((4, 4)))
    assert not binary.any()


def _octa_hand_case():
    """5x5: G = column 2; B = column 3 plus (0, 2). prob is two-level (0.1 / 0.9), so that Otsu
    gives B = {prob = 0.9}."""
    target = np.zeros((5, 5), bool)
    target[:, 2] = True
    binary = np.zeros((5, 5), bool)
    binary[:, 3] = True  # beside G: inside the 3x3 cross tolerance
    binary[0, 2] = True  # on G
    prob = np.where(binary, 0.9, 0.1)
    return prob, target, binary


def test_octa_counts_by_hand_no_tolerance():
    prob, target, binary = _octa_hand_case()
    m = octa_metrics(prob, target, tolerance=1)
    assert list(m) == list(OCTA_METRICS) + ["threshold", "tp", "fp", "fn", "tn"]
    # TP = |B & G| = 1, FP = 5, FN = 4, TN = 25 - 6 - 4 = 15
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 5, 4, 15)
    assert m["accuracy"] == approx(16 / 25)
    assert m["sensitivity"] == approx(1 / 5)
    assert m["specificity"] == approx(15 / 20)
    assert m["fdr"] == approx(5 / 6)
    assert m["gmean"] == approx(math.sqrt(0.2 * 0.75))
    assert m["iou"] == approx(1 / 10)
    assert m["dice"] == approx(2 / 11)
    from sklearn.metrics import cohen_kappa_score, roc_auc_score

    assert m["kappa"] == approx(cohen_kappa_score(target.ravel(), binary.ravel()))
    assert m["auc_roc"] == approx(roc_auc_score(target.ravel(), prob.ravel()))
    assert m["auc_roc"] == approx(auc_roc(prob, target))
    assert m["threshold"] == approx(25 / 255)  # uint8(0.1 * 255) = 25 is the Otsu threshold


def test_octa_counts_by_hand_with_tolerance():
    prob, target, _ = _octa_hand_case()
    m = octa_metrics(prob, target, tolerance=3)
    # D = G dilated by the 3x3 ellipse (a cross) = columns 1..3: all 6 predicted pixels are TP
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (6, 0, 4, 15)
    assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == 25  # B / ~B still split the image
    assert m["accuracy"] == approx(21 / 25)
    assert m["sensitivity"] == approx(6 / 10)
    assert m["specificity"] == 1.0
    assert m["fdr"] == 0.0
    assert m["gmean"] == approx(math.sqrt(0.6))
    assert m["iou"] == approx(6 / 10)
    assert m["dice"] == approx(12 / 16)
    # p_o = 21/25, p_e = (6*10 + 19*15)/625 = 345/625 -> kappa = 0.288/0.448 = 9/14
    assert m["kappa"] == approx(9 / 14)
    # the ellipse is a cross: a pixel diagonal to G is not tolerated
    target2 = np.zeros((5, 5), bool)
    target2[2, 2] = True
    prob2 = np.full((5, 5), 0.1)
    prob2[1, 1] = prob2[1, 2] = 0.9  # diagonal, and 4-neighbour
    m2 = octa_metrics(prob2, target2, tolerance=3)
    assert (m2["tp"], m2["fp"], m2["fn"]) == (1, 1, 1)
    # a 5x5 ellipse reaches the diagonal neighbour
    assert octa_metrics(prob2, target2, tolerance=5)["fp"] == 0


def test_octa_kappa_equals_sklearn_without_tolerance():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(5)
    for _ in range(4):
        target = rng.random((30, 40)) < 0.2
        prob = np.clip(0.4 * target + 0.6 * rng.random(target.shape), 0, 1)
        m = octa_metrics(prob, target)
        binary, _ = otsu_binarize(prob)
        assert m["kappa"] == approx(cohen_kappa_score(target.ravel(), binary.ravel()), rel=1e-10)


def test_octa_undefined_and_zero_division():
    target = np.zeros((4, 4), bool)
    prob = np.zeros((4, 4))
    m = octa_metrics(prob, target)
    assert math.isnan(m["auc_roc"])  # single class
    assert math.isnan(m["kappa"])  # p_e = 1
    # zero denominators give 0, as the authors' + 1e-12
    assert m["sensitivity"] == 0.0 and m["dice"] == 0.0 and m["iou"] == 0.0 and m["fdr"] == 0.0
    assert m["specificity"] == 1.0 and m["accuracy"] == 1.0


def test_evaluate_octa_mean_and_population_std():
    rng = np.random.default_rng(2)
    cases = []
    for i in range(3):
        target = rng.random((20, 24)) < 0.25
        prob = np.clip(0.35 * target + 0.65 * rng.random(target.shape), 0, 1).astype(np.float32)
        cases.append((f"img{i}", prob, target))
    cases.append(("empty", np.zeros((6, 6), np.float32), np.zeros((6, 6), bool)))
    summary, rows = evaluate_octa(cases, tolerance=3)
    assert summary["n_images"] == 4 and summary["tolerance"] == 3
    assert list(summary["mean"]) == list(OCTA_METRICS) and list(summary["std"]) == list(OCTA_METRICS)
    assert list(rows[0]) == ["id", *OCTA_METRICS, "threshold", "tp", "fp", "fn", "tn"]
    assert [r["id"] for r in rows] == ["img0", "img1", "img2", "empty"]
    for key in OCTA_METRICS:
        vals = [octa_metrics(p, t, 3)[key] for _, p, t in cases]
        vals = np.array([v for v in vals if not math.isnan(v)])
        assert summary["mean"][key] == approx(vals.mean())
        assert summary["std"][key] == approx(vals.std(ddof=0))
    # AUC and kappa undefined for the empty image: None in its row, left out of the mean
    assert rows[3]["auc_roc"] is None and rows[3]["kappa"] is None
    assert summary["mean"]["auc_roc"] == approx(np.mean([r["auc_roc"] for r in rows[:3]]))
    assert summary["std"]["dice"] != approx(np.std([r["dice"] for r in rows], ddof=1))
    assert "ddof=0" in summary["conventions"]["aggregation"]
    json.dumps(summary, allow_nan=False)
    json.dumps(rows, allow_nan=False)


def test_octa_errors():
    prob = np.zeros((4, 5))
    with pytest.raises(ValueError, match=r"case 'a'.*\(4, 5\).*\(4, 4\)"):
        evaluate_octa([("a", prob, np.zeros((4, 4), bool))])
    with pytest.raises(ValueError, match=r"case 'b'.*\[0, 1\]"):
        evaluate_octa([("b", prob + 2, np.zeros((4, 5), bool))])
    with pytest.raises(ValueError, match="tolerance"):
        octa_metrics(prob, np.zeros((4, 5), bool), tolerance=0)
    with pytest.raises(ValueError, match="0/1"):
        octa_metrics(prob, np.full((4, 5), 255, np.uint8))
    with pytest.raises(ValueError, match="no cases"):
        evaluate_octa([])


# =========================================================================================
# Polyp (PraNet toolbox through pysodmetrics)


def test_prepare_polyp_rounds_half_up_and_normalises():
    prob = np.array([[0.0, 0.3, 1.0, 0.5]])  # 0.3 * 255 = 76.5 exactly
    out = prepare_polyp_prediction(prob, (1, 4))
    assert out.dtype == np.uint8
    # bytescale: floor(x + 0.5): 76.5 -> 77 (np.rint would give 76), 127.5 -> 128
    assert out.tolist() == [[0, 77, 255, 128]]
    # per-image min-max: a map in [0.2, 0.6] spans 0..255
    out = prepare_polyp_prediction(np.array([[0.2, 0.4, 0.6]]), (1, 3))
    assert out.tolist() == [[0, 128, 255]]
    # constant map -> zeros
    assert not prepare_polyp_prediction(np.full((3, 3), 0.7), (3, 3)).any()


def test_prepare_polyp_resize_matches_torch_bilinear():
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    for src, dst in (((4, 5), (8, 10)), ((7, 9), (22, 13)), ((12, 16), (5, 7))):
        prob = rng.random(src).astype(np.float32)
        ref = (
            F.interpolate(torch.from_numpy(prob)[None, None], size=dst, mode="bilinear", align_corners=False)[0, 0]
            .numpy()
            .astype(np.float64)
        )
        lo, hi = ref.min(), ref.max()
        expected = np.floor((ref - lo) * (255.0 / (hi - lo)) + 0.5)
        out = prepare_polyp_prediction(prob, dst)
        assert out.shape == dst
        # equal up to float32 interpolation rounding at a .5 boundary (at most one level)
        assert np.abs(out.astype(int) - expected).max() <= 1
        assert np.mean(out == expected) > 0.97


def test_polyp_hand_computed_curves():
    # 10x10: A (20 px, prob 1.0, in GT), C (20 px, prob 0.3, half in GT), rest 0.0
    prob = np.zeros((10, 10))
    gt = np.zeros((10, 10), bool)
    prob[:2, :] = 1.0
    gt[:2, :] = True
    prob[2:4, :] = 0.3
    gt[2, :] = True
    summary, rows = evaluate_polyp([("x", prob, gt)])
    # 8-bit map: A = 255, C = 77 (76.5 rounded half up), rest 0; thresholds k = 255..0 with
    # B_k = [v >= k]: k in 78..255 (178 values) -> B = A: Dice 40/50, IoU 20/30;
    # k in 1..77 (77 values) -> B = A + C: Dice 60/70, IoU 30/40; k = 0 -> B = all: Dice
    # 60/130, IoU 30/100
    mdice = (178 * 0.8 + 77 * 6 / 7 + 6 / 13) / 256
    miou = (178 * 2 / 3 + 77 * 0.75 + 0.3) / 256
    assert summary["mean"]["mdice"] == approx(mdice)
    assert summary["mean"]["miou"] == approx(miou)
    assert summary["mean"]["max_dice"] == approx(6 / 7)
    assert rows[0]["mdice"] == approx(mdice)
    # Dice at 0.5 of the raw probability: B = A
    assert summary["mean"]["dice_at_05"] == approx(0.8)
    assert summary["mean"]["iou_at_05"] == approx(2 / 3)
    # MAE on the normalised map: 10 px of 0.3-level (77/255) in GT -> |1 - 77/255|, 10 outside
    assert summary["mean"]["mae"] == approx((10 * (1 - 77 / 255) + 10 * 77 / 255) / 100)


def test_polyp_perfect_binary_prediction():
    gt = np.zeros((20, 30), bool)
    gt[5:12, 8:20] = True  # 84 px of 600
    summary, rows = evaluate_polyp([("p", gt.astype(np.float32), gt)])
    m = summary["mean"]
    # the toolbox's 256 thresholds include 0, where every pixel is foreground, so even a
    # perfect binary map has mDice = (255 + 2|G| / (|G| + N)) / 256 < 1, while maxDice = 1
    g, n = 84, 600
    assert m["mdice"] == approx((255 + 2 * g / (g + n)) / 256)
    assert m["miou"] == approx((255 + g / n) / 256)
    assert m["max_dice"] == 1.0
    assert m["s_alpha"] == approx(1.0)
    assert m["mae"] == 0.0
    assert m["wfbeta"] == approx(1.0, rel=1e-9)
    # E-measure divides the sum of the enhanced alignment by N - 1 (as Enhancedmeasure.m), so a
    # perfect map scores N / (N - 1), slightly above 1
    assert m["e_phi_max"] == approx(n / (n - 1), rel=1e-12)
    assert m["dice_at_05"] == 1.0 and m["iou_at_05"] == 1.0


def _polyp_cases(seed=0, n=4):
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        h, w = 36 + 4 * i, 44
        yy, xx = np.mgrid[:h, :w]
        gt = (yy - h / 2) ** 2 / 90 + (xx - w / 2 - i) ** 2 / 140 < 1
        small = (h // 2, w // 2)  # predictions at half resolution, resized to the GT
        gy, gx = np.mgrid[: small[0], : small[1]]
        blob = (gy - small[0] / 2) ** 2 / 25 + (gx - small[1] / 2 - i / 2) ** 2 / 30 < 1
        prob = np.clip(0.7 * blob + 0.35 * rng.random(small), 0, 1).astype(np.float32)
        gt8 = (gt * 255).astype(np.uint8)
        cases.append((f"c{i}", prob, gt8 if i % 2 else gt))
    return cases


def test_polyp_agrees_with_pysodmetrics_dataset_objects():
    import py_sod_metrics as sod

    cases = _polyp_cases()
    summary, rows = evaluate_polyp(cases)
    sm, wfm, mae, em = sod.Smeasure(), sod.WeightedFmeasure(), sod.MAE(), sod.Emeasure()
    fm = sod.FmeasureV2(
        metric_handlers={
            "dice": sod.DICEHandler(with_dynamic=True, with_adaptive=False),
            "iou": sod.IOUHandler(with_dynamic=True, with_adaptive=False),
        }
    )
    for _, prob, gt in cases:
        gt8 = gt.astype(np.uint8) * 255 if gt.dtype == bool else gt
        p8 = prepare_polyp_prediction(prob, gt8.shape)
        for metric in (sm, wfm, mae, em, fm):
            metric.step(p8, gt8)
    em_res = em.get_results()["em"]
    fm_res = fm.get_results()
    m = summary["mean"]
    assert m["s_alpha"] == approx(sm.get_results()["sm"])
    assert m["wfbeta"] == approx(wfm.get_results()["wfm"])
    assert m["mae"] == approx(mae.get_results()["mae"])
    assert m["e_phi_mean"] == approx(em_res["curve"].mean())
    assert m["e_phi_max"] == approx(em_res["curve"].max())
    assert m["e_phi_adaptive"] == approx(em_res["adp"])
    assert m["mdice"] == approx(fm_res["dice"]["dynamic"].mean())
    assert m["max_dice"] == approx(fm_res["dice"]["dynamic"].max())
    assert m["miou"] == approx(fm_res["iou"]["dynamic"].mean())
    # per-image columns average to the summary (mean over thresholds and images commute)
    for key in ("mdice", "miou", "wfbeta", "s_alpha", "e_phi_mean", "e_phi_adaptive", "mae", "dice_at_05", "iou_at_05"):
        assert np.mean([r[key] for r in rows]) == approx(m[key], rel=1e-12)
    assert list(summary["mean"]) == list(POLYP_METRICS)
    assert list(rows[0]) == [
        "id",
        "mdice",
        "miou",
        "wfbeta",
        "s_alpha",
        "e_phi_mean",
        "e_phi_adaptive",
        "mae",
        "dice_at_05",
        "iou_at_05",
    ]
    # mean Dice over thresholds differs from Dice at 0.5
    assert m["mdice"] != approx(m["dice_at_05"], rel=1e-3)
    json.dumps(summary, allow_nan=False)
    json.dumps(rows, allow_nan=False)


def test_polyp_gt_formats_and_threshold_semantics():
    gt = np.zeros((8, 8), bool)
    gt[2:6, 2:6] = True
    prob = np.where(gt, 0.8, 0.1)
    prob[0, 0] = 0.5  # raw prob exactly 0.5 counts as foreground (>=)
    forms = [gt, gt.astype(np.uint8), gt.astype(np.float32), gt.astype(np.uint8) * 255]
    results = [evaluate_polyp([("g", prob, g)])[0]["mean"] for g in forms]
    assert all(r == results[0] for r in results)
    assert results[0]["dice_at_05"] == approx(2 * 16 / (17 + 16))
    # 8-bit GT binarised at > 128: 128 is background, 129 foreground
    g8 = gt.astype(np.uint8) * 129
    g8[2, 2] = 128
    d = evaluate_polyp([("g", prob, g8)])[1][0]["dice_at_05"]
    assert d == approx(2 * 15 / (17 + 15))
    # both empty: Dice at 0.5 undefined -> None
    summary, rows = evaluate_polyp([("e", np.zeros((4, 4)), np.zeros((4, 4), bool))])
    assert rows[0]["dice_at_05"] is None and summary["mean"]["dice_at_05"] is None


def test_polyp_errors():
    with pytest.raises(ValueError, match=r"case 'q'.*\[0, 1\]"):
        evaluate_polyp([("q", np.full((4, 4), 1.5), np.zeros((4, 4), bool))])
    with pytest.raises(ValueError, match=r"case 'r'.*0\.\.255"):
        evaluate_polyp([("r", np.zeros((4, 4)), np.full((4, 4), 300, np.int32))])
    with pytest.raises(ValueError, match=r"case 's'.*2-D"):
        evaluate_polyp([("s", np.zeros((4, 4)), np.zeros((4, 4, 3), np.uint8))])
    with pytest.raises(ValueError, match="no cases"):
        evaluate_polyp([])


# =========================================================================================
# Volumes (MONAI metric functions)


def _edges(m: np.ndarray) -> np.ndarray:
    return m ^ ndi.binary_erosion(m)


def _numpy_hd95(a: np.ndarray, b: np.ndarray, spacing) -> tuple[float, float]:
    """(max of directed 95th percentiles, 95th percentile of pooled distances) from scipy EDTs
    on the same boundary voxels (mask XOR erosion), computed on a zero-padded copy."""
    a = np.pad(a, 1)
    b = np.pad(b, 1)
    ea, eb = _edges(a), _edges(b)
    d_ab = ndi.distance_transform_edt(~eb, sampling=spacing)[ea]
    d_ba = ndi.distance_transform_edt(~ea, sampling=spacing)[eb]
    directed = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    pooled = np.percentile(np.concatenate([d_ab, d_ba]), 95)
    return float(directed), float(pooled)


def _boxes():
    a = np.zeros((10, 10, 10), np.int64)
    b = np.zeros_like(a)
    a[2:6, 2:6, 2:6] = 1
    b[3:7, 2:6, 2:6] = 1  # offset by one voxel along axis 0
    return a, b


def test_volume_boxes_hd95_by_hand_and_spacing_order():
    a, b = _boxes()
    names = ["background", "organ"]
    r = volume_case_metrics(a, b, (2.0, 1.0, 1.0), names)["organ"]
    # each 4^3 box has 56 boundary voxels; A -> B: its 16 bottom-face voxels are 2 mm (one
    # voxel along axis 0) from B's boundary, its 4 top-face interior voxels 1 mm (a side face
    # of B), the other 36 lie on B's boundary. 95th percentile (linear, index 52.25) = 2 mm;
    # B -> A is symmetric.
    assert r["dice"] == approx(2 * 48 / 128)
    assert r["hd95"] == approx(2.0, rel=1e-6)
    assert r["hd95_pooled"] == approx(2.0, rel=1e-6)
    assert (r["gt_voxels"], r["pred_voxels"]) == (64, 64)
    # the same arrays with the spacing transposed: the offset is now 1 mm
    rt = volume_case_metrics(a, b, (1.0, 1.0, 2.0), names)["organ"]
    assert rt["hd95"] == approx(1.0, rel=1e-6)
    assert rt["nsd"] == approx(1.0)
    assert r["nsd"] < 1.0  # 2 mm offset, 1 mm tolerance
    assert volume_case_metrics(a, b, (2.0, 1.0, 1.0), names, nsd_tolerance_mm=2.0)["organ"]["nsd"] == approx(1.0)
    for sp in ((2.0, 1.0, 1.0), (1.0, 1.0, 2.0), (0.7, 1.3, 2.1)):
        res = volume_case_metrics(a, b, sp, names)["organ"]
        directed, pooled = _numpy_hd95(a == 1, b == 1, sp)
        assert res["hd95"] == approx(directed, rel=5e-5)
        assert res["hd95_pooled"] == approx(pooled, rel=1e-6)


def test_volume_hd95_definitions_differ():
    # a large box in both, plus a small false-positive blob far away in the prediction: the
    # directed pred -> gt set has > 5 % far distances, the pooled set fewer
    gt = np.zeros((24, 24, 24), np.int64)
    gt[4:14, 4:14, 4:14] = 1
    pred = gt.copy()
    pred[18:21, 18:21, 18:21] = 1
    sp = (1.5, 1.0, 0.8)
    r = volume_case_metrics(pred, gt, sp, ["bg", "lesion"])["lesion"]
    directed, pooled = _numpy_hd95(pred == 1, gt == 1, sp)
    # MONAI interpolates its float32 distances with torch.quantile in float32
    assert r["hd95"] == approx(directed, rel=5e-5)
    assert r["hd95_pooled"] == approx(pooled, rel=1e-6)
    assert r["hd95"] > r["hd95_pooled"] + 1.0


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy.*:FutureWarning")
def test_volume_matches_direct_monai_calls():
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(4)
    base = ndi.gaussian_filter(rng.random((20, 18, 16)), 2.0)
    target = (base > np.quantile(base, 0.6)).astype(np.int64)
    target[0:3, :, :][base[0:3] > np.quantile(base, 0.5)] = 2  # class 2 touches the border
    pred = np.roll(target, 1, axis=1)
    sp = (2.5, 0.8, 1.1)
    names = ["bg", "a", "b"]
    res = volume_case_metrics(pred, target, sp, names, nsd_tolerance_mm=1.5)
    for c, name in ((1, "a"), (2, "b")):
        yp = torch.from_numpy((pred == c)[None, None].astype(np.float32))
        yt = torch.from_numpy((target == c)[None, None].astype(np.float32))
        hd = compute_hausdorff_distance(yp, yt, include_background=True, percentile=95, spacing=list(sp))
        nsd = compute_surface_dice(
            yp, yt, class_thresholds=[1.5], include_background=True, spacing=list(sp), use_subvoxels=True
        )
        assert res[name]["hd95"] == approx(float(hd[0, 0]), rel=1e-6)
        assert res[name]["nsd"] == approx(float(nsd[0, 0]), rel=1e-6)
        a, b = pred == c, target == c
        assert res[name]["dice"] == approx(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_volume_nsd_identical_and_tolerance_monotone():
    a, b = _boxes()
    names = ["bg", "x"]
    assert volume_case_metrics(a, a, (2.0, 1.0, 1.0), names)["x"]["nsd"] == approx(1.0)
    nsd = [
        volume_case_metrics(a, b, (2.0, 1.0, 1.0), names, nsd_tolerance_mm=t)["x"]["nsd"]
        for t in (0.0, 0.5, 1.0, 1.5, 2.0)
    ]
    assert all(x <= y + 1e-12 for x, y in zip(nsd, nsd[1:]))
    assert 0.0 < nsd[0] < 1.0 and nsd[-1] == approx(1.0)


def test_volume_2d_input():
    a = np.zeros((12, 12), np.int64)
    b = np.zeros_like(a)
    a[2:8, 2:8] = 1
    b[3:9, 2:8] = 1
    r = volume_case_metrics(a, b, (1.0, 1.0), ["bg", "x"])["x"]
    assert r["dice"] == approx(30 / 36)
    assert r["hd95"] == approx(1.0, rel=1e-6)
    assert volume_case_metrics(a, b, (1.0, 1.0), ["bg", "x"], 1.0)["x"]["nsd"] == approx(1.0)


def test_volume_empty_conventions():
    z = np.zeros((6, 6, 6), np.int64)
    m = z.copy()
    m[2:4, 2:4, 2:4] = 1
    names = ["bg", "x"]
    both = volume_case_metrics(z, z, (1, 1, 1), names)["x"]
    assert all(math.isnan(both[k]) for k in VOLUME_METRICS)
    assert (both["gt_voxels"], both["pred_voxels"]) == (0, 0)
    for pred, target in ((z, m), (m, z)):
        one = volume_case_metrics(pred, target, (1, 1, 1), names)["x"]
        assert one["dice"] == 0.0 and one["nsd"] == 0.0
        assert math.isnan(one["hd95"]) and math.isnan(one["hd95_pooled"])
    # MONAI's own NSD is 0 when exactly one mask is empty (our value), NaN when both are
    import torch
    from monai.metrics import compute_surface_dice

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = torch.from_numpy(m[None, None].astype(np.float32))
        e = torch.zeros_like(t)
        assert float(compute_surface_dice(e, t, [1.0], include_background=True, use_subvoxels=True)[0, 0]) == 0.0
        assert math.isnan(float(compute_surface_dice(e, e, [1.0], include_background=True, use_subvoxels=True)[0, 0]))


def test_evaluate_volumes_summary():
    a, b = _boxes()
    two = a.copy()
    two[7:9, 7:9, 7:9] = 2
    names = ["background", "liver", "tumour"]
    cases = [
        ("c1", a, b, (2.0, 1.0, 1.0)),  # tumour absent from both: all NaN
        ("c2", two, two, (2.0, 1.0, 1.0)),  # perfect
        {"id": "c3", "pred": a, "target": two, "spacing": (2.0, 1.0, 1.0)},  # tumour missed
    ]
    summary, rows = evaluate_volumes(cases, names, nsd_tolerance_mm=1.0)
    assert summary["n_cases"] == 3 and summary["classes"] == ["liver", "tumour"]
    assert summary["nsd_tolerance_mm"] == 1.0
    assert set(summary["mean"]) == {"liver", "tumour", "foreground_mean"}
    assert set(summary["std"]) == {"liver", "tumour", "foreground_mean"}
    c1 = volume_case_metrics(a, b, (2.0, 1.0, 1.0), names)
    liver_dice = [c1["liver"]["dice"], 1.0, 1.0]
    assert summary["mean"]["liver"]["dice"] == approx(np.mean(liver_dice))
    assert summary["std"]["liver"]["dice"] == approx(np.std(liver_dice))
    # tumour: NaN (c1), 1.0 (c2), 0.0 (c3, missed) -> dice mean 0.5; hd95 only from c2
    assert summary["mean"]["tumour"]["dice"] == approx(0.5)
    assert summary["mean"]["tumour"]["hd95"] == approx(0.0)
    assert summary["undefined"]["tumour"] == {"dice": 1, "hd95": 2, "hd95_pooled": 2, "nsd": 1}
    assert summary["undefined"]["liver"] == {"dice": 0, "hd95": 0, "hd95_pooled": 0, "nsd": 0}
    fg = summary["mean"]["foreground_mean"]
    assert fg["dice"] == approx((summary["mean"]["liver"]["dice"] + 0.5) / 2)
    # std.foreground_mean: std over cases of each case's mean over its defined classes
    case_means = [c1["liver"]["dice"], 1.0, (1.0 + 0.0) / 2]
    assert summary["std"]["foreground_mean"]["dice"] == approx(np.std(case_means))
    expected = ["id"] + [f"{c}_{m}" for c in ("liver", "tumour") for m in (*VOLUME_METRICS, "gt_voxels", "pred_voxels")]
    assert all(list(r) == expected for r in rows)
    assert rows[0]["tumour_dice"] is None and rows[2]["tumour_dice"] == 0.0
    assert rows[2]["tumour_gt_voxels"] == 8 and rows[2]["tumour_pred_voxels"] == 0
    assert set(summary["conventions"]) >= {"hd95", "hd95_pooled", "nsd", "empty"}
    json.dumps(summary, allow_nan=False)
    json.dumps(rows, allow_nan=False)
    # a metric undefined in every case is None
    z = np.zeros((5, 5, 5), np.int64)
    s2, _ = evaluate_volumes([("z", z, z, (1, 1, 1))], ["bg", "x"])
    assert s2["mean"]["x"] == {m: None for m in VOLUME_METRICS}
    assert s2["mean"]["foreground_mean"] == {m: None for m in VOLUME_METRICS}
    assert s2["undefined"]["x"] == {m: 1 for m in VOLUME_METRICS}


def test_volume_errors():
    a, b = _boxes()
    names = ["bg", "x"]
    with pytest.raises(ValueError, match=r"case 'v1'.*\(10, 10, 10\).*\(10, 10, 9\)"):
        evaluate_volumes([("v1", a, b[:, :, :9], (1, 1, 1))], names)
    with pytest.raises(ValueError, match=r"case 'v2'.*spacing has 2 values"):
        evaluate_volumes([("v2", a, b, (1, 1))], names)
    with pytest.raises(ValueError, match=r"case 'v3'.*labels 0\.\.2 outside 0\.\.1"):
        evaluate_volumes([("v3", a * 2, b, (1, 1, 1))], names)
    with pytest.raises(ValueError, match="positive"):
        volume_case_metrics(a, b, (1, 0, 1), names)
    with pytest.raises(ValueError, match="class_names"):
        volume_case_metrics(a, b, (1, 1, 1), ["bg"])
    with pytest.raises(ValueError, match="no cases"):
        evaluate_volumes([], names)


# =========================================================================================
# Vessels: Euler characteristic, euler_error, AUC agreement with sklearn


def test_euler_characteristic():
    rng = np.random.default_rng(7)
    for _ in range(5):
        m = rng.random((30, 40)) < 0.45
        for conn in (8, 4):
            b0, b1 = betti_numbers(m, conn)
            assert euler_characteristic(m, conn) == b0 - b1
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6] = True
    ring[3, 3] = False
    assert euler_characteristic(ring) == 0  # one component, one hole
    diag = np.array([[1, 0], [0, 1]], bool)
    assert euler_characteristic(diag, 8) == 1 and euler_characteristic(diag, 4) == 2
    shell = np.zeros((5, 5, 5), bool)
    shell[1:4, 1:4, 1:4] = True
    shell[2, 2, 2] = False
    assert euler_characteristic(shell, 26) == 2  # beta0 = 1, beta2 = 1 (a cavity)
    assert euler_characteristic(np.zeros((3, 3), bool)) == 0
    with pytest.raises(ValueError, match="connectivity"):
        euler_characteristic(shell, 8)
    with pytest.raises(ValueError, match="2-D"):
        euler_characteristic(np.zeros(5, bool))


def _vessel_case(rng, shape=(40, 48)):
    target = np.zeros(shape, bool)
    target[8, 3:44] = True
    target[5:35, 26] = True
    target[28:30, 4:22] = True
    prob = np.clip(0.6 * target + 0.45 * rng.random(shape), 0, 1).astype(np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    fov = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (0.45 * shape[1]) ** 2
    return prob, target, fov


def test_evaluate_vessels_euler_error():
    assert VESSEL_METRICS[VESSEL_METRICS.index("betti1_error") + 1] == "euler_error"
    rng = np.random.default_rng(11)
    p1, t1, f1 = _vessel_case(rng)
    p2, t2, f2 = _vessel_case(rng)
    p2 = p2 * f2  # no prediction outside the FOV: the FOV topology reuses whole-image results
    cases = [("a", p1, t1, f1), ("b", p2, t2 & f2, f2), ("c", p1, t1, None)]
    summary, rows = evaluate_vessels(cases)
    for (_cid, p, t, f), row in zip(cases, rows):
        pred = p >= 0.5
        fov = np.ones_like(t) if f is None else f
        chi = euler_characteristic
        assert row["whole_image_euler_error"] == abs(chi(pred) - chi(t))
        assert row["fov_euler_error"] == abs(chi(pred & fov) - chi(t & fov))
        assert row["fov_cldice"] == approx(cldice(pred & fov, t & fov))
        b0p, b1p = betti_numbers(pred & fov)
        b0t, b1t = betti_numbers(t & fov)
        assert (row["fov_betti0_error"], row["fov_betti1_error"]) == (abs(b0p - b0t), abs(b1p - b1t))
    for region in ("fov", "whole_image"):
        mean = np.mean([r[f"{region}_euler_error"] for r in rows])
        assert summary[region]["per_image_mean"]["euler_error"] == approx(mean)
        assert summary[region]["pooled"]["euler_error"] == approx(mean)
    assert "euler_error" in summary["conventions"]


def test_auc_agrees_with_sklearn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.random(20000) < 0.12
    p = np.clip(0.3 * y + 0.7 * rng.random(y.size), 0, 1).astype(np.float32)
    pq = np.floor(p * 255) / 255  # 8-bit maps: heavy ties
    for scores in (p, pq):
        assert auc_roc(scores, y) == approx(roc_auc_score(y, scores), rel=1e-10)
        assert auc_pr(scores, y) == approx(average_precision_score(y, scores), rel=1e-10)
