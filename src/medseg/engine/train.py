"""``medseg train``: one function that builds everything from a Config and runs Lightning.

A run directory holds everything of a run::

    runs/<name>/
        config.yaml            resolved recipe (every key), written before training starts
        splits.json            training and validation ids
        checkpoints/best.ckpt  best validation Dice;  checkpoints/last.ckpt  end of the last epoch
        logs/csv/metrics.csv   per-step and per-epoch metrics;  logs/tensorboard/  TensorBoard events
        train_summary.json     wall time, epochs, steps, best validation Dice
        figures/curves.png     training curves
        eval/<split>/          metrics.json, per_image.csv, figures/ (``medseg evaluate``)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from medseg.atomic import atomic_path, write_text_atomic
from medseg.config import Config, write_yaml_atomic
from medseg.engine.checkpoint import AtomicCheckpointIO
from medseg.engine.datamodule import SegDataModule
from medseg.engine.module import SegmentationModule, build_network, roi_size
from medseg.errors import ConfigError
from medseg.inference import check_roi


def resolve_precision(precision: str) -> str:
    """"auto" -> "bf16-mixed" on a GPU with bf16, "16-mixed" on other GPUs, "32-true" on the CPU."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    """``<run>/checkpoints``."""
    return Path(run_dir) / "checkpoints"


def _check_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """Refuse to overwrite a previous run; return the checkpoint to resume from (or None)."""
    last = checkpoint_dir(run_dir) / "last.ckpt"
    if resume:
        if not last.is_file():
            raise ConfigError(f"--resume: no checkpoint to resume from at {last}")
        return last
    if checkpoint_dir(run_dir).is_dir() and any(checkpoint_dir(run_dir).glob("*.ckpt")):
        raise ConfigError(
            f"run directory {run_dir} already holds checkpoints; pass --resume to continue that run, "
            f"or choose another --out (nothing was changed)"
        )
    return None


def build_trainer(cfg: Config, run_dir: Path, callbacks: list[Callback] | None = None) -> L.Trainer:
    """The Lightning Trainer for a recipe: loggers, checkpoints (best by val/dice, last), DDP settings."""
    # Two callbacks: Lightning 2.6 writes ``save_last`` only in rounds where the top-k file was
    # also written, so with a plateaued validation Dice "last" would go stale and --resume would
    # silently go back epochs. "last" is therefore its own unmonitored checkpoint, written at the
    # end of every training epoch (after that epoch's validation).
    best = ModelCheckpoint(
        dirpath=checkpoint_dir(run_dir),
        filename="best",
        monitor="val/dice",
        mode="max",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    last = ModelCheckpoint(
        dirpath=checkpoint_dir(run_dir),
        filename="last",
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    loggers = [
        CSVLogger(save_dir=run_dir, name="logs", version="csv"),
        TensorBoardLogger(save_dir=run_dir / "logs", name="", version="tensorboard", default_hp_metric=False),
    ]
    return L.Trainer(
        default_root_dir=run_dir,
        max_epochs=cfg.train.max_epochs,
        max_steps=cfg.train.max_steps,
        accelerator=cfg.train.accelerator,
        devices=cfg.train.devices,
        num_nodes=cfg.train.num_nodes,
        strategy=cfg.train.strategy,
        precision=resolve_precision(cfg.train.precision),
        accumulate_grad_batches=cfg.train.accumulate_grad_batches,
        gradient_clip_val=cfg.train.gradient_clip_val,
        check_val_every_n_epoch=cfg.train.val_every_n_epochs,
        log_every_n_steps=cfg.train.log_every_n_steps,
        enable_progress_bar=cfg.train.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        logger=loggers,
        callbacks=[best, last, LearningRateMonitor(logging_interval="step"), *(callbacks or [])],
        plugins=[AtomicCheckpointIO()],
    )


def check_training_data(cfg: Config):
    """Run ``medseg data check`` on the recipe's dataset (cached) and refuse it on errors.

    Returns:
        The :class:`~medseg.data.check.CheckReport`, or None for generated datasets.

    Raises:
        DataError: the check found errors (each listed, naming its file).
    """
    from medseg.data import DATASETS, list_datasets
    from medseg.data.check import check_cached, require_clean
    from medseg.data.files import FileDataset

    list_datasets()  # imports every dataset module
    cls = DATASETS.get(cfg.data.dataset)
    if not (isinstance(cls, type) and issubclass(cls, FileDataset)):
        return None  # generated data: nothing to check
    args = dict(cfg.data.args)
    split_file = args.pop("split_file", None)
    report, cached = check_cached(cfg.data.dataset, cfg.data.root, split_file, **args)
    warn = len(report.warnings)
    print(f"medseg: data check of {cfg.data.dataset} ({'cached' if cached else 'ran'}): "
          f"{len(report.errors)} errors, {warn} warnings")
    require_clean(report)
    return report


def train(
    cfg: Config,
    run_dir: str | os.PathLike,
    resume: bool = False,
    callbacks: list[Callback] | None = None,
    evaluate_after: bool | None = None,
) -> dict[str, Any]:
    """Train the recipe ``cfg`` into ``run_dir``; evaluate the best checkpoint afterwards.

    Everything that can be wrong with the input (config keys, network name and arguments, data
    files, window size) is checked before the first step.

    Args:
        cfg: the resolved recipe.
        run_dir: the run directory (created; an existing run is never overwritten).
        resume: continue from ``checkpoints/last.ckpt`` (weights, optimiser, scheduler, step,
            RNG state); the data sampling is a function of (seed, epoch, index), so the result
            equals an uninterrupted run.
        callbacks: extra Lightning callbacks (tests use one to simulate a crash).
        evaluate_after: evaluate on ``cfg.eval.split`` when training ends (default
            ``cfg.eval.after_train``).

    Returns:
        The training summary (also written to ``train_summary.json``), with the evaluation
        metrics under "eval" when evaluated.

    Raises:
        medseg.errors.MedsegError: bad config, data or run directory.
    """
    run_dir = Path(run_dir)
    ckpt_path = _check_run_dir(run_dir, resume)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data_report = check_training_data(cfg)
    datamodule = SegDataModule(cfg)
    check_roi(build_network(cfg, datamodule.in_channels), roi_size(cfg))
    module = SegmentationModule(cfg.to_dict(), in_channels=datamodule.in_channels)
    trainer = build_trainer(cfg, run_dir, callbacks)
    if trainer.is_global_zero:
        write_yaml_atomic(cfg.to_dict(), run_dir / "config.yaml")
        splits = {"train": datamodule.train_ids, "validation": datamodule.val_ids}
        write_text_atomic(run_dir / "splits.json", json.dumps(splits, indent=2))
        if data_report is not None:
            write_text_atomic(run_dir / "data_check.json", json.dumps(data_report.to_dict(), indent=1))
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    seconds = time.perf_counter() - start
    summary: dict[str, Any] = {}
    if not trainer.is_global_zero:
        return summary
    best_cb = next(cb for cb in trainer.checkpoint_callbacks if cb.monitor == "val/dice")
    best_score = best_cb.best_model_score
    best_path = checkpoint_dir(run_dir) / "best.ckpt"
    selected_by = "validation Dice"
    if not best_path.is_file():
        # The run ended before its first validation round (e.g. --max-steps, or fewer epochs
        # than train.val_every_n_epochs): the final weights are the only candidate.
        with atomic_path(best_path) as tmp:
            shutil.copyfile(checkpoint_dir(run_dir) / "last.ckpt", tmp)
        selected_by = "none: no validation round ran, best.ckpt is the last checkpoint"
        print(f"medseg: note: no validation round ran; {best_path} is a copy of the last checkpoint")
    summary = {
        "network": cfg.model.name,
        "dataset": cfg.data.dataset,
        "parameters": sum(p.numel() for p in module.model.parameters()),
        "train_seconds": round(seconds, 2),
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "best_val_dice": float(best_score) if best_score is not None else None,
        "best_checkpoint": str(best_path),
        "best_selected_by": selected_by,
        "resumed": resume,
        "device": str(trainer.strategy.root_device),
        "precision": str(trainer.precision),
    }
    write_text_atomic(run_dir / "train_summary.json", json.dumps(summary, indent=2))
    _plot_curves(run_dir)
    if evaluate_after if evaluate_after is not None else cfg.eval.after_train:
        from medseg.inference.evaluate import evaluate

        summary["eval"] = evaluate(run_dir, split=cfg.eval.split)
    return summary


def _plot_curves(run_dir: Path) -> None:
    from medseg.viz import plot_training_curves

    csv = run_dir / "logs" / "csv" / "metrics.csv"
    if csv.is_file():
        plot_training_curves(csv, run_dir / "figures" / "curves.png")
