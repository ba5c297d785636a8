"""OCTA vessel evaluation exactly as OCTA-Net's code (ROSE; Ma et al., IEEE TMI 40(3), 2021).

Pure functions on numpy arrays; OpenCV does the Otsu threshold and the tolerance dilation,
scikit-learn the AUC and Cohen's kappa, so that the numbers follow the same library code as the
authors' ``iMED-Lab/OCTA-Net-OCTA-Vessel-Segmentation-Network`` (``code/OCTA-Net/test.py``,
``get_results``; ``evaluation/utils.py``, ``numeric_score`` and ``calc_*``; the mean and std of
``evaluation/evaluation.py``).

Protocol, per test image:

1. AUC-ROC of the float probability map against the reference (sklearn ``roc_auc_score``),
   over all pixels (ROSE has no FOV masks).
2. Binarisation: ``uint8(prob * 255)`` (truncating cast) and a per-image Otsu threshold t
   (``cv2.threshold(..., 0, 255, THRESH_BINARY + THRESH_OTSU)``): foreground = value > t.
3. Counts with a tolerance kernel of k x k pixels: D = G dilated by
   ``cv2.getStructuringElement(MORPH_ELLIPSE, (k, k))``; TP = |B & D|, FP = |B & ~D|,
   FN = |~B & G|, TN = |~B & ~G|. k = 1 (the authors' default) is no tolerance; their comment
   gives k = 3 for centre-line-level labels ("DCC & ROSE-2").
4. Acc, Se, Sp, FDR, G-mean, kappa, IoU, Dice from those counts.

Then the mean and the population standard deviation (``np.std``, ddof=0) over images.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from medseg.metrics._common import as_probability, case_label, none_if_nan, unpack_case

OCTA_METRICS = (
    "auc_roc",
    "accuracy",
    "sensitivity",
    "specificity",
    "fdr",
    "gmean",
    "kappa",
    "iou",
    "dice",
)
"""The nine per-image metrics of :func:`octa_metrics`, in report order (OCTA-Net's order of
``evaluation/evaluation.py`` is auc, acc, sen, spe, gmean, kappa, fdr, iou, dice)."""

_COUNTS = ("tp", "fp", "fn", "tn")


# --------------------------------------------------------------------------------------------
# input checks


def _as_target(target: Any, shape: tuple[int, ...], case_id: Any = None) -> np.ndarray:
    arr = np.asarray(target)
    if arr.dtype != bool:
        if arr.dtype.kind not in "biuf" or (arr.size and not np.all((arr == 0) | (arr == 1))):
            raise ValueError(
                f"{case_label(case_id)}target must be a bool or 0/1 array (binarise 0/255 labels with > 127 first)"
            )
        arr = arr != 0
    if arr.shape != shape:
        raise ValueError(
            f"{case_label(case_id)}shape mismatch: prob has shape {tuple(shape)} but target has shape "
            f"{tuple(arr.shape)}"
        )
    return arr


def _check_tolerance(tolerance: Any) -> int:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, np.integer)) or tolerance < 1:
        raise ValueError(f"tolerance must be an int >= 1 (kernel size in pixels), got {tolerance!r}")
    return int(tolerance)


# --------------------------------------------------------------------------------------------
# binarisation and counts


def otsu_binarize(prob: Any) -> tuple[np.ndarray, float]:
    """Binarise a probability map with a per-image Otsu threshold, as OCTA-Net's test code.

    Args:
        prob: float array (H, W) with values in [0, 1] (a sigmoid output).

    Returns:
        ``(binary, threshold)``: ``binary`` is a bool array (H, W); ``threshold`` is a Python
        float in [0, 1], the Otsu threshold t of the 8-bit map divided by 255.

        Exactly as ``get_results`` in ``code/OCTA-Net/test.py``: ``pred_img =
        np.array(pred_arr * 255, np.uint8)``, i.e. the float32 product is *truncated* (not
        rounded) to an integer 0..255 (the map is cast to float32 first, as the authors' torch
        output is float32); then ``cv2.threshold(pred_img, 0, 255, cv2.THRESH_BINARY +
        cv2.THRESH_OTSU)`` returns the integer Otsu threshold t, and the foreground is
        ``pred_img > t`` (strict), equivalently ``prob >= (t + 1) / 255`` up to float32
        rounding. OpenCV's Otsu returns t = 0 for a constant map, so a constant map > 0 becomes
        all foreground and a constant 0 map all background.

    Raises:
        ValueError: ``prob`` is not a 2-D float array, is empty, not finite or outside [0, 1].

    Source: Ma et al., IEEE TMI 2021 (ROSE / OCTA-Net), ``code/OCTA-Net/test.py``; Otsu, IEEE
    Trans. SMC 9(1):62-66, 1979.
    """
    import cv2

    p = as_probability(prob)
    img = np.array(p.astype(np.float32) * np.float32(255), dtype=np.uint8)
    t, binary = cv2.threshold(img, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return binary > 0, float(t) / 255.0


def _tolerance_counts(binary: np.ndarray, target: np.ndarray, tolerance: int) -> dict[str, int]:
    """TP, FP, FN, TN of ``numeric_score`` in OCTA-Net's ``evaluation/utils.py``."""
    if tolerance == 1:
        dilated = target
    else:
        import cv2

        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (tolerance, tolerance))
        dilated = cv2.dilate(target.astype(np.uint8), kernel, iterations=1) > 0
    n_pred = int(np.count_nonzero(binary))
    tp = int(np.count_nonzero(binary & dilated))
    fn = int(np.count_nonzero(target & ~binary))
    tn = int(binary.size) - n_pred - fn  # |~B & ~G| = |~B| - |~B & G|
    return {"tp": tp, "fp": n_pred - tp, "fn": fn, "tn": tn}


def _ratio(num: int, den: int) -> float:
    # the authors add 1e-12 to these denominators, so 0/0 gives 0 there; same here, exactly
    return float(num) / float(den) if den > 0 else 0.0


def _kappa(tp: int, fp: int, fn: int, tn: int) -> float:
    n = tp + fp + fn + tn
    # chance agreement p_e = [(TP+FP)(TP+FN) + (FN+TN)(FP+TN)] / n^2 (calc_kappa); p_e = 1 (one
    # class in both maps, or n = 0) leaves kappa undefined: NaN (the authors' code divides 0/0)
    if n == 0 or (tp + fp) * (tp + fn) + (fn + tn) * (fp + tn) == n * n:
        return math.nan
    from sklearn.metrics import cohen_kappa_score

    # the 2x2 table as four weighted samples: sklearn's confusion matrix is then the table
    k = cohen_kappa_score([1, 0, 1, 0], [1, 1, 0, 0], labels=[0, 1], sample_weight=[tp, fp, fn, tn])
    return float(k)


def _auc(p: np.ndarray, t: np.ndarray) -> float:
    n_pos = int(np.count_nonzero(t))
    if n_pos == 0 or n_pos == t.size:
        return math.nan  # sklearn raises here ("Only one class present")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(t.reshape(-1), p.reshape(-1)))


def octa_metrics(prob: Any, target: Any, tolerance: int = 1) -> dict[str, Any]:
    """The nine OCTA-Net metrics of one image, plus its Otsu threshold and the four counts.

    Args:
        prob: float array (H, W), probabilities in [0, 1].
        target: bool or 0/1 array (H, W), the reference vessels.
        tolerance: k >= 1, side in pixels of the ``cv2.MORPH_ELLIPSE`` structuring element that
            dilates the reference before TP/FP are counted (1 = none, the authors' default and
            their choice for the pixel-level SVC labels; 3 for centre-line labels: "DCC &
            ROSE-2: kernel_size=(3, 3)"). OpenCV's 3 x 3 "ellipse" is the 4-neighbour cross.

    Returns:
        A dict with the keys of :data:`OCTA_METRICS` then ``threshold``, ``tp``, ``fp``,
        ``fn``, ``tn``. With B = :func:`otsu_binarize` (prob), G = target, D = G dilated:

        * counts (Python ints): TP = |B & D|, FP = |B & ~D|, FN = |~B & G|, TN = |~B & ~G|
          (they still sum to H W, since B and ~B split the image, but TP + FN != |G| when
          k > 1: a tolerance only ever helps);
        * ``auc_roc``: sklearn ``roc_auc_score`` (target, prob) on the float probabilities, all
          pixels; NaN when the target holds a single class;
        * ``accuracy`` = (TP+TN)/(TP+FP+FN+TN), ``sensitivity`` = TP/(TP+FN), ``specificity`` =
          TN/(TN+FP), ``fdr`` = FP/(FP+TP), ``gmean`` = sqrt(Se Sp), ``iou`` = TP/(TP+FP+FN),
          ``dice`` = 2TP/(2TP+FP+FN): Python floats in [0, 1]; a zero denominator gives 0.0,
          which is what the authors' ``+ 1e-12`` gives;
        * ``kappa``: Cohen's kappa of the 2 x 2 table (sklearn ``cohen_kappa_score`` with the
          counts as sample weights; with k = 1 identical to ``cohen_kappa_score(G, B)`` over the
          pixels), in [-1, 1]; NaN when the chance agreement is 1 (both maps a single class);
        * ``threshold``: the Otsu threshold / 255, a float in [0, 1].

    Raises:
        ValueError: prob not a 2-D float map in [0, 1]; target not binary; shapes differ (the
            message names both); tolerance not an int >= 1.

    Source: OCTA-Net ``evaluation/utils.py`` (``numeric_score``, ``calc_auc``, ``calc_acc``,
    ``calc_sen``, ``calc_spe``, ``calc_fdr``, ``calc_gmean``, ``calc_kappa``, ``calc_iou``,
    ``calc_dice``) and ``code/OCTA-Net/test.py`` (``get_results``); Ma et al., IEEE TMI 2021.
    """
    return _octa_case(prob, target, tolerance, None)


def _octa_case(prob: Any, target: Any, tolerance: Any, case_id: Any) -> dict[str, Any]:
    k = _check_tolerance(tolerance)
    p = as_probability(prob, case_id)
    t = _as_target(target, p.shape, case_id)
    binary, threshold = otsu_binarize(p)
    c = _tolerance_counts(binary, t, k)
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    sen = _ratio(tp, tp + fn)
    spe = _ratio(tn, tn + fp)
    out: dict[str, Any] = {
        "auc_roc": _auc(p, t),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "sensitivity": sen,
        "specificity": spe,
        "fdr": _ratio(fp, fp + tp),
        "gmean": math.sqrt(sen * spe),
        "kappa": _kappa(tp, fp, fn, tn),
        "iou": _ratio(tp, tp + fp + fn),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "threshold": threshold,
    }
    out.update(c)
    return out


# --------------------------------------------------------------------------------------------
# protocol


def evaluate_octa(cases: Iterable[Any], tolerance: int = 1) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate OCTA probability maps with OCTA-Net's protocol: per image, then mean and std.

    Args:
        cases: iterable of ``(case_id, prob, target)`` tuples or mappings with ``prob``,
            ``target`` and ``case_id``/``id``. ``prob``: float array (H, W) in [0, 1];
            ``target``: bool or 0/1 array (H, W). Sizes may differ between images.
        tolerance: the k x k elliptical tolerance kernel of :func:`octa_metrics` (1 = none).

    Returns:
        ``(summary, rows)``. ``summary`` is ::

            {"n_images": int, "tolerance": int,
             "mean": {<9 keys of OCTA_METRICS>: float | None},
             "std": {<9 keys>: float | None},
             "conventions": {"binarisation", "auc", "tolerance", "counts", "kappa",
                             "zero_division", "aggregation", "undefined_values": str}}

        ``mean`` is the arithmetic mean over images and ``std`` the population standard
        deviation (ddof = 0: ``np.array(values).std()`` in the authors' ``evaluation.py`` and
        ``test.py``), both over the images where the metric is defined (an undefined AUC or
        kappa is left out; the authors' code would fail or give NaN); None when no image has
        the metric defined. ``rows`` holds one dict per image: ``id`` first, then the 9
        metrics (None where undefined), ``threshold`` (Otsu / 255), ``tp``, ``fp``, ``fn``,
        ``tn``. Everything is plain Python ints/floats/None (strict JSON).

    Raises:
        ValueError: no case; a malformed case; per-case input errors of :func:`octa_metrics`
            (the message names the case id, e.g. both shapes on a shape mismatch).

    Source: OCTA-Net (Ma et al., IEEE TMI 2021), ``evaluation/evaluation.py`` and
    ``code/OCTA-Net/test.py`` (``get_results``, ``print_results``) in
    github.com/iMED-Lab/OCTA-Net-OCTA-Vessel-Segmentation-Network.
    """
    k = _check_tolerance(tolerance)
    rows: list[dict[str, Any]] = []
    for index, case in enumerate(cases):
        cid, prob, target = unpack_case(case, index, ("prob", "target"))
        m = _octa_case(prob, target, k, cid)
        row: dict[str, Any] = {"id": cid}
        for key in OCTA_METRICS:
            row[key] = none_if_nan(m[key])
        row["threshold"] = m["threshold"]
        for key in _COUNTS:
            row[key] = m[key]
        rows.append(row)
    if not rows:
        raise ValueError("evaluate_octa: no cases to evaluate")

    mean: dict[str, float | None] = {}
    std: dict[str, float | None] = {}
    for key in OCTA_METRICS:
        vals = np.array([r[key] for r in rows if r[key] is not None], dtype=np.float64)
        mean[key] = float(vals.mean()) if vals.size else None
        std[key] = float(vals.std()) if vals.size else None
    summary: dict[str, Any] = {
        "n_images": len(rows),
        "tolerance": k,
        "mean": mean,
        "std": std,
        "conventions": {
            "binarisation": "per-image Otsu on uint8(float32(prob) * 255) (truncating cast), "
            "foreground = value > Otsu threshold (cv2.THRESH_BINARY + cv2.THRESH_OTSU), as "
            "OCTA-Net code/OCTA-Net/test.py; row 'threshold' = Otsu threshold / 255",
            "auc": "sklearn roc_auc_score on the float probabilities over all pixels (as "
            "test.py; evaluation/evaluation.py re-reads the 8-bit maps, which quantises the "
            "scores); undefined (None) when the target holds a single class",
            "tolerance": f"reference dilated by cv2.getStructuringElement(MORPH_ELLIPSE, ({k}, "
            f"{k})) before TP/FP are counted" + (" (k = 1: no tolerance)" if k == 1 else ""),
            "counts": "TP = |B & dilated G|, FP = |B & ~dilated G|, FN = |~B & G|, TN = |~B & ~G| "
            "(OCTA-Net evaluation/utils.py numeric_score)",
            "kappa": "Cohen's kappa of the (TP, FP, FN, TN) table, p_e = [(TP+FP)(TP+FN) + "
            "(FN+TN)(FP+TN)] / n^2 (calc_kappa; computed by sklearn cohen_kappa_score with "
            "the counts as sample weights)",
            "zero_division": "Se, Sp, FDR, IoU, Dice with a zero denominator are 0 (the "
            "authors add 1e-12); kappa with p_e = 1 is undefined",
            "aggregation": "per-image metrics, then mean and population std (ddof=0, np.std) "
            "over images (mean of scores); undefined values left out",
            "undefined_values": "None (JSON null)",
        },
    }
    return summary, rows


__all__ = ["OCTA_METRICS", "evaluate_octa", "octa_metrics", "otsu_binarize"]
