"""The contract every registered network keeps, and the one input-size check.

Every network registered in :data:`medseg.models.MODELS` is a :class:`NetworkContract` and
declares six things that the engine, the inference and the export code read instead of
guessing:

- ``spatial_dims`` (int, 2 or 3; class attribute): 2 for image networks, whose input is
  ``(N, C_in, H, W)`` (the default, which every 2D network inherits), 3 for volume networks
  (``dscnet3d``, ``unet3d``), whose input is ``(N, C_in, D, H, W)`` (D slices, H rows, W
  columns, in voxels) and whose outputs are ``(N, C_k, D, H, W)``. Below, "(N, C, H, W)" and
  "H and W" read "(N, C, D, H, W)" and "D, H and W" for a volume network.
- ``in_channels`` (int): C_in, the channels of the input batch ``(N, C_in, H, W)`` float32.
- ``out_channels`` (int): C_out, the channels of the main output ``(N, C_out, H, W)`` float32,
  at the input resolution. Networks whose authors call it ``num_classes`` (CPFNet, BCNet, the
  dense U-Nets) keep that constructor argument and attribute; ``out_channels`` is a read-only
  alias of it.
- ``size_divisor`` (int >= 1): H and W of an input must be multiples of it (DSCNet: 8, three 2x
  poolings; OCTA-Net: 16; the stride-32 ImageNet encoders: 32); 1 when any size works. Sliding-window inference checks
  its window against it, and ``forward`` refuses other sizes with :func:`check_input_size`, the
  one size check, so every network words that error the same way. A volume network passes
  ``spatial_dims=3`` to it: D, H and W must then be multiples of ``size_divisor`` (the 3D
  DSCNet: 8, the 3D U-Net: 16), and a 4-D input is refused with a message saying a volume
  ``(N, C, D, H, W)`` is expected.
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
it has outputs besides "out"; :func:`check_input_size` (on a tensor), :func:`check_size` (2D:
H, W) and :func:`check_spatial_size` (H, W or D, H, W; the other two call it) are the size
check; for 2D inputs its messages are those it always had. The check runs inside
``torch.jit.script``-ed networks too (CPFNet, U-Net and the 3D U-Net script), so it is written
in the subset of Python that TorchScript compiles (f-strings and lists, no ``tuple(x.shape)``
or ``dict.fromkeys``).

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
    "SPATIAL_DIMS",
    "check_contract",
    "check_input_size",
    "check_size",
    "check_spatial_size",
    "nearest_sizes",
    "single_output",
]

#: Allowed values of ``output_activation``: logits ("auto") or probabilities ("none").
OUTPUT_ACTIVATIONS = ("auto", "none")

#: Allowed values of ``spatial_dims``: images (N, C, H, W) or volumes (N, C, D, H, W).
SPATIAL_DIMS = (2, 3)


class NetworkContract(nn.Module):
    """Base class of every registered network: the six declarations of :mod:`medseg.models.contract`.

    Subclasses set ``in_channels`` and ``out_channels`` (instance attributes or properties),
    and override the class attributes ``spatial_dims`` (default 2: images (N, C, H, W); 3 for
    volumes (N, C, D, H, W)), ``size_divisor`` (default 1: any H, W) and
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

    A volume network sets ``spatial_dims = 3``, builds ``nn.Conv3d`` layers and calls
    ``check_input_size(x, self.size_divisor, "Tiny3D", "one 2x pooling", spatial_dims=3)``.
    """

    #: 2: the input is an image batch (N, C, H, W); 3: a volume batch (N, C, D, H, W).
    spatial_dims = 2
    #: H and W (D, H and W for a volume network) of an input must be multiples of this; 1
    #: when any size works.
    size_divisor = 1
    #: "auto": outputs are logits (sigmoid for one channel, softmax otherwise); "none": they
    #: already are probabilities in [0, 1].
    output_activation = "auto"

    def forward_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All named outputs: ``{"out": self(x)}`` for a single-output network.

        Args:
            x: (N, in_channels, H, W) float32, H and W multiples of ``size_divisor``; for a
                volume network (``spatial_dims`` 3) (N, in_channels, D, H, W).

        Returns:
            ``{"out": forward(x)}``, (N, out_channels, H, W) float32 ((N, out_channels, D, H,
            W) for a volume network).

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

    The one size check of the 2D networks (:func:`check_input_size` calls it on a tensor;
    :func:`check_spatial_size` with ``[h, w]``). The message names the network, the divisor (as
    "divisible by d, i.e. multiples of d"), the input size ``HxW``, every offending side with
    its nearest valid sizes and one size that works, e.g. for
    ``check_size(70, 64, 32, "PraNet", "encoder stride 32")``::

        PraNet needs H and W divisible by 32, i.e. multiples of 32 (encoder stride 32); input
        70x64 has H=70 (nearest valid: 64 or 96); e.g. 96x64 works. Resize, pad or crop the
        image, or use sliding-window inference with a window that is a multiple of 32.

    Args:
        h, w: the input's H and W (pixels).
        size_divisor: the network's ``size_divisor`` (>= 1).
        network: the network's name as its messages spell it ("DSCNet", "OCTA-Net coarse stage").
        why: the reason for the divisor ("three 2x poolings"), shown in brackets; "" for none.
        note: advice appended to the message (e.g. the sizes a dataset needs); "" for none.

    Raises:
        ValueError: H or W is not a positive multiple of ``size_divisor``.
    """
    check_spatial_size([h, w], size_divisor, network, why, note)


def check_spatial_size(sizes: list[int], size_divisor: int, network: str, why: str = "", note: str = "") -> None:
    """Raise ValueError unless every side in ``sizes`` is a positive multiple of ``size_divisor``.

    The one size check, for images (``sizes`` = [H, W], the message of :func:`check_size`) and
    volumes (``sizes`` = [D, H, W]). For a volume the message reads "D, H and W", gives the size
    as ``DxHxW`` and says "volume" for "image", e.g. for
    ``check_spatial_size([16, 16, 20], 8, "DSCNet3D", "three 2x poolings")``::

        DSCNet3D needs D, H and W divisible by 8, i.e. multiples of 8 (three 2x poolings); input
        16x16x20 has W=20 (nearest valid: 16 or 24); e.g. 16x16x24 works. Resize, pad or crop
        the volume, or use sliding-window inference with a window that is a multiple of 8.

    Args:
        sizes: the input's spatial sides, [H, W] (pixels) or [D, H, W] (voxels); a list, as
            TorchScript compiles it.
        size_divisor, network, why, note: as :func:`check_size`.

    Raises:
        ValueError: a side is not a positive multiple of ``size_divisor``, or ``sizes`` has
            neither 2 nor 3 entries.
    """
    if len(sizes) == 2:
        names = ["H", "W"]
        sides, what = "H and W", "image"
    elif len(sizes) == 3:
        names = ["D", "H", "W"]
        sides, what = "D, H and W", "volume"
    else:
        raise ValueError(f"{network}: the size check takes 2 (H, W) or 3 (D, H, W) sides, got {len(sizes)}")
    d = size_divisor
    bad: list[str] = []
    works: list[str] = []
    for i in range(len(sizes)):
        size = sizes[i]
        if size % d == 0 and size >= d:
            works.append(str(size))
            continue
        lower, upper = nearest_sizes(size, d)
        near = f"{lower} or {upper}" if lower != upper else str(upper)
        bad.append(f"{names[i]}={size} (nearest valid: {near})")
        works.append(str(upper))
    if len(bad) == 0:
        return
    reason = f" ({why})" if why != "" else ""
    advice = f" {note}" if note != "" else ""
    given = "x".join([str(s) for s in sizes])
    raise ValueError(
        f"{network} needs {sides} divisible by {d}, i.e. multiples of {d}{reason}; input {given} has "
        f"{', '.join(bad)}; e.g. {'x'.join(works)} works. Resize, pad or crop the {what}, or use "
        f"sliding-window inference with a window that is a multiple of {d}.{advice}"
    )


def check_input_size(
    x: torch.Tensor, size_divisor: int, network: str, why: str = "", note: str = "", spatial_dims: int = 2
) -> None:
    """Raise ValueError unless ``x`` is (N, C, H, W) (or, with ``spatial_dims`` 3, (N, C, D, H,
    W)) with every spatial side a multiple of ``size_divisor``.

    What a network's ``forward`` calls on its input (its channel count is the network's own
    check): ``check_input_size(x, self.size_divisor, "DSCNet", "three 2x poolings")``; a volume
    network adds ``spatial_dims=3`` (``check_input_size(x, 8, "DSCNet3D", "three 2x poolings",
    spatial_dims=3)``).

    Args:
        x: the input batch, (N, C, H, W) or, for ``spatial_dims`` 3, (N, C, D, H, W); any dtype.
        size_divisor, network, why, note: as :func:`check_size`.
        spatial_dims: 2 (images, the default) or 3 (volumes): the network's ``spatial_dims``.

    Raises:
        ValueError: for ``spatial_dims`` 2, ``x`` is not 4-D ("<network> expects an (N, C, H, W)
            tensor, got shape (...)"); for 3, ``x`` is not 5-D ("<network> expects a volume
            (N, C, D, H, W), got shape (...)", with a hint that a 4-D tensor is a 2D image
            batch); a spatial side is not a positive multiple of ``size_divisor`` (the message
            of :func:`check_spatial_size`); ``spatial_dims`` is neither 2 nor 3.
    """
    shape = ", ".join([str(s) for s in x.shape])
    if spatial_dims == 2:
        if x.dim() != 4:
            raise ValueError(f"{network} expects an (N, C, H, W) tensor, got shape ({shape})")
        check_spatial_size([int(x.shape[2]), int(x.shape[3])], size_divisor, network, why, note)
    elif spatial_dims == 3:
        if x.dim() != 5:
            hint = ""
            if x.dim() == 4:
                hint = " (a 4-D tensor is a batch of 2D images (N, C, H, W); add the depth axis D)"
            raise ValueError(f"{network} expects a volume (N, C, D, H, W), got shape ({shape}){hint}")
        sizes = [int(x.shape[2]), int(x.shape[3]), int(x.shape[4])]
        check_spatial_size(sizes, size_divisor, network, why, note)
    else:
        raise ValueError(f"{network}: spatial_dims must be 2 or 3, got {spatial_dims}")


def check_contract(model: nn.Module) -> None:
    """Raise TypeError unless ``model`` declares the six parts of the contract (module docstring).

    Checks that ``spatial_dims`` is one of :data:`SPATIAL_DIMS` (2 or 3, an int),
    ``in_channels`` and ``out_channels`` are ints >= 1, ``size_divisor`` an int >= 1,
    ``output_activation`` one of :data:`OUTPUT_ACTIVATIONS`, and ``forward_outputs`` a
    method. It does not run the network (the conformance tests check the outputs).

    Args:
        model: a built network (any device, ``meta`` included).

    Raises:
        TypeError: one line per missing or ill-typed declaration, naming the class.
    """
    problems: list[str] = []
    dims: Any = getattr(model, "spatial_dims", None)
    if not isinstance(dims, int) or isinstance(dims, bool) or dims not in SPATIAL_DIMS:
        problems.append(f"spatial_dims must be 2 (images) or 3 (volumes), got {dims!r}")
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
