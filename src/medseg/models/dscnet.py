"""DSCNet, 2D (Qi et al., "Dynamic Snake Convolution based on Topological Geometric Constraints
for Tubular Structure Segmentation", ICCV 2023, arXiv 2307.08388).

Network of the authors' released code, ``DSCNet_2D_opensource/Code/DRIVE/DSCNet/S3_DSCNet.py``
(with ``S3_DSConv.py``) and its faster rewrite ``Code/DRIVE/S3_DSCNet_pro.py`` (with
``S3_DSConv_pro.py``), github.com/YaoleiQi/DSCNet. Written independently; the module names are
the authors' (``conv00``, ``conv0x``, ``conv0y``, ``conv1``, ..., ``conv17``, ``out_conv``, and
inside each DSConv ``offset_conv``, ``bn``/``gn_offset``, ``dsc_conv_x``, ``dsc_conv_y``, ``gn``;
inside each plain block ``conv``, ``gn``), so their state dicts load with no renaming
(:func:`load_original`).

What the paper describes but the released code (and so this network) lacks: the multi-view
feature-fusion strategy with random drop of views (the ``dim`` argument of the authors' class is
a placeholder) and the persistent-homology topological loss TCLoss; the released code trains with
plain BCE. DSConv deviations from the authors' code are listed in :mod:`medseg.ops.dsconv`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.errors import CheckpointError
from medseg.models import register_model
from medseg.models.contract import NetworkContract, check_input_size
from medseg.models.weights import describe_source, load_strict, read_state_dict
from medseg.ops.dsconv import DSConv2d

__all__ = ["DSCNet", "ConvGNReLU", "load_original"]

# (prefix of the three branches, name of the fuse conv) per block, in forward order; the
# authors' attribute names: conv{p}0 = 3x3 branch, conv{p}x / conv{p}y = DSConv morph 0 / 1.
_ENCODER = (("0", "conv1"), ("2", "conv3"), ("4", "conv5"), ("6", "conv7"))
_DECODER = (("12", "conv13"), ("14", "conv15"), ("16", "conv17"))


class ConvGNReLU(nn.Module):
    """3x3 conv (bias, padding 1) -> GroupNorm(out // 4) -> ReLU; the authors' ``EncoderConv`` /
    ``DecoderConv`` (identical classes). (N, in_ch, H, W) -> (N, out_ch, H, W)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.gn = nn.GroupNorm(out_ch // 4, out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_ch, H, W) -> (N, out_ch, H, W), values >= 0."""
        return self.relu(self.gn(self.conv(x)))


@register_model("dscnet")
class DSCNet(NetworkContract):
    """The authors' 2D DSCNet: a 4-level U-Net whose blocks run three branches in parallel.

    Every block applies to the same input (a) 3x3 conv + GroupNorm + ReLU, (b) a DSConv along x
    (morph 0), (c) a DSConv along y (morph 1), each in -> out channels; concatenates them
    (3*out) and fuses with a 3x3 conv + GroupNorm + ReLU to ``out``. Encoder widths
    in -> n -> 2n -> 4n -> 8n with three 2x2 max-poolings (bottleneck at 1/8); decoder: bilinear
    x2 upsampling (align_corners=True), concatenation with the skip, blocks 12n -> 4n, 6n -> 2n,
    3n -> n; head 1x1 conv n -> out_channels.

    Returns **logits**: the original ends with a sigmoid; by the medseg convention
    (:mod:`medseg.models`) networks return the pre-activation and the engine applies
    ``torch.sigmoid``. The original's constructed-but-unused Dropout(0.5) and Softmax have no
    parameters and are omitted.

    Parameters with the defaults: 2,094,169 registered. Each DSConv allocates both axis convs
    (as the original, for state-dict compatibility) and uses one, so 484,832 never receive a
    gradient: 1,609,337 are used.

    Args:
        in_channels: input channels (1: the preprocessed grey DRIVE image of the released code).
        out_channels: output channels (1 in the released code).
        n_basic_layer: base width n (the authors' ``number``, 16); must be a multiple of 4.
        kernel_size: DSConv kernel points K, odd >= 3 (9).
        extend_scope: DSConv offset multiplier (1.0).
        if_offset: False makes every DSConv rigid (1xK / Kx1 conv).
        offset_norm: "batch" (original ``S3_DSConv.py``) or "group" (pro ``S3_DSConv_pro.py``).
        padding_mode: DSConv sampling outside the image, "zeros" (original) or "border" (pro).

    Shapes: (N, in_channels, H, W) float -> (N, out_channels, H, W) logits, H and W multiples
    of 8. Contract (:mod:`medseg.models.contract`): ``size_divisor`` 8, ``output_activation``
    "auto", one output.

    Raises:
        ValueError: invalid arguments (see :class:`medseg.ops.DSConv2d`), or in ``forward`` an
            input that is not 4-D or whose H or W is not a multiple of 8
            (:func:`~medseg.models.contract.check_input_size`; the message names the nearest
            valid sizes).
    """

    #: H and W must be multiples of this (three 2x max-poolings); read by the inference code.
    size_divisor = 8

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        n_basic_layer: int = 16,
        kernel_size: int = 9,
        extend_scope: float = 1.0,
        if_offset: bool = True,
        offset_norm: str = "batch",
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        n = n_basic_layer
        if n < 4 or n % 4 != 0:
            raise ValueError(f"DSCNet n_basic_layer must be a positive multiple of 4, got {n}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.n_basic_layer = n
        self.kernel_size = kernel_size
        dsconv = dict(
            kernel_size=kernel_size,
            extend_scope=extend_scope,
            if_offset=if_offset,
            offset_norm=offset_norm,
            padding_mode=padding_mode,
        )
        widths = [
            # encoder (block input, block output)
            (in_channels, n), (n, 2 * n), (2 * n, 4 * n), (4 * n, 8 * n),
            # decoder: upsampled + skip
            (12 * n, 4 * n), (6 * n, 2 * n), (3 * n, n),
        ]  # fmt: skip
        for (prefix, fuse), (c_in, c_out) in zip(_ENCODER + _DECODER, widths):
            self.add_module(f"conv{prefix}0", ConvGNReLU(c_in, c_out))
            self.add_module(f"conv{prefix}x", DSConv2d(c_in, c_out, morph=0, **dsconv))
            self.add_module(f"conv{prefix}y", DSConv2d(c_in, c_out, morph=1, **dsconv))
            self.add_module(fuse, ConvGNReLU(3 * c_out, c_out))
        self.out_conv = nn.Conv2d(n, out_channels, 1)

    def _block(self, prefix: str, fuse: str, x: torch.Tensor) -> torch.Tensor:
        branches = [getattr(self, f"conv{prefix}{b}")(x) for b in ("0", "x", "y")]
        return getattr(self, fuse)(torch.cat(branches, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H, W) logits; H, W multiples of 8."""
        check_input_size(x, self.size_divisor, "DSCNet", "three 2x poolings")
        skips = []
        for i, (prefix, fuse) in enumerate(_ENCODER):
            if i:
                x = F.max_pool2d(x, 2)
            x = self._block(prefix, fuse, x)
            skips.append(x)
        skips.pop()
        for prefix, fuse in _DECODER:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            x = self._block(prefix, fuse, torch.cat([x, skips.pop()], dim=1))
        return self.out_conv(x)


# ------------------------------------------------------------------------------------------------
# Loading the authors' checkpoints


def load_original(path_or_state_dict: Any, padding_mode: str | None = None) -> DSCNet:
    """Build a :class:`DSCNet` matching a checkpoint of the authors' code and load it strictly.

    Accepts checkpoints saved by the original (``S3_DSCNet.py`` + ``S3_DSConv.py``) or the pro
    (``S3_DSCNet_pro.py`` + ``S3_DSConv_pro.py``) variant; they are told apart by their offset
    norm keys: ``conv0x.bn.running_mean`` etc. (BatchNorm, original -> ``offset_norm="batch"``)
    or ``conv0x.gn_offset.weight`` (GroupNorm, pro -> ``offset_norm="group"``). The input and
    output channels, ``n_basic_layer`` and ``kernel_size`` are read from the shapes of
    ``conv00.conv.weight``, ``out_conv.weight`` and ``conv0x.offset_conv.weight``. No key is
    renamed: medseg uses the authors' module names. ``extend_scope`` and ``if_offset`` are not
    stored in weights; the released configs' 1.0 and True are used (change
    ``module.extend_scope`` / ``module.if_offset`` on the DSConv2d modules if needed).

    Args:
        path_or_state_dict: a path (``str``/``os.PathLike``) to a file written by ``torch.save``
            (read with ``weights_only=True`` on CPU), or a mapping. A dict wrapping the state dict
            under ``"state_dict"`` or ``"model"`` is unwrapped, and a ``"module."`` prefix
            (DataParallel/DDP) is stripped.
        padding_mode: DSConv padding, "zeros" or "border"; None picks the variant's own:
            "zeros" for the original, "border" for pro.

    Returns:
        A :class:`DSCNet` on CPU in training mode, with every weight and buffer loaded.

    Raises:
        CheckpointError: missing or unreadable file, content that is not a state dict, a variant
            that cannot be recognised, missing or unexpected keys, or shape mismatches; the
            message names the file and lists the offending keys.
    """
    where = describe_source(path_or_state_dict)
    state = read_state_dict(path_or_state_dict)
    has_bn = any(k.endswith(".bn.running_mean") for k in state)
    has_gn = any(k.endswith(".gn_offset.weight") for k in state)
    if has_bn == has_gn:
        found = "both" if has_bn else "neither"
        raise CheckpointError(
            f"{where}: cannot tell the DSCNet variant: {found} of '<dsconv>.bn.running_mean' "
            "(original S3_DSConv.py) and '<dsconv>.gn_offset.weight' (pro S3_DSConv_pro.py) "
            "keys found"
        )
    needed = ("conv00.conv.weight", "out_conv.weight", "conv0x.offset_conv.weight")
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointError(
            f"{where}: not a DSCNet state dict; missing keys needed to infer its shape: {', '.join(missing)}"
        )
    first = state["conv00.conv.weight"]
    if first.dim() != 4 or state["out_conv.weight"].dim() != 4:
        raise CheckpointError(f"{where}: conv00.conv.weight / out_conv.weight are not 4-D conv weights")
    variant = "original" if has_bn else "pro"
    if padding_mode is None:
        padding_mode = "zeros" if has_bn else "border"
    try:
        model = DSCNet(
            in_channels=int(first.shape[1]),
            out_channels=int(state["out_conv.weight"].shape[0]),
            n_basic_layer=int(first.shape[0]),
            kernel_size=int(state["conv0x.offset_conv.weight"].shape[0]) // 2,
            offset_norm="batch" if has_bn else "group",
            padding_mode=padding_mode,
        )
    except ValueError as exc:
        raise CheckpointError(f"{where}: shapes do not describe a valid DSCNet: {exc}") from exc
    load_strict(
        model,
        state,
        where,
        f"authors' DSCNet ({variant} variant, inferred n_basic_layer={model.n_basic_layer}, "
        f"kernel_size={model.kernel_size})",
    )
    return model
