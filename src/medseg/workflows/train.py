"""``medseg train``: the engine's training, then the recipe's evaluation.

The engine (:mod:`medseg.engine`) trains and knows no evaluation protocol; this workflow sits
above it and calls :func:`medseg.workflows.evaluate.evaluate` on the best checkpoint when the
recipe asks (``eval.after_train``), so the engine never imports the evaluation workflow.
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.callbacks import Callback

from medseg.config import Config
from medseg.engine.train import train as fit_recipe


def train(
    cfg: Config,
    run_dir: str | os.PathLike,
    resume: bool = False,
    callbacks: list[Callback] | None = None,
    evaluate_after: bool | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` (:func:`medseg.engine.train.train`), then evaluate.

    Args:
        cfg, run_dir, resume, callbacks: as :func:`medseg.engine.train.train`.
        evaluate_after: evaluate the best checkpoint on ``cfg.eval.split`` with the recipe's
            protocol (default ``cfg.eval.after_train``).
        show_progress: progress bars during the evaluation.

    Returns:
        The training summary, with the metrics.json content under "eval" when evaluated; empty
        off rank 0.

    Raises:
        medseg.errors.MedsegError: bad config, data or run directory.
    """
    summary = fit_recipe(cfg, run_dir, resume=resume, callbacks=callbacks)
    if summary and (evaluate_after if evaluate_after is not None else cfg.eval.after_train):
        from medseg.workflows.evaluate import evaluate

        summary["eval"] = evaluate(run_dir, split=cfg.eval.split, show_progress=show_progress)
    return summary


__all__ = ["train"]
