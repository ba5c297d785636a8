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

from collections.abc import Mapping
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


def fill_num_batches_tracked(
    module: nn.Module, state: Mapping[str, torch.Tensor], prefix: str = ""
) -> dict[str, torch.Tensor]:
    """``state`` plus zero BatchNorm ``num_batches_tracked`` counters when it holds none at all.

    Files saved before PyTorch 0.4.1 (torchvision's DenseNet-161 and ResNet-34 files among
    them) have no counters; PyTorch's own BatchNorm loader fills them with 0 too. ``prefix`` is
    prepended to ``module``'s key names. A state dict holding some counters is returned
    unchanged (a copy), so strict loading reports any missing one.
    """
    state = dict(state)
    if any(k.endswith("num_batches_tracked") for k in state):
        return state
    for name, buf in module.state_dict().items():
        if name.endswith("num_batches_tracked"):
            state[prefix + name] = torch.zeros_like(buf)
    return state


def he_init(module: nn.Module) -> None:
    """The ResNet-family initialisation (He et al., ICCV 2015, fan-out) used by torchvision and
    the ResNeSt/Res2Net authors: conv weights Kaiming-normal, BatchNorm weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


__all__ = ["run_stage", "set_gradient_checkpointing", "drop_classifier", "fill_num_batches_tracked", "he_init"]
