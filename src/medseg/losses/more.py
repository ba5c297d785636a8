"""Losses of the zoo's recipes: structure loss (PraNet), CE + multi-class Dice (CPFNet,
H-DenseUNet), MSE and MSE + Dice on probabilities (OCTA-Net).

Binary losses take ``(N, 1, H, W)`` logits (or probabilities for the MSE family, see
:attr:`input_kind`) and float targets in [0, 1]; the multi-class loss takes ``(N, C, H, W)``
logits and an ``(N, 1, H, W)`` float label map with values 0..C-1.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.config import LossConfig
from medseg.losses import register_loss, soft_dice_loss


def structure_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PraNet's structure loss: weighted BCE + weighted IoU (Fan et al., MICCAI 2020, eq. 4-5).

    Each pixel is weighted by ``1 + 5 * |avgpool_31(target) - target|`` (31x31 box mean, stride
    1, zero padding 15, counted over the full window as PyTorch's ``avg_pool2d`` does by
    default), which is large near edges. Per image: wBCE = sum(w * BCE) / sum(w); wIoU = 1 -
    (sum(w p t) + 1) / (sum(w (p + t)) - sum(w p t) + 1) with p = sigmoid(logits); the loss is
    the batch mean of wBCE + wIoU, as in PraNet's ``train.py``.

    Args:
        logits: (N, 1, H, W) float.
        target: (N, 1, H, W) float in [0, 1] (PraNet also feeds bilinearly resized, soft masks).
    """
    weit = 1.0 + 5.0 * torch.abs(F.avg_pool2d(target, kernel_size=31, stride=1, padding=15) - target)
    wbce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
    pred = torch.sigmoid(logits)
    inter = (pred * target * weit).sum(dim=(2, 3))
    union = ((pred + target) * weit).sum(dim=(2, 3))
    wiou = 1.0 - (inter + 1.0) / (union - inter + 1.0)
    return (wbce + wiou).mean()


class StructureLoss(nn.Module):
    """:func:`structure_loss` as a module (the ``fov`` argument is ignored: polyp images have none)."""

    input_kind = "logits"

    def forward(self, logits: torch.Tensor, target: torch.Tensor, fov: torch.Tensor | None = None) -> torch.Tensor:
        return structure_loss(logits, target)


class CEDiceLoss(nn.Module):
    """Cross-entropy + ``dice_weight`` * (1 - mean soft Dice over classes), via MONAI's DiceCELoss.

    CPFNet's released recipe: NLL of the log-softmax + soft Dice averaged over **all** classes
    including background, unweighted (github.com/FENGShuanglang/CPFNet_Project,
    ``OCT/CPFNet/train.py`` and ``Multi_DiceLoss`` in ``OCT/CPFNet/utils/loss.py``); H-DenseUNet:
    weighted cross-entropy (class weights 0.78/0.65/8.57). Soft Dice is computed over the whole
    batch per class.

    Args:
        dice_weight: weight of the Dice term (0: cross-entropy only).
        class_weights: per-class cross-entropy weights (length C), or empty.
        include_background: include class 0 in the Dice mean.

    Inputs: logits (N, C, H, W) float (log-softmax outputs are fine: softmax of a log-softmax
    is the softmax); target (N, 1, H, W) float label map with values 0..C-1.
    """

    input_kind = "logits"

    def __init__(
        self, dice_weight: float = 1.0, class_weights: list[float] | None = None, include_background: bool = True
    ) -> None:
        super().__init__()
        from monai.losses import DiceCELoss  # here: MONAI takes seconds to import

        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.loss = DiceCELoss(
            include_background=include_background,
            to_onehot_y=True,
            softmax=True,
            batch=True,
            weight=weight,
            lambda_dice=float(dice_weight),
            lambda_ce=1.0,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )
        self.dice_weight = float(dice_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, fov: torch.Tensor | None = None) -> torch.Tensor:
        if target.shape[1] != 1:
            raise ValueError(f"CE + Dice needs a (N, 1, H, W) label map, got {tuple(target.shape)}")
        n_classes = logits.shape[1]
        if n_classes < 2:
            raise ValueError("CE + Dice needs a network with >= 2 output channels (softmax over classes)")
        labels = target.round().long()
        if int(labels.max()) >= n_classes or int(labels.min()) < 0:
            raise ValueError(f"label values {int(labels.min())}..{int(labels.max())} outside 0..{n_classes - 1}")
        return self.loss(logits, labels)


class MSELoss(nn.Module):
    """Mean squared error between probabilities (N, 1, H, W) in [0, 1] and a target in [0, 1].

    OCTA-Net's losses are MSE on its sigmoid (and fine-stage) outputs
    (github.com/iMED-Lab/OCTA-Net-OCTA-Vessel-Segmentation-Network, ``code/OCTA-Net/train.py``).
    """

    input_kind = "probabilities"

    def forward(self, prob: torch.Tensor, target: torch.Tensor, fov: torch.Tensor | None = None) -> torch.Tensor:
        sq = (prob - target) ** 2
        if fov is None:
            return sq.mean()
        return (sq * fov).sum() / fov.sum().clamp_min(1.0)


class MSEDiceLoss(MSELoss):
    """MSE + ``dice_weight`` * (1 - soft Dice) on probabilities (medseg's MSE + Dice option).

    OCTA-Net's released code trains with MSE alone; the Dice term is a medseg addition.
    """

    def __init__(self, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.dice_weight = dice_weight

    def forward(self, prob: torch.Tensor, target: torch.Tensor, fov: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(prob, target, fov) + self.dice_weight * soft_dice_loss(prob, target, fov)


@register_loss("structure")
def _structure(cfg: LossConfig) -> nn.Module:
    return StructureLoss()


@register_loss("ce_dice")
def _ce_dice(cfg: LossConfig) -> nn.Module:
    return CEDiceLoss(cfg.dice_weight, list(cfg.class_weights), cfg.include_background)


@register_loss("mse")
def _mse(cfg: LossConfig) -> nn.Module:
    return MSELoss()


@register_loss("mse_dice")
def _mse_dice(cfg: LossConfig) -> nn.Module:
    return MSEDiceLoss(cfg.dice_weight)


def boundary_target(mask: torch.Tensor, width: int = 1) -> torch.Tensor:
    """Boundary band of a binary mask: dilation minus erosion with a (2w+1)x(2w+1) square.

    The band is ``width`` px wide on each side of every edge between foreground and background
    (so 2 * width px across); image borders do not count as edges (max pooling pads with
    -inf). Used as the target of boundary heads (BCNet's boundary supervision).

    Args:
        mask: (N, 1, H, W) float in [0, 1]; values > 0.5 are foreground.
        width: band half-width in pixels (>= 1).

    Returns:
        (N, 1, H, W) float32 in {0, 1}.
    """
    if width < 1:
        raise ValueError(f"boundary width must be >= 1 px, got {width}")
    fg = (mask > 0.5).float()
    k = 2 * width + 1
    dilated = F.max_pool2d(fg, k, stride=1, padding=width)
    eroded = -F.max_pool2d(-fg, k, stride=1, padding=width)
    return dilated - eroded


class MultiOutputLoss(nn.Module):
    """Weighted sum of losses over a network's named outputs (deep supervision, extra heads).

    ``total = sum_k w_k * loss_k(output_k, target_k)`` over the outputs named in
    ``cfg.outputs`` (PraNet: four maps with weight 1 each; OCTA-Net stage 1: MSE on "pixel"
    against the mask + MSE on "centerline" against the centerline; BCNet: area outputs +
    a boundary head against :func:`boundary_target`).

    Args:
        cfg: the recipe's :class:`~medseg.config.LossConfig`.
        output_activation: the network's ``output_activation`` ("auto": outputs are logits,
            sigmoid/softmax is applied for losses on probabilities; "none": outputs are already
            probabilities, so only probability losses (mse, mse_dice) apply).

    Raises:
        medseg.errors.ConfigError: a logits loss for a network that outputs probabilities.
    """

    def __init__(self, cfg, output_activation: str = "auto") -> None:
        super().__init__()
        from medseg.errors import ConfigError
        from medseg.losses import build_loss

        self.weights = {k: float(v) for k, v in cfg.outputs.items()}
        self.targets = {k: cfg.targets.get(k, "mask") for k in self.weights}
        self.boundary_width = int(cfg.boundary_width)
        self.fov_only = bool(cfg.fov_only)
        self.losses = nn.ModuleDict()
        for out in self.weights:
            name = cfg.output_losses.get(out, cfg.name)
            loss = build_loss(cfg, name)
            if output_activation == "none" and loss.input_kind == "logits":
                raise ConfigError(
                    f"loss {name!r} for output {out!r} needs logits, but the network outputs probabilities "
                    "(output_activation 'none'); use loss mse or mse_dice"
                )
            self.losses[out] = loss
        self.output_activation = output_activation

    def target_for(self, out: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The target tensor (N, 1, H, W) float of output ``out`` from a training batch.

        Raises:
            medseg.errors.ConfigError: "centerline" asked for but the batch has none.
        """
        from medseg.errors import ConfigError

        kind = self.targets[out]
        if kind == "mask":
            return batch["mask"]
        if kind == "boundary":
            return boundary_target(batch["mask"], self.boundary_width)
        if "centerline" not in batch:
            raise ConfigError(
                f"loss.targets.{out} is 'centerline' but the training data has no centerline; "
                "set data.args.centerline=true (skeleton of the mask) or use a dataset with centerline labels"
            )
        return batch["centerline"]

    def forward(
        self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return (total loss, {output name: its unweighted loss}).

        Raises:
            medseg.errors.ConfigError: an output named in ``loss.outputs`` that the network
                does not produce (the message lists the ones it does).
        """
        from medseg.errors import ConfigError

        total = None
        parts: dict[str, torch.Tensor] = {}
        fov = batch.get("fov") if self.fov_only else None
        for out, weight in self.weights.items():
            if out not in outputs:
                raise ConfigError(
                    f"loss.outputs names {out!r}, but the network's outputs are {', '.join(sorted(outputs))}"
                )
            pred = outputs[out].float()
            loss = self.losses[out]
            if loss.input_kind == "probabilities" and self.output_activation == "auto":
                pred = torch.sigmoid(pred) if pred.shape[1] == 1 else torch.softmax(pred, dim=1)
            value = loss(pred, self.target_for(out, batch), fov)
            parts[out] = value.detach()
            total = weight * value if total is None else total + weight * value
        assert total is not None
        return total, parts


__all__ = [
    "MultiOutputLoss",
    "structure_loss",
    "StructureLoss",
    "CEDiceLoss",
    "MSELoss",
    "MSEDiceLoss",
    "boundary_target",
]
