"""Full-image inference: MONAI sliding-window inference with Gaussian or constant blending.

DSCNet's released code blends 224x224 windows (stride 112) with a weight 1/(dx^4+dy^4) that is
infinite at the window centre, so one pixel per window becomes NaN (models.md §1.6). medseg
does not reproduce that: it uses MONAI's ``sliding_window_inference`` (Gaussian weights,
``sigma_scale`` 0.125, or constant), which the evaluation protocol documents.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.inferers import sliding_window_inference


def activation(logits: torch.Tensor, kind: str = "auto") -> torch.Tensor:
    """Network outputs (N, C, H, W) -> probabilities in [0, 1].

    ``kind`` is the network's ``output_activation``: "auto" (logits: sigmoid for C == 1,
    softmax over C otherwise) or "none" (already probabilities, e.g. OCTA-Net: returned as
    they are, clamped to [0, 1] against blending round-off).
    """
    if kind == "none":
        return logits.clamp(0.0, 1.0)
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def check_roi(model: nn.Module, roi_size: int) -> None:
    """Raise ValueError if ``roi_size`` does not suit ``model`` (``model.size_divisor``, e.g. 8 for DSCNet)."""
    divisor = int(getattr(model, "size_divisor", 1))
    if roi_size <= 0 or roi_size % divisor:
        lower = max(divisor, roi_size // divisor * divisor)
        raise ValueError(
            f"window size {roi_size} does not suit {type(model).__name__}: it must be a positive multiple "
            f"of {divisor}, e.g. {lower} or {lower + divisor}"
        )


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    image: torch.Tensor,
    roi_size: int,
    overlap: float = 0.5,
    mode: str = "gaussian",
    sw_batch_size: int = 4,
) -> torch.Tensor:
    """Probabilities for whole images by sliding ``roi_size`` windows over them.

    Args:
        model: a medseg network returning logits; put it in eval mode first.
        image: (N, C, H, W) float32, preprocessed like the training data; any H, W (images
            smaller than the window are padded by MONAI and cropped back).
        roi_size: square window side in pixels.
        overlap: fraction of overlap between neighbouring windows, in [0, 1).
        mode: "gaussian" or "constant" blending.
        sw_batch_size: windows per forward pass.

    Returns:
        (N, C_out, H, W) float32 probabilities in [0, 1] (sigmoid for one output channel,
        softmax otherwise). Blending happens on logits, then the activation is applied
        (networks whose ``output_activation`` is "none" blend probabilities directly).

    Raises:
        ValueError: a window size the network cannot take (see :func:`check_roi`).
    """
    check_roi(model, roi_size)
    logits = sliding_window_inference(
        image,
        roi_size=(roi_size, roi_size),
        sw_batch_size=sw_batch_size,
        predictor=model,
        overlap=overlap,
        mode=mode,
        padding_mode="constant",
        cval=0.0,
    )
    return activation(logits.float(), getattr(model, "output_activation", "auto"))


__all__ = ["activation", "check_roi", "predict_probabilities"]
