"""ImageNet encoders, in the layouts their published weight files use.

The contract every encoder here follows (networks rely on it):

- ``forward(x)``: ``(N, 3, H, W)`` float32 -> a list of feature maps, shallowest first, one per
  stride in ``encoder.reductions`` (typically 2, 4, 8, 16, 32), with ``encoder.out_channels[i]``
  channels each. Which maps a network taps (stem, layer1 ... layer4) is the network's business.
- Parameter names equal the published state dict's keys (torchvision's ``conv1.weight``,
  ``layer1.0.conv1.weight``, ...), so loading needs no mapping except for dropped classifier
  keys; where a layout differs (timm vs the authors' ResNeSt) the map is in that module.
- ``load_weights(path_or_state_dict)``: strict load of the published file (see
  :func:`medseg.models.weights.load_strict`): every missing or unexpected key is an error that
  lists them. The classifier (``fc.*``/``classifier.*``) is accepted and dropped.
- ``gradient_checkpointing`` (bool attribute, default False): when True and training, each
  stage runs under :func:`torch.utils.checkpoint.checkpoint` (see :func:`run_stage`), trading
  compute for activation memory.
- Networks keep their encoder in an attribute named ``encoder``, so the engine can freeze it
  (``train.freeze_encoder_steps``) by parameter-name prefix.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint


def run_stage(stage: nn.Module, x: torch.Tensor, enabled: bool) -> torch.Tensor:
    """``stage(x)``, under activation checkpointing when ``enabled`` and gradients are needed.

    Checkpointing recomputes the stage's activations in the backward pass instead of storing
    them (Chen et al., arXiv 1604.06174); outputs and gradients are unchanged (RNG state is
    preserved for the recompute). One difference: the recompute runs the stage's BatchNorm
    layers a second time in training mode, so their running statistics take two momentum
    updates per step from the same batch (``num_batches_tracked`` counts 2), which moves the
    running means and variances towards the batch statistics a little faster than without
    checkpointing. Not scriptable (``torch.jit.script``): networks using it export by tracing
    or ``torch.export``.
    """
    if enabled and stage.training and torch.is_grad_enabled():
        return checkpoint(stage, x, use_reentrant=False)
    return stage(x)


def set_gradient_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Set ``gradient_checkpointing`` on every submodule that has the attribute; return how many.

    Raises:
        ValueError: no submodule of ``model`` supports gradient checkpointing.
    """
    count = 0
    for m in model.modules():
        if hasattr(m, "gradient_checkpointing"):
            m.gradient_checkpointing = bool(enabled)
            count += 1
    if count == 0:
        raise ValueError(f"{type(model).__name__} has no module that supports gradient checkpointing")
    return count


def drop_classifier(prefixes: tuple[str, ...]) -> Any:
    """A key map for :func:`medseg.models.weights.load_strict` dropping keys under ``prefixes``."""

    def key_map(key: str) -> str | None:
        return None if key.startswith(prefixes) else key

    return key_map


__all__ = ["run_stage", "set_gradient_checkpointing", "drop_classifier"]
