"""DSCNet, 3D (Qi et al., "Dynamic Snake Convolution based on Topological Geometric Constraints
for Tubular Structure Segmentation", ICCV 2023, arXiv 2307.08388).

Network of the authors' released 3D code, ``DSCNet_3D_opensource/Code/Kipa/DSCNet/S3_DSCNet.py``
(with ``S3_DSConv.py``; github.com/YaoleiQi/DSCNet, commit d453499), trained there on KiPA22
(kidney arteries and veins). The paper describes the 2D network; the 3D one exists only as
code, so the code is followed throughout. Written independently; the module names are the
authors' (``conv00``, ``conv0x``, ``conv0y``, ``conv0z``, ``conv1``, ..., ``conv17``,
``out_conv``; inside each DSConv ``offset_conv``, ``bn``, ``dcn_conv_x``, ``dcn_conv_y``,
``dcn_conv_z``, ``dcn_conv``, ``gn``; inside each plain block ``conv``, ``gn``), so their state
dicts load with no renaming (:func:`load_original`).

What the paper describes but the released code (and so this network) lacks: the multi-view
feature fusion with random drop (the ``dim`` argument of the authors' class is a placeholder)
and the topological loss TCLoss. The released 3D code trains with a per-voxel binary cross
entropy on the softmax outputs against one-hot labels (``S3_Loss.cross_loss``). The operator's
own deviations from the authors' ``DCN_Conv`` (the morph-2 centre bug and the ``if_offset=False``
layout bug fixed, exact indexing for large volumes) are listed in :mod:`medseg.ops.dsconv3d`.
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
from medseg.ops.dsconv3d import DSConv3d

__all__ = ["DSCNet3D", "ConvGNReLU3d", "load_original"]

# (prefix of the four branches, name of the fuse conv) per block, in forward order; the
# authors' attribute names: conv{p}0 = 3x3x3 branch, conv{p}x / y / z = DSConv morph 0 / 1 / 2.
_ENCODER = (("0", "conv1"), ("2", "conv3"), ("4", "conv5"), ("6", "conv7"))
_DECODER = (("12", "conv13"), ("14", "conv15"), ("16", "conv17"))
# branch suffix -> DSConv3d morph (kernel along x = W, y = H, z = D)
_MORPHS = (("x", 0), ("y", 1), ("z", 2))


class ConvGNReLU3d(nn.Module):
    """3x3x3 conv (bias, padding 1) -> GroupNorm(out // 4) -> ReLU; the authors' 3D
    ``EncoderConv`` / ``DecoderConv`` (identical classes). (N, in_ch, D, H, W) float32 ->
    (N, out_ch, D, H, W) float32, values >= 0."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, 3, padding=1)
        self.gn = nn.GroupNorm(out_ch // 4, out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_ch, D, H, W) -> (N, out_ch, D, H, W), values >= 0."""
        return self.relu(self.gn(self.conv(x)))


@register_model("dscnet3d")
class DSCNet3D(NetworkContract):
    """The authors' 3D DSCNet: a 4-level U-Net whose blocks run four branches in parallel.

    Every block applies to the same input (a) 3x3x3 conv + GroupNorm(out // 4) + ReLU, (b) a
    DSConv along x (W, morph 0), (c) along y (H, morph 1), (d) along z (D, morph 2), each
    in -> out channels (:class:`medseg.ops.dsconv3d.DSConv3d`); concatenates them (4*out, in
    that order) and fuses with a 3x3x3 conv + GroupNorm + ReLU to ``out``. Encoder widths
    in -> n -> 2n -> 4n -> 8n (the 2D network's) with three 2x2x2 max-poolings (bottleneck at
    1/8); decoder: trilinear x2 upsampling (``align_corners=True``, as the authors'
    ``nn.Upsample``), concatenation [upsampled, skip], blocks 12n -> 4n, 6n -> 2n, 3n -> n;
    head 1x1x1 conv n -> out_channels.

    Returns **logits**. The authors end with a softmax over the classes; by the medseg
    convention (:mod:`medseg.models.contract`) the network returns the pre-activation and the
    engine applies it (``output_activation`` "auto": softmax over C for more than one output
    channel, sigmoid for one), as for the other multi-class networks. The authors' constructed
    but unused Sigmoid, Dropout(0.5) and stored ``kernel_size``/``dim``/``device`` have no
    parameters and are omitted.

    DSConv kernel size: the authors' network passes a literal 3 to every DSConv, whatever its
    ``kernel_size`` argument (the KiPA config says 9, and the author says 9 in issue #35), so 3
    is the faithful default here; ``kernel_size=9`` builds the network the config describes.

    Parameters with the defaults (1 in, 3 out, n = 16, K = 3): 7,225,923 registered, equal to
    the authors' class built with their KiPA config (counted by running their code). Each DSConv
    allocates, as the authors', the three axis convs and a full K x K x K conv but uses one axis
    conv, so 2,665,872 never receive a gradient: 4,560,051 are used (also measured on their
    class).

    Deviations from the authors' ``S3_DSCNet.py``: logits instead of softmax (above); the
    decoder's concatenation is computed once per block instead of once per branch (same values);
    ``offset_norm`` and ``padding_mode`` are medseg options (defaults: the authors' BatchNorm
    offsets and boundary). Bugs fixed in the operator: see :mod:`medseg.ops.dsconv3d`.

    Args:
        in_channels: input channels (the authors' ``n_channels``; 1, a CT volume).
        out_channels: output channels (the authors' ``n_classes``; 3 in their KiPA config).
        n_basic_layer: base width n (the authors' ``number``, 16); a multiple of 4.
        kernel_size: DSConv kernel points K, odd >= 3 (3: the authors' hard-coded value).
        extend_scope: DSConv offset multiplier (1.0).
        if_offset: False makes every DSConv rigid (a 1x1xK / 1xKx1 / Kx1x1 conv).
        offset_norm: "batch" (the authors' BatchNorm3d) or "group" (GroupNorm(K, 6K)).
        padding_mode: DSConv sampling outside the volume: "original" (the authors' boundary,
            default), "zeros" (trilinear zero padding) or "border" (replicate); the three agree
            at integer positions inside the volume (:func:`medseg.ops.dsconv3d.trilinear_sample`).

    Shapes: (N, in_channels, D, H, W) float32 -> (N, out_channels, D, H, W) float32 logits; D,
    H, W in voxels, multiples of 8. Contract: ``spatial_dims`` 3, ``size_divisor`` 8,
    ``output_activation`` "auto", one output. Smallest volumes: in training at batch size 1 the
    offset BatchNorm of the 1/8 bottleneck needs more than one voxel (8x8x8 fails there with
    PyTorch's "Expected more than 1 value per channel when training", as the authors' code
    does); use a side of 16. Memory: every DSConv holds K samples per input voxel and channel
    (the authors' ROI 128x96x96 at batch 1: "about 16653 MiB" on an RTX 3090, their
    ``S0_Main.py``).

    Parity with the authors' class (scratch check, their code run on CPU with their weights
    loaded here): outputs equal their softmax probabilities to 1e-6 (float32, 16x16x16 with
    n = 16 and 8x16x24 with n = 4, train and eval mode, batch 2) once their morph-2 centre bug
    is patched in their copy; unpatched they differ by up to 0.3 in probability, which is that
    bug (:mod:`medseg.ops.dsconv3d`). Gradients agree to 5e-6 relative (float64; their
    coordinates are float32), and the same parameters receive none.

    Raises:
        ValueError: invalid arguments (``n_basic_layer``; the rest see
            :class:`medseg.ops.dsconv3d.DSConv3d`), or in ``forward`` an input that is not 5-D
            (a 4-D image batch is refused: "expects a volume (N, C, D, H, W)") or whose D, H or W
            is not a multiple of 8 (:func:`~medseg.models.contract.check_input_size`; the message
            names the size and the nearest valid sizes).
    """

    #: The input is a volume batch (N, C, D, H, W).
    spatial_dims = 3
    #: D, H and W must be multiples of this (three 2x max-poolings); read by the inference code.
    size_divisor = 8

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 3,
        n_basic_layer: int = 16,
        kernel_size: int = 3,
        extend_scope: float = 1.0,
        if_offset: bool = True,
        offset_norm: str = "batch",
        padding_mode: str = "original",
    ) -> None:
        super().__init__()
        n = n_basic_layer
        if not isinstance(n, int) or n < 4 or n % 4 != 0:
            raise ValueError(f"DSCNet3D n_basic_layer must be a positive multiple of 4, got {n!r}")
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
            self.add_module(f"conv{prefix}0", ConvGNReLU3d(c_in, c_out))
            for axis, morph in _MORPHS:
                self.add_module(f"conv{prefix}{axis}", DSConv3d(c_in, c_out, morph=morph, **dsconv))
            self.add_module(fuse, ConvGNReLU3d(4 * c_out, c_out))
        self.out_conv = nn.Conv3d(n, out_channels, 1)

    def _block(self, prefix: str, fuse: str, x: torch.Tensor) -> torch.Tensor:
        branches = [getattr(self, f"conv{prefix}{b}")(x) for b in ("0", "x", "y", "z")]
        return getattr(self, fuse)(torch.cat(branches, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, D, H, W) -> (N, out_channels, D, H, W) logits; D, H, W multiples of 8."""
        check_input_size(x, self.size_divisor, "DSCNet3D", "three 2x poolings", spatial_dims=self.spatial_dims)
        skips = []
        for i, (prefix, fuse) in enumerate(_ENCODER):
            if i:
                x = F.max_pool3d(x, 2)
            x = self._block(prefix, fuse, x)
            skips.append(x)
        skips.pop()
        for prefix, fuse in _DECODER:
            x = F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=True)
            x = self._block(prefix, fuse, torch.cat([x, skips.pop()], dim=1))
        return self.out_conv(x)


# ------------------------------------------------------------------------------------------------
# Loading the authors' checkpoints


def load_original(path_or_state_dict: Any, padding_mode: str | None = None) -> DSCNet3D:
    """Build a :class:`DSCNet3D` matching a checkpoint of the authors' 3D code and load it strictly.

    For state dicts saved by ``DSCNet_3D_opensource/Code/Kipa/DSCNet/S3_Train_Process.py``
    (``torch.save(net.state_dict(), ...)``). The input and output channels, ``n_basic_layer``
    and ``kernel_size`` are read from the shapes of ``conv00.conv.weight`` (n, C_in, 3, 3, 3),
    ``out_conv.weight`` (C_out, n, 1, 1, 1) and ``conv0x.offset_conv.weight`` (6K, C_in, 3, 3,
    3). The offset norm is told from the keys: ``<dsconv>.bn.*`` (the authors' BatchNorm3d ->
    ``offset_norm="batch"``) or ``<dsconv>.gn_offset.*`` (medseg's GroupNorm option). No key is
    renamed: medseg uses the authors' module names. ``extend_scope`` and ``if_offset`` are not
    stored in weights; the released config's 1.0 and True are used (change
    ``module.extend_scope`` / ``module.if_offset`` on the DSConv3d modules if needed).

    Args:
        path_or_state_dict: a path (``str``/``os.PathLike``) to a file written by ``torch.save``
            (read with ``weights_only=True`` on CPU) or a ``.safetensors`` file, or a mapping. A
            dict wrapping the state dict under ``"state_dict"`` or ``"model"`` is unwrapped, and a
            ``"module."`` prefix (DataParallel/DDP) is stripped.
        padding_mode: DSConv boundary, "original", "zeros" or "border"; None picks "original"
            (the authors' sampling).

    Returns:
        A :class:`DSCNet3D` on CPU in training mode, with every weight and buffer loaded.

    Raises:
        CheckpointError: missing or unreadable file, content that is not a state dict, a 2D
            DSCNet state dict, shapes that describe no valid DSCNet3D, missing or unexpected
            keys, or shape mismatches; the message names the file and lists the offending keys.
    """
    where = describe_source(path_or_state_dict)
    state = read_state_dict(path_or_state_dict)
    needed = ("conv00.conv.weight", "out_conv.weight", "conv0x.offset_conv.weight")
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointError(
            f"{where}: not a DSCNet3D state dict; missing keys needed to infer its shape: {', '.join(missing)}"
        )
    first, head, offset = (state[k] for k in needed)
    if first.dim() == 4:
        raise CheckpointError(
            f"{where}: conv00.conv.weight is 4-D {tuple(first.shape)}: a 2D DSCNet state dict; load it with "
            "medseg.models.dscnet.load_original"
        )
    if first.dim() != 5 or head.dim() != 5 or offset.dim() != 5 or offset.shape[0] % 6 != 0:
        raise CheckpointError(
            f"{where}: not a DSCNet3D state dict: conv00.conv.weight {tuple(first.shape)}, out_conv.weight "
            f"{tuple(head.shape)} and conv0x.offset_conv.weight {tuple(offset.shape)} must be 5-D conv weights, "
            "the last with 6K output channels"
        )
    has_bn = any(k.endswith(".bn.running_mean") for k in state)
    has_gn = any(k.endswith(".gn_offset.weight") for k in state)
    if has_bn == has_gn:
        found = "both" if has_bn else "neither"
        raise CheckpointError(
            f"{where}: cannot tell the DSConv offset norm: {found} of '<dsconv>.bn.running_mean' (the "
            "authors' BatchNorm3d) and '<dsconv>.gn_offset.weight' (GroupNorm) keys found"
        )
    try:
        model = DSCNet3D(
            in_channels=int(first.shape[1]),
            out_channels=int(head.shape[0]),
            n_basic_layer=int(first.shape[0]),
            kernel_size=int(offset.shape[0]) // 6,
            offset_norm="batch" if has_bn else "group",
            padding_mode="original" if padding_mode is None else padding_mode,
        )
    except ValueError as exc:
        raise CheckpointError(f"{where}: shapes do not describe a valid DSCNet3D: {exc}") from exc
    load_strict(
        model,
        state,
        where,
        f"authors' 3D DSCNet (inferred in_channels={model.in_channels}, out_channels={model.out_channels}, "
        f"n_basic_layer={model.n_basic_layer}, kernel_size={model.kernel_size})",
    )
    return model
