"""Evaluation metrics as pure functions on numpy arrays (no torch or Lightning needed).

* :mod:`medseg.metrics.vessel`: confusion counts, pixel metrics with a documented empty policy,
  exact AUC-ROC and average precision, and the retinal-vessel protocol
  :func:`evaluate_vessels` (FOV and whole image, per-image mean and pooled).
* :mod:`medseg.metrics.topology`: clDice, Betti numbers and Betti errors of 2-D masks.
"""

from medseg.metrics.topology import (
    betti_errors,
    betti_numbers,
    cldice,
    cldice_counts,
    cldice_from_counts,
)
from medseg.metrics.vessel import (
    PIXEL_METRICS,
    REGIONS,
    VESSEL_METRICS,
    auc_pr,
    auc_roc,
    confusion_counts,
    evaluate_vessels,
    pixel_metrics,
)

__all__ = [
    "PIXEL_METRICS",
    "REGIONS",
    "VESSEL_METRICS",
    "auc_pr",
    "auc_roc",
    "betti_errors",
    "betti_numbers",
    "cldice",
    "cldice_counts",
    "cldice_from_counts",
    "confusion_counts",
    "evaluate_vessels",
    "pixel_metrics",
]
