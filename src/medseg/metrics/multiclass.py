"""Multi-class overlap metrics: per-class Dice and IoU of label maps, per image and per volume.

The convention of the Medical Segmentation Decathlon and nnU-Net: a class is scored per case
(per volume for 2-D slices of a volume: the slices' counts are pooled first); a class that is
absent from both the reference and the prediction of a case has no defined Dice and is left
out of that class's mean (nnU-Net reports NaN there and averages with nanmean). "mean" over
classes excludes the background (class 0).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable

import numpy as np


def class_counts(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, 3) int64 array of TP, FP, FN per class of two label maps of the same shape.

    Args:
        pred, target: integer label maps (any shape, values 0..num_classes-1).
        num_classes: K.

    Raises:
        ValueError: shapes differ, or a label outside 0..K-1.
    """
    pred = np.asarray(pred).astype(np.int64).ravel()
    target = np.asarray(target).astype(np.int64).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"prediction and reference differ in size: {pred.size} vs {target.size}")
    for name, a in (("prediction", pred), ("reference", target)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} labels {a.min()}..{a.max()} outside 0..{num_classes - 1}")
    confusion = np.bincount(target * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )
    tp = np.diag(confusion)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    return np.stack([tp, fp, fn], axis=1).astype(np.int64)


def dice_iou(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dice = 2TP / (2TP + FP + FN) and IoU = TP / (TP + FP + FN) per row of (K, 3) counts;
    NaN where TP + FP + FN = 0 (class absent from both)."""
    tp, fp, fn = counts[:, 0].astype(float), counts[:, 1].astype(float), counts[:, 2].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = tp + fp + fn
        dice = np.where(denom > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        iou = np.where(denom > 0, tp / denom, np.nan)
    return dice, iou


def _summary(per_case: list[np.ndarray], names: list[str]) -> dict[str, Any]:
    dice = np.array([dice_iou(c)[0] for c in per_case]) if per_case else np.zeros((0, len(names)))
    iou = np.array([dice_iou(c)[1] for c in per_case]) if per_case else np.zeros((0, len(names)))
    out: dict[str, Any] = {}
    for k, name in enumerate(names):
        d, j = dice[:, k], iou[:, k]
        out[name] = {
            "dice": float(np.nanmean(d)) if np.isfinite(d).any() else None,
            "iou": float(np.nanmean(j)) if np.isfinite(j).any() else None,
            "n_cases": int(np.isfinite(d).sum()),
        }
    fg = [out[n]["dice"] for n in names[1:] if out[n]["dice"] is not None]
    fgi = [out[n]["iou"] for n in names[1:] if out[n]["iou"] is not None]
    out["mean"] = {"dice": float(np.mean(fg)) if fg else None, "iou": float(np.mean(fgi)) if fgi else None}
    return out


def evaluate_multiclass(
    items: Iterable[tuple[str, str, np.ndarray, np.ndarray]],
    num_classes: int,
    class_names: list[str] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per-class Dice and IoU over a split.

    Args:
        items: (id, group, predicted label map, reference label map) per image; ``group`` is the
            volume (patient) a slice belongs to, or the id itself for 2-D images.
        num_classes: K (including background 0).
        class_names: K names (default "0", "1", ...).

    Returns:
        (summary, rows): summary has "per_image" (each image a case), "per_volume" (each group a
        case, counts pooled over its slices: the MSD/nnU-Net protocol for 3-D data) and
        "pooled" (all pixels of the split as one case), each ``{class: {dice, iou, n_cases},
        "mean": {dice, iou}}`` with "mean" over the foreground classes; rows: one dict per image
        (id, group, dice_<class> ...).
    """
    names = class_names or [str(k) for k in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    per_image: list[np.ndarray] = []
    groups: "OrderedDict[str, np.ndarray]" = OrderedDict()
    rows = []
    for case_id, group, pred, target in items:
        c = class_counts(pred, target, num_classes)
        per_image.append(c)
        groups[group] = groups.get(group, 0) + c
        dice, _ = dice_iou(c)
        rows.append(
            {
                "id": case_id,
                "group": group,
                **{f"dice_{n}": (None if np.isnan(v) else float(v)) for n, v in zip(names, dice)},
            }
        )
    pooled = [sum(per_image)] if per_image else []
    summary = {
        "n_images": len(per_image),
        "n_volumes": len(groups),
        "classes": names,
        "per_image": _summary(per_image, names),
        "per_volume": _summary(list(groups.values()), names),
        "pooled": _summary(pooled, names),
        "conventions": {
            "prediction": "argmax of the softmax over classes",
            "empty": "a class absent from both reference and prediction of a case is left out of its mean",
            "mean": "over foreground classes (1..K-1)",
        },
    }
    return summary, rows


__all__ = ["class_counts", "dice_iou", "evaluate_multiclass"]
