"""The optimisers and learning-rate schedules a recipe can name: two plugin kinds.

:data:`OPTIMIZERS` maps a name to ``(params, cfg: OptimConfig) -> Optimizer``; :data:`SCHEDULES`
maps a name to ``(optimizer, cfg: ScheduleConfig, total_steps, val_every_n_epochs) -> Lightning
lr_scheduler dict | None``. Per-step schedules (cosine, poly, onecycle, constant) return
Lightning's scheduler dict with ``interval="step"``; ``plateau`` steps on validation Dice after
each validation round. A new one is one decorated function here.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau

from medseg.config import OptimConfig, ScheduleConfig
from medseg.registry import Registry


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


#: Optimiser name -> builder ``(params, cfg: OptimConfig) -> torch.optim.Optimizer``.
OPTIMIZERS = Registry("optimiser")
register_optimizer = OPTIMIZERS.register


@register_optimizer("adamw")
def _adamw(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter, ICLR 2019): decoupled ``weight_decay``."""
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


@register_optimizer("adam")
def _adam(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam with L2 weight decay added to the gradient, as torch.optim.Adam (PraNet, OCTA-Net)."""
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


@register_optimizer("sgd")
def _sgd(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD with ``momentum`` and ``nesterov`` (CPFNet, H-DenseUNet)."""
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser registered as ``cfg.name`` in :data:`OPTIMIZERS` ("adamw", "adam", "sgd"), with ``cfg.lr``.

    Raises:
        medseg.errors.ConfigError: an unknown name (``config.validate`` catches it first).
    """
    return OPTIMIZERS.get(cfg.name)(params, cfg)


#: Schedule name -> builder ``(optimizer, cfg, total_steps, val_every_n_epochs) -> dict | None``.
SCHEDULES = Registry("schedule")
register_schedule = SCHEDULES.register


def _per_step(optimizer: torch.optim.Optimizer, factor) -> dict[str, Any]:
    return {"scheduler": LambdaLR(optimizer, factor), "interval": "step"}


@register_schedule("cosine")
def _cosine(optimizer, cfg: ScheduleConfig, total_steps: int, val_every_n_epochs: int) -> dict[str, Any]:
    """Linear warm-up then cosine decay to ``min_lr_ratio`` (Loshchilov & Hutter, SGDR, ICLR 2017)."""
    return _per_step(optimizer, lambda s: cosine_factor(s, total_steps, cfg.warmup_steps, cfg.min_lr_ratio))


@register_schedule("onecycle")
def _onecycle(optimizer, cfg: ScheduleConfig, total_steps: int, val_every_n_epochs: int) -> dict[str, Any]:
    """torch's OneCycleLR (Smith & Topin 2019) peaking at each group's lr after ``pct_start``."""
    max_lr = [g["lr"] for g in optimizer.param_groups]
    sched = OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=cfg.pct_start)
    return {"scheduler": sched, "interval": "step"}


@register_schedule("poly")
def _poly(optimizer, cfg: ScheduleConfig, total_steps: int, val_every_n_epochs: int) -> dict[str, Any]:
    """Warm-up then ``(1 - t) ** power`` (DeepLab's poly; CPFNet and H-DenseUNet use power 0.9)."""
    return _per_step(optimizer, lambda s: poly_factor(s, total_steps, cfg.warmup_steps, cfg.power))


@register_schedule("plateau")
def _plateau(optimizer, cfg: ScheduleConfig, total_steps: int, val_every_n_epochs: int) -> dict[str, Any]:
    """ReduceLROnPlateau on validation Dice, stepped after each validation round."""
    sched = ReduceLROnPlateau(optimizer, mode="max", factor=cfg.factor, patience=cfg.patience)
    return {"scheduler": sched, "interval": "epoch", "frequency": val_every_n_epochs, "monitor": "val/dice"}


@register_schedule("constant")
def _constant(optimizer, cfg: ScheduleConfig, total_steps: int, val_every_n_epochs: int) -> dict[str, Any] | None:
    """A constant lr, after a linear warm-up when ``warmup_steps`` > 0 (None: no scheduler)."""
    if cfg.warmup_steps <= 0:
        return None
    return _per_step(optimizer, lambda s: warmup_factor(s, cfg.warmup_steps))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int, val_every_n_epochs: int = 1
) -> dict[str, Any] | None:
    """Lightning ``lr_scheduler`` config of the schedule registered as ``cfg.name``, or None for
    "constant" without warm-up.

    Args:
        total_steps: optimiser steps of the whole run (Lightning's ``estimated_stepping_batches``).

    Raises:
        medseg.errors.ConfigError: an unknown name (``config.validate`` catches it first).
    """
    return SCHEDULES.get(cfg.name)(optimizer, cfg, max(1, int(total_steps)), val_every_n_epochs)


__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "register_optimizer",
    "register_schedule",
    "build_optimizer",
    "build_scheduler",
    "warmup_factor",
    "cosine_factor",
    "poly_factor",
]
