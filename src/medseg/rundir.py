"""The run directory: every path ``medseg train`` and the tools after it use in a run, named once.

``RunDir(root)`` names the files; :class:`EvalDir` names those of one evaluation folder (a run's
``eval/<name>/``, or the folder ``medseg evaluate --predictions`` writes). Nothing here touches
the disk: the properties only join paths, so a ``RunDir`` of a run that does not exist yet is
fine. The names are the layout users' run directories already have; changing one orphans their
files (``tests/engine/test_rundir.py`` holds them, written out by hand).

Layout (paths relative to the run directory; "train" is :mod:`medseg.engine.train`)::

    path                           RunDir name          written by                     read by
    -----------------------------  -------------------  -----------------------------  -----------------------------
    config.yaml                    config               train, before the first step   train --resume (no --config),
                                                        (staged: the whole recipe)     reproduce, report, run check
    splits.json                    splits               train (rank 0)                 the user, tests
    data_check.json                data_check           train (file datasets only)     the user
    train_summary.json             summary              train, at the end              --resume of a finished run,
                                                                                       stages, reproduce, report
    checkpoints/                   checkpoints          Lightning (AtomicCheckpointIO) run check (holds a run?)
    checkpoints/best.ckpt          best                 ModelCheckpoint "best" (max    evaluate (default), the next
                                                        val/dice), or a copy of last   stage's start weights
    checkpoints/last.ckpt          last                 ModelCheckpoint "last" (every  --resume, Ctrl-C message,
                                                        training epoch's end)          evaluate --checkpoint last
    logs/csv/metrics.csv           metrics_csv          Lightning CSVLogger            curves (train, evaluate)
    logs/csv/hparams.yaml          csv_hparams          Lightning CSVLogger            the user
    logs/tensorboard/              tensorboard_dir      TensorBoardLogger: events.out. TensorBoard
                                                        tfevents.* and hparams.yaml
    logs/tensorboard/hparams.yaml  tensorboard_hparams  TensorBoardLogger              TensorBoard
    figures/curves.png             curves               train, at the end              report
    eval/<name>/                   evaluation(name)     workflows.evaluate (<name>:    report, reproduce, cli
                                                        split [+ -tta] [+ -ensemble])
      metrics.json                 EvalDir.metrics      workflows.evaluate             report, reproduce, compare
      per_image.csv | per_case.csv EvalDir.per_case()   workflows.evaluate             report
      figures/                     EvalDir.figures      workflows.evaluate: <id>_      report
                                                        panel.png, curves.png, <id>_
                                                        dsconv_kernels[_zoom].png
    report.html                    report()             viz.report (evaluate, report)  the user
    report-<name>.html             report(name)         evaluate (TTA / ensemble)      the user
    reproduce.json                 reproduce_record     workflows.reproduce            workflows.reproduce
    .medseg.lock                   lock                 runlock, while training        runlock (a second process)
    stage<k>-<name>/               stage(k, name)       train (staged recipes): a run  train --resume
                                                        directory of its own

Beside any of these files, while it is written, a hidden temporary
``.<stem>.<pid>.<8 characters><suffix>`` (:func:`medseg.atomic.atomic_path`); a kill can leave
one behind, and the next writer of that folder removes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from medseg.runlock import LOCK_NAME

__all__ = ["EvalDir", "RunDir"]


@dataclass(frozen=True)
class EvalDir:
    """The files of one evaluation folder: ``<run>/eval/<name>/``, or ``medseg evaluate
    --predictions``' output folder (same layout, no run around it).

    Args:
        root: the folder (str or path; stored as a :class:`~pathlib.Path`).
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def metrics(self) -> Path:
        """``metrics.json``: the protocol's numbers (keys in :mod:`medseg.workflows.protocols`)."""
        return self.root / "metrics.json"

    def per_case(self, file_name: str) -> Path:
        """The per-image / per-case table: ``file_name`` is the protocol's ``per_file``
        (``per_image.csv``, or ``per_case.csv`` for volume protocols)."""
        return self.root / file_name

    @property
    def figures(self) -> Path:
        """``figures/``: panels, training curves, DSConv kernel positions."""
        return self.root / "figures"

    def panel(self, case_id: str) -> Path:
        """``figures/<case_id>_panel.png``: image, ground truth, probability, errors."""
        return self.figures / f"{case_id}_panel.png"

    @property
    def curves(self) -> Path:
        """``figures/curves.png``: the run's training curves, beside its panels."""
        return self.figures / "curves.png"

    def kernel_positions(self, case_id: str, zoom: bool = False) -> Path:
        """``figures/<case_id>_dsconv_kernels.png`` (``..._kernels_zoom.png`` with ``zoom``)."""
        return self.figures / f"{case_id}_dsconv_kernels{'_zoom' if zoom else ''}.png"


@dataclass(frozen=True)
class RunDir:
    """Every path of a run directory (the table in this module's docstring).

    Args:
        root: the run directory (str or path; stored as a :class:`~pathlib.Path`; need not exist).
    """

    root: Path

    #: Lightning's checkpoint names (``ModelCheckpoint(filename=...)``; it adds ``.ckpt``).
    CHECKPOINTS: ClassVar[tuple[str, str]] = ("best", "last")

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # -- the recipe and the data ---------------------------------------------------------------
    @property
    def config(self) -> Path:
        """``config.yaml``: the resolved recipe (every key)."""
        return self.root / "config.yaml"

    @property
    def splits(self) -> Path:
        """``splits.json``: ``{"train": [ids], "validation": [ids]}``."""
        return self.root / "splits.json"

    @property
    def data_check(self) -> Path:
        """``data_check.json``: the ``medseg data check`` report of the training data."""
        return self.root / "data_check.json"

    @property
    def summary(self) -> Path:
        """``train_summary.json``: wall time, epochs, steps, best validation Dice, ..."""
        return self.root / "train_summary.json"

    # -- checkpoints ---------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        """``checkpoints/``."""
        return self.root / "checkpoints"

    def checkpoint(self, which: str) -> Path:
        """``checkpoints/<which>.ckpt``.

        Raises:
            ValueError: ``which`` is not "best" or "last".
        """
        if which not in self.CHECKPOINTS:
            raise ValueError(f"a run has checkpoints {' and '.join(self.CHECKPOINTS)}, not {which!r}")
        return self.checkpoints / f"{which}.ckpt"

    @property
    def best(self) -> Path:
        """``checkpoints/best.ckpt``: the best validation Dice (or the last weights, if no
        validation round ran)."""
        return self.checkpoint("best")

    @property
    def last(self) -> Path:
        """``checkpoints/last.ckpt``: the end of the last training epoch; ``--resume`` starts here."""
        return self.checkpoint("last")

    def finished_checkpoints(self) -> list[Path]:
        """The ``*.ckpt`` files in ``checkpoints/`` other than hidden write temporaries (reads the
        disk; empty when the folder does not exist)."""
        return [p for p in self.checkpoints.glob("*.ckpt") if not p.name.startswith(".")]

    # -- logs and figures ----------------------------------------------------------------------
    @property
    def logs(self) -> Path:
        """``logs/``."""
        return self.root / "logs"

    @property
    def csv_log_dir(self) -> Path:
        """``logs/csv/``: Lightning ``CSVLogger``'s folder."""
        return self.logs / "csv"

    @property
    def metrics_csv(self) -> Path:
        """``logs/csv/metrics.csv``: per-step and per-epoch metrics."""
        return self.csv_log_dir / "metrics.csv"

    @property
    def csv_hparams(self) -> Path:
        """``logs/csv/hparams.yaml``: the module's hyperparameters, as Lightning logs them."""
        return self.csv_log_dir / "hparams.yaml"

    @property
    def tensorboard_dir(self) -> Path:
        """``logs/tensorboard/``: TensorBoard event files (``events.out.tfevents.*``)."""
        return self.logs / "tensorboard"

    @property
    def tensorboard_hparams(self) -> Path:
        """``logs/tensorboard/hparams.yaml``."""
        return self.tensorboard_dir / "hparams.yaml"

    @property
    def figures(self) -> Path:
        """``figures/``."""
        return self.root / "figures"

    @property
    def curves(self) -> Path:
        """``figures/curves.png``: the training curves."""
        return self.figures / "curves.png"

    # -- evaluations and reports ---------------------------------------------------------------
    @property
    def eval_root(self) -> Path:
        """``eval/``."""
        return self.root / "eval"

    def evaluation(self, name: str) -> EvalDir:
        """``eval/<name>/``: ``name`` is the split, plus ``-tta`` / ``-ensemble`` for those."""
        return EvalDir(self.eval_root / name)

    def report(self, name: str | None = None) -> Path:
        """``report.html`` (the plain evaluation), or ``report-<name>.html`` for the evaluation
        ``eval/<name>/`` of a TTA or ensemble run."""
        return self.root / ("report.html" if name is None else f"report-{name}.html")

    @property
    def reproduce_record(self) -> Path:
        """``reproduce.json``: how ``medseg reproduce`` finished the run (wall time, hardware)."""
        return self.root / "reproduce.json"

    @property
    def lock(self) -> Path:
        """``.medseg.lock``: held while a process trains into the run (:mod:`medseg.runlock`)."""
        return self.root / LOCK_NAME  # named by the lock's owner, medseg.runlock

    # -- stages --------------------------------------------------------------------------------
    def stage(self, index: int, name: str) -> RunDir:
        """``stage<index>-<name>/`` (``index`` from 1): the run directory of one stage of
        ``train.stages``."""
        return RunDir(self.root / f"stage{index}-{name}")

    def stage_checkpoints(self) -> list[Path]:
        """Every ``stage*/checkpoints/*.ckpt`` (reads the disk; hidden temporaries included)."""
        return list(self.root.glob("stage*/checkpoints/*.ckpt"))
