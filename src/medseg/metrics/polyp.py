"""Polyp segmentation evaluation with the PraNet protocol (Fan et al., MICCAI 2020).

The numbers are those of PraNet's MATLAB toolbox (``DengPingFan/PraNet``, ``eval/main.m``),
computed by pysodmetrics (PyPI ``pysodmetrics``, import ``py_sod_metrics``; its README,
github.com/lartpang/PySODMetrics, states it was verified against Fan's MATLAB toolbox). Pure
numpy/OpenCV; no torch.

Pipeline per image:

1. :func:`prepare_polyp_prediction` turns a probability map into the 8-bit PNG that PraNet's
   ``MyTest.py`` saves: bilinear resize to the GT size, per-image min-max normalisation, rounding
   to uint8 (``scipy.misc.imsave``).
2. The toolbox reads it back: ``im2double`` + ``mapminmax`` of the map, GT > 128; in
   pysodmetrics that is ``step(pred_uint8, gt_uint8, normalize=True)``.
3. S-measure (alpha = 0.5), weighted F-measure (beta^2 = 1, ``original_WFb.m``), MAE, E-measure
   (256-threshold curve and adaptive threshold), and the 256-threshold Dice and IoU curves
   (``FmeasureV2`` with ``DICEHandler``/``IOUHandler``, ``with_dynamic=True``).

Dataset numbers: the toolbox's "meanDic" is the mean over the 256 thresholds of the
*dataset-mean* Dice curve (not Dice at 0.5); "maxDic" the maximum of that curve; likewise for
IoU and E-measure. Dice/IoU at 0.5 (the per-image mean that many Python polyp repositories
report) is given separately as ``dice_at_05``/``iou_at_05``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from medseg.metrics._common import as_probability, case_label, none_if_nan, unpack_case

POLYP_METRICS = (
    "mdice",
    "miou",
    "max_dice",
    "wfbeta",
    "s_alpha",
    "e_phi_mean",
    "e_phi_max",
    "e_phi_adaptive",
    "mae",
    "dice_at_05",
    "iou_at_05",
)
"""Keys of ``summary["mean"]`` of :func:`evaluate_polyp`, in report order."""

_ROW_METRICS = (
    "mdice",
    "miou",
    "wfbeta",
    "s_alpha",
    "e_phi_mean",
    "e_phi_adaptive",
    "mae",
    "dice_at_05",
    "iou_at_05",
)


def _polyp_prob(prob: Any, case_id: Any = None) -> np.ndarray:
    return as_probability(prob, case_id, dtype=np.float64, axes="h, w")


def _gt_shape(gt_shape: Any, case_id: Any = None) -> tuple[int, int]:
    try:
        shape = tuple(int(s) for s in gt_shape)
    except TypeError as exc:
        raise ValueError(f"{case_label(case_id)}gt_shape must be (H, W), got {gt_shape!r}") from exc
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"{case_label(case_id)}gt_shape must be (H, W) with H, W >= 1, got {shape}")
    return shape  # type: ignore[return-value]


def _resize(p: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with half-pixel centres (= torch ``F.interpolate(mode='bilinear',
    align_corners=False)`` without antialiasing, PraNet's ``F.upsample``)."""
    if p.shape == shape:
        return p
    import cv2

    out = cv2.resize(p.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0)


def _to_uint8(p: np.ndarray) -> np.ndarray:
    # MyTest.py: res = (res - min) / (max - min + 1e-8); scipy.misc.imsave -> bytescale, which
    # min-max scales again to 0..255 (undoing the 1e-8) and rounds half up: uint8(x * 255 + 0.5).
    # A constant map is all zeros (bytescale's cscale = 0 -> 1, data - cmin = 0).
    p = p.astype(np.float64)
    lo, hi = float(p.min()), float(p.max())
    if hi == lo:
        return np.zeros(p.shape, np.uint8)
    scaled = (p - lo) * (255.0 / (hi - lo))
    return (np.clip(scaled, 0.0, 255.0) + 0.5).astype(np.uint8)


def prepare_polyp_prediction(prob: Any, gt_shape: Any) -> np.ndarray:
    """The 8-bit prediction map that PraNet's ``MyTest.py`` saves and the toolbox reads.

    Args:
        prob: float array (h, w), a probability map in [0, 1] (sigmoid output) at any size.
        gt_shape: (H, W) of the ground truth, in pixels.

    Returns:
        uint8 array (H, W) with values 0..255:

        1. if (h, w) != (H, W): bilinear resize to (H, W) with half-pixel centres (OpenCV
           ``INTER_LINEAR``, the sampling of torch ``F.interpolate(mode='bilinear',
           align_corners=False)``; no antialiasing), clipped to [0, 1]. PraNet resizes the
           logits before the sigmoid; we receive probabilities, so the resize is applied to
           them (a difference of interpolation order only);
        2. per-image min-max normalisation x' = (x - min) / (max - min);
        3. ``uint8(floor(255 x' + 0.5))``, round half up, as ``scipy.misc.imsave`` /
           ``bytescale`` (the 1e-8 of ``MyTest.py`` is undone by ``bytescale``'s own min-max).

        A constant map (max = min) gives all zeros.

    Raises:
        ValueError: prob not a finite 2-D float map in [0, 1], or gt_shape not (H, W).

    Source: ``DengPingFan/PraNet`` ``MyTest.py`` (``F.upsample(..., mode='bilinear',
    align_corners=False)``, min-max, ``misc.imsave``); scipy 1.0 ``scipy/misc/pilutil.py``
    (``bytescale``: ``(bytedata.clip(low, high) + 0.5).astype(uint8)``).
    """
    return _prepare(prob, gt_shape, None)[0]


def _prepare(prob: Any, gt_shape: Any, case_id: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _polyp_prob(prob, case_id)
    resized = _resize(p, _gt_shape(gt_shape, case_id))
    return _to_uint8(resized), resized


def _gt_uint8(gt: Any, case_id: Any = None) -> np.ndarray:
    """GT as the toolbox sees it: an 8-bit image that is binarised at > 128."""
    arr = np.asarray(gt)
    if arr.ndim != 2:
        raise ValueError(f"{case_label(case_id)}gt must be 2-D (H, W), got shape {tuple(arr.shape)}")
    if arr.dtype == bool:
        return arr.astype(np.uint8) * np.uint8(255)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{case_label(case_id)}gt must be bool, 0/1 or 0..255, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{case_label(case_id)}gt is empty (shape {tuple(arr.shape)})")
    if np.all((arr == 0) | (arr == 1)):
        return (arr != 0).astype(np.uint8) * np.uint8(255)
    if arr.dtype.kind == "f" or float(arr.min()) < 0 or float(arr.max()) > 255:
        raise ValueError(
            f"{case_label(case_id)}gt must be bool, 0/1 or integer 0..255 (got dtype {arr.dtype}, "
            f"min {float(arr.min()):.4g}, max {float(arr.max()):.4g})"
        )
    return arr.astype(np.uint8)


def _dice_iou_at(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    tp = int(np.count_nonzero(pred & gt))
    n_p, n_g = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
    if n_p + n_g == 0:
        return math.nan, math.nan  # both empty: undefined
    return 2.0 * tp / (n_p + n_g), tp / (n_p + n_g - tp)


def evaluate_polyp(cases: Iterable[Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate polyp probability maps with the PraNet toolbox protocol (through pysodmetrics).

    Args:
        cases: iterable of ``(case_id, prob, gt)`` tuples or mappings with ``prob``, ``gt`` and
            ``case_id``/``id``. ``prob``: float array (h, w) in [0, 1] at any size (resized to
            the GT); ``gt``: (H, W) bool, 0/1 (any numeric dtype) or integer 0..255 (binarised
            at > 128 as the toolbox; an integer mask holding only 0 and 1 is read as 0/1).

    Returns:
        ``(summary, rows)``. ``summary`` is ::

            {"n_images": int,
             "mean": {mdice, miou, max_dice, wfbeta, s_alpha, e_phi_mean, e_phi_max,
                      e_phi_adaptive, mae, dice_at_05, iou_at_05},   # float | None
             "conventions": {...}}

        * ``mdice`` / ``miou``: mean over the 256 thresholds k/255 (k = 255..0, B_k = [P >= k/255]
          on the normalised map P) of the dataset-mean Dice / IoU curve (toolbox "meanDic",
          "meanIoU"); ``max_dice``: maximum of that Dice curve ("maxDic"). Dice/IoU at a
          threshold with a zero denominator is 0 (pysodmetrics; the toolbox zeroes every score
          when TP = 0, the same for Dice and IoU);
        * ``wfbeta``: weighted F-measure with beta^2 = 1, mean over images (0 for an all-background
          GT, where the toolbox would give NaN); ``s_alpha``: S-measure, alpha = 0.5;
        * ``e_phi_mean`` / ``e_phi_max``: mean / max over the 256 thresholds of the dataset-mean
          E-measure curve; ``e_phi_adaptive``: mean over images of E at the adaptive threshold
          min(2 mean(P), 1);
        * ``mae``: mean over images of mean |P - G| (P normalised to [0, 1]);
        * ``dice_at_05`` / ``iou_at_05``: per-image Dice / IoU of the *raw* probability (after
          the resize, before min-max) ``>= 0.5``, averaged over images; undefined (left out, None
          if no image has it) when prediction and GT are both empty.

        ``rows``: one dict per image with ``id``, ``mdice`` and ``miou`` (this image's mean over
        the 256 thresholds, so the column means equal the summary's: the mean over thresholds
        and over images commute), ``wfbeta``, ``s_alpha``, ``e_phi_mean`` (this image's curve
        mean), ``e_phi_adaptive``, ``mae``, ``dice_at_05``, ``iou_at_05``. Maxima over
        thresholds are dataset-level only (the max of a mean curve is not a mean of maxima).
        All plain Python floats/None.

    Raises:
        ValueError: no case; malformed case; prob not a finite 2-D map in [0, 1]; gt not 2-D or
            not bool/0-1/0..255 (messages name the case id).

    Source: PraNet (Fan et al., MICCAI 2020) ``eval/main.m``, ``Fmeasure_calu.m``,
    ``original_WFb.m``, ``StructureMeasure.m``, ``Enhancedmeasure.m`` and ``MyTest.py``;
    pysodmetrics 1.6.2 (``Smeasure``, ``WeightedFmeasure``, ``MAE``, ``Emeasure``,
    ``FmeasureV2`` + ``DICEHandler``/``IOUHandler``); S-measure: Fan et al., ICCV 2017;
    E-measure: Fan et al., IJCAI 2018; weighted F: Margolin et al., CVPR 2014.
    """
    import py_sod_metrics as sod

    rows: list[dict[str, Any]] = []
    dice_curves: list[np.ndarray] = []
    iou_curves: list[np.ndarray] = []
    em_curves: list[np.ndarray] = []
    for index, case in enumerate(cases):
        cid, prob, gt = unpack_case(case, index, ("prob", "gt"))
        g8 = _gt_uint8(gt, cid)
        p8, raw = _prepare(prob, g8.shape, cid)

        # one set of pysodmetrics objects per image: get_results() then gives this image's
        # numbers and curves; the dataset values are their means (what get_results() of
        # objects fed with every image computes: np.mean over images)
        sm, wfm, mae, em = sod.Smeasure(), sod.WeightedFmeasure(beta=1), sod.MAE(), sod.Emeasure()
        fm = sod.FmeasureV2(
            metric_handlers={
                "dice": sod.DICEHandler(with_dynamic=True, with_adaptive=False),
                "iou": sod.IOUHandler(with_dynamic=True, with_adaptive=False),
            }
        )
        for metric in (sm, wfm, mae, em, fm):
            metric.step(p8, g8, normalize=True)
        em_res = em.get_results()["em"]
        fm_res = fm.get_results()
        dice_curve = np.asarray(fm_res["dice"]["dynamic"], np.float64)
        iou_curve = np.asarray(fm_res["iou"]["dynamic"], np.float64)
        em_curve = np.asarray(em_res["curve"], np.float64)
        dice_curves.append(dice_curve)
        iou_curves.append(iou_curve)
        em_curves.append(em_curve)

        d05, i05 = _dice_iou_at(raw >= 0.5, g8 > 128)
        rows.append(
            {
                "id": cid,
                "mdice": float(dice_curve.mean()),
                "miou": float(iou_curve.mean()),
                "wfbeta": float(wfm.get_results()["wfm"]),
                "s_alpha": float(sm.get_results()["sm"]),
                "e_phi_mean": float(em_curve.mean()),
                "e_phi_adaptive": float(em_res["adp"]),
                "mae": float(mae.get_results()["mae"]),
                "dice_at_05": none_if_nan(d05),
                "iou_at_05": none_if_nan(i05),
            }
        )
    if not rows:
        raise ValueError("evaluate_polyp: no cases to evaluate")

    def col_mean(key: str) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return float(np.mean(np.asarray(vals, np.float64))) if vals else None

    dice_mean = np.mean(np.stack(dice_curves), axis=0)
    iou_mean = np.mean(np.stack(iou_curves), axis=0)
    em_mean = np.mean(np.stack(em_curves), axis=0)
    mean: dict[str, float | None] = {
        "mdice": float(dice_mean.mean()),
        "miou": float(iou_mean.mean()),
        "max_dice": float(dice_mean.max()),
        "wfbeta": col_mean("wfbeta"),
        "s_alpha": col_mean("s_alpha"),
        "e_phi_mean": float(em_mean.mean()),
        "e_phi_max": float(em_mean.max()),
        "e_phi_adaptive": col_mean("e_phi_adaptive"),
        "mae": col_mean("mae"),
        "dice_at_05": col_mean("dice_at_05"),
        "iou_at_05": col_mean("iou_at_05"),
    }
    summary: dict[str, Any] = {
        "n_images": len(rows),
        "mean": {k: mean[k] for k in POLYP_METRICS},
        "conventions": {
            "prediction_map": "prob bilinearly resized to the GT size (half-pixel centres, "
            "no antialias), per-image min-max normalised, uint8(floor(255 x + 0.5)) as PraNet "
            "MyTest.py + scipy.misc.imsave; constant map -> zeros; the toolbox then applies "
            "im2double + mapminmax (pysodmetrics normalize=True)",
            "gt": "8-bit GT > 128 (bool and 0/1 masks are scaled to 0/255 first)",
            "thresholds": "256 thresholds k/255, k = 255..0, foreground = P >= k/255 "
            "(pysodmetrics histograms of floor(255 P))",
            "mdice_miou": "mean over the 256 thresholds of the dataset-mean Dice/IoU curve "
            "(toolbox meanDic/meanIoU), NOT Dice at 0.5; max_dice = max of that curve",
            "e_phi": "E-measure curve over the same thresholds, dataset mean, then mean/max; "
            "adaptive: threshold min(2 mean(P), 1), mean over images",
            "wfbeta": "weighted F-measure, beta^2 = 1 (PraNet original_WFb.m); 0 when the GT is empty",
            "s_alpha": "S-measure, alpha = 0.5",
            "mae": "mean |P - G| on the normalised map, mean over images",
            "dice_at_05": "per-image Dice/IoU of the raw (resized, un-normalised) probability "
            ">= 0.5, mean over images (the common Python-repo convention); None where both "
            "prediction and GT are empty",
            "aggregation": "per-image scores and curves, arithmetic mean over images",
            "implementation": "pysodmetrics (py_sod_metrics) Smeasure, WeightedFmeasure(beta=1), "
            "MAE, Emeasure, FmeasureV2(DICEHandler, IOUHandler, with_dynamic=True) on uint8 "
            "maps with normalize=True",
            "undefined_values": "None (JSON null)",
        },
    }
    return summary, rows


__all__ = ["POLYP_METRICS", "evaluate_polyp", "prepare_polyp_prediction"]
