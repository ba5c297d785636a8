"""Evaluation metrics as pure functions on numpy arrays (no torch or Lightning needed).

* :mod:`medseg.metrics.vessel`: confusion counts, pixel metrics with a documented empty policy,
  exact AUC-ROC and average precision, and the retinal-vessel protocol
  :func:`evaluate_vessels` (FOV and whole image, per-image mean and pooled).
* :mod:`medseg.metrics.topology`: clDice, Betti numbers, Betti errors and the Euler
  characteristic of binary masks.
* :mod:`medseg.metrics.octa`: the OCTA-Net / ROSE protocol (per-image Otsu, tolerance counts,
  mean and std over images): :func:`evaluate_octa`.
* :mod:`medseg.metrics.polyp`: the PraNet toolbox protocol through pysodmetrics:
  :func:`evaluate_polyp`.
* :mod:`medseg.metrics.volume`: CT/MRI per-volume Dice, HD95 (MONAI and medpy definitions) and
  NSD in mm (MONAI metric functions, imported on first use): :func:`evaluate_volumes`.
"""

from medseg.metrics.octa import OCTA_METRICS, evaluate_octa, octa_metrics, otsu_binarize
from medseg.metrics.polyp import POLYP_METRICS, evaluate_polyp, prepare_polyp_prediction
from medseg.metrics.topology import (
    betti_errors,
    betti_numbers,
    cldice,
    cldice_counts,
    cldice_from_counts,
    euler_characteristic,
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
from medseg.metrics.volume import VOLUME_METRICS, evaluate_volumes, volume_case_metrics

__all__ = [
    "OCTA_METRICS",
    "PIXEL_METRICS",
    "POLYP_METRICS",
    "REGIONS",
    "VESSEL_METRICS",
    "VOLUME_METRICS",
    "auc_pr",
    "auc_roc",
    "betti_errors",
    "betti_numbers",
    "cldice",
    "cldice_counts",
    "cldice_from_counts",
    "confusion_counts",
    "euler_characteristic",
    "evaluate_octa",
    "evaluate_polyp",
    "evaluate_vessels",
    "evaluate_volumes",
    "octa_metrics",
    "otsu_binarize",
    "pixel_metrics",
    "prepare_polyp_prediction",
    "volume_case_metrics",
]
