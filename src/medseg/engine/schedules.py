"""AdamW and the learning-rate schedules a recipe can name.

Per-step schedules (cosine, poly, onecycle, constant) return Lightning's scheduler dict with
``interval="step"``; ``plateau`` steps on validation Dice after each validation round.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau

from medseg.config import OptimConfig, ScheduleConfig


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up multiplier: (step + 1) / warmup_steps for step < warmup_steps, else 1."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return (step + 1) / warmup_steps


def cosine_factor(step: int, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at ``step``: linear warm-up, then cosine from 1 to ``min_ratio``.

    Loshchilov & Hutter, SGDR (ICLR 2017), eq. 5 without restarts.
    """
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps)
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def poly_factor(step: int, total_steps: int, warmup_steps: int = 0, power: float = 0.9) -> float:
    """Multiplier: linear warm-up, then (1 - t/T) ** power (DeepLab's poly; CPFNet, PraNet recipes)."""
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps)
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return (1.0 - t) ** power


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser ``cfg.name``: "adamw" (decoupled ``weight_decay``), "adam" (L2 weight decay
    added to the gradient, as torch.optim.Adam: PraNet, OCTA-Net) or "sgd" (``momentum``,
    ``nesterov``: CPFNet, H-DenseUNet), with ``cfg.lr``."""
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int, val_every_n_epochs: int = 1
) -> dict[str, Any] | None:
    """Lightning ``lr_scheduler`` config for ``cfg.name``, or None for "constant" without warm-up.

    Args:
        total_steps: optimiser steps of the whole run (Lightning's ``estimated_stepping_batches``).
    """
    total_steps = max(1, int(total_steps))
    if cfg.name == "cosine":
        fn = lambda s: cosine_factor(s, total_steps, cfg.warmup_steps, cfg.min_lr_ratio)  # noqa: E731
    elif cfg.name == "poly":
        fn = lambda s: poly_factor(s, total_steps, cfg.warmup_steps, cfg.power)  # noqa: E731
    elif cfg.name == "constant":
        if cfg.warmup_steps <= 0:
            return None
        fn = lambda s: warmup_factor(s, cfg.warmup_steps)  # noqa: E731
    elif cfg.name == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        sched = OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=cfg.pct_start)
        return {"scheduler": sched, "interval": "step"}
    elif cfg.name == "plateau":
        sched = ReduceLROnPlateau(optimizer, mode="max", factor=cfg.factor, patience=cfg.patience)
        return {"scheduler": sched, "interval": "epoch", "frequency": val_every_n_epochs, "monitor": "val/dice"}
    else:
        raise ValueError(f"unknown schedule {cfg.name!r}")
    return {"scheduler": LambdaLR(optimizer, fn), "interval": "step"}
