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
        report.html            the evaluation as a page (``medseg report``)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from medseg.atomic import atomic_path, write_text_atomic
from medseg.config import Config, write_yaml_atomic
from medseg.engine.checkpoint import AtomicCheckpointIO
from medseg.engine.datamodule import SegDataModule
from medseg.engine.module import SegmentationModule, build_network, check_classes, output_channels, roi_size
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
    finished = [p for p in checkpoint_dir(run_dir).glob("*.ckpt") if not p.name.startswith(".")]
    if resume:
        if last.is_file():
            return last
        if (run_dir / "config.yaml").is_file() and not finished:
            return None  # interrupted before its first checkpoint: train it from step 0
        raise ConfigError(f"--resume: no checkpoint to resume from at {last}")
    if finished:
        raise ConfigError(
            f"run directory {run_dir} already holds checkpoints; pass --resume to continue that run, "
            f"or choose another --out (nothing was changed)"
        )
    return None


class StopAtStep(Callback):
    """Stop training after ``max_steps`` optimiser steps (``train.max_steps``; -1: no limit).

    Lightning's own ``max_steps`` also sets the learning-rate schedule's length and switches
    Lightning to its iteration-based restart path; here the schedule always spans the recipe's
    ``max_epochs``, so a run stopped at step 32 and resumed to step 120 equals a run of 120
    steps, and the restart takes the epoch-based path Lightning restores exactly.
    """

    def __init__(self, max_steps: int) -> None:
        self.max_steps = int(max_steps)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.max_steps > 0 and trainer.global_step >= self.max_steps:
            trainer.should_stop = True
        # a run resumed at or past the limit is not fitted at all (see _already_finished)


class TrainClock(Callback):
    """Seconds spent training, carried in the checkpoint so a resumed run reports its whole time.

    ``seconds`` is the time from each fit's start to its end, summed over the fits of one run:
    the state saved with ``last.ckpt`` holds the seconds up to that checkpoint, and a run resumed
    from it adds its own fit. Work lost to a kill (after the last checkpoint) is not counted, so
    the figure is the training time of the steps the final weights went through (wall seconds,
    validation rounds included).
    """

    def __init__(self) -> None:
        self.before = 0.0  # seconds of earlier fits, restored from the checkpoint
        self._start: float | None = None

    @property
    def seconds(self) -> float:
        """Seconds so far: earlier fits plus this one (float, >= 0)."""
        return self.before + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def on_fit_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._start = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.before, self._start = self.seconds, None

    def state_dict(self) -> dict[str, float]:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = float(state_dict.get("seconds", 0.0))


class ExplainInterrupt(Callback):
    """On Ctrl-C (Lightning then exits with status 1), say what was kept and how to resume."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def on_exception(self, trainer: L.Trainer, pl_module: Any, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt) or not trainer.is_global_zero:
            return
        import sys

        last = checkpoint_dir(self.run_dir) / "last.ckpt"
        kept = "no checkpoint yet (the first one is written at the end of the first epoch)"
        if last.is_file():
            try:
                from medseg.engine.checkpoint import read_checkpoint

                kept = f"{last} (step {int(read_checkpoint(last).get('global_step', 0))})"
            except Exception:  # noqa: BLE001 - a message must not fail
                kept = str(last)
        print(f"\nmedseg: interrupted at step {trainer.global_step}; kept {kept}", file=sys.stderr)
        if last.is_file():
            print(f"medseg: resume with: medseg train --out {self.run_dir} --resume", file=sys.stderr)


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
        # train.max_steps is a stop, not the schedule's length (see StopAtStep)
        accelerator=cfg.train.accelerator,
        devices=cfg.train.devices,
        num_nodes=cfg.train.num_nodes,
        strategy=cfg.train.strategy,
        precision=resolve_precision(cfg.train.precision),
        accumulate_grad_batches=cfg.train.accumulate_grad_batches,
        gradient_clip_val=cfg.train.gradient_clip_val,
        gradient_clip_algorithm=cfg.train.gradient_clip_algorithm,
        check_val_every_n_epoch=cfg.train.val_every_n_epochs,
        log_every_n_steps=cfg.train.log_every_n_steps,
        enable_progress_bar=cfg.train.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        logger=loggers,
        callbacks=[best, last, LearningRateMonitor(logging_interval="step"), StopAtStep(cfg.train.max_steps),
                   ExplainInterrupt(run_dir), TrainClock(), *(callbacks or [])],
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

    if cfg.data.root is not None and Path(cfg.data.root).is_file():
        raise ConfigError(f"data.root {cfg.data.root} is a file, not a dataset folder (medseg data list shows the layouts)")
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


def stage_config(cfg: Config, index: int) -> Config:
    """The recipe of stage ``index`` of ``cfg.train.stages``: the recipe with the stage's overrides.

    ``max_epochs``, ``max_steps``, ``batch_size``, ``trainable``, ``freeze_encoder_steps``,
    ``val_every_n_epochs`` -> ``train.*``; ``lr`` -> ``optim.lr``; ``patch_size``,
    ``samples_per_epoch`` -> ``data.*``; ``augment`` replaces ``data.augment`` and ``loss``
    replaces the ``loss`` section (unset loss keys take their defaults, not the recipe's).

    Raises:
        ConfigError: a bad value in the stage (named by its index).
    """
    from medseg.config import build_config

    stage = dict(cfg.train.stages[index])
    d = cfg.to_dict()
    d["train"]["stages"] = []
    for key in ("max_epochs", "max_steps", "batch_size", "trainable", "freeze_encoder_steps", "val_every_n_epochs"):
        if key in stage:
            d["train"][key] = stage[key]
    for key in ("patch_size", "samples_per_epoch"):
        if key in stage:
            d["data"][key] = stage[key]
    if "lr" in stage:
        d["optim"]["lr"] = stage["lr"]
    if "augment" in stage:
        d["data"]["augment"] = stage["augment"]
    if "loss" in stage:
        d["loss"] = stage["loss"]
    return build_config(d, source=f"train.stages[{index}] ({stage.get('name', index + 1)})")


def _announce_encoder(cfg: Config) -> str | None:
    """Say in the run log whether the ImageNet encoder starts from a weight file or from scratch."""
    import inspect

    from medseg.models import MODELS

    if "encoder_weights" not in inspect.signature(MODELS.get(cfg.model.name)).parameters:
        return None
    path = cfg.model.args.get("encoder_weights")
    if path:
        msg = f"medseg: encoder initialised from {path} (model.args.encoder_weights)"
    else:
        msg = (f"medseg: {cfg.model.name}: no model.args.encoder_weights given: the encoder trains from scratch "
               "(the original starts from ImageNet weights; name the file with --set model.args.encoder_weights=PATH)")
    print(msg)
    return msg


def train(
    cfg: Config,
    run_dir: str | os.PathLike,
    resume: bool = False,
    callbacks: list[Callback] | None = None,
) -> dict[str, Any]:
    """Train the recipe ``cfg`` into ``run_dir`` (no evaluation: the engine knows no protocol;
    :func:`medseg.workflows.train.train` trains and then evaluates).

    Everything that can be wrong with the input (config keys, network name and arguments, data
    files, window size, classes against output channels) is checked before the first step.
    A recipe with ``train.stages`` runs each stage into ``run_dir/stage<k>-<name>/`` (a run
    directory of its own), each starting from the previous stage's best weights; the last
    stage's checkpoints are copied to ``run_dir/checkpoints/``.

    Args:
        cfg: the resolved recipe.
        run_dir: the run directory (created; an existing run is never overwritten).
        resume: continue from ``checkpoints/last.ckpt`` (weights, optimiser, scheduler, step,
            RNG state); the data sampling is a function of (seed, epoch, index), so the result
            equals an uninterrupted run. With stages: finished stages are kept, the
            interrupted one resumes.
        callbacks: extra Lightning callbacks (tests use one to simulate a crash).

    Returns:
        The training summary (also written to ``train_summary.json``); empty off rank 0.

    Raises:
        medseg.errors.MedsegError: bad config, data or run directory; another live process
            training into ``run_dir`` (:func:`medseg.runlock.run_lock`).
    """
    from medseg.runlock import run_lock

    run_dir = Path(run_dir)
    if not cfg.train.stages:
        _check_run_dir(run_dir, resume)  # refuse an existing run before creating anything
    with run_lock(run_dir):
        if cfg.train.stages:
            return _train_stages(cfg, run_dir, resume, callbacks)
        return _train_one(cfg, run_dir, resume, callbacks)


def _train_one(cfg: Config, run_dir: Path, resume: bool, callbacks: list[Callback] | None) -> dict[str, Any]:
    """One fit of ``cfg`` into ``run_dir`` (see :func:`train`), under the run's lock."""
    ckpt_path = _check_run_dir(run_dir, resume)
    _check_network_name(cfg)
    if resume:
        _remove_stale_checkpoint_temporaries(run_dir)
        if ckpt_path is None:
            print(f"medseg: {run_dir} was interrupted before its first checkpoint; training it from step 0")
    finished = _already_finished(cfg, run_dir, ckpt_path)
    if finished is not None:
        return finished
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data_report = check_training_data(cfg)
    datamodule = SegDataModule(cfg)
    return _fit(cfg, run_dir, datamodule, ckpt_path, callbacks, data_report=data_report)


def _remove_stale_checkpoint_temporaries(run_dir: Path) -> None:
    """Remove what a ``kill -9`` during a checkpoint write left (the checkpoint itself is intact:
    :func:`medseg.atomic.atomic_path`), under the run's lock, and say so."""
    from medseg.atomic import remove_stale_temporaries

    removed = remove_stale_temporaries(checkpoint_dir(run_dir), ".ckpt")
    if removed:
        names = ", ".join(p.name for p in removed)
        print(f"medseg: removed {len(removed)} unfinished checkpoint write(s) of an interrupted run: {names}")


def _check_network_name(cfg: Config) -> None:
    """Refuse an unknown ``model.name`` before the data check reads any file.

    Raises:
        ConfigError: the name is not registered (the closest names suggested).
    """
    from medseg.models import MODELS, _import_all

    _import_all()
    MODELS.get(cfg.model.name)


def _already_finished(cfg: Config, run_dir: Path, ckpt_path: Path | None) -> dict[str, Any] | None:
    """The run's summary when ``--resume`` finds it already at ``train.max_steps`` (Lightning
    would still step the LR schedule once for a fit that trains nothing), else None."""
    if ckpt_path is None or cfg.train.max_steps <= 0 or not (run_dir / "train_summary.json").is_file():
        return None
    from medseg.engine.checkpoint import read_checkpoint

    if int(read_checkpoint(ckpt_path).get("global_step", 0)) < cfg.train.max_steps:
        return None
    print(f"medseg: {run_dir} already reached train.max_steps={cfg.train.max_steps}; nothing left to train")
    return json.loads((run_dir / "train_summary.json").read_text())


def check_patch(patch_size: int, network: torch.nn.Module, cases: Sequence) -> None:
    """Refuse a training patch so much larger than every training image that it trains on padding.

    A patch is zero-padded where it overhangs its image. Some padding is what recipes ask for
    (MSD hippocampus slices of 36x50 px in the 64 px patches the DenseNet encoder's 1/32 stages
    need; the built-in default's 64 px patches on 32 px images), so the limit is twice the largest
    image side rounded up to a multiple of ``network.size_divisor`` (1 if it has none): beyond it
    more than three quarters of every patch would be padding.

    Args:
        patch_size: ``data.patch_size`` (pixels, square patches).
        network: the recipe's network.
        cases: the training cases (:class:`medseg.data.base.Case`, ``.shape`` = (H, W)).

    Raises:
        ConfigError: ``patch_size`` exceeds that limit; the message gives the largest image and
            the patch size that covers it.
    """
    if not len(cases):
        return
    h = max(c.shape[0] for c in cases)
    w = max(c.shape[1] for c in cases)
    divisor = int(getattr(network, "size_divisor", 1) or 1)
    covers = -(-max(h, w) // divisor) * divisor
    if patch_size > 2 * covers:
        raise ConfigError(
            f"data.patch_size: {patch_size} is larger than every training image (largest {h}x{w} px), so more than "
            f"three quarters of every patch would be padding; use data.patch_size <= {covers}"
        )


def _check_network(cfg: Config, network: torch.nn.Module, datamodule: SegDataModule) -> None:
    """Window size, output channels and patch size of ``network`` against the data."""
    check_roi(network, roi_size(cfg))
    check_classes(cfg.model.name, output_channels(network, datamodule.in_channels, roi_size(cfg)), datamodule.num_classes)
    check_patch(cfg.data.patch_size, network, datamodule.train_cases)


def _prepare_network(cfg: Config, datamodule: SegDataModule) -> None:
    """Build the network once to check window size, output channels and patch size against the data."""
    _check_network(cfg, build_network(cfg, datamodule.in_channels, datamodule.num_classes), datamodule)
    _announce_encoder(cfg)


def _check_stages(cfg: Config, stage_cfgs: list[Config], base: SegDataModule) -> None:
    """Every stage's network checks (trainable prefixes, loss outputs, window, classes, patch) before
    the first stage trains, so a mistake in stage 2 is not found after stage 1's hours.

    Raises:
        ConfigError: prefixed ``train.stages[k] (name): `` with the stage's problem.
    """
    for i, scfg in enumerate(stage_cfgs):
        name = str(cfg.train.stages[i].get("name", i + 1))
        try:
            module = SegmentationModule(scfg.to_dict(), in_channels=base.in_channels, num_classes=base.num_classes)
            _check_network(scfg, module.model, base)
        except ConfigError as exc:
            raise ConfigError(f"train.stages[{i}] ({name}): {exc}") from exc


def _fit(
    cfg: Config,
    run_dir: Path,
    datamodule: SegDataModule,
    ckpt_path: Path | None,
    callbacks: list[Callback] | None,
    data_report: Any = None,
    init_state: dict[str, torch.Tensor] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One Lightning fit of ``cfg`` into ``run_dir``; returns the summary (empty off rank 0)."""
    _prepare_network(cfg, datamodule)
    module = SegmentationModule(
        cfg.to_dict(), in_channels=datamodule.in_channels, num_classes=datamodule.num_classes, init_state=init_state
    )
    trainer = build_trainer(cfg, run_dir, callbacks)
    if trainer.is_global_zero:
        write_yaml_atomic(cfg.to_dict(), run_dir / "config.yaml")
        splits = {"train": datamodule.train_ids, "validation": datamodule.val_ids}
        write_text_atomic(run_dir / "splits.json", json.dumps(splits, indent=2))
        if data_report is not None:
            write_text_atomic(run_dir / "data_check.json", json.dumps(data_report.to_dict(), indent=1))
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    seconds = next(cb for cb in trainer.callbacks if isinstance(cb, TrainClock)).seconds
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
        "trainable_parameters": sum(p.numel() for p in module.model.parameters() if p.requires_grad),
        "encoder_weights": cfg.model.args.get("encoder_weights"),
        "train_seconds": round(seconds, 2),
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "best_val_dice": float(best_score) if best_score is not None else None,
        "best_checkpoint": str(best_path),
        "best_selected_by": selected_by,
        "resumed": ckpt_path is not None,
        "device": str(trainer.strategy.root_device),
        "precision": str(trainer.precision),
        **(extra or {}),
    }
    write_text_atomic(run_dir / "train_summary.json", json.dumps(summary, indent=2))
    _plot_curves(run_dir)
    return summary


def _best_weights(stage_dir: Path) -> dict[str, torch.Tensor]:
    """The network weights of ``<stage_dir>/checkpoints/best.ckpt``."""
    from medseg.engine.checkpoint import read_checkpoint

    ckpt = read_checkpoint(checkpoint_dir(stage_dir) / "best.ckpt")
    return {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}


def _train_stages(cfg: Config, run_dir: Path, resume: bool, callbacks: list[Callback] | None) -> dict[str, Any]:
    """Run ``cfg.train.stages`` one after another (see :func:`train`)."""
    stage_cfgs = [stage_config(cfg, i) for i in range(len(cfg.train.stages))]  # all checked up front
    if not resume:
        _check_run_dir(run_dir, resume=False)
        if any(run_dir.glob("stage*/checkpoints/*.ckpt")):
            raise ConfigError(f"run directory {run_dir} already holds stage checkpoints; pass --resume or choose another --out")
    _check_network_name(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data_report = check_training_data(cfg)
    base = SegDataModule(cfg)
    _check_stages(cfg, stage_cfgs, base)
    write_yaml_atomic(cfg.to_dict(), run_dir / "config.yaml")
    stages: list[dict[str, Any]] = []
    init_state = None
    for i, scfg in enumerate(stage_cfgs):
        name = str(cfg.train.stages[i].get("name", i + 1))
        sdir = run_dir / f"stage{i + 1}-{name}"
        done = sdir / "train_summary.json"
        if resume and done.is_file():
            print(f"medseg: stage {i + 1} ({name}) already finished: kept")
            stages.append(json.loads(done.read_text()))
        else:
            ckpt = checkpoint_dir(sdir) / "last.ckpt"
            ckpt_path = ckpt if resume and ckpt.is_file() else None
            if resume:
                _remove_stale_checkpoint_temporaries(sdir)
            print(f"medseg: stage {i + 1}/{len(stage_cfgs)} ({name}): trainable {scfg.train.trainable or 'all'}, "
                  f"{scfg.train.max_epochs} epochs, lr {scfg.optim.lr}, loss {scfg.loss.name} on {dict(scfg.loss.outputs)}")
            L.seed_everything(cfg.seed + i, workers=True, verbose=False)
            dm = SegDataModule(scfg, train_cases=base.full_cases)
            stages.append(_fit(scfg, sdir, dm, ckpt_path, callbacks, data_report, init_state,
                               extra={"stage": i + 1, "stage_name": name}))
        init_state = _best_weights(sdir)
    final = run_dir / f"stage{len(stage_cfgs)}-{cfg.train.stages[-1].get('name', len(stage_cfgs))}"
    for which in ("best", "last"):
        with atomic_path(checkpoint_dir(run_dir) / f"{which}.ckpt") as tmp:
            shutil.copyfile(checkpoint_dir(final) / f"{which}.ckpt", tmp)
    summary = dict(stages[-1])
    summary.update({
        "stages": stages,
        "train_seconds": round(sum(s.get("train_seconds", 0.0) for s in stages), 2),
        "best_checkpoint": str(checkpoint_dir(run_dir) / "best.ckpt"),
        "resumed": resume,
    })
    write_text_atomic(run_dir / "train_summary.json", json.dumps(summary, indent=2))
    return summary


def _plot_curves(run_dir: Path) -> None:
    from medseg.viz import plot_training_curves

    csv = run_dir / "logs" / "csv" / "metrics.csv"
    if csv.is_file():
        plot_training_curves(csv, run_dir / "figures" / "curves.png")
