"""``medseg evaluate``: the retinal-vessel protocol on a run's best checkpoint.

Writes ``<run>/eval/<split>/metrics.json`` (schema below), ``per_image.csv`` and ``figures/``
(a panel per image: image, ground truth, probability, TP/FP/FN overlay; training curves; for
networks with DSConv, the sampled kernel positions of one DSConv drawn over an image).

metrics.json::

    {"dataset", "split", "n_images", "threshold",
     "fov":         {"per_image_mean": {...}, "pooled": {...}},
     "whole_image": {"per_image_mean": {...}, "pooled": {...}},
     "conventions": {...}, "checkpoint", "inference": {...}}

with the metric keys dice, iou, sensitivity, specificity, accuracy, precision, mcc, auc_roc,
auc_pr, cldice, betti0_error, betti1_error (definitions and aggregation in
:func:`medseg.metrics.vessel.evaluate_vessels`; protocol in shared metrics.md §1).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from medseg.atomic import write_text_atomic
from medseg.config import Config
from medseg.engine.checkpoint import load_model_from_checkpoint
from medseg.engine.datamodule import load_split
from medseg.engine.module import roi_size
from medseg.errors import CheckpointError
from medseg.inference import predict_probabilities
from medseg.metrics.vessel import evaluate_vessels


def run_checkpoint(run_dir: str | os.PathLike, which: str = "best") -> Path:
    """``<run>/checkpoints/<which>.ckpt``.

    Raises:
        CheckpointError: the run directory or the checkpoint does not exist.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    path = run_dir / "checkpoints" / f"{which}.ckpt"
    if not path.is_file():
        raise CheckpointError(f"run {run_dir} has no {which} checkpoint ({path} is missing); has it been trained?")
    return path


def infer_probabilities(model: nn.Module, image: np.ndarray, cfg: Config) -> np.ndarray:
    """Class probabilities (C_out, H, W) float32 in [0, 1] for one preprocessed image (C, H, W)."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    prob = predict_probabilities(
        model, x, roi_size(cfg), overlap=cfg.eval.overlap, mode=cfg.eval.mode, sw_batch_size=cfg.eval.sw_batch_size
    )
    return prob[0].numpy()


def infer_image(model: nn.Module, image: np.ndarray, cfg: Config) -> np.ndarray:
    """Foreground probability map (H, W) float32 in [0, 1] for one preprocessed image (C, H, W).

    One output channel: its sigmoid; two (softmax over background/foreground, e.g. CPFNet):
    the foreground channel. Networks with more classes: use :func:`infer_probabilities`.
    """
    prob = infer_probabilities(model, image, cfg)
    if prob.shape[0] > 2:
        raise ValueError(f"infer_image gives one foreground map; the network has {prob.shape[0]} classes")
    return prob[-1]


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


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
            model(x)
            coords = layer.kernel_coordinates(captured["x"])[0].numpy()
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


def evaluate(run_dir: str | os.PathLike, split: str = "test", checkpoint: str = "best", figures: bool | None = None) -> dict[str, Any]:
    """Evaluate a run's checkpoint on a split of its dataset with the retinal-vessel protocol.

    Args:
        run_dir: a run directory written by ``medseg train``.
        split: dataset split to evaluate ("test" for DRIVE and the synthetic default).
        checkpoint: "best" (highest validation Dice) or "last".
        figures: write figures (default: the run's ``eval.figures``).

    Returns:
        The metrics.json content.

    Raises:
        CheckpointError: no such run or checkpoint.
        medseg.errors.DataError: the split's files are missing or bad.
    """
    run_dir = Path(run_dir)
    ckpt_path = run_checkpoint(run_dir, checkpoint)
    model, cfg = load_model_from_checkpoint(ckpt_path)
    cases = load_split(cfg, split)
    out_dir = run_dir / "eval" / split
    do_figures = cfg.eval.figures if figures is None else figures

    if cases.num_classes > 2:
        return _evaluate_multiclass(run_dir, split, ckpt_path, model, cfg, cases, out_dir)
    results = []
    for case in cases:
        prob = infer_image(model, case.image, cfg)
        results.append((case, prob))
    summary, rows = evaluate_vessels(
        ((c.id, p, c.mask, c.fov) for c, p in results), threshold=cfg.eval.threshold
    )
    metrics = {
        "dataset": cfg.data.dataset,
        "split": split,
        "n_images": summary["n_images"],
        "threshold": summary["threshold"],
        "fov": summary["fov"],
        "whole_image": summary["whole_image"],
        "conventions": summary.get("conventions", {}),
        "checkpoint": str(ckpt_path),
        "network": cfg.model.name,
        "inference": _inference_info(cfg),
    }
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    write_text_atomic(out_dir / "per_image.csv", _csv_text(rows))
    if do_figures:
        _figures(run_dir, out_dir / "figures", model, cfg, results)
    return metrics


def _inference_info(cfg: Config) -> dict[str, Any]:
    return {
        "method": "MONAI sliding_window_inference",
        "roi_size": roi_size(cfg),
        "overlap": cfg.eval.overlap,
        "blend": cfg.eval.mode,
    }


def _evaluate_multiclass(run_dir: Path, split: str, ckpt_path: Path, model: nn.Module, cfg: Config, cases: Any, out_dir: Path) -> dict[str, Any]:
    """Per-class Dice/IoU (per image, per volume, pooled) for label-map data; see
    :func:`medseg.metrics.multiclass.evaluate_multiclass`."""
    from medseg.metrics.multiclass import evaluate_multiclass

    def items():
        for case in cases:
            labels = infer_probabilities(model, case.image, cfg).argmax(0)
            yield case.id, case.group, labels, case.mask

    summary, rows = evaluate_multiclass(items(), cases.num_classes)
    metrics = {
        "dataset": cfg.data.dataset,
        "split": split,
        **summary,
        "checkpoint": str(ckpt_path),
        "network": cfg.model.name,
        "inference": _inference_info(cfg),
    }
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    write_text_atomic(out_dir / "per_image.csv", _csv_text(rows))
    return metrics


def _figures(run_dir: Path, fig_dir: Path, model: nn.Module, cfg: Config, results: list) -> None:
    from medseg.viz import plot_training_curves, save_kernel_positions, save_panel

    for case, prob in results:
        save_panel(
            fig_dir / f"{case.id}_panel.png", case.display, case.mask, prob,
            threshold=cfg.eval.threshold, fov=case.fov, title=f"{cfg.model.name} - {case.id}",
        )
    metrics_csv = run_dir / "logs" / "csv" / "metrics.csv"
    if metrics_csv.is_file():
        plot_training_curves(metrics_csv, fig_dir / "curves.png")
    if cfg.eval.kernel_figure and results:
        case = results[0][0]
        found = kernel_coordinates_for(model, case.image)
        if found is not None:
            layer_name, coords = found
            title = f"DSConv '{layer_name}' sampled positions - {case.id}"
            save_kernel_positions(fig_dir / f"{case.id}_dsconv_kernels.png", case.display, coords, target=case.mask, title=title)
            h, w = case.mask.shape
            if max(h, w) > ZOOM_ABOVE and coords.shape[1:3] == (h, w):
                # A 9-point kernel spans ~9 px: also draw a zoomed window on the densest vessels.
                y0, x0 = densest_window(case.mask, ZOOM_SIZE)
                crop = (slice(y0, y0 + ZOOM_SIZE), slice(x0, x0 + ZOOM_SIZE))
                zoom = coords[:, crop[0], crop[1]] - np.array([y0, x0], dtype=coords.dtype)
                save_kernel_positions(
                    fig_dir / f"{case.id}_dsconv_kernels_zoom.png", case.display[crop], zoom,
                    target=case.mask[crop], title=f"{title} (rows {y0}-{y0 + ZOOM_SIZE - 1}, cols {x0}-{x0 + ZOOM_SIZE - 1})",
                )
