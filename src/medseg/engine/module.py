"""The LightningModule that trains any registered binary segmentation network.

Training: patches (N, C, p, p) -> logits -> the recipe's loss. Validation: each whole
validation image through sliding-window inference, Dice at the recipe's threshold inside the FOV,
averaged over images and logged as ``val/dice`` (the metric the best checkpoint is kept by).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn as nn

from medseg.config import Config, build_config
from medseg.engine.schedules import build_optimizer, build_scheduler
from medseg.inference import predict_probabilities
from medseg.losses import build_loss
from medseg.metrics.vessel import confusion_counts, pixel_metrics
from medseg.models import create_model


def build_network(cfg: Config, in_channels: int | None = None) -> nn.Module:
    """The recipe's network; ``in_channels`` (from the data) fills ``model.args`` if unset."""
    args = dict(cfg.model.args)
    if in_channels is not None:
        args.setdefault("in_channels", in_channels)
    return create_model(cfg.model.name, **args)


def roi_size(cfg: Config) -> int:
    """Sliding-window side: ``eval.roi_size``, or the training patch size when 0."""
    return cfg.eval.roi_size or cfg.data.patch_size


class SegmentationModule(L.LightningModule):
    """Wraps a network, its loss, optimiser and schedule for Lightning.

    Args:
        config: the run's config as a plain dict (``Config.to_dict()``); stored in every
            checkpoint's ``hyper_parameters`` so a checkpoint alone rebuilds the network.
        in_channels: input channels of the data.
    """

    def __init__(self, config: dict[str, Any], in_channels: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg = build_config(config, source="checkpoint config")
        self.model = build_network(self.cfg, in_channels)
        self.loss_fn = build_loss(self.cfg.loss)
        self._val_dice: list[float] = []
        self._offsets_frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> logits (N, 1, H, W)."""
        return self.model(x)

    # -- training ---------------------------------------------------------------------------
    def _set_offsets_trainable(self, trainable: bool) -> None:
        for name, p in self.model.named_parameters():
            if "offset" in name:
                p.requires_grad_(trainable)
        self._offsets_frozen = not trainable

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        steps = self.cfg.train.freeze_offsets_steps
        if steps > 0:
            frozen = self.global_step < steps
            if frozen != self._offsets_frozen:
                self._set_offsets_trainable(not frozen)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["image"])
        fov = batch["fov"] if self.cfg.loss.fov_only else None
        loss = self.loss_fn(logits.float(), batch["mask"], fov)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    # -- validation -------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_dice = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        prob = predict_probabilities(
            self.model,
            batch["image"],
            roi_size=roi_size(self.cfg),
            overlap=self.cfg.eval.overlap,
            mode=self.cfg.eval.mode,
            sw_batch_size=self.cfg.eval.sw_batch_size,
        )
        for i in range(prob.shape[0]):
            pred = prob[i, 0].cpu().numpy() >= self.cfg.eval.threshold
            target = batch["mask"][i, 0].cpu().numpy() > 0.5
            fov = batch["fov"][i, 0].cpu().numpy() > 0.5
            counts = confusion_counts(pred, target, fov)
            self._val_dice.append(pixel_metrics(**counts)["dice"])

    def on_validation_epoch_end(self) -> None:
        dice = float(np.mean(self._val_dice)) if self._val_dice else 0.0
        # Every rank sees every validation image, so the mean is already global.
        self.log("val/dice", dice, prog_bar=True, sync_dist=False, rank_zero_only=False)

    # -- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.parameters(), self.cfg.optim)
        total = self.trainer.estimated_stepping_batches if self.trainer is not None else 1
        sched = build_scheduler(optimizer, self.cfg.schedule, total, self.cfg.train.val_every_n_epochs)
        if sched is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": sched}

    # -- exact resume -----------------------------------------------------------------------
    # Training samples do not depend on these generators (they are a function of seed, epoch and
    # index), but a network with dropout does; kept as tensors and numbers so that
    # ``torch.load(weights_only=True)`` (Lightning's resume) accepts them.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint["medseg_rng"] = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("medseg_rng")
        if state is not None:
            torch.set_rng_state(state["torch"])
            kind, keys, pos, has_gauss, cached = state["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
