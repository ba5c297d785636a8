"""``medseg train``: one function that builds everything from a Config and runs Lightning.

A run directory holds everything of a run: the recipe (``config.yaml``), the training and
validation ids, the checkpoints (``checkpoints/best.ckpt``, ``checkpoints/last.ckpt``), the logs,
the training summary and curves, and later its evaluations and report. Every path is named by
:class:`medseg.rundir.RunDir`, whose docstring has the table of what writes and reads each.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from medseg.atomic import atomic_path, write_text_atomic
from medseg.config import Config, write_yaml_atomic
from medseg.engine.checkpoint import AtomicCheckpointIO
from medseg.engine.datamodule import SegDataModule
from medseg.engine.module import SegmentationModule, build_network, check_classes, output_channels, roi_size
from medseg.errors import ConfigError
from medseg.inference import check_roi
from medseg.log import counted, get_logger
from medseg.models import count_parameters
from medseg.rundir import RunDir

log = get_logger(__name__)


def resolve_precision(precision: str) -> str:
    """ "auto" -> "bf16-mixed" on a GPU with bf16, "16-mixed" on other GPUs, "32-true" on the CPU."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _check_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """Refuse to overwrite a previous run; return the checkpoint to resume from (or None)."""
    rd = RunDir(run_dir)
    last = rd.last
    finished = rd.finished_checkpoints()
    if resume:
        if last.is_file():
            return last
        if rd.config.is_file() and not finished:
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

        last = RunDir(self.run_dir).last
        kept = "no checkpoint yet (the first one is written at the end of the first epoch)"
        if last.is_file():
            try:
                from medseg.engine.checkpoint import read_checkpoint

                kept = f"{last} (step {int(read_checkpoint(last).get('global_step', 0))})"
            except Exception:  # noqa: BLE001 - a message must not fail
                kept = str(last)
        sys.stderr.write("\n")  # end the progress bar's line
        log.warning(f"interrupted at step {trainer.global_step}; kept {kept}")
        if last.is_file():
            log.warning(f"resume with: medseg train --out {self.run_dir} --resume")


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar without ``v_num``: the logger "version" it shows is the name of a log
    folder (it read ``v_num=oard``, the end of "tensorboard"), which tells a user nothing."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


def build_trainer(cfg: Config, run_dir: Path, callbacks: list[Callback] | None = None) -> L.Trainer:
    """The Lightning Trainer for a recipe: loggers, checkpoints (best by val/dice, last), DDP settings."""
    # Two callbacks: Lightning 2.6 writes ``save_last`` only in rounds where the top-k file was
    # also written, so with a plateaued validation Dice "last" would go stale and --resume would
    # silently go back epochs. "last" is therefore its own unmonitored checkpoint, written at the
    # end of every training epoch (after that epoch's validation).
    rd = RunDir(run_dir)
    best = ModelCheckpoint(  # Lightning writes dirpath/<filename>.ckpt: rd.best, rd.last
        dirpath=rd.checkpoints,
        filename=rd.best.stem,
        monitor="val/dice",
        mode="max",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    last = ModelCheckpoint(
        dirpath=rd.checkpoints,
        filename=rd.last.stem,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    loggers = [  # each writes into save_dir/name/version: rd.csv_log_dir, rd.tensorboard_dir
        CSVLogger(save_dir=rd.root, name=rd.logs.name, version=rd.csv_log_dir.name),
        TensorBoardLogger(save_dir=rd.logs, name="", version=rd.tensorboard_dir.name, default_hp_metric=False),
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
        callbacks=[
            best,
            last,
            LearningRateMonitor(logging_interval="step"),
            StopAtStep(cfg.train.max_steps),
            ExplainInterrupt(run_dir),
            TrainClock(),
            *([ProgressBar()] if cfg.train.progress_bar else []),
            *(callbacks or []),
        ],
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
        raise ConfigError(
            f"data.root {cfg.data.root} is a file, not a dataset folder (medseg data list shows the layouts)"
        )
    from medseg.data.files import FileDataset

    list_datasets()  # imports every dataset module
    cls = DATASETS.get(cfg.data.dataset)
    if not (isinstance(cls, type) and issubclass(cls, FileDataset)):
        return None  # generated data: nothing to check
    args = dict(cfg.data.args)
    split_file = args.pop("split_file", None)
    report, cached = check_cached(cfg.data.dataset, cfg.data.root, split_file, **args)
    warn = len(report.warnings)
    log.info(
        f"data check of {cfg.data.dataset} ({'cached' if cached else 'ran'}): "
        f"{counted(len(report.errors), 'error')}, {counted(warn, 'warning')}"
    )
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
    """Say in the run log whether the ImageNet encoder starts from a weight file or from scratch;
    returns the message (without the "medseg: " prefix the log adds), or None for networks without one."""
    import inspect

    from medseg.models import MODELS

    if "encoder_weights" not in inspect.signature(MODELS.get(cfg.model.name)).parameters:
        return None
    path = cfg.model.args.get("encoder_weights")
    if path:
        msg = f"encoder initialised from {path} (model.args.encoder_weights)"
    else:
        msg = (
            f"{cfg.model.name}: no model.args.encoder_weights given: the encoder trains from scratch "
            "(the original starts from ImageNet weights; name the file with --set model.args.encoder_weights=PATH)"
        )
    log.info(msg)
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
            log.info(f"{run_dir} was interrupted before its first checkpoint; training it from step 0")
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

    removed = remove_stale_temporaries(RunDir(run_dir).checkpoints, ".ckpt")
    if removed:
        names = ", ".join(p.name for p in removed)
        log.info(f"removed {len(removed)} unfinished checkpoint write(s) of an interrupted run: {names}")


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
    summary = RunDir(run_dir).summary
    if ckpt_path is None or cfg.train.max_steps <= 0 or not summary.is_file():
        return None
    from medseg.engine.checkpoint import read_checkpoint

    if int(read_checkpoint(ckpt_path).get("global_step", 0)) < cfg.train.max_steps:
        return None
    log.info(f"{run_dir} already reached train.max_steps={cfg.train.max_steps}; nothing left to train")
    return json.loads(summary.read_text())


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
        cases: the training cases (:class:`medseg.data.base.Case`, ``.shape`` = (H, W) or (D, H, W)).

    Raises:
        ConfigError: ``patch_size`` exceeds that limit; the message gives the largest image and
            the patch size that covers it.
    """
    if not len(cases):
        return
    largest = [max(c.shape[i] for c in cases) for i in range(len(cases[0].shape))]
    divisor = int(getattr(network, "size_divisor", 1) or 1)
    covers = -(-max(largest) // divisor) * divisor
    if patch_size > 2 * covers:
        raise ConfigError(
            f"data.patch_size: {patch_size} is larger than every training image (largest "
            f"{'x'.join(map(str, largest))} px), so more than three quarters of every patch would be padding; "
            f"use data.patch_size <= {covers}"
        )


def _check_network(cfg: Config, network: torch.nn.Module, datamodule: SegDataModule) -> None:
    """Window size, output channels and patch size of ``network`` against the data.

    The output channels come from one forward pass of a zero image (1, C, roi, roi) through
    ``network`` itself (eval mode, no gradient, its mode restored after); the global random
    generators are put back where they were (:func:`_random_state_kept`), so checking the very
    network that then trains leaves its training as it would be without the check.

    Raises:
        ConfigError: a 2-D network on volume cases or a 3-D network on images (``spatial_dims``),
            a window the network cannot take, outputs that do not fit the data's classes, or a
            patch much larger than every training image (each named).
    """
    net_dims, data_dims = int(getattr(network, "spatial_dims", 2)), datamodule.spatial_dims
    if net_dims != data_dims:
        hint = (
            "read the volumes whole with data.args.spatial_dims: 3"
            if net_dims == 3
            else "use a 3-D network (e.g. unet3d, dscnet3d) or read slices with data.args.spatial_dims: 2"
        )
        raise ConfigError(
            f"network {cfg.model.name!r} is {net_dims}-D but dataset {cfg.data.dataset!r} gives "
            f"{'volumes' if data_dims == 3 else '2-D images'} ({data_dims}-D cases); {hint}"
        )
    check_roi(network, roi_size(cfg))
    with _random_state_kept():
        channels = output_channels(network, datamodule.in_channels, roi_size(cfg))
    check_classes(cfg.model.name, channels, datamodule.num_classes)
    check_patch(cfg.data.patch_size, network, datamodule.train_cases)


@contextmanager
def _random_state_kept() -> Iterator[None]:
    """Restore Python's, numpy's and torch's (CPU) global random generators after the block."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


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
    """One Lightning fit of ``cfg`` into ``run_dir``.

    Steps: build the module and check its network against the data (:func:`_build_module`);
    write the run's inputs (:func:`_write_run_inputs`); train; then, on rank 0, make sure
    ``best.ckpt`` exists (:func:`_ensure_best_checkpoint`) and write ``train_summary.json``
    (:func:`_summary`) and the training curves.

    Args:
        cfg: the (stage's) recipe; the generators are seeded by the caller.
        run_dir: the (stage's) run directory.
        datamodule: the data of ``cfg``.
        ckpt_path: ``last.ckpt`` to resume from, or None.
        callbacks: extra Lightning callbacks.
        data_report: the ``medseg data check`` report to keep (file datasets), or None.
        init_state: network weights to start from (the previous stage's best), or None.
        extra: more summary keys (a stage's number and name).

    Returns:
        The summary (also written to ``train_summary.json``); empty off rank 0.

    Raises:
        ConfigError: the network does not fit the data or the recipe (:func:`_build_module`).
        medseg.errors.TrainingError: a non-finite loss in ``train.nonfinite_loss: stop`` mode.
    """
    rd = RunDir(run_dir)
    config = cfg.to_dict()  # once: the checkpoints' hyper_parameters and config.yaml
    module = _build_module(cfg, config, datamodule, init_state)
    trainer = build_trainer(cfg, rd.root, callbacks)
    if trainer.is_global_zero:
        _write_run_inputs(rd, config, datamodule, data_report)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if not trainer.is_global_zero:
        return {}
    selected_by = _ensure_best_checkpoint(rd)
    summary = _summary(cfg, module, trainer, rd, ckpt_path, selected_by, extra)
    write_text_atomic(rd.summary, json.dumps(summary, indent=2))
    _plot_curves(rd)
    return summary


def _build_module(
    cfg: Config, config: dict[str, Any], datamodule: SegDataModule, init_state: dict[str, torch.Tensor] | None
) -> SegmentationModule:
    """The LightningModule of ``cfg``, its network checked against the data.

    The network that trains is the one the checks (:func:`_check_network`) probe; they draw no
    random numbers. It is built after :func:`_skip_first_network_draws`, so it starts from the
    weights a fixed seed always gave. Says in the log where the encoder's weights come from
    (:func:`_announce_encoder`).

    Args:
        cfg: the recipe.
        config: ``cfg.to_dict()``, stored in every checkpoint.
        datamodule: the data (input channels, classes, training cases).
        init_state: network weights to start from, or None.

    Raises:
        ConfigError: the module's own checks (``train.trainable`` prefixes, loss outputs,
            gradient checkpointing), then window size, output channels and patch size.
    """
    _skip_first_network_draws(cfg, datamodule)
    module = SegmentationModule(
        config, in_channels=datamodule.in_channels, num_classes=datamodule.num_classes, init_state=init_state, cfg=cfg
    )
    _check_network(cfg, module.model, datamodule)
    _announce_encoder(cfg)
    return module


def _skip_first_network_draws(cfg: Config, datamodule: SegDataModule) -> None:
    """Move the global generators past the random numbers one initialisation of the network draws.

    Earlier versions built a first network only to probe its outputs and trained a second one, so
    for a given seed the trained network's initial weights, and every draw after them, come from
    the stream one network initialisation further on. The network that trains is therefore
    initialised from there: the draws of one initialisation are made (a network is built without
    its encoder-weight file, which draws nothing, and dropped at once), and a fixed seed trains
    the same weights bit for bit as before; recipes' results and quality bars were measured with
    them. Without this step the build is saved and every fixed-seed result changes.

    Raises:
        ConfigError: ``model.args`` that do not fit the network (as the build in the module).
    """
    build_network(cfg, datamodule.in_channels, datamodule.num_classes, for_checkpoint=True)


def _write_run_inputs(rd: RunDir, config: dict[str, Any], datamodule: SegDataModule, data_report: Any) -> None:
    """Write what the run trains from, before the first step (rank 0): ``config.yaml``,
    ``splits.json`` and, for file datasets, ``data_check.json``."""
    write_yaml_atomic(config, rd.config)
    splits = {"train": datamodule.train_ids, "validation": datamodule.val_ids}
    write_text_atomic(rd.splits, json.dumps(splits, indent=2))
    if data_report is not None:
        write_text_atomic(rd.data_check, json.dumps(data_report.to_dict(), indent=1))


def _ensure_best_checkpoint(rd: RunDir) -> str:
    """Make sure ``best.ckpt`` exists after a fit; return how it was selected (for the summary).

    A run that ended before its first validation round (e.g. ``--max-steps``, or fewer epochs
    than ``train.val_every_n_epochs``) has none: the final weights, the only candidate, are
    copied to it (atomically) and a note says so.
    """
    if rd.best.is_file():
        return "validation Dice"
    with atomic_path(rd.best) as tmp:
        shutil.copyfile(rd.last, tmp)
    log.info(f"note: no validation round ran; {rd.best} is a copy of the last checkpoint")
    return "none: no validation round ran, best.ckpt is the last checkpoint"


def _summary(
    cfg: Config,
    module: SegmentationModule,
    trainer: L.Trainer,
    rd: RunDir,
    ckpt_path: Path | None,
    selected_by: str,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """The content of ``train_summary.json`` after a fit: network, data, parameter counts, wall
    seconds (:class:`TrainClock`, summed over resumes), epochs, steps, best validation Dice (None
    when no validation ran), device, precision, and ``extra``."""
    seconds = next(cb for cb in trainer.callbacks if isinstance(cb, TrainClock)).seconds
    best_score = next(cb for cb in trainer.checkpoint_callbacks if cb.monitor == "val/dice").best_model_score
    return {
        "network": cfg.model.name,
        "dataset": cfg.data.dataset,
        "parameters": count_parameters(module.model),
        "trainable_parameters": count_parameters(module.model, trainable_only=True),
        "encoder_weights": cfg.model.args.get("encoder_weights"),
        "train_seconds": round(seconds, 2),
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "best_val_dice": float(best_score) if best_score is not None else None,
        "best_checkpoint": str(rd.best),
        "best_selected_by": selected_by,
        "resumed": ckpt_path is not None,
        "device": str(trainer.strategy.root_device),
        "precision": str(trainer.precision),
        **(extra or {}),
    }


def _best_weights(stage_dir: Path) -> dict[str, torch.Tensor]:
    """The network weights of ``<stage_dir>/checkpoints/best.ckpt``."""
    from medseg.engine.checkpoint import read_checkpoint

    ckpt = read_checkpoint(RunDir(stage_dir).best)
    return {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}


def _train_stages(cfg: Config, run_dir: Path, resume: bool, callbacks: list[Callback] | None) -> dict[str, Any]:
    """Run ``cfg.train.stages`` one after another (see :func:`train`)."""
    rd = RunDir(run_dir)
    stage_cfgs = [stage_config(cfg, i) for i in range(len(cfg.train.stages))]  # all checked up front
    names = [str(stage.get("name", i + 1)) for i, stage in enumerate(cfg.train.stages)]
    if not resume:
        _check_run_dir(run_dir, resume=False)
        if rd.stage_checkpoints():
            raise ConfigError(
                f"run directory {run_dir} already holds stage checkpoints; pass --resume or choose another --out"
            )
    _check_network_name(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data_report = check_training_data(cfg)
    base = SegDataModule(cfg)
    _check_stages(cfg, stage_cfgs, base)
    write_yaml_atomic(cfg.to_dict(), rd.config)
    stages: list[dict[str, Any]] = []
    init_state = None
    for i, (scfg, name) in enumerate(zip(stage_cfgs, names)):
        sdir = rd.stage(i + 1, name)
        if resume and sdir.summary.is_file():
            log.info(f"stage {i + 1} ({name}) already finished: kept")
            stages.append(json.loads(sdir.summary.read_text()))
        else:
            ckpt_path = sdir.last if resume and sdir.last.is_file() else None
            if resume:
                _remove_stale_checkpoint_temporaries(sdir.root)
            log.info(
                f"stage {i + 1}/{len(stage_cfgs)} ({name}): trainable {scfg.train.trainable or 'all'}, "
                f"{scfg.train.max_epochs} epochs, lr {scfg.optim.lr}, loss {scfg.loss.name} on {dict(scfg.loss.outputs)}"
            )
            L.seed_everything(cfg.seed + i, workers=True, verbose=False)
            dm = SegDataModule(scfg, train_cases=base.full_cases)
            stages.append(
                _fit(
                    scfg,
                    sdir.root,
                    dm,
                    ckpt_path,
                    callbacks,
                    data_report,
                    init_state,
                    extra={"stage": i + 1, "stage_name": name},
                )
            )
        init_state = _best_weights(sdir.root)
    final = rd.stage(len(stage_cfgs), names[-1])
    for which in RunDir.CHECKPOINTS:
        with atomic_path(rd.checkpoint(which)) as tmp:
            shutil.copyfile(final.checkpoint(which), tmp)
    summary = dict(stages[-1])
    summary.update(
        {
            "stages": stages,
            "train_seconds": round(sum(s.get("train_seconds", 0.0) for s in stages), 2),
            "best_checkpoint": str(rd.best),
            "resumed": resume,
        }
    )
    write_text_atomic(rd.summary, json.dumps(summary, indent=2))
    return summary


def _plot_curves(rd: RunDir) -> None:
    """``figures/curves.png`` from ``logs/csv/metrics.csv``, when the log exists."""
    from medseg.viz import plot_training_curves

    if rd.metrics_csv.is_file():
        plot_training_curves(rd.metrics_csv, rd.curves, title=f"training curves: {rd.root.name}")
