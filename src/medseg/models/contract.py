"""The contract every registered network keeps, and the one input-size check.

Every network registered in :data:`medseg.models.MODELS` is a :class:`NetworkContract` and
declares five things that the engine, the inference and the export code read instead of
guessing:

- ``in_channels`` (int): C_in, the channels of the input batch ``(N, C_in, H, W)`` float32.
- ``out_channels`` (int): C_out, the channels of the main output ``(N, C_out, H, W)`` float32,
  at the input resolution. Networks whose authors call it ``num_classes`` (CPFNet, BCNet, the
  dense U-Nets) keep that constructor argument and attribute; ``out_channels`` is a read-only
  alias of it.
- ``size_divisor`` (int >= 1): H and W of an input must be multiples of it (DSCNet: 8, three 2x
  poolings; OCTA-Net: 16; the stride-32 ImageNet encoders: 32); 1 when any size works. Sliding-window inference checks
  its window against it, and ``forward`` refuses other sizes with :func:`check_input_size`, the
  one size check, so every network words that error the same way.
- ``output_activation``: "auto" (the default: the outputs are **logits**; sigmoid for one
  channel, softmax over C otherwise) or "none" (the outputs already are probabilities in
  [0, 1], e.g. OCTA-Net's sigmoid heads and its fine stage's weighted sum, kept as they are
  since its MSE losses are defined on them). Heads that the original code ends with a sigmoid
  (DSCNet) or softmax return the pre-activation under "auto"; the engine and the inference code
  apply the activation (``torch.sigmoid`` for one output channel, softmax otherwise). This keeps
  BCE numerically stable under mixed precision and changes no weight, so original state dicts
  still load.
- ``forward(x) -> Tensor`` returns the main output (what evaluation, export and inference
  use), and ``forward_outputs(x) -> dict[str, Tensor]`` returns all outputs, named: key "out" is
  the main output (the same values ``forward`` returns), the others are named by the network
  ("aux1", "pixel", "centerline", "boundary", ...), each ``(N, C_k, H, W)`` at the input
  resolution. The engine's losses address outputs by these names. Single-output networks
  inherit :meth:`NetworkContract.forward_outputs`, which returns ``{"out": self(x)}``.

Every network also keeps its ImageNet backbone, if any, in an attribute ``encoder`` (see
:mod:`medseg.models.encoders`).

:func:`check_contract` tells whether a module keeps the contract (the conformance tests in
``tests/models/conformance.py`` call it for every registered network), :func:`single_output` whether
it has outputs besides "out"; :func:`check_input_size` and :func:`check_size` are the size
check. The check runs inside ``torch.jit.script``-ed networks too (CPFNet and U-Net script),
so it is written in the subset of Python that TorchScript compiles (f-strings and lists, no
``tuple(x.shape)`` or ``dict.fromkeys``).

Sources: medseg's own conventions; why logits, the PyTorch documentation of
``torch.nn.BCEWithLogitsLoss`` (sigmoid and BCE in one log-sum-exp, more stable than BCE on
probabilities); the TorchScript subset, the PyTorch documentation "TorchScript Language
Reference".
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

__all__ = [
    "NetworkContract",
    "OUTPUT_ACTIVATIONS",
    "check_contract",
    "check_input_size",
    "check_size",
    "nearest_sizes",
    "single_output",
]

#: Allowed values of ``output_activation``: logits ("auto") or probabilities ("none").
OUTPUT_ACTIVATIONS = ("auto", "none")


class NetworkContract(nn.Module):
    """Base class of every registered network: the five declarations of :mod:`medseg.models.contract`.

    Subclasses set ``in_channels`` and ``out_channels`` (instance attributes or properties),
    and override the class attributes ``size_divisor`` (default 1: any H, W) and
    ``output_activation`` (default "auto": logits) where they differ. They implement
    ``forward`` as any ``nn.Module``; networks with several outputs also override
    :meth:`forward_outputs`. The class adds no parameter or buffer, so state dicts are those of
    the subclass alone.

    Example::

        @register_model("tiny")
        class Tiny(NetworkContract):
            size_divisor = 2

            def __init__(self, in_channels: int = 1, out_channels: int = 1) -> None:
                super().__init__()
                self.in_channels, self.out_channels = in_channels, out_channels
                self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                check_input_size(x, self.size_divisor, "Tiny", "one 2x pooling")
                return self.conv(x)
    """

    #: H and W of an input must be multiples of this; 1 when any size works.
    size_divisor = 1
    #: "auto": outputs are logits (sigmoid for one channel, softmax otherwise); "none": they
    #: already are probabilities in [0, 1].
    output_activation = "auto"

    def forward_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All named outputs: ``{"out": self(x)}`` for a single-output network.

        Args:
            x: (N, in_channels, H, W) float32, H and W multiples of ``size_divisor``.

        Returns:
            ``{"out": forward(x)}``, (N, out_channels, H, W) float32.

        Raises:
            ValueError: whatever ``forward`` raises (e.g. a size :func:`check_input_size` refuses).
        """
        return {"out": self(x)}


def single_output(model: nn.Module) -> bool:
    """True when ``model`` has one output: its ``forward_outputs`` is the inherited default
    (:meth:`NetworkContract.forward_outputs`, ``{"out": forward(x)}``) or it has none (a plain
    ``nn.Module``). Lets callers refuse losses on named outputs before training, without running
    the network."""
    method = getattr(type(model), "forward_outputs", None)
    return method is None or method is NetworkContract.forward_outputs


def nearest_sizes(size: int, size_divisor: int) -> tuple[int, int]:
    """The valid sizes at or below and at or above ``size``: multiples of ``size_divisor``, at
    least ``size_divisor`` (70, 32 -> (64, 96); 64, 32 -> (64, 64); 16, 32 -> (32, 32))."""
    lower = max(size_divisor, (size // size_divisor) * size_divisor)
    upper = max(size_divisor, -(-size // size_divisor) * size_divisor)
    return lower, upper


def check_size(h: int, w: int, size_divisor: int, network: str, why: str = "", note: str = "") -> None:
    """Raise ValueError unless H and W are positive multiples of ``size_divisor``.

    The one size check of the networks (:func:`check_input_size` calls it on a tensor). The
    message names the network, the divisor (as "divisible by d, i.e. multiples of d"), the
    input size ``HxW``, every offending side with its nearest valid sizes and one size that
    works, e.g. for ``check_size(70, 64, 32, "PraNet", "encoder stride 32")``::

        PraNet needs H and W divisible by 32, i.e. multiples of 32 (encoder stride 32); input
        70x64 has H=70 (nearest valid: 64 or 96); e.g. 96x64 works. Resize, pad or crop the
        image, or use sliding-window inference with a window that is a multiple of 32.

    Args:
        h, w: the input's H and W.
        size_divisor: the network's ``size_divisor`` (>= 1).
        network: the network's name as its messages spell it ("DSCNet", "OCTA-Net coarse stage").
        why: the reason for the divisor ("three 2x poolings"), shown in brackets; "" for none.
        note: advice appended to the message (e.g. the sizes a dataset needs); "" for none.

    Raises:
        ValueError: H or W is not a positive multiple of ``size_divisor``.
    """
    d = size_divisor
    bad: list[str] = []
    works: list[str] = []
    for name, size in [("H", h), ("W", w)]:
        if size % d == 0 and size >= d:
            works.append(str(size))
            continue
        lower, upper = nearest_sizes(size, d)
        near = f"{lower} or {upper}" if lower != upper else str(upper)
        bad.append(f"{name}={size} (nearest valid: {near})")
        works.append(str(upper))
    if len(bad) == 0:
        return
    reason = f" ({why})" if why != "" else ""
    advice = f" {note}" if note != "" else ""
    raise ValueError(
        f"{network} needs H and W divisible by {d}, i.e. multiples of {d}{reason}; input {h}x{w} has "
        f"{', '.join(bad)}; e.g. {'x'.join(works)} works. Resize, pad or crop the image, or use "
        f"sliding-window inference with a window that is a multiple of {d}.{advice}"
    )


def check_input_size(x: torch.Tensor, size_divisor: int, network: str, why: str = "", note: str = "") -> None:
    """Raise ValueError unless ``x`` is (N, C, H, W) with H and W multiples of ``size_divisor``.

    What a network's ``forward`` calls on its input (its channel count is the network's own
    check): ``check_input_size(x, self.size_divisor, "DSCNet", "three 2x poolings")``.

    Args:
        x: the input batch, (N, C, H, W), any dtype.
        size_divisor, network, why, note: as :func:`check_size`.

    Raises:
        ValueError: ``x`` is not 4-D ("<network> expects an (N, C, H, W) tensor, got shape
            (...)"), or H or W is not a positive multiple of ``size_divisor`` (the message of
            :func:`check_size`).
    """
    if x.dim() != 4:
        shape = ", ".join([str(s) for s in x.shape])
        raise ValueError(f"{network} expects an (N, C, H, W) tensor, got shape ({shape})")
    check_size(int(x.shape[2]), int(x.shape[3]), size_divisor, network, why, note)


def check_contract(model: nn.Module) -> None:
    """Raise TypeError unless ``model`` declares the five parts of the contract (module docstring).

    Checks that ``in_channels`` and ``out_channels`` are ints >= 1, ``size_divisor`` an int
    >= 1, ``output_activation`` one of :data:`OUTPUT_ACTIVATIONS`, and ``forward_outputs`` a
    method. It does not run the network (the conformance tests check the outputs).

    Args:
        model: a built network (any device, ``meta`` included).

    Raises:
        TypeError: one line per missing or ill-typed declaration, naming the class.
    """
    problems: list[str] = []
    for attr in ("in_channels", "out_channels", "size_divisor"):
        value: Any = getattr(model, attr, None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{attr} must be an int >= 1, got {value!r}")
    activation = getattr(model, "output_activation", None)
    if activation not in OUTPUT_ACTIVATIONS:
        problems.append(f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {activation!r}")
    if not callable(getattr(model, "forward_outputs", None)):
        problems.append("forward_outputs(x) -> dict[str, Tensor] is missing")
    if problems:
        raise TypeError(
            f"{type(model).__name__} does not keep the network contract (medseg.models.contract): "
            + "; ".join(problems)
        )
