"""Training losses for binary segmentation (one output channel of logits).

All losses take ``logits`` (N, 1, H, W) float (any real value), ``target`` (N, 1, H, W) float in
{0, 1} and an optional ``fov`` (N, 1, H, W) float in {0, 1}; when ``fov`` is given only FOV
pixels count. They return a scalar tensor. :func:`build_loss` maps a recipe's ``loss`` section
to one of them.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import SoftDiceclDiceLoss

from medseg.config import LossConfig


def masked_bce(logits: torch.Tensor, target: torch.Tensor, fov: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy on logits over all pixels, or over FOV pixels when ``fov`` is given."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if fov is None:
        return per_pixel.mean()
    return (per_pixel * fov).sum() / fov.sum().clamp_min(1.0)


def soft_dice_loss(
    prob: torch.Tensor, target: torch.Tensor, fov: torch.Tensor | None = None, smooth: float = 1.0
) -> torch.Tensor:
    """1 - soft Dice over the whole batch (Milletari et al., V-Net, 3DV 2016, eq. 1, squared=False).

    ``prob`` (N, 1, H, W) in [0, 1]. Computed on the batch as one volume (``batch=True`` in
    MONAI's terms) so that patches without foreground do not dominate; ``smooth`` is added to
    numerator and denominator, so an empty prediction of an empty target gives loss 0.
    """
    if fov is not None:
        prob, target = prob * fov, target * fov
    inter = (prob * target).sum()
    return 1.0 - (2.0 * inter + smooth) / (prob.sum() + target.sum() + smooth)


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_gradients(x: torch.Tensor) -> torch.Tensor:
    """Sobel derivatives of a (N, 1, H, W) map: (N, 2, H, W) with d/dx and d/dy (replicate padding)."""
    kernel = torch.stack([_SOBEL_X, _SOBEL_X.t()]).unsqueeze(1).to(x)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel)


class BCELoss(nn.Module):
    """Mean BCE on logits: the loss of DSCNet's released training code (models.md §1.6)."""

    input_kind = "logits"

    def forward(self, logits: torch.Tensor, target: torch.Tensor, fov: torch.Tensor | None = None) -> torch.Tensor:
        return masked_bce(logits, target, fov)


class BCEDiceLoss(nn.Module):
    """BCE + ``dice_weight`` * (1 - soft Dice), on logits.

    Args:
        dice_weight: weight of the Dice term (>= 0); 0 gives plain BCE.
    """

    input_kind = "logits"

    def __init__(self, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.dice_weight = dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor, fov: torch.Tensor | None = None) -> torch.Tensor:
        loss = masked_bce(logits, target, fov)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(torch.sigmoid(logits), target, fov)
        return loss


class ContinuityLoss(nn.Module):
    """BCE + ``alpha`` * mean |Sobel(p) - Sobel(y)|: penalises broken or ragged vessel edges.

    The continuity term compares the Sobel gradient fields (both axes) of the probability map
    ``p = sigmoid(logits)`` and of the target; it is the loss the DSCNet tutorial (mission.md,
    T1) describes. Restricted to the FOV when ``fov`` is given.
    """

    input_kind = "logits"

    def __init__(self, alpha: float = 0.5) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor, fov: torch.Tensor | None = None) -> torch.Tensor:
        diff = (sobel_gradients(torch.sigmoid(logits)) - sobel_gradients(target)).abs()
        if fov is None:
            l1 = diff.mean()
        else:
            l1 = (diff * fov).sum() / (2.0 * fov.sum()).clamp_min(1.0)
        return masked_bce(logits, target, fov) + self.alpha * l1


class ClDiceLoss(nn.Module):
    """BCE + soft Dice/clDice: (1 - alpha) * soft Dice + alpha * soft clDice (Shit et al., CVPR 2021, eq. 4).

    The Dice/clDice part is MONAI's ``SoftDiceclDiceLoss`` (soft skeleton by ``iters`` rounds of
    min/max pooling); the BCE term keeps early training stable, as the clDice authors do.
    """

    input_kind = "logits"

    def __init__(self, alpha: float = 0.5, iters: int = 3) -> None:
        super().__init__()
        self.cldice = SoftDiceclDiceLoss(iter_=iters, alpha=alpha)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, fov: torch.Tensor | None = None) -> torch.Tensor:
        prob = torch.sigmoid(logits)
        if fov is not None:
            prob, masked_target = prob * fov, target * fov
        else:
            masked_target = target
        return masked_bce(logits, target, fov) + self.cldice(prob, masked_target)


def build_loss(cfg: LossConfig, name: str | None = None) -> nn.Module:
    """The loss named ``name`` (default ``cfg.name``), configured from ``cfg``.

    Every returned module has ``input_kind``: "logits" or "probabilities" (MSE family).
    """
    from medseg.losses.more import CEDiceLoss, MSEDiceLoss, MSELoss, StructureLoss

    name = name or cfg.name
    if name == "bce":
        return BCELoss()
    if name == "bce_dice":
        return BCEDiceLoss(cfg.dice_weight)
    if name == "continuity":
        return ContinuityLoss(cfg.alpha)
    if name == "cldice":
        return ClDiceLoss(cfg.alpha, cfg.cldice_iters)
    if name == "structure":
        return StructureLoss()
    if name == "ce_dice":
        return CEDiceLoss(cfg.dice_weight, list(cfg.class_weights), cfg.include_background)
    if name == "mse":
        return MSELoss()
    if name == "mse_dice":
        return MSEDiceLoss(cfg.dice_weight)
    raise ValueError(f"unknown loss {name!r}")  # config.validate() catches this first


__all__ = [
    "BCELoss",
    "BCEDiceLoss",
    "ContinuityLoss",
    "ClDiceLoss",
    "build_loss",
    "masked_bce",
    "soft_dice_loss",
    "sobel_gradients",
]
