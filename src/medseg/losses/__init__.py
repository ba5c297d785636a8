"""Training losses for binary segmentation (one output channel of logits).

All losses take ``logits`` (N, 1, H, W) float (any real value), ``target`` (N, 1, H, W) float in
{0, 1} and an optional ``fov`` (N, 1, H, W) float in {0, 1}; when ``fov`` is given only FOV
pixels count. They return a scalar tensor.

Losses are plugins: each is registered in :data:`LOSSES` by a builder that takes the recipe's
:class:`~medseg.config.LossConfig` (``@register_loss("bce_dice") def _(cfg): ...``), in this
module or :mod:`medseg.losses.more`; :func:`build_loss` builds one by name and
:func:`list_losses` is what the config validates ``loss.name`` against. Adding a loss is one
decorated builder.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.config import LossConfig
from medseg.registry import Registry

#: Loss name -> builder ``(cfg: LossConfig) -> nn.Module`` (the module has ``input_kind``).
LOSSES = Registry("loss")
register_loss = LOSSES.register


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
    """Mean BCE on logits: the loss of DSCNet's released training code.

    Source: github.com/YaoleiQi/DSCNet, ``DSCNet_2D_opensource/Code/DRIVE/DSCNet/S3_Loss.py``
    (``cross_loss``, used by ``S3_Train_Process.py``).
    """

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
    ``p = sigmoid(logits)`` and of the target; it is the loss a DSCNet tutorial describes
    (www.seekfood.cn/news/1354982), not part of DSCNet's released code. Restricted to the FOV
    when ``fov`` is given.
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
        from monai.losses import SoftDiceclDiceLoss  # here: MONAI takes seconds to import

        self.cldice = SoftDiceclDiceLoss(iter_=iters, alpha=alpha)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, fov: torch.Tensor | None = None) -> torch.Tensor:
        prob = torch.sigmoid(logits)
        if fov is not None:
            prob, masked_target = prob * fov, target * fov
        else:
            masked_target = target
        return masked_bce(logits, target, fov) + self.cldice(prob, masked_target)


@register_loss("bce")
def _bce(cfg: LossConfig) -> nn.Module:
    return BCELoss()


@register_loss("bce_dice")
def _bce_dice(cfg: LossConfig) -> nn.Module:
    return BCEDiceLoss(cfg.dice_weight)


@register_loss("continuity")
def _continuity(cfg: LossConfig) -> nn.Module:
    return ContinuityLoss(cfg.alpha)


@register_loss("cldice")
def _cldice(cfg: LossConfig) -> nn.Module:
    return ClDiceLoss(cfg.alpha, cfg.cldice_iters)


def _import_all() -> None:
    """Import every module that registers losses."""
    import medseg.losses.more  # noqa: F401 - registers structure, ce_dice, mse, mse_dice
    import medseg.losses.tcloss  # noqa: F401 - registers bce_tcloss, bce_dice_tcloss


def list_losses() -> tuple[str, ...]:
    """Names of every registered loss, in registration order (bce, bce_dice, ...)."""
    _import_all()
    return LOSSES.in_order()


def build_loss(cfg: LossConfig, name: str | None = None) -> nn.Module:
    """The loss named ``name`` (default ``cfg.name``), configured from ``cfg``.

    Every returned module has ``input_kind``: "logits" or "probabilities" (MSE family).

    Raises:
        medseg.errors.ConfigError: an unknown name (``config.validate`` catches it first).
    """
    _import_all()
    return LOSSES.get(name or cfg.name)(cfg)


__all__ = [
    "BCELoss",
    "BCEDiceLoss",
    "ContinuityLoss",
    "ClDiceLoss",
    "LOSSES",
    "register_loss",
    "list_losses",
    "build_loss",
    "masked_bce",
    "soft_dice_loss",
    "sobel_gradients",
]
