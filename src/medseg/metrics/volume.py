"""CT/MRI evaluation per volume: Dice, HD95 (two definitions) and NSD, in millimetres.

Distances come from MONAI's metric functions (``monai.metrics``; Apache-2.0; imported inside
the functions, so importing this module needs only numpy): ``compute_hausdorff_distance`` for
HD95, ``get_edge_surface_distance`` (the same boundary voxels and distances) for the pooled
HD95 of medpy, ``compute_surface_dice(use_subvoxels=True)`` for the normalised surface Dice of
DeepMind's ``surface-distance`` package (Nikolov et al., arXiv 1809.04430;
github.com/google-deepmind/surface-distance, ``surface_distance/metrics.py``).

Spacing is in mm and in ARRAY-AXIS order: ``spacing[i]`` is the voxel size along axis i of the
numpy array (for nibabel's (x, y, z) arrays that is ``header.get_zooms()[:3]``; for SimpleITK's
(z, y, x) arrays it is ``image.GetSpacing()[::-1]``). Reversing it changes every distance.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from medseg.metrics._common import none_if_nan, unpack_case

VOLUME_METRICS = ("dice", "hd95", "hd95_pooled", "nsd")
"""Per-class metrics of :func:`volume_case_metrics` / :func:`evaluate_volumes`, report order."""

_RESERVED = "foreground_mean"

CONVENTIONS = {
    "dice": "2|P & G| / (|P| + |G|) per class and case (nnU-Net)",
    "hd95": "MONAI compute_hausdorff_distance(percentile=95, spacing): boundary voxels = mask "
    "XOR its erosion (scipy, 6/4-neighbour cross), exact Euclidean distances in mm, the 95th "
    "percentile (linear interpolation, torch.quantile) of each directed distance set, then the "
    "max of the two",
    "hd95_pooled": "95th percentile (linear interpolation, numpy.percentile) of the pooled "
    "directed distances of both directions on the same boundary voxels (medpy.metric.binary."
    "hd95 definition, here with the voxel spacing in mm)",
    "nsd": "MONAI compute_surface_dice(use_subvoxels=True, class_thresholds=[tau], spacing): "
    "surface Dice at tolerance tau mm with surfel areas (equals DeepMind surface-distance "
    "compute_surface_dice_at_tolerance)",
    "empty": "both P and G empty: dice, hd95, hd95_pooled, nsd all NaN (per-case; excluded from "
    "means, counted under 'undefined'); exactly one empty: dice 0, nsd 0, hd95 and hd95_pooled "
    "NaN (undefined, counted under 'undefined')",
    "spacing": "mm, in array-axis order",
    "aggregation": "per case = per volume; mean and population std (ddof=0) over the cases "
    "where the value is defined (nanmean/nanstd); foreground_mean: mean over classes of the "
    "per-class means (classes with no defined value left out); std.foreground_mean: population "
    "std over cases of each case's mean over its defined classes",
    "undefined_values": "None (JSON null) in summaries and rows; NaN from volume_case_metrics",
}
"""The ``summary["conventions"]`` of :func:`evaluate_volumes`."""


# --------------------------------------------------------------------------------------------
# input checks


def _label(case_id: Any) -> str:
    return f"case {case_id!r}: " if case_id is not None else ""


def _labels(a: Any, name: str, n_classes: int, case_id: Any) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{_label(case_id)}{name} must be an integer label map, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"{_label(case_id)}{name} must be 2-D (H, W) or 3-D (I, J, K), got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"{_label(case_id)}{name} is empty (shape {tuple(arr.shape)})")
    if arr.dtype.kind == "f":
        if not bool(np.all(np.isfinite(arr))) or not bool(np.all(arr == np.round(arr))):
            raise ValueError(f"{_label(case_id)}{name} must hold integer labels, got non-integer floats")
        arr = arr.astype(np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(
            f"{_label(case_id)}{name} holds labels {lo}..{hi} outside 0..{n_classes - 1} ({n_classes} class names)"
        )
    return arr


def _spacing(spacing: Any, ndim: int, case_id: Any) -> tuple[float, ...]:
    try:
        sp = tuple(float(s) for s in np.ravel(np.asarray(spacing, dtype=np.float64)))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{_label(case_id)}spacing must be {ndim} numbers (mm), got {spacing!r}") from exc
    if len(sp) != ndim:
        raise ValueError(
            f"{_label(case_id)}spacing has {len(sp)} values but the label maps have {ndim} axes "
            "(spacing is in array-axis order, one value per axis)"
        )
    if not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"{_label(case_id)}spacing must be positive finite mm values, got {sp}")
    return sp


def _class_names(class_names: Any) -> list[str]:
    names = [str(n) for n in class_names]
    if len(names) < 2:
        raise ValueError(
            f"class_names must list the background (index 0) and at least one foreground class, got {names}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be unique, got {names}")
    if _RESERVED in names[1:]:
        raise ValueError(f"{_RESERVED!r} is reserved for the summary and cannot be a class name")
    return names


def _tolerance(nsd_tolerance_mm: Any) -> float:
    tol = float(nsd_tolerance_mm)
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"nsd_tolerance_mm must be a finite number >= 0 (mm), got {nsd_tolerance_mm!r}")
    return tol


# --------------------------------------------------------------------------------------------
# per case


def _crop(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop two masks to the bounding box of a | b plus one background voxel on every side.

    MONAI crops the same way (``CropForeground(margin=1)``, zero padding where the margin
    leaves the image), so every boundary, distance and surfel area is unchanged; this only
    keeps MONAI's float copies of the volume small.
    """
    union = a | b
    slices, pads = [], []
    for axis in range(a.ndim):
        other = tuple(i for i in range(a.ndim) if i != axis)
        idx = np.flatnonzero(np.any(union, axis=other))
        lo, hi = int(idx[0]) - 1, int(idx[-1]) + 2
        slices.append(slice(max(lo, 0), min(hi, a.shape[axis])))
        pads.append((max(0, -lo), max(0, hi - a.shape[axis])))
    sl = tuple(slices)
    return np.pad(a[sl], pads), np.pad(b[sl], pads)


def _distances(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...], tol: float) -> tuple[float, float, float]:
    """(hd95, hd95_pooled, nsd) of two non-empty binary masks, via MONAI."""
    import warnings

    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice
    from monai.metrics.utils import get_edge_surface_distance

    a, b = _crop(a, b)
    ta = torch.from_numpy(np.ascontiguousarray(a))
    tb = torch.from_numpy(np.ascontiguousarray(b))
    ya, yb = ta[None, None].float(), tb[None, None].float()
    sp = list(spacing)
    with warnings.catch_warnings():
        # MONAI 1.5-1.6 passes its own deprecated ``always_return_as_numpy`` internally
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        hd95 = compute_hausdorff_distance(ya, yb, include_background=True, percentile=95, spacing=sp)
        _, (d_pg, d_gp), _ = get_edge_surface_distance(ta, tb, spacing=sp, symmetric=True)
        nsd = compute_surface_dice(
            ya, yb, class_thresholds=[tol], include_background=True, spacing=sp, use_subvoxels=True
        )
    pooled = np.concatenate([np.asarray(d_pg, np.float64).ravel(), np.asarray(d_gp, np.float64).ravel()])
    return float(hd95[0, 0]), float(np.percentile(pooled, 95)), float(nsd[0, 0])


def volume_case_metrics(
    pred: Any,
    target: Any,
    spacing: Any,
    class_names: Sequence[str],
    nsd_tolerance_mm: float = 1.0,
    *,
    case_id: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Dice, HD95 (MONAI and medpy definitions) and NSD of every foreground class of one case.

    Args:
        pred: integer label map (I, J, K) (or (H, W)), values 0..len(class_names)-1 (bool
            and integer-valued floats are accepted), the prediction.
        target: integer label map of the same shape, the reference.
        spacing: voxel size in mm, one value per array axis, in ARRAY-AXIS order
            (``spacing[i]`` = size along ``pred.shape[i]``).
        class_names: names of the labels 0..C-1; ``class_names[0]`` is the background and is
            skipped.
        nsd_tolerance_mm: tolerance tau of the surface Dice, in mm (>= 0).
        case_id: used only in error messages.

    Returns:
        ``{class_name: {"dice", "hd95", "hd95_pooled", "nsd", "gt_voxels", "pred_voxels"}}``
        for the foreground classes in label order. Floats (NaN where undefined); voxel counts
        are ints. Per class, with P = pred == c and G = target == c:

        * ``dice`` = 2|P & G| / (|P| + |G|), in [0, 1];
        * ``hd95`` (mm): MONAI ``compute_hausdorff_distance(percentile=95, spacing=spacing)``:
          boundary voxels (mask XOR its erosion), exact Euclidean distances in mm, max of the
          two directed 95th percentiles (linear interpolation);
        * ``hd95_pooled`` (mm): the 95th percentile (``numpy.percentile``, linear) of both
          directed distance sets pooled together, as medpy's ``hd95`` (same boundary voxels and
          distances, from MONAI ``get_edge_surface_distance``). Usually smaller than ``hd95``
          when one directed set is much larger than the other (e.g. a small false-positive
          blob far from a large object);
        * ``nsd``: MONAI ``compute_surface_dice(class_thresholds=[tau], spacing=spacing,
          use_subvoxels=True)``, the fraction of surfel area within tau mm of the other
          surface, in [0, 1]; equals DeepMind's ``compute_surface_dice_at_tolerance``.

        Empty convention: P and G both empty -> dice, hd95, hd95_pooled, nsd all NaN (nnU-Net
        leaves such cases out of the means); exactly one empty -> dice 0.0, nsd 0.0 (MONAI's
        value), hd95 and hd95_pooled NaN (undefined; MONAI 1.6 also returns NaN).

    Raises:
        ValueError: shapes differ (naming both); not 2-D/3-D; labels outside
            0..len(class_names)-1; spacing not one positive mm value per axis; fewer than two or
            duplicate class names; negative tolerance. Messages name ``case_id`` when given.

    Sources: Dice/empty handling: nnU-Net v2 ``nnunetv2/evaluation/evaluate_predictions.py``;
    HD95: MONAI 1.6 ``monai/metrics/hausdorff_distance.py``; pooled HD95: medpy 0.5
    ``medpy/metric/binary.py`` (``hd95``: ``numpy.percentile(numpy.hstack((hd1, hd2)), 95)``);
    NSD: Nikolov et al., arXiv 1809.04430, MONAI ``monai/metrics/surface_dice.py``,
    ``google-deepmind/surface-distance``.
    """
    names = _class_names(class_names)
    tol = _tolerance(nsd_tolerance_mm)
    p = _labels(pred, "pred", len(names), case_id)
    t = _labels(target, "target", len(names), case_id)
    if p.shape != t.shape:
        raise ValueError(
            f"{_label(case_id)}shape mismatch: pred has shape {tuple(p.shape)} but target has shape {tuple(t.shape)}"
        )
    sp = _spacing(spacing, p.ndim, case_id)

    out: dict[str, dict[str, Any]] = {}
    for c in range(1, len(names)):
        a, b = p == c, t == c
        n_p, n_g = int(np.count_nonzero(a)), int(np.count_nonzero(b))
        res: dict[str, Any]
        if n_p == 0 and n_g == 0:
            res = {"dice": math.nan, "hd95": math.nan, "hd95_pooled": math.nan, "nsd": math.nan}
        elif n_p == 0 or n_g == 0:
            res = {"dice": 0.0, "hd95": math.nan, "hd95_pooled": math.nan, "nsd": 0.0}
        else:
            inter = int(np.count_nonzero(a & b))
            hd95, hd95_pooled, nsd = _distances(a, b, sp, tol)
            res = {
                "dice": 2.0 * inter / (n_p + n_g),
                "hd95": hd95,
                "hd95_pooled": hd95_pooled,
                "nsd": nsd,
            }
        res["gt_voxels"] = n_g
        res["pred_voxels"] = n_p
        out[names[c]] = res
    return out


# --------------------------------------------------------------------------------------------
# protocol


def _stats(vals: np.ndarray) -> tuple[float | None, float | None]:
    v = vals[~np.isnan(vals)]
    if v.size == 0:
        return None, None
    return float(v.mean()), float(v.std())


def evaluate_volumes(
    cases: Iterable[Any], class_names: Sequence[str], nsd_tolerance_mm: float = 1.0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate label volumes per case (volume) and summarise per class over cases.

    Args:
        cases: iterable of ``(case_id, pred, target, spacing)`` tuples or mappings with
            ``pred``, ``target``, ``spacing`` and ``case_id``/``id``; the arrays and the spacing
            (mm, array-axis order) as in :func:`volume_case_metrics`. Shapes and spacings may
            differ between cases.
        class_names: names of the labels 0..C-1; index 0 is the background (not scored).
        nsd_tolerance_mm: NSD tolerance tau in mm.

    Returns:
        ``(summary, rows)``. ``summary`` is ::

            {"n_cases": int,
             "classes": [foreground class names],
             "nsd_tolerance_mm": float,
             "mean": {<class>: {dice, hd95, hd95_pooled, nsd}, ...,
                      "foreground_mean": {dice, hd95, hd95_pooled, nsd}},
             "std": {same shape},
             "undefined": {<class>: {dice, hd95, hd95_pooled, nsd: int}},
             "conventions": CONVENTIONS}

        ``mean[<class>][m]`` is the mean of m over the cases where it is defined (nanmean) and
        ``std`` the population std (ddof = 0) over the same cases; both None when every case is
        undefined. ``mean["foreground_mean"][m]`` is the mean over classes of the per-class
        means (classes with None left out, None if all are); ``std["foreground_mean"][m]`` is
        the population std over cases of each case's mean over its defined classes.
        ``undefined[<class>][m]`` counts the cases where m is NaN (see the empty convention of
        :func:`volume_case_metrics`); every case is counted in ``n_cases``. Distances in mm.

        ``rows``: one dict per case: ``id``, then for each foreground class ``<class>_dice``,
        ``<class>_hd95``, ``<class>_hd95_pooled``, ``<class>_nsd`` (float or None),
        ``<class>_gt_voxels``, ``<class>_pred_voxels`` (int). Plain Python values, strict JSON.

    Raises:
        ValueError: no case; malformed case; per-case errors of :func:`volume_case_metrics`
            (messages name the case id); invalid class names or tolerance.

    Sources: per-case/per-class aggregation with NaN-skipping means and foreground_mean: nnU-Net
    v2 ``evaluate_predictions.py``; metric sources as in :func:`volume_case_metrics`.
    """
    names = _class_names(class_names)
    tol = _tolerance(nsd_tolerance_mm)
    fg = names[1:]
    rows: list[dict[str, Any]] = []
    values = {c: {m: [] for m in VOLUME_METRICS} for c in fg}
    for index, case in enumerate(cases):
        cid, pred, target, spacing = unpack_case(case, index, ("pred", "target", "spacing"))
        res = volume_case_metrics(pred, target, spacing, names, tol, case_id=cid)
        row: dict[str, Any] = {"id": cid}
        for c in fg:
            for m in VOLUME_METRICS:
                values[c][m].append(res[c][m])
                row[f"{c}_{m}"] = none_if_nan(res[c][m])
            row[f"{c}_gt_voxels"] = res[c]["gt_voxels"]
            row[f"{c}_pred_voxels"] = res[c]["pred_voxels"]
        rows.append(row)
    n = len(rows)
    if n == 0:
        raise ValueError("evaluate_volumes: no cases to evaluate")

    mean: dict[str, dict[str, float | None]] = {}
    std: dict[str, dict[str, float | None]] = {}
    undefined: dict[str, dict[str, int]] = {}
    for c in fg:
        mean[c], std[c], undefined[c] = {}, {}, {}
        for m in VOLUME_METRICS:
            arr = np.asarray(values[c][m], np.float64)
            mean[c][m], std[c][m] = _stats(arr)
            undefined[c][m] = int(np.count_nonzero(np.isnan(arr)))
    mean[_RESERVED], std[_RESERVED] = {}, {}
    for m in VOLUME_METRICS:
        class_means = [mean[c][m] for c in fg if mean[c][m] is not None]
        mean[_RESERVED][m] = float(np.mean(class_means)) if class_means else None
        per_case = np.array([values[c][m] for c in fg], np.float64)  # (classes, cases)
        defined = ~np.isnan(per_case)
        counts = defined.sum(axis=0)
        case_means = np.where(defined, per_case, 0.0).sum(axis=0)[counts > 0] / counts[counts > 0]
        std[_RESERVED][m] = float(case_means.std()) if case_means.size else None

    summary: dict[str, Any] = {
        "n_cases": n,
        "classes": list(fg),
        "nsd_tolerance_mm": tol,
        "mean": mean,
        "std": std,
        "undefined": undefined,
        "conventions": dict(CONVENTIONS),
    }
    return summary, rows


__all__ = ["CONVENTIONS", "VOLUME_METRICS", "evaluate_volumes", "volume_case_metrics"]
