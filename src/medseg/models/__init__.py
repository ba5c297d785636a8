"""Networks, registered by name.

Every registered network maps an image batch ``(N, C_in, H, W)`` float32 to **logits**
``(N, C_out, H, W)`` float32 at the input resolution. Heads that the original code ends with a
sigmoid (DSCNet) or softmax return the pre-activation here; the engine and the inference code
apply the activation (``torch.sigmoid`` for one output channel, softmax otherwise). This keeps
BCE numerically stable under mixed precision and changes no weight, so original state dicts
still load.

A network that needs H and W to be multiples of some number (DSCNet: 8) says so in a class
attribute ``size_divisor``; sliding-window inference checks its window against it.

Class attribute ``output_activation``: "auto" (default: the outputs are logits; sigmoid for one
channel, softmax otherwise) or "none" (the original's outputs are already probabilities in
[0, 1], e.g. OCTA-Net's sigmoid heads and its fine stage's weighted sum; kept as they are since
its MSE losses are defined on them).

Networks with several outputs (deep supervision, extra heads) return only the main output from
``forward`` (what evaluation, export and inference use) and all of them, named, from
``forward_outputs(x) -> dict[str, Tensor]``: key "out" is the main output (the same tensor
``forward`` returns), the others are named by the network ("aux1", "pixel", "centerline",
"boundary", ...), each (N, C_k, H, W) at the input resolution. The engine's losses address
outputs by these names.

Every network keeps its ImageNet backbone, if any, in an attribute ``encoder`` (see
:mod:`medseg.models.encoders`).

Use :func:`create_model` to build one by name and :func:`list_models` to see what exists.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from medseg.registry import Registry

MODELS = Registry("network")
register_model = MODELS.register


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the network registered as ``name`` with its original's defaults, overridden by ``kwargs``.

    Raises:
        medseg.errors.ConfigError: unknown name (the closest valid names are suggested) or an
            argument the network does not take.
    """
    _import_all()
    return MODELS.create(name, **kwargs)


def list_models() -> list[str]:
    """Names of all registered networks, sorted."""
    _import_all()
    return MODELS.names()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (all registered ones, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _import_all() -> None:
    # Importing a module registers its networks: every public module of this package.
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name not in ("weights", "encoders", "blocks"):
            importlib.import_module(f"{__name__}.{info.name}")


__all__ = ["MODELS", "register_model", "create_model", "list_models", "count_parameters"]
