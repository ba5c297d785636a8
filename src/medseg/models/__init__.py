"""Networks, registered by name.

Every registered network keeps the contract of :mod:`medseg.models.contract`: it is a
:class:`~medseg.models.contract.NetworkContract` and declares ``spatial_dims``, ``in_channels``,
``out_channels``, ``size_divisor``, ``output_activation`` and ``forward_outputs``; it maps an
image batch ``(N, C_in, H, W)`` float32 (``spatial_dims`` 2, the default) or a volume batch
``(N, C_in, D, H, W)`` float32 (``spatial_dims`` 3: ``dscnet3d``, ``unet3d``) to logits (or,
with ``output_activation = "none"``, probabilities) ``(N, C_out, H, W)`` / ``(N, C_out, D, H,
W)`` float32 at the input resolution, and refuses sizes that are not multiples of its
``size_divisor`` (every spatial side: H, W or D, H, W), and inputs of the wrong rank, with the
one check, :func:`~medseg.models.contract.check_input_size`. The conformance tests
(``tests/models/conformance.py``) hold every registered network to it.

Use :func:`create_model` to build one by name and :func:`list_models` to see what exists.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """Build networks without initialising their weights, for counting parameters or reading
    shapes: every ``torch.nn.init`` function returns its tensor unchanged inside the block, so
    the weights hold whatever memory they were given.

    Cheaper than ``torch.device("meta")`` here: initialising a meta tensor goes through PyTorch's
    reference implementations, whose first call imports ``torch._dynamo`` (about 1.3 s). Not
    thread-safe (it replaces module attributes); never train or save a network built inside it.
    """
    import torch.nn.init as init

    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(init, n) for n in names}
    try:
        for n in names:
            setattr(init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, f in saved.items():
            setattr(init, n, f)


def _import_all() -> None:
    # Importing a module registers its networks: every public module of this package.
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name not in ("weights", "encoders", "contract"):
            importlib.import_module(f"{__name__}.{info.name}")


__all__ = ["MODELS", "register_model", "create_model", "list_models", "count_parameters", "skip_init"]
