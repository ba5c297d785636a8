"""``medseg evaluate``: a run's checkpoint(s), or a folder of predictions, scored by a protocol.

Two entry points share one scoring path (:func:`score`), so a run's evaluation and the
evaluation of the maps ``medseg predict`` wrote for it give the same numbers:

* :func:`evaluate` (``medseg evaluate --run RUN``): predicts the split with the run's best
  checkpoint (or an ensemble, TTA; :class:`medseg.inference.Predictor`) and scores it.
* :func:`evaluate_predictions` (``medseg evaluate --predictions DIR --dataset NAME``): scores
  probability maps or label maps made by any tool against a dataset's ground truth.

The protocol (:mod:`medseg.workflows.protocols`) is the recipe's ``eval.protocol`` ("auto":
the dataset's community's) unless ``protocol`` is given. Outputs, in ``<run>/eval/<split>/`` or
``out``: ``metrics.json`` (always with ``"protocol"``; keys per protocol in
:mod:`medseg.workflows.protocols`), ``per_image.csv`` (``per_case.csv`` for volumes; first
column ``id``), ``figures/`` and ``report.html``. Every file is written atomically.

Predictions are scored against the ground truth at the resolution of its files: a pipeline
that resizes (Kvasir-SEG at 352x352) has its probabilities resized back bilinearly
(:func:`resize_probability`), exactly as ``medseg predict`` writes them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from medseg.atomic import write_text_atomic
from medseg.config import Config
from medseg.data.base import CaseDataset
from medseg.engine.checkpoint import load_model_from_checkpoint
from medseg.engine.datamodule import load_split
from medseg.engine.module import roi_size
from medseg.errors import CheckpointError, ConfigError, DataError
from medseg.inference import Predictor
from medseg.log import get_logger
from medseg.progress import progress
from medseg.rundir import EvalDir, RunDir
from medseg.workflows.protocols import get_protocol, protocol_for

log = get_logger(__name__)


# ------------------------------------------------------------------------------------------
# small helpers shared with predict


def run_checkpoint(run_dir: str | os.PathLike, which: str = "best") -> Path:
    """``<run>/checkpoints/<which>.ckpt`` (:meth:`RunDir.checkpoint`; ``which``: "best" or "last").

    Raises:
        CheckpointError: the run directory or the checkpoint does not exist.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    path = RunDir(run_dir).checkpoint(which)
    if not path.is_file():
        raise CheckpointError(f"run {run_dir} has no {which} checkpoint ({path} is missing); has it been trained?")
    return path


def load_models(checkpoints: Sequence[str | os.PathLike]) -> tuple[list[nn.Module], Config]:
    """Networks of one or several checkpoints (an ensemble) and the first one's Config.

    A file ``medseg export`` wrote (``.onnx``; TorchScript ``.pt``) is read like a checkpoint: it
    runs in onnxruntime / ``torch.jit`` and its Config is the one it carries
    (:func:`medseg.export.deploy.load_exported`).

    Raises:
        CheckpointError: a bad checkpoint, or ensemble members trained on different datasets
            or input channels (named).
        medseg.export.ExportError: an exported file without medseg's metadata, or unreadable.
    """
    from medseg.export.deploy import is_exported, load_exported

    models, cfgs = [], []
    for path in checkpoints:
        model, cfg = load_exported(path) if is_exported(path) else load_model_from_checkpoint(path)
        models.append(model)
        cfgs.append(cfg)
    first = cfgs[0]
    for path, cfg in zip(checkpoints[1:], cfgs[1:]):
        if cfg.data.dataset != first.data.dataset or cfg.data.args.get("channels") != first.data.args.get("channels"):
            raise CheckpointError(
                f"ensemble member {path} was trained on {cfg.data.dataset} ({cfg.data.args}), the first on "
                f"{first.data.dataset} ({first.data.args}); an ensemble needs networks with the same input"
            )
    return models, first


def predictor_for(
    models: Sequence[nn.Module],
    cfg: Config,
    tta: Any = None,
    batch_size: int | None = None,
    device: str | None = None,
    method: str | None = None,
) -> Predictor:
    """The :class:`~medseg.inference.Predictor` a recipe's ``eval`` section describes; each
    argument given overrides its recipe key (``tta``: names/sets, see
    :func:`medseg.inference.parse_tta`)."""
    return Predictor(
        list(models),
        method=method or cfg.eval.inference,
        roi_size=roi_size(cfg),
        overlap=cfg.eval.overlap,
        mode=cfg.eval.mode,
        sw_batch_size=cfg.eval.sw_batch_size,
        tta=cfg.eval.tta if tta is None else tta,
        device=device or "cpu",
        batch_size=cfg.eval.batch_size if batch_size is None else batch_size,
    )


def foreground(prob: np.ndarray) -> np.ndarray:
    """(C, H, W) probabilities -> (H, W) foreground probability: the sigmoid channel (C = 1) or
    the last of background/foreground (C = 2).

    Raises:
        ValueError: more than two classes (use a label-map protocol, or
            :func:`infer_probabilities`).
    """
    if prob.shape[0] > 2:
        raise ValueError(f"a foreground map needs one or two output channels; the network has {prob.shape[0]}")
    return prob[-1]


def resize_probability(prob: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (align_corners False, PyTorch) of a probability map (H', W') to ``hw``;
    float32, unchanged when the size already matches."""
    hw = (int(hw[0]), int(hw[1]))
    if prob.shape == hw:
        return np.asarray(prob, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(prob, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=hw, mode="bilinear", align_corners=False)[0, 0].numpy()


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts -> CSV text (columns of the first row; NaN and None written empty)."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None or (isinstance(v, float) and v != v) else v) for k, v in row.items()})
    return buf.getvalue()


def _json_safe(value: Any) -> Any:
    """NaN/inf floats -> None, numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------------------------
# scoring: one path for run evaluation and predictions evaluation


def class_names(cases: CaseDataset, cfg: Config | None = None) -> list[str]:
    """Class names (background first) of a label-map dataset: the recipe's
    ``eval.class_names``, else the MSD ``dataset.json`` "labels" when the dataset has one (lower
    case, e.g. background, anterior, posterior), else "0", "1", ...

    Raises:
        ConfigError: ``eval.class_names`` does not name every class.
    """
    n = int(cases.num_classes)
    if cfg is not None and cfg.eval.class_names:
        names = [str(c) for c in cfg.eval.class_names]
        if len(names) != n:
            raise ConfigError(
                f"eval.class_names names {len(names)} classes ({', '.join(names)}); "
                f"{cases.name} has {n} including background"
            )
        return names
    root = getattr(cases, "root", None)
    if root is not None and (Path(root) / "dataset.json").is_file():
        try:
            labels = json.loads((Path(root) / "dataset.json").read_text(encoding="utf-8")).get("labels", {})
            names = (
                {int(v): str(k) for k, v in labels.items()}
                if all(isinstance(v, int) for v in labels.values())
                else {int(k): str(v) for k, v in labels.items()}
            )
            if len(names) == n:
                return [names[k].lower() if k else "background" for k in range(n)]
        except (ValueError, OSError, AttributeError):
            pass
    return [str(k) for k in range(n)]


def _reference(cases: CaseDataset, case: Any) -> tuple[np.ndarray, np.ndarray]:
    ref = getattr(cases, "reference", None)
    return ref(case) if callable(ref) else (case.mask, case.fov)


def volume_groups(cases: CaseDataset) -> "OrderedDict[str, list[Any]]":
    """Slices of each volume, in slice order: ``{volume id: [cases]}`` (volume id = the file's
    stem, e.g. "hippocampus_001"); a volume case (``spatial_dims: 3``) is its volume's one entry.

    Raises:
        DataError: the cases are not slices of volumes (no ``meta["volume"]``).
    """
    from medseg.data.io.nifti import nifti_stem

    groups: "OrderedDict[str, list[Any]]" = OrderedDict()
    for case in cases:
        if "volume" not in case.meta:
            raise DataError(
                f"case {case.id} of {cases.name} is not a slice of a volume; the volume protocol needs "
                "NIfTI/DICOM volume datasets (msd, dicom)"
            )
        vol = Path(str(case.meta["volume"]))
        vid = nifti_stem(vol) if vol.is_file() else vol.name
        groups.setdefault(vid, []).append(case)
    for vid in groups:
        if len(groups[vid]) > 1:
            groups[vid].sort(key=lambda c: int(c.meta["slice"]))
    return groups


def stack_volume(slices: Sequence[Any], maps: Sequence[np.ndarray]) -> np.ndarray:
    """Per-slice (H, W) maps of one volume -> the (I, J, K) array in the volume's own order (the
    map itself for a volume case, whose map is already (I, J, K))."""
    if slices[0].meta.get("axis") is None:
        return np.asarray(maps[0])
    axis = int(slices[0].meta["axis"])
    return np.stack(list(maps), axis=axis)


def score(
    protocol: str,
    cases: CaseDataset,
    predictions: dict[str, np.ndarray],
    cfg: Config,
    show_progress: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score predictions of a split with ``protocol``.

    Args:
        protocol: a registered protocol name.
        cases: the split (its ground truth; :meth:`FileDataset.reference` gives it at the
            resolution of its files).
        predictions: for "probability" protocols, case id -> foreground probability (H, W)
            float32 in [0, 1] at any size (resized bilinearly to the reference's size); for
            "multiclass", case id -> label map (H, W); for "volume", volume id (see
            :func:`volume_groups`) -> label map (I, J, K) int in the volume's array order.
        cfg: ``eval.threshold``, ``eval.centerline_tolerance``, ``eval.nsd_tolerance_mm``.

    Returns:
        ``(summary, rows)`` of the protocol's metric function (schemas in
        :mod:`medseg.workflows.protocols`).

    Raises:
        DataError: a prediction whose size differs from its ground truth (named).
    """
    proto = get_protocol(protocol)
    if protocol == "volume":
        names = class_names(cases, cfg)
        groups = volume_groups(cases)

        def vol_items() -> Iterator[tuple]:
            for vid, slices in groups.items():
                target = stack_volume(slices, [c.mask for c in slices])
                pred = predictions[vid]
                if pred.shape != target.shape:
                    raise DataError(
                        f"prediction for volume {vid} has shape {pred.shape}, its ground truth {target.shape}"
                    )
                yield vid, pred, target, tuple(float(s) for s in slices[0].meta["spacing"])

        items = progress(vol_items(), len(groups), f"{protocol}: metrics", "volume", show_progress)
        return proto.evaluate(items, cfg, names)
    if protocol == "multiclass":

        def mc_items() -> Iterator[tuple]:
            for case in cases:
                yield case.id, case.group, predictions[case.id], case.mask

        items = progress(mc_items(), len(cases), f"{protocol}: metrics", "image", show_progress)
        return proto.evaluate(items, cfg, class_names(cases, cfg))

    def prob_items() -> Iterator[tuple]:
        for case in cases:
            mask, fov = _reference(cases, case)
            prob = predictions[case.id]
            if not proto.resizes:
                prob = resize_probability(prob, mask.shape)
            yield case.id, prob, mask, fov

    return proto.evaluate(progress(prob_items(), len(cases), f"{protocol}: metrics", "image", show_progress), cfg, None)


def metrics_document(protocol: str, summary: dict[str, Any], **info: Any) -> dict[str, Any]:
    """metrics.json content: ``{"protocol", <info: dataset, split, network, ...>, <summary>}``."""
    return _json_safe({"protocol": protocol, **info, **summary})


def write_outputs(out_dir: Path, protocol: str, metrics: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Write ``metrics.json`` and the per-image / per-case CSV of ``protocol`` atomically."""
    ev = EvalDir(out_dir)
    write_text_atomic(ev.metrics, json.dumps(metrics, indent=2))
    write_text_atomic(ev.per_case(get_protocol(protocol).per_file), csv_text(_json_safe(rows)))


def _write_report(path: Path, split: str | None = None, out: Path | None = None) -> Path | None:
    """``report.html`` of an evaluation (best effort: a report failure never loses metrics)."""
    try:
        from medseg.viz.report import write_report
    except ImportError:  # pragma: no cover - the report module is part of the package
        return None
    try:
        return write_report(path, split=split, out=out)
    except Exception as exc:  # noqa: BLE001 - metrics are written; say what failed and go on
        log.warning(f"warning: report for {path} not written ({type(exc).__name__}: {exc})")
        return None


# ------------------------------------------------------------------------------------------
# a run's checkpoint(s)


def _remove_stale(out_dir: Path, *more: Path) -> None:
    """Remove what a killed earlier evaluation left half-written in ``out_dir``, its figures and
    ``more`` folders (hidden temporaries of :func:`medseg.atomic.atomic_path` whose writer is dead;
    finished files are never partial)."""
    from medseg.atomic import remove_stale_temporaries

    for folder in (out_dir, EvalDir(out_dir).figures, *more):
        remove_stale_temporaries(folder)


def evaluate(
    run_dir: str | os.PathLike,
    split: str = "test",
    checkpoint: str = "best",
    figures: bool | None = None,
    protocol: str | None = None,
    tta: Any = None,
    ensemble: Sequence[str | os.PathLike] = (),
    batch_size: int | None = None,
    device: str | None = None,
    inference: str | None = None,
    show_progress: bool = True,
    report: bool = True,
) -> dict[str, Any]:
    """Evaluate a run's checkpoint on a split of its dataset with its protocol.

    Args:
        run_dir: a run directory written by ``medseg train``.
        split: dataset split to evaluate ("test" for DRIVE and the synthetic default).
        checkpoint: "best" (highest validation Dice) or "last".
        figures: write figures (default: the run's ``eval.figures``).
        protocol: protocol name (default: the recipe's ``eval.protocol``, "auto" = the
            dataset's).
        tta: test-time augmentation names or sets (default: the recipe's ``eval.tta``).
        ensemble: further checkpoints whose probabilities are averaged with this run's.
        batch_size, device, inference: override ``eval.batch_size``, the device ("cpu"),
            ``eval.inference`` ("auto", "whole", "sliding").
        show_progress: progress bars on stderr.
        report: also write ``<run>/report.html``.

    Returns:
        The metrics.json content (also written to ``<run>/eval/<split>/``, with the per-image /
        per-case CSV and figures, and ``<run>/report.html``; with TTA or an ensemble to
        ``<run>/eval/<split>-tta``, ``-ensemble`` or ``-tta-ensemble`` and
        ``<run>/report-<that name>.html``, so the plain evaluation is kept).

    Raises:
        CheckpointError: no such run or checkpoint; ensemble members that do not fit.
        ConfigError: unknown protocol, or one that does not fit the data.
        medseg.errors.DataError: the split's files are missing or bad.
    """
    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    ckpt_path = run_checkpoint(run_dir, checkpoint)
    checkpoints = [ckpt_path, *[Path(p) for p in ensemble]]
    models, cfg = load_models(checkpoints)
    t0 = time.perf_counter()
    cases = load_split(cfg, split)
    name = protocol_for(cfg, cases, protocol)
    predictor = predictor_for(models, cfg, tta=tta, batch_size=batch_size, device=device, method=inference)
    # TTA and ensembles are other experiments: their results go beside the plain ones, not over them
    name_dir = split + ("-tta" if len(predictor.tta) > 1 else "") + ("-ensemble" if len(checkpoints) > 1 else "")
    ev = rd.evaluation(name_dir)
    out_dir = ev.root
    _remove_stale(out_dir, run_dir)
    do_figures = cfg.eval.figures if figures is None else figures

    t_load = time.perf_counter()
    probs: dict[str, np.ndarray] = {}
    outputs = zip(cases, predictor.predict_many(c.image for c in cases))
    for case, prob in progress(outputs, len(cases), f"evaluate {run_dir.name}: inference", "image", show_progress):
        probs[case.id] = prob
    t_infer = time.perf_counter()
    predictions = predictions_from_probabilities(name, cases, probs, cfg.eval.threshold)
    summary, rows = score(name, cases, predictions, cfg, show_progress)
    t_metrics = time.perf_counter()
    metrics = metrics_document(
        name,
        summary,
        dataset=cfg.data.dataset,
        split=split,
        network=cfg.model.name,
        checkpoint=str(ckpt_path),
        ensemble=[str(p) for p in checkpoints[1:]],
        inference=predictor.describe(),
    )
    if do_figures:
        _figures(rd, ev, models[0], cfg, cases, probs, name)
    t_fig = time.perf_counter()
    metrics["timing_s"] = {
        "load": round(t_load - t0, 3),
        "inference": round(t_infer - t_load, 3),
        "metrics": round(t_metrics - t_infer, 3),
        "figures": round(t_fig - t_metrics, 3),
    }
    metrics["output"] = str(out_dir)
    write_outputs(out_dir, name, metrics, rows)
    if report:
        _write_report(run_dir, name_dir, rd.report(None if name_dir == split else name_dir))
    return metrics


def metrics_of(
    models: Sequence[nn.Module], cfg: Config, split: str = "test", show_progress: bool = False
) -> dict[str, Any]:
    """The headline metrics (:func:`medseg.workflows.protocols.headline`) of ``models`` on a split
    of ``cfg``'s dataset (``cfg.data.root``) with the recipe's protocol and inference, writing
    nothing: what ``medseg export`` compares a checkpoint and its export with.

    Raises:
        medseg.errors.DataError: the split's files are missing or bad.
    """
    from medseg.workflows.protocols import headline

    cases = load_split(cfg, split)
    name = protocol_for(cfg, cases, None)
    predictor = predictor_for(models, cfg)
    probs = {case.id: prob for case, prob in zip(cases, predictor.predict_many(c.image for c in cases))}
    summary, _ = score(
        name, cases, predictions_from_probabilities(name, cases, probs, cfg.eval.threshold), cfg, show_progress
    )
    return headline(
        metrics_document(
            name,
            summary,
            dataset=cfg.data.dataset,
            split=split,
            network=cfg.model.name,
            checkpoint="",
            ensemble=[],
            inference=predictor.describe(),
        )
    )


def predictions_from_probabilities(
    protocol: str, cases: CaseDataset, probs: dict[str, np.ndarray], threshold: float
) -> dict[str, np.ndarray]:
    """Network probabilities (C, H, W) per case -> what ``protocol`` reads (see :func:`score`):
    foreground maps, label maps per image, or label volumes (argmax for C > 1, ``>= threshold``
    for one channel)."""
    proto = get_protocol(protocol)
    if proto.reads == "probability":
        return {cid: foreground(p) for cid, p in probs.items()}

    def labels(p: np.ndarray) -> np.ndarray:
        return (p[0] >= threshold).astype(np.uint8) if p.shape[0] == 1 else p.argmax(0).astype(np.uint8)

    if protocol == "volume":
        return {
            vid: stack_volume(slices, [labels(probs[c.id]) for c in slices])
            for vid, slices in volume_groups(cases).items()
        }
    return {cid: labels(p) for cid, p in probs.items()}


# ------------------------------------------------------------------------------------------
# predictions made by anything


#: File endings read as 2-D prediction maps.
_MAP_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg", ".gif")


def _stem(name: str) -> str:
    low = name.lower()
    for ext in (".nii.gz", ".nii", *_MAP_SUFFIXES):
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def _case_keys(case_id: str, path: str | None) -> list[str]:
    keys = [case_id]
    if path:
        stem = _stem(Path(path).name)
        if stem not in keys:
            keys.append(stem)
    return keys


def find_predictions(folder: Path, wanted: dict[str, list[str]], volumes: bool) -> tuple[dict[str, Path], list[Path]]:
    """Match prediction files to cases by stem.

    A case (or volume) ``k`` with keys (its id, its source file's stem) takes, in this order,
    ``<key>_prob.png`` (``medseg predict``'s 16-bit map), ``<key>.<ext>`` (an 8-bit probability
    map or a binary mask) or ``<key>_mask.<ext>``; volumes ``<key>_seg.nii.gz`` or
    ``<key>.nii[.gz]``.

    Returns:
        ``({case id: file}, [files that match no case])``.

    Raises:
        DataError: the folder does not exist, or cases without a prediction (all named, with the
            file names looked for).
    """
    if not folder.is_dir():
        raise DataError(f"predictions folder {folder} does not exist")
    files = {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
    if volumes:
        patterns = ("{}_seg.nii.gz", "{}_seg.nii", "{}.nii.gz", "{}.nii")
    else:
        patterns = (
            ("{}_prob.png",) + tuple("{}" + s for s in _MAP_SUFFIXES) + tuple("{}_mask" + s for s in _MAP_SUFFIXES)
        )
    found: dict[str, Path] = {}
    missing: list[str] = []
    for cid, keys in wanted.items():
        hit = next((files[p.format(k)] for k in keys for p in patterns if p.format(k) in files), None)
        if hit is None:
            missing.append(f"{cid} (looked for {', '.join(p.format(keys[-1]) for p in patterns[:2])}, ...)")
        else:
            found[cid] = hit
    if missing:
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise DataError(
            f"predictions folder {folder} has no prediction for {len(missing)} case(s): {'; '.join(missing[:10])}{more}"
        )
    used = set(found.values())
    # medseg predict writes <stem>_mask.png beside each <stem>_prob.png: a companion, not a stranger
    companions = {f"{_stem(p.name)[: -len('_prob')]}_mask{p.suffix}" for p in used if _stem(p.name).endswith("_prob")}
    unmatched = [
        p
        for p in files.values()
        if p not in used
        and p.name not in companions
        and (p.name.lower().endswith((".nii", ".nii.gz")) if volumes else p.suffix.lower() in _MAP_SUFFIXES)
    ]
    return found, unmatched


def read_probability_map(path: Path) -> np.ndarray:
    """A 2-D prediction file -> float32 (H, W) in [0, 1].

    16-bit images: value / 65535 (``medseg predict``'s ``_prob.png``); 8-bit: value / 255 (an
    8-bit probability map, or a 0/255 mask); an 8-bit map whose largest value is 1: a 0/1 mask,
    taken as is. An RGB file must have equal channels.

    Raises:
        DataError: unreadable, not 2-D, unequal colour channels, or another dtype (named).
    """
    from medseg.data.io import read_image

    a = read_image(path)
    if a.ndim == 3:
        if not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])):
            raise DataError(f"prediction {path} is a colour image; a probability map or mask must be grey")
        a = a[..., 0]
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if a.dtype == np.uint8:
        return a.astype(np.float32) if a.max() <= 1 else a.astype(np.float32) / 255.0
    if a.dtype == bool:
        return a.astype(np.float32)
    raise DataError(f"prediction {path} has pixel type {a.dtype}; expected an 8- or 16-bit grey image")


def _map_size(path: Path) -> tuple[int, int] | None:
    from medseg.data.io import probe

    size = probe(path).get("size")
    return None if size is None else (int(size[1]), int(size[0]))


def evaluate_predictions(
    predictions: str | os.PathLike,
    dataset: str,
    data_root: str | os.PathLike | None = None,
    split: str = "test",
    protocol: str | None = None,
    out: str | os.PathLike | None = None,
    dataset_args: dict[str, Any] | None = None,
    eval_overrides: list[str] | None = None,
    figures: bool = True,
    show_progress: bool = True,
    report: bool = True,
) -> dict[str, Any]:
    """Score a folder of predictions made by any tool against a dataset split.

    Args:
        predictions: the folder (matched to cases by stem, see :func:`find_predictions`).
        dataset: registered dataset name; ``data_root`` its folder; ``dataset_args`` its
            options (e.g. ``{"annotator": 2}``).
        split: the split whose cases are evaluated (every case needs a prediction; files that
            match no case are named in a warning and ignored).
        protocol: default: the dataset's (``medseg data list``).
        out: output folder (default ``<predictions>/eval-<split>``).
        eval_overrides: ``eval.*`` keys as ``key=value`` (threshold, centerline_tolerance,
            nsd_tolerance_mm).

    Returns:
        The metrics.json content (written to ``out`` with the CSV, figures and report.html).

    Raises:
        DataError: a missing folder, a case without prediction, a prediction whose size differs
            from its ground truth (all checked before any metric is computed; named).
        ConfigError: unknown dataset, option or protocol.
    """
    from medseg.config import build_config
    from medseg.data import create_dataset

    pred_dir = Path(predictions)
    if not pred_dir.is_dir():
        raise DataError(f"predictions folder {pred_dir} does not exist")
    args = dict(dataset_args or {})
    cfg = build_config(
        {"data": {"dataset": dataset, "root": None if data_root is None else str(data_root), "args": args}},
        [f"eval.{o}" if not o.startswith("eval.") else o for o in (eval_overrides or [])],
        source="medseg evaluate --predictions",
    )
    cases = create_dataset(dataset, root=data_root, split=split, **args)
    name = protocol_for(cfg, cases, protocol)
    proto = get_protocol(name)
    volumes = name == "volume"
    if volumes:
        groups = volume_groups(cases)
        wanted = {vid: [vid] for vid in groups}
    else:
        wanted = {c.id: _case_keys(c.id, c.path) for c in cases}
    found, unmatched = find_predictions(pred_dir, wanted, volumes)
    if unmatched:
        names = ", ".join(p.name for p in unmatched[:10]) + (
            f" and {len(unmatched) - 10} more" if len(unmatched) > 10 else ""
        )
        log.warning(
            f"warning: {len(unmatched)} file(s) in {pred_dir} match no case of {dataset}/{split} and are "
            f"ignored: {names}"
        )
    # sizes first, from headers only: nothing is computed before every file fits
    problems = []
    if volumes:
        import nibabel as nib

        for vid, path in found.items():
            slices = groups[vid]
            want = tuple(int(s) for s in slices[0].meta["shape"])
            try:
                shape = tuple(int(s) for s in nib.load(str(path)).shape)
            except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds
                raise DataError(f"prediction {path} cannot be read as NIfTI ({type(exc).__name__}: {exc})") from None
            if shape != want:
                problems.append(f"{path} is {shape}, the ground truth of {vid} is {want}")
    else:
        for case in cases:
            path = found[case.id]
            want = tuple((case.meta.get("reference_shape") or case.mask.shape)[:2])
            got = _map_size(path)
            if got is None:
                raise DataError(f"prediction {path} cannot be read as an image")
            if got != want:
                problems.append(
                    f"{path} is {got[0]}x{got[1]} (HxW), the ground truth of case {case.id} is {want[0]}x{want[1]}"
                )
    if problems:
        raise DataError(
            "predictions do not fit their ground truth: "
            + "; ".join(problems[:10])
            + (f" and {len(problems) - 10} more" if len(problems) > 10 else "")
        )
    if volumes:
        from medseg.data.io.nifti import read_label_nifti

        preds = {vid: np.asarray(read_label_nifti(path)[0]) for vid, path in found.items()}
    elif proto.reads == "labels":  # label maps stored as grey levels 0..K-1
        from medseg.data.io import read_label

        preds = {cid: read_label(p) for cid, p in found.items()}
    else:
        preds = {
            cid: read_probability_map(p)
            for cid, p in progress(found.items(), len(found), "evaluate: reading predictions", "file", show_progress)
        }
    summary, rows = score(name, cases, preds, cfg, show_progress)
    out_dir = Path(out) if out is not None else pred_dir / f"eval-{split}"
    _remove_stale(out_dir)
    metrics = metrics_document(name, summary, dataset=dataset, split=split, network=None, predictions=str(pred_dir))
    if figures and proto.reads == "probability":
        from medseg.viz import save_panels

        ev = EvalDir(out_dir)
        save_panels(
            [
                dict(
                    path=ev.panel(case.id),
                    image=case.display,
                    target=case.mask,
                    prob=resize_probability(preds[case.id], case.mask.shape),
                    threshold=cfg.eval.threshold,
                    fov=case.fov,
                    title=f"{pred_dir.name} - {case.id}",
                )
                for case in cases
            ]
        )
    write_outputs(out_dir, name, metrics, rows)
    if report:
        _write_report(out_dir)
    return metrics


# ------------------------------------------------------------------------------------------
# figures (and the DSConv kernel figure)


def find_dsconv(model: nn.Module, name: str = "") -> tuple[str, nn.Module] | None:
    """The DSConv2d named ``name`` in ``model`` (or the first one when ``name`` is empty), or None."""
    from medseg.ops import DSConv2d

    for module_name, module in model.named_modules():
        if isinstance(module, DSConv2d) and (not name or module_name == name):
            return module_name, module
    return None


def kernel_coordinates_for(model: nn.Module, image: np.ndarray, name: str = "") -> tuple[str, np.ndarray] | None:
    """Sampled positions (K, h, w, 2) (row, col) of a DSConv of ``model`` run on ``image`` (C, H, W).

    The DSConv's input is captured with a forward hook during one forward pass of the whole
    image; positions are in the pixel units of that DSConv's input (which is at 1/2^l of the
    image for a DSConv at encoder level l).
    """
    found = find_dsconv(model, name)
    if found is None:
        return None
    layer_name, layer = found
    captured: dict[str, torch.Tensor] = {}

    def keep_input(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:  # must return None
        captured.setdefault("x", inputs[0].detach())

    handle = layer.register_forward_hook(keep_input)
    try:
        c, h, w = image.shape
        divisor = int(getattr(model, "size_divisor", 1))
        hh, ww = -(-h // divisor) * divisor, -(-w // divisor) * divisor
        x = torch.zeros(1, c, hh, ww)
        x[0, :, :h, :w] = torch.from_numpy(image)
        with torch.no_grad():
            model(x.to(next(model.parameters()).device))
            coords = layer.kernel_coordinates(captured["x"])[0].cpu().numpy()
    finally:
        handle.remove()
    scale_h, scale_w = hh // coords.shape[1], ww // coords.shape[2]
    coords = coords[:, : -(-h // scale_h), : -(-w // scale_w)]  # drop the divisor padding
    return layer_name, coords


#: Side (pixels) of the zoomed DSConv kernel figure, drawn for images larger than ZOOM_ABOVE px.
ZOOM_SIZE = 96
ZOOM_ABOVE = 160


def densest_window(mask: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left (row, col) of the window of ``mask`` holding the most foreground pixels.

    Args:
        mask: (H, W) binary array (bool or 0/1).
        size: window side in pixels; clipped to H and W.

    Returns:
        (row, col) in pixels such that ``mask[row:row+size, col:col+size]`` has the largest sum
        (the first such window in row-major order on ties, up to float rounding of the box
        filter). Used to place the zoomed DSConv kernel figure on the densest vessels.
    """
    from scipy.ndimage import uniform_filter

    h, w = mask.shape
    size_h, size_w = min(size, h), min(size, w)
    density = uniform_filter(mask.astype(np.float32), size=(size_h, size_w), mode="constant")
    half_h, half_w = size_h // 2, size_w // 2
    inner = density[half_h : h - size_h + half_h + 1, half_w : w - size_w + half_w + 1]
    r, c = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return int(r), int(c)


def _figures(
    rd: RunDir,
    ev: EvalDir,
    model: nn.Module,
    cfg: Config,
    cases: CaseDataset,
    probs: dict[str, np.ndarray],
    protocol: str,
) -> None:
    """The figures of a run's evaluation into ``ev.figures``: a panel per image (probability
    protocols), the run's training curves, and the DSConv kernel positions of the first image."""
    from medseg.viz import plot_training_curves, save_kernel_positions, save_panels

    if get_protocol(protocol).reads == "probability":
        save_panels(
            [
                dict(
                    path=ev.panel(case.id),
                    image=case.display,
                    target=case.mask,
                    prob=resize_probability(foreground(probs[case.id]), case.mask.shape),
                    threshold=cfg.eval.threshold,
                    fov=case.fov,
                    title=f"{cfg.model.name} - {case.id}",
                )
                for case in cases
            ]
        )
    if rd.metrics_csv.is_file():
        plot_training_curves(rd.metrics_csv, ev.curves, title=f"training curves: {rd.root.name}")
    if cfg.eval.kernel_figure and len(cases) and cases[0].spatial_dims == 2:  # the figure draws a 2-D kernel
        case = cases[0]
        found = kernel_coordinates_for(model, case.image)
        if found is not None:
            layer_name, coords = found
            title = f"DSConv '{layer_name}' sampled positions - {case.id}"
            save_kernel_positions(ev.kernel_positions(case.id), case.display, coords, target=case.mask, title=title)
            h, w = case.mask.shape
            if max(h, w) > ZOOM_ABOVE and coords.shape[1:3] == (h, w):
                # A 9-point kernel spans ~9 px: also draw a zoomed window on the densest vessels.
                y0, x0 = densest_window(case.mask, ZOOM_SIZE)
                crop = (slice(y0, y0 + ZOOM_SIZE), slice(x0, x0 + ZOOM_SIZE))
                zoom = coords[:, crop[0], crop[1]] - np.array([y0, x0], dtype=coords.dtype)
                save_kernel_positions(
                    ev.kernel_positions(case.id, zoom=True),
                    case.display[crop],
                    zoom,
                    target=case.mask[crop],
                    title=f"{title} (rows {y0}-{y0 + ZOOM_SIZE - 1}, cols {x0}-{x0 + ZOOM_SIZE - 1})",
                )


def infer_probabilities(model: nn.Module, image: np.ndarray, cfg: Config) -> np.ndarray:
    """Class probabilities (C_out, H, W) float32 in [0, 1] for one preprocessed image (C, H, W),
    with the recipe's inference (``eval.inference``, window, TTA)."""
    return next(predictor_for([model], cfg).predict_many([image]))


def infer_image(model: nn.Module, image: np.ndarray, cfg: Config) -> np.ndarray:
    """Foreground probability map (H, W) float32 in [0, 1] for one preprocessed image (C, H, W).

    One output channel: its sigmoid; two (softmax over background/foreground, e.g. CPFNet):
    the foreground channel. Networks with more classes: use :func:`infer_probabilities`.
    """
    return foreground(infer_probabilities(model, image, cfg))


__all__ = [
    "class_names",
    "densest_window",
    "evaluate",
    "evaluate_predictions",
    "find_predictions",
    "infer_image",
    "infer_probabilities",
    "kernel_coordinates_for",
    "load_models",
    "metrics_of",
    "predictor_for",
    "read_probability_map",
    "resize_probability",
    "run_checkpoint",
    "score",
]
