"""The LightningModule that trains any registered segmentation network.

Training: patches (N, C, p, p) (3-D networks: (N, C, p, p, p) of volume cases) -> the network's outputs (``forward``, or ``forward_outputs``
when the loss names several outputs) -> the recipe's loss (:class:`~medseg.losses.more.
MultiOutputLoss`). Binary networks (one output channel, sigmoid) train on 0/1 masks;
networks with C >= 2 output channels (softmax, e.g. CPFNet's two classes or a 3-class
hippocampus model) train on label maps. Validation: each whole validation image through
sliding-window inference, Dice inside the FOV (binary) or mean foreground-class Dice
(multi-class), averaged over images and logged as ``val/dice`` (the metric the best
checkpoint is kept by).
"""

from __future__ import annotations

import inspect
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.config import Config, build_config
from medseg.engine.schedules import build_optimizer, build_scheduler
from medseg.errors import ConfigError
from medseg.inference import predict_probabilities
from medseg.log import get_logger
from medseg.losses.more import MultiOutputLoss
from medseg.metrics.vessel import confusion_counts, pixel_metrics
from medseg.models import MODELS, create_model
from medseg.models.contract import single_output
from medseg.rundir import RunDir

log = get_logger(__name__)

#: Names networks give their class-count argument, in the order they are looked for.
CLASS_ARGS = ("num_classes", "out_channels", "classes")


def class_arg(name: str) -> str | None:
    """The keyword of network ``name`` that sets its number of output channels, or None."""
    builder = MODELS.get(name)
    params = inspect.signature(builder).parameters
    return next((a for a in CLASS_ARGS if a in params), None)


def build_network(
    cfg: Config, in_channels: int | None = None, num_classes: int | None = None, for_checkpoint: bool = False
) -> nn.Module:
    """The recipe's network.

    Args:
        cfg: the recipe.
        in_channels: channels of the data; fills ``model.args.in_channels`` if unset.
        num_classes: classes of the data (label values 0..K-1); for K > 2 it fills the
            network's class-count argument if unset. Binary data keep the network's own default
            (one sigmoid channel, or CPFNet's two softmax classes).
        for_checkpoint: the weights come from a checkpoint: ``encoder_weights`` is not read.
    """
    from medseg.models import _import_all

    _import_all()
    args = dict(cfg.model.args)
    if in_channels is not None:
        args.setdefault("in_channels", in_channels)
    if num_classes is not None and num_classes > 2:
        key = class_arg(cfg.model.name)
        if key is not None:
            args.setdefault(key, num_classes)
    if for_checkpoint:
        args.pop("encoder_weights", None)
    return create_model(cfg.model.name, what="model.args", **args)


def roi_size(cfg: Config) -> int:
    """Sliding-window side: ``eval.roi_size``, or the training patch size when 0."""
    return cfg.eval.roi_size or cfg.data.patch_size


def output_channels(model: nn.Module, in_channels: int, size: int) -> int:
    """Output channels of ``model`` from one forward pass of a zero image (size x size, or a
    size^3 volume for a network whose ``spatial_dims`` is 3)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, in_channels, *(size,) * int(getattr(model, "spatial_dims", 2))))
    model.train(was_training)
    return int(out.shape[1])


def check_classes(model_name: str, channels: int, num_classes: int) -> None:
    """Raise ConfigError unless a network with ``channels`` outputs fits data with ``num_classes``.

    One channel (sigmoid) fits binary data only; C >= 2 channels (softmax) fit data with
    exactly C classes.

    Raises:
        ConfigError: naming the network, both numbers and the argument to set.
    """
    if channels == 1 and num_classes == 2:
        return
    if channels == num_classes:
        return
    key = class_arg(model_name) or "num_classes"
    raise ConfigError(
        f"network {model_name!r} outputs {channels} channel(s) but the data has {num_classes} classes "
        f"(label values 0..{num_classes - 1}); set model.args.{key}={num_classes if num_classes > 2 else '1 or 2'}"
    )


def _matches(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p.rstrip(".") + ".") for p in prefixes)


def normalise_loop_state(checkpoint: dict[str, Any]) -> None:
    """Make a checkpoint written in ``on_train_epoch_end`` resume at the right batch.

    Lightning 2.6 writes the epoch-end checkpoint between counting the epoch "processed" and
    "completed". Resumed with ``max_steps`` set it took that for "restarted on epoch end": it
    trained one extra batch (the next epoch's first, as batch 16 of a 16-batch epoch), gave the
    samplers the next epoch's number one epoch early, and shifted every later epoch boundary, so
    weights drifted from the uninterrupted run (BatchNorm variances up to 19 apart after 120
    steps of the default recipe). This rewrites the loop counters into one of the two states
    Lightning restores exactly:

    * the epoch ran to its last batch: the epoch is completed and the next one not started
      (batch, scheduler and optimiser counters of the epoch at 0);
    * it stopped early (``train.max_steps``, a stop request): the epoch is not processed, so it
      restarts mid-epoch; :func:`batches_done_in_epoch` tells the sampler how many batches to
      skip.

    Checkpoints written elsewhere (the best checkpoint at validation end) are left unchanged.
    Mutates ``checkpoint["loops"]`` in place.
    """
    fit = checkpoint.get("loops", {}).get("fit_loop")
    if not fit or "epoch_progress" not in fit:
        return
    epochs = fit["epoch_progress"]
    if epochs["total"]["processed"] <= epochs["total"]["completed"]:
        return  # not written in on_train_epoch_end
    batches = fit["epoch_loop.batch_progress"]
    if batches.get("is_last_batch"):
        for part in ("total", "current"):
            epochs[part]["completed"] = epochs[part]["processed"]
        for key in ("epoch_loop.batch_progress", "epoch_loop.scheduler_progress", "epoch_loop.val_loop.batch_progress"):
            if key in fit:
                fit[key]["current"] = dict.fromkeys(fit[key]["current"], 0)
                if "is_last_batch" in fit[key]:
                    fit[key]["is_last_batch"] = False
        optim = fit.get("epoch_loop.automatic_optimization.optim_progress", {}).get("optimizer", {})
        for counter in optim.values():
            counter["current"] = dict.fromkeys(counter["current"], 0)
    else:
        for part in ("total", "current"):
            epochs[part]["processed"] = epochs[part]["completed"]


def batches_done_in_epoch(checkpoint: dict[str, Any]) -> int:
    """Training batches of the unfinished epoch a (normalised) checkpoint was written in; 0 at an
    epoch boundary."""
    fit = checkpoint.get("loops", {}).get("fit_loop") or {}
    batches = fit.get("epoch_loop.batch_progress")
    if not batches or batches.get("is_last_batch"):
        return 0
    return int(batches["current"]["completed"])


def _in_encoder(name: str) -> bool:
    return name.startswith("encoder.") or ".encoder." in name


class SegmentationModule(L.LightningModule):
    """Wraps a network, its loss, optimiser and schedule for Lightning.

    Args:
        config: the run's config as a plain dict (``Config.to_dict()``), stored in every
            checkpoint's ``hyper_parameters`` so a checkpoint alone rebuilds the network; Lightning
            passes that dict back when it loads a checkpoint.
        cfg: the same config as a :class:`~medseg.config.Config`, when the caller has it (a fit):
            used as it is instead of being rebuilt and checked again from ``config``.
        in_channels: input channels of the data.
        num_classes: classes of the data (2 for binary).
        init_state: a state dict of the network to start from (the previous stage's best).

    Raises:
        ConfigError: ``train.trainable`` prefixes that match no parameter; gradient
            checkpointing for a network without support; a loss that does not suit the outputs.
    """

    def __init__(
        self,
        config: dict[str, Any],
        in_channels: int,
        num_classes: int = 2,
        init_state: dict[str, torch.Tensor] | None = None,
        cfg: Config | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["init_state", "cfg"])
        self.cfg = cfg if cfg is not None else build_config(config, source="checkpoint config")
        self.num_classes = int(num_classes)
        self.model = build_network(self.cfg, in_channels, num_classes)
        if init_state is not None:
            self.model.load_state_dict(init_state, strict=True)
        self.output_activation = getattr(self.model, "output_activation", "auto")
        self.loss_fn = MultiOutputLoss(self.cfg.loss, self.output_activation)
        self.needs_outputs = set(self.cfg.loss.outputs) != {"out"}
        if self.needs_outputs and single_output(self.model):
            raise ConfigError(
                f"loss.outputs names {sorted(self.cfg.loss.outputs)}, but {self.cfg.model.name!r} has one output "
                "(no forward_outputs); use loss.outputs: {out: 1.0}"
            )
        if self.cfg.train.gradient_checkpointing:
            from medseg.models.encoders import set_gradient_checkpointing

            try:
                set_gradient_checkpointing(self.model, True)
            except ValueError as exc:
                raise ConfigError(f"train.gradient_checkpointing: {exc}") from exc
        self.trainable = list(self.cfg.train.trainable)
        self.frozen_modules: list[nn.Module] = []
        if self.trainable:
            names = [n for n, _ in self.model.named_parameters()]
            unknown = [p for p in self.trainable if not any(_matches(n, [p]) for n in names)]
            if unknown:
                tops = sorted({n.split(".")[0] for n in names})
                raise ConfigError(
                    f"train.trainable {unknown} match no parameter of {self.cfg.model.name!r}; its top-level "
                    f"modules are {', '.join(tops)}"
                )
            for n, p in self.model.named_parameters():
                p.requires_grad_(_matches(n, self.trainable))
            self.frozen_modules = [
                m
                for n, m in self.model.named_modules()
                if n
                and not _matches(n, self.trainable)
                and not any(_matches(c, self.trainable) for c, _ in m.named_modules(prefix=n))
            ]
        self._val_dice: list[float] = []
        self._offsets_frozen = False
        self._encoder_frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the network's main output (N, C_out, H, W)."""
        return self.model(x)

    # -- training ---------------------------------------------------------------------------
    def _set_trainable(self, select, trainable: bool) -> None:
        for name, p in self.model.named_parameters():
            if select(name) and (not self.trainable or _matches(name, self.trainable)):
                p.requires_grad_(trainable)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Frozen parts (train.trainable) run in eval mode: their BatchNorm statistics stay.
        # Set before every batch, since Lightning restores each module's mode after validation.
        for m in self.frozen_modules:
            m.eval()
        steps = self.cfg.train.freeze_offsets_steps
        if steps > 0:
            frozen = self.global_step < steps
            if frozen != self._offsets_frozen:
                self._set_trainable(lambda n: "offset" in n, not frozen)
                self._offsets_frozen = frozen
        steps = self.cfg.train.freeze_encoder_steps
        if steps > 0:
            frozen = self.global_step < steps
            if frozen != self._encoder_frozen:
                self._set_trainable(_in_encoder, not frozen)
                self._encoder_frozen = frozen

    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network's named outputs for a training batch ({"out": forward(x)} for one output)."""
        if self.needs_outputs:
            return self.model.forward_outputs(x)
        return {"out": self.model(x)}

    def _rescaled(self, batch: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
        """``batch`` resized by ``scale`` (rounded to ``train.multiscale_divisor`` px): images and
        binary targets bilinear (align_corners=True, as PraNet), label maps and FOV nearest."""
        div = self.cfg.train.multiscale_divisor
        h, w = batch["image"].shape[-2:]
        size = (max(div, int(round(h * scale / div)) * div), max(div, int(round(w * scale / div)) * div))
        if size == (h, w):
            return batch
        out = dict(batch)
        out["image"] = F.interpolate(batch["image"], size=size, mode="bilinear", align_corners=True)
        soft = self.num_classes == 2
        for key in ("mask", "centerline"):
            if key in batch:
                out[key] = (
                    F.interpolate(batch[key], size=size, mode="bilinear", align_corners=True)
                    if soft
                    else F.interpolate(batch[key], size=size, mode="nearest")
                )
        out["fov"] = F.interpolate(batch["fov"], size=size, mode="nearest")
        return out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # skip mode keeps the buffers (BatchNorm statistics) the forward pass of a bad batch would spoil
        saved = (
            {k: b.detach().clone() for k, b in self.model.named_buffers()}
            if self.cfg.train.nonfinite_loss == "skip"
            else None
        )
        scales = self.cfg.train.multiscale or [1.0]
        total = 0.0
        for scale in scales:
            sub = self._rescaled(batch, float(scale)) if scale != 1.0 else batch
            loss, parts = self.loss_fn(self.outputs(sub["image"]), sub)
            total = total + loss / len(scales)
        n = batch["image"].shape[0]
        if not torch.isfinite(total):
            if saved is not None:
                with torch.no_grad():
                    for k, b in self.model.named_buffers():
                        b.copy_(saved[k])
            return self._nonfinite(total, batch_idx)
        self.log("train/loss", total, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        if len(parts) > 1:
            for name, value in parts.items():
                self.log(f"train/loss_{name}", value, on_step=False, on_epoch=True, batch_size=n)
        return total

    def _nonfinite(self, loss: torch.Tensor, batch_idx: int) -> None:
        """A NaN/inf loss: skip the batch (``train.nonfinite_loss: skip``; Lightning takes no
        optimiser step for a ``None`` loss, and the buffers are restored by the caller) or stop with an error naming the step and the last
        checkpoint, which was written before this step and is left as it is.

        Raises:
            medseg.errors.TrainingError: in "stop" mode.
        """

        from medseg.errors import TrainingError

        where = f"step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
        if self.cfg.train.nonfinite_loss == "skip":
            self.skipped_nonfinite = getattr(self, "skipped_nonfinite", 0) + 1
            # INFO (stdout, beside Lightning's own training output): one line per skipped batch
            log.info(f"warning: loss is {loss.detach().item()} at {where}; batch skipped (train.nonfinite_loss: skip)")
            return None
        last = RunDir(self.trainer.default_root_dir).last  # build_trainer roots the trainer at the run
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        raise TrainingError(
            f"loss is {float(loss.detach())} at {where}; training stopped and {kept} (lower optim.lr, check the data, "
            "or set train.nonfinite_loss=skip to skip such batches)"
        )

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
            target = batch["mask"][i, 0].cpu().numpy()
            fov = batch["fov"][i, 0].cpu().numpy() > 0.5
            if prob.shape[1] == 1:
                pred = prob[i, 0].cpu().numpy() >= self.cfg.eval.threshold
                counts = confusion_counts(pred, target > 0.5, fov)
                self._val_dice.append(pixel_metrics(**counts)["dice"])
                continue
            labels = prob[i].argmax(0).cpu().numpy()
            dices = []
            for c in range(1, prob.shape[1]):
                counts = confusion_counts(labels == c, np.rint(target) == c, fov)
                if counts["tp"] + counts["fn"] + counts["fp"] > 0:  # class absent and not predicted: skip
                    dices.append(pixel_metrics(**counts)["dice"])
            self._val_dice.append(float(np.mean(dices)) if dices else 1.0)

    def on_validation_epoch_end(self) -> None:
        dice = float(np.mean(self._val_dice)) if self._val_dice else 0.0
        # Every rank sees every validation image, so the mean is already global.
        self.log("val/dice", dice, prog_bar=True, sync_dist=False, rank_zero_only=False)

    # -- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        params = [p for n, p in self.model.named_parameters() if not self.trainable or _matches(n, self.trainable)]
        optimizer = build_optimizer(params, self.cfg.optim)
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
        normalise_loop_state(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("medseg_rng")
        if state is not None:
            torch.set_rng_state(state["torch"])
            kind, keys, pos, has_gauss, cached = state["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        done = batches_done_in_epoch(checkpoint)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if done and datamodule is not None:
            datamodule.resume_batches_done = done
