"""Evaluation protocols: one registered name per community, what each reads and writes.

A protocol turns a split's predictions and ground truth into the numbers its community
publishes (definitions and sources, papers and reference code: the metric modules under
:mod:`medseg.metrics`):

=========  ==========================================  =============================  ==================
name       community / reference code                   reads                          writes
=========  ==========================================  =============================  ==================
vessel     retina (DRIVE, CHASE_DB1, STARE): FOV and    foreground probability (H, W)  metrics.json,
           whole image, per-image mean and pooled                                      per_image.csv
octa       OCTA (ROSE, ROSSA, OCTA-500): OCTA-Net's     foreground probability (H, W)  metrics.json,
           ``evaluation/utils.py`` (Otsu, tolerance)                                   per_image.csv
polyp      colonoscopy (Kvasir-SEG, CVC-ClinicDB):      foreground probability (h, w)  metrics.json,
           PraNet's MATLAB toolbox via pysodmetrics     at any size, GT at its own     per_image.csv
volume     CT/MRI (MSD, nnU-Net): per volume, mm        label map per volume (I, J, K) metrics.json,
                                                        + voxel spacing                per_case.csv
multiclass multi-class 2-D label maps: per-class Dice   label map (H, W)               metrics.json,
           and IoU per image, per group and pooled                                     per_image.csv
=========  ==========================================  =============================  ==================

Every metrics.json says ``"protocol"``; :func:`headline` gives the numbers a table shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medseg.errors import ConfigError
from medseg.log import counted
from medseg.registry import Registry

PROTOCOLS = Registry("evaluation protocol")


@dataclass(frozen=True)
class Protocol:
    """What a protocol reads and writes, and how its headline numbers are found.

    Attributes:
        name: registered name ("vessel", "octa", "polyp", "volume", "multiclass").
        reads: "probability" (one foreground probability map per image) or "labels" (a label map
            per image, or per volume for "volume").
        per_file: the per-case table it writes: "per_image.csv" or "per_case.csv".
        headline_keys: flat keys of :func:`headline`, in table order (for "volume" the per-class
            keys come first and depend on the class names).
        description: one line naming the reference protocol.
        headline: callable ``metrics -> {key: value}`` (see :func:`headline`).
        evaluate: callable ``(items, cfg, class_names) -> (summary, rows)``: ``items`` as
            :func:`medseg.workflows.evaluate.score` builds them, ``cfg`` the recipe (its
            ``eval`` section: threshold, tolerances).
        resizes: the protocol brings each probability map to its ground truth's size itself
            (polyp: the toolbox's own resize); otherwise the caller resizes bilinearly.
    """

    name: str
    reads: str
    per_file: str
    headline_keys: tuple[str, ...]
    description: str
    headline: Callable[[dict[str, Any]], dict[str, float | None]] = field(repr=False)
    evaluate: Callable[..., tuple[dict[str, Any], list[dict[str, Any]]]] = field(repr=False)
    resizes: bool = False


def _pick(block: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float | None]:
    return {k: block.get(k) for k in keys}


VESSEL_HEADLINE = (
    "dice",
    "iou",
    "sensitivity",
    "specificity",
    "accuracy",
    "auc_roc",
    "auc_pr",
    "cldice",
    "betti0_error",
    "betti1_error",
    "euler_error",
)
OCTA_HEADLINE = ("auc_roc", "accuracy", "gmean", "kappa", "fdr", "dice", "iou", "sensitivity", "specificity")
POLYP_HEADLINE = (
    "mdice",
    "miou",
    "wfbeta",
    "s_alpha",
    "e_phi_mean",
    "e_phi_max",
    "mae",
    "max_dice",
    "e_phi_adaptive",
    "dice_at_05",
    "iou_at_05",
)
VOLUME_HEADLINE = ("dice", "hd95", "hd95_pooled", "nsd")


def _vessel_headline(m: dict[str, Any]) -> dict[str, float | None]:
    return _pick(m["fov"]["per_image_mean"], VESSEL_HEADLINE)


def _octa_headline(m: dict[str, Any]) -> dict[str, float | None]:
    return _pick(m["mean"], OCTA_HEADLINE)


def _polyp_headline(m: dict[str, Any]) -> dict[str, float | None]:
    return _pick(m["mean"], POLYP_HEADLINE)


def _volume_headline(m: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for cls in m["classes"]:
        for k in ("dice", "hd95", "nsd"):
            out[f"{cls}_{k}"] = m["mean"][cls].get(k)
    out.update(_pick(m["mean"]["foreground_mean"], VOLUME_HEADLINE))
    return out


def _multiclass_headline(m: dict[str, Any]) -> dict[str, float | None]:
    level = m["per_volume"] if m.get("n_volumes", 0) < m.get("n_images", 0) else m["per_image"]
    out: dict[str, float | None] = {f"{c}_dice": level[c]["dice"] for c in m["classes"][1:]}
    out["dice"] = level["mean"]["dice"]
    out["iou"] = level["mean"]["iou"]
    return out


def _vessel_eval(items: Any, cfg: Any, names: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from medseg.metrics.vessel import evaluate_vessels

    summary, rows = evaluate_vessels(items, threshold=cfg.eval.threshold)
    return {"n_images": summary.pop("n_images"), **summary}, rows


def _octa_eval(items: Any, cfg: Any, names: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from medseg.metrics.octa import evaluate_octa

    return evaluate_octa(((cid, p, m) for cid, p, m, _ in items), tolerance=cfg.eval.centerline_tolerance)


def _polyp_eval(items: Any, cfg: Any, names: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from medseg.metrics.polyp import evaluate_polyp

    return evaluate_polyp((cid, p, m) for cid, p, m, _ in items)


def _volume_eval(items: Any, cfg: Any, names: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from medseg.metrics.volume import evaluate_volumes

    return evaluate_volumes(items, list(names), nsd_tolerance_mm=cfg.eval.nsd_tolerance_mm)


def _multiclass_eval(items: Any, cfg: Any, names: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from medseg.metrics.multiclass import evaluate_multiclass

    return evaluate_multiclass(items, len(names), list(names))


for _p in (
    Protocol(
        "vessel",
        "probability",
        "per_image.csv",
        VESSEL_HEADLINE,
        "retinal vessels: FOV and whole image, per-image mean and pooled (orobix retina-unet; "
        "Kovacs & Fazekas, MedIA 2022)",
        _vessel_headline,
        _vessel_eval,
    ),
    Protocol(
        "octa",
        "probability",
        "per_image.csv",
        OCTA_HEADLINE,
        "OCTA-Net evaluation/utils.py: per-image Otsu, centerline tolerance, mean and std (Ma et al., IEEE TMI 2021)",
        _octa_headline,
        _octa_eval,
    ),
    Protocol(
        "polyp",
        "probability",
        "per_image.csv",
        POLYP_HEADLINE,
        "PraNet toolbox through pysodmetrics: 256-threshold mDice/mIoU, wF, S-alpha, E-phi, MAE "
        "(PraNet eval/main.m; Fan et al., MICCAI 2020)",
        _polyp_headline,
        _polyp_eval,
        resizes=True,
    ),
    Protocol(
        "volume",
        "labels",
        "per_case.csv",
        VOLUME_HEADLINE,
        "CT/MRI per volume: Dice, HD95 and NSD in mm with MONAI (Dice as nnU-Net; NSD as Nikolov "
        "et al., arXiv 1809.04430)",
        _volume_headline,
        _volume_eval,
    ),
    Protocol(
        "multiclass",
        "labels",
        "per_image.csv",
        ("dice", "iou"),
        "multi-class label maps: per-class Dice and IoU per image, per volume and pooled",
        _multiclass_headline,
        _multiclass_eval,
    ),
):
    PROTOCOLS.register(_p.name)(_p)


def get_protocol(name: str) -> Protocol:
    """The registered :class:`Protocol` ``name``.

    Raises:
        ConfigError: unknown name (the message lists the closest registered names).
    """
    return PROTOCOLS.get(name)


def protocol_for(cfg: Any, cases: Any, requested: str | None = None) -> str:
    """The protocol that scores ``cases`` for a recipe: ``requested``, else ``cfg.eval.protocol``,
    where "auto" is the dataset's own (``FileDataset.protocol``; "vessel" for generated data;
    "multiclass" for multi-class 2-D data without a protocol of its own).

    Raises:
        ConfigError: an unknown name; a probability protocol asked for multi-class data, or the
            volume protocol for data that are not slices of volumes.
    """
    name = requested or cfg.eval.protocol
    multi = int(getattr(cases, "num_classes", 2)) > 2
    volumes = len(cases) > 0 and "volume" in cases[0].meta
    if name == "auto":
        name = str(getattr(type(cases), "protocol", "vessel"))
        if multi and name != "volume":
            name = "multiclass"
        if name == "volume" and not volumes:
            name = "multiclass" if multi else "vessel"
    proto = get_protocol(name)
    if multi and proto.reads == "probability":
        raise ConfigError(
            f"protocol {name!r} scores one foreground map; {cases.name} has {cases.num_classes} classes "
            "(use volume or multiclass)"
        )
    if name == "volume" and not volumes:
        raise ConfigError(f"protocol 'volume' needs slices of volumes (msd, dicom datasets); {cases.name} has none")
    return name


def _f(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """The lines ``medseg evaluate`` and ``medseg train`` print for a metrics.json: only the
    protocol's own numbers (no FOV or topology lines for a polyp run)."""
    name = metrics.get("protocol") or ("multiclass" if "per_volume" in metrics else "vessel")
    who = f"{metrics.get('network') or metrics.get('predictions')} on {metrics.get('dataset')}/{metrics.get('split')}"
    lines: list[str]
    if name == "vessel":
        fov, pooled = metrics["fov"]["per_image_mean"], metrics["fov"]["pooled"]
        lines = [
            f"{who} ({counted(metrics['n_images'], 'image')}, vessel protocol, threshold {metrics['threshold']}):",
            "  FOV, per-image mean: "
            + ", ".join(
                f"{k} {_f(fov.get(k))}"
                for k in (
                    "dice",
                    "iou",
                    "sensitivity",
                    "specificity",
                    "accuracy",
                    "auc_roc",
                    "cldice",
                    "betti0_error",
                    "betti1_error",
                    "euler_error",
                )
            ),
            "  FOV, pooled:         " + ", ".join(f"{k} {_f(pooled.get(k))}" for k in ("dice", "auc_roc", "auc_pr")),
        ]
    elif name == "octa":
        mean, std = metrics["mean"], metrics["std"]
        lines = [
            f"{who} ({counted(metrics['n_images'], 'image')}, octa protocol: per-image Otsu, tolerance "
            f"{metrics.get('tolerance', 1)}x{metrics.get('tolerance', 1)}), mean +- std:",
            "  " + ", ".join(f"{k} {_f(mean.get(k))} +- {_f(std.get(k))}" for k in OCTA_HEADLINE),
        ]
    elif name == "polyp":
        mean = metrics["mean"]
        lines = [
            f"{who} ({counted(metrics['n_images'], 'image')}, polyp protocol: PraNet toolbox via pysodmetrics):",
            "  " + ", ".join(f"{k} {_f(mean.get(k))}" for k in POLYP_HEADLINE[:7]),
            "  " + ", ".join(f"{k} {_f(mean.get(k))}" for k in POLYP_HEADLINE[7:]),
        ]
    elif name == "volume":
        mean, std = metrics["mean"], metrics["std"]
        lines = [
            f"{who} ({counted(metrics['n_cases'], 'volume')}, volume protocol: HD95 in mm, NSD at "
            f"{metrics.get('nsd_tolerance_mm')} mm), mean +- std over volumes:"
        ]
        for cls in [*metrics["classes"], "foreground_mean"]:
            lines.append(
                f"  {cls}: "
                + ", ".join(f"{k} {_f(mean[cls].get(k))} +- {_f(std[cls].get(k))}" for k in VOLUME_HEADLINE)
            )
    else:
        lines = [
            f"{who} ({counted(metrics['n_images'], 'image')}, {counted(metrics['n_volumes'], 'volume')}), per-class Dice:"
        ]
        for level in ("per_volume", "per_image"):
            row = metrics[level]
            classes = ", ".join(f"{c} {_f(row[c]['dice'])}" for c in metrics["classes"][1:])
            lines.append(f"  {level.replace('_', '-')} mean: {classes}; mean {_f(row['mean']['dice'])}")
    return lines


def headline(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The headline numbers of a metrics.json, flat and ordered for tables.

    Args:
        metrics: a metrics.json content written by ``medseg evaluate`` (any protocol; files
            written before protocols were named, without ``"protocol"``, are read as "vessel"
            or "multiclass" by their keys).

    Returns:
        ``{key: float or None}``: vessel: FOV per-image means (dice, iou, ..., euler_error);
        octa: the means of OCTA-Net's metrics; polyp: the toolbox set; volume:
        ``<class>_dice``, ``<class>_hd95``, ``<class>_nsd`` per class, then the foreground means
        dice, hd95 (mm), hd95_pooled (mm), nsd; multiclass: ``<class>_dice`` then mean dice, iou.

    Raises:
        ConfigError: the metrics name an unknown protocol.
    """
    name = metrics.get("protocol") or ("multiclass" if "per_volume" in metrics else "vessel")
    if name not in PROTOCOLS:
        raise ConfigError(f"metrics name the unknown protocol {name!r}; known: {', '.join(PROTOCOLS.names())}")
    return get_protocol(name).headline(metrics)


__all__ = ["PROTOCOLS", "Protocol", "get_protocol", "headline", "protocol_for", "summary_lines"]
