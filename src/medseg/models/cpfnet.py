"""CPFNet: Context Pyramid Fusion Network (Feng et al., "CPFNet: Context Pyramid Fusion Network for
Medical Image Segmentation", IEEE TMI 39(10), 2020).

Network of the authors' released code, ``OCT/CPFNet/model/BaseNet.py`` (class ``CPFNet``, with
``model/resnet.py``), github.com/FENGShuanglang/CPFNet_Project (MIT). Written independently; the
module names are the authors' (``sap``, ``decoder5`` ... ``decoder2``, ``mce_2`` / ``mce_3`` /
``mce_4`` for the GPG modules, ``main_head``; inside SAPF ``conv3x3``, ``bn``, ``conv1x1``,
``conv3x3_1``, ``conv3x3_2``, ``conv_last``, ``gamma``; inside GPG ``conv5`` ... ``conv2``,
``dilation1`` ... ``dilation4``, ``conv_out``; inside a separable conv ``conv1``, ``bn``,
``pointwise``; inside Conv-BN-ReLU ``conv``, ``bn``), except that the ImageNet ResNet-34 lives in
``encoder`` (medseg's contract) where the authors' attribute is ``backbone``; :func:`load_original`
renames ``backbone.`` -> ``encoder.`` and nothing else.

Quirks of the released code, followed here (read from the code, github.com/FENGShuanglang/CPFNet_Project, ``OCT/CPFNet/model/BaseNet.py``; where the
paper's description differs, the code wins):

- SAPF applies **one** 3x3 weight with dilations 1, 2 and 4 (shared weights); the conv bias is
  added only on the dilation-1 branch. The two fusion steps (b1 with b2, then the result with b3)
  both use the *first* of two allocated attention sets; the second set is never used.
- decoder5 skips its 3x3 Conv-BN-ReLU (it only upsamples and applies the 1x1 Conv-BN-ReLU).
- Every DecoderBlock allocates a SAPF that its forward never calls; ResNet-34's ``fc`` is kept.
- The output is a log-softmax over classes, returned twice by the original's forward (no deep
  supervision); :meth:`CPFNet.forward` returns it once.

The dead modules hold 12,619,134 parameters (ResNet ``fc`` 513,000; the four DecoderBlock SAPFs
8,036,500; SAPF's second attention set 1,709,314; decoder5's 3x3 Conv-BN 2,360,320).
``keep_unused=True`` builds them (43,269,891 parameters with 2 classes, the original's count,
needed to load its state dicts); ``keep_unused=False`` (default) leaves them out: 30,650,757
parameters, all of which receive gradients; outputs are identical for equal weights.

Input: the released code feeds 8-bit images scaled to [0, 1] (/255) with no ImageNet mean/std
normalisation, even with the ImageNet encoder. Initialisation follows the code: GPG, decoder
blocks and head He-uniform with BN weights ~ N(1, 0.02); top-level SAPF PyTorch defaults; the
encoder torchvision's init unless ``encoder_weights`` is given (the original always loads them).
Gradient checkpointing: ``model.encoder.gradient_checkpointing = True`` checkpoints ResNet stages
``layer1`` ... ``layer4``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.errors import CheckpointError
from medseg.models import register_model
from medseg.models.contract import NetworkContract, check_input_size
from medseg.models.encoders.resnet import ResNetEncoder, resnet34_encoder
from medseg.models.weights import describe_source, load_strict, read_state_dict

__all__ = [
    "ConvBnRelu",
    "SeparableConv2d",
    "SAPF",
    "GPG",
    "DecoderBlock",
    "CPFNetHead",
    "CPFNet",
    "load_original",
    "original_key_to_medseg",
]


def _init_authors(module: nn.Module) -> None:
    """The authors' init for GPG, DecoderBlock and BaseNetHead (``BaseNet.py``): every conv
    He-uniform (fan_in, gain sqrt(2)) with zero bias; every BatchNorm weight ~ N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class ConvBnRelu(nn.Module):
    """Conv (no bias) -> BatchNorm -> ReLU; the authors' ``ConvBnRelu`` (attributes ``conv``, ``bn``).

    (N, in_ch, H, W) float -> (N, out_ch, H', W') float, values >= 0 (H' = H for stride 1 with
    ``padding = (kernel_size - 1) // 2``).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_ch, H, W) -> (N, out_ch, H, W), values >= 0."""
        return self.relu(self.bn(self.conv(x)))


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 conv with dilation ``d`` -> BatchNorm -> pointwise 1x1 conv (no biases);
    the authors' ``SeparableConv2d`` (attributes ``conv1``, ``bn``, ``pointwise``).

    (N, in_ch, H, W) float -> (N, out_ch, H, W) float (padding = dilation keeps the size).
    """

    def __init__(self, in_ch: int, out_ch: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, padding=dilation, dilation=dilation, groups=in_ch, bias=False)
        self.bn = nn.BatchNorm2d(in_ch)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_ch, H, W) -> (N, out_ch, H, W)."""
        return self.pointwise(self.bn(self.conv1(x)))


class SAPF(nn.Module):
    """Scale-Aware Pyramid Fusion (paper Sec. II-C, Fig. 4; the authors' class ``SAPblock``).

    1. One 3x3 conv weight ``conv3x3.weight`` (C -> C) applied with dilation 1, 2 and 4 (padding
       = dilation): the **same** Parameter in all three branches; its bias ``conv3x3.bias`` is
       added only on the dilation-1 branch (as the code does). Each branch has its own
       BatchNorm ``bn[0..2]`` and no ReLU: b1, b2, b3.
    2. Pairwise spatial attention: concat(b1, b2) -> 1x1 conv 2C -> C -> ReLU -> 3x3 conv
       C -> C/2 -> ReLU -> 3x3 conv C/2 -> 2 -> softmax over the 2 maps (a1, a2), each
       (N, 1, H, W); fused = a1 * b1 + a2 * b2. The same three convs (index 0 of ``conv1x1``,
       ``conv3x3_1``, ``conv3x3_2``) then fuse (fused, b3) the same way.
    3. out = ReLU(gamma * fused + (1 - gamma) * x), gamma a learnable scalar initialised to 0,
       then ``conv_last``: 1x1 Conv-BN-ReLU C -> C.

    At initialisation (gamma = 0) the output is ``conv_last(ReLU(x))``.

    Args:
        channels: C (512 on ResNet-34's last stage).
        keep_unused: also build the second attention set (index 1 of ``conv1x1``,
            ``conv3x3_1``, ``conv3x3_2``) the authors allocate but never use (1,709,314
            parameters at C = 512).

    Shapes: (N, C, H, W) float32 -> (N, C, H, W) float32, values >= 0. Initialisation: PyTorch
    defaults (the authors' top-level SAPF is not re-initialised).
    """

    def __init__(self, channels: int, keep_unused: bool = False) -> None:
        super().__init__()
        c = channels
        n_sets = 2 if keep_unused else 1
        self.conv3x3 = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.ModuleList([nn.BatchNorm2d(c) for _ in range(3)])
        self.conv1x1 = nn.ModuleList([nn.Conv2d(2 * c, c, 1) for _ in range(n_sets)])
        self.conv3x3_1 = nn.ModuleList([nn.Conv2d(c, c // 2, 3, padding=1) for _ in range(n_sets)])
        self.conv3x3_2 = nn.ModuleList([nn.Conv2d(c // 2, 2, 3, padding=1) for _ in range(n_sets)])
        self.conv_last = ConvBnRelu(c, c, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def _attention(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Spatially weighted sum of a and b (N, C, H, W) with a 2-map softmax attention."""
        att = F.relu(self.conv1x1[0](torch.cat([a, b], dim=1)))
        att = F.relu(self.conv3x3_1[0](att))
        att = torch.softmax(self.conv3x3_2[0](att), dim=1)
        return att[:, 0:1] * a + att[:, 1:2] * b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float32 -> (N, C, H, W) float32, values >= 0."""
        w = self.conv3x3.weight
        b1 = self.bn[0](F.conv2d(x, w, self.conv3x3.bias, padding=1, dilation=1))
        b2 = self.bn[1](F.conv2d(x, w, None, padding=2, dilation=2))
        b3 = self.bn[2](F.conv2d(x, w, None, padding=4, dilation=4))
        fused = self._attention(self._attention(b1, b2), b3)
        return self.conv_last(F.relu(self.gamma * fused + (1 - self.gamma) * x))


class GPG(nn.Module):
    """Global Pyramid Guidance (paper Sec. II-B, Fig. 3; the authors' ``GPG_2``/``GPG_3``/``GPG_4``).

    Takes k encoder maps, shallowest first, levels ``6 - k`` ... 5 (GPG-4: c4, c5; GPG-3: c3, c4,
    c5; GPG-2: c2 ... c5). Each goes through 3x3 conv (no bias) -> BN -> ReLU to ``width``
    (attribute ``conv<level>``); the deeper ones are upsampled bilinearly (align_corners=True) to
    the shallowest map's size and all are concatenated (k * width). k parallel depthwise-separable
    3x3 convs with dilations 1, 2, 4, ... (``dilation1`` ... ``dilation<k>``: separable conv
    k * width -> width, BN, ReLU) are concatenated and fused by ``conv_out``: 1x1 conv (no bias)
    -> BN, **no ReLU**.

    Args:
        in_channels: channels of the k inputs, shallowest first (GPG-2 on ResNet-34:
            (64, 128, 256, 512)).
        width: channels of every branch and of the output (GPG-2/3/4: 64/128/256).

    Shapes: list of k float32 maps (N, in_channels[i], H_i, W_i) -> (N, width, H_0, W_0) float32.
    Initialisation: the authors' (He-uniform convs, BN weight ~ N(1, 0.02)).

    """

    def __init__(self, in_channels: Sequence[int], width: int) -> None:
        super().__init__()
        k = len(in_channels)
        if not 2 <= k <= 4:
            raise ValueError(f"GPG takes 2 to 4 inputs (levels c2..c5), got {k}")
        self.width = width
        self.n_inputs = k
        self.levels = tuple(range(6 - k, 6))
        self.dilations = tuple(2**i for i in range(k))
        # Absent levels / branches are None attributes (no state-dict keys), so that the forward
        # below stays TorchScript-scriptable with the authors' attribute names.
        convs = dict(zip(reversed(self.levels), reversed(list(in_channels))))
        self.conv5 = self._level(convs[5], width)
        self.conv4 = self._level(convs[4], width)
        self.conv3 = self._level(convs[3], width) if 3 in convs else None
        self.conv2 = self._level(convs[2], width) if 2 in convs else None
        self.conv_out = nn.Sequential(nn.Conv2d(k * width, width, 1, bias=False), nn.BatchNorm2d(width))
        self.dilation1 = self._branch(k * width, width, 1)
        self.dilation2 = self._branch(k * width, width, 2)
        self.dilation3 = self._branch(k * width, width, 4) if k >= 3 else None
        self.dilation4 = self._branch(k * width, width, 8) if k >= 4 else None
        _init_authors(self)

    @staticmethod
    def _level(in_ch: int, width: int) -> nn.Sequential:
        conv = nn.Conv2d(in_ch, width, 3, padding=1, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True))

    @staticmethod
    def _branch(in_ch: int, width: int, dilation: int) -> nn.Sequential:
        return nn.Sequential(SeparableConv2d(in_ch, width, dilation), nn.BatchNorm2d(width), nn.ReLU(inplace=True))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """k maps shallowest first -> (N, width, H_0, W_0) at the first map's size (BN output).

        Raises:
            ValueError: the number of maps is not k.
        """
        n = len(feats)
        if n != self.n_inputs:
            raise ValueError(f"GPG on levels {list(self.levels)} takes {self.n_inputs} maps, got {n}")
        h, w = feats[0].shape[-2], feats[0].shape[-1]
        # Concatenation order as the authors': deepest first (conv5, conv4, ...); all but the
        # shallowest upsampled to its size.
        maps = [self.conv5(feats[n - 1]), self.conv4(feats[n - 2])]
        if self.conv3 is not None:
            maps.append(self.conv3(feats[n - 3]))
        if self.conv2 is not None:
            maps.append(self.conv2(feats[n - 4]))
        for i in range(n - 1):
            maps[i] = F.interpolate(maps[i], size=[h, w], mode="bilinear", align_corners=True)
        x = torch.cat(maps, dim=1)
        branches = [self.dilation1(x), self.dilation2(x)]
        if self.dilation3 is not None:
            branches.append(self.dilation3(x))
        if self.dilation4 is not None:
            branches.append(self.dilation4(x))
        return self.conv_out(torch.cat(branches, dim=1))


class DecoderBlock(nn.Module):
    """The authors' ``DecoderBlock``: [3x3 Conv-BN-ReLU in -> in] -> bilinear x2
    (align_corners=True) -> 1x1 Conv-BN-ReLU in -> out.

    Args:
        in_ch, out_ch: channels.
        last: the authors' ``last=True`` (decoder5): the 3x3 Conv-BN-ReLU is skipped.
        keep_unused: also build what the original allocates but never runs: the 3x3
            Conv-BN-ReLU of a ``last`` block (``conv_3x3``) and a SAPF(in_ch) (``sap``, with its
            own unused second attention set).

    Shapes: (N, in_ch, H, W) float32 -> (N, out_ch, 2H, 2W) float32, values >= 0.
    Initialisation: the authors' (He-uniform convs, BN weight ~ N(1, 0.02)).
    """

    def __init__(self, in_ch: int, out_ch: int, last: bool = False, keep_unused: bool = False) -> None:
        super().__init__()
        self.last = last
        self.conv_3x3 = ConvBnRelu(in_ch, in_ch, 3, padding=1) if (keep_unused or not last) else None
        self.conv_1x1 = ConvBnRelu(in_ch, out_ch, 1)
        self.sap = SAPF(in_ch, keep_unused=True) if keep_unused else None
        _init_authors(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_ch, H, W) -> (N, out_ch, 2H, 2W), values >= 0."""
        if not self.last and self.conv_3x3 is not None:
            x = self.conv_3x3(x)
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        return self.conv_1x1(x)


class CPFNetHead(nn.Module):
    """The authors' ``BaseNetHead`` (is_aux=False, scale 2): bilinear x2 (align_corners=True) ->
    1x1 Conv-BN-ReLU in -> 32 -> 3x3 Conv-BN-ReLU 32 -> 32 (``conv_1x1_3x3``) -> 1x1 conv with
    bias 32 -> classes (``conv_1x1_2``); 33 parameters per class in the last conv.

    Shapes: (N, in_ch, H, W) float32 -> (N, num_classes, 2H, 2W) float32 logits.
    """

    def __init__(self, in_ch: int, num_classes: int) -> None:
        super().__init__()
        self.conv_1x1_3x3 = nn.Sequential(ConvBnRelu(in_ch, 32, 1), ConvBnRelu(32, 32, 3, padding=1))
        self.conv_1x1_2 = nn.Conv2d(32, num_classes, 1)
        _init_authors(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_ch, H, W) -> (N, num_classes, 2H, 2W) logits."""
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        return self.conv_1x1_2(self.conv_1x1_3x3(x))


@register_model("cpfnet")
class CPFNet(NetworkContract):
    """CPFNet: ImageNet ResNet-34 encoder, SAPF on the deepest map, GPG skips, 4 decoder blocks.

    Wiring (``BaseNet.py``), with c1 = stem ReLU output (64 ch, 1/2), c2 ... c5 = layer1 ...
    layer4 (64, 128, 256, 512 ch at 1/4 ... 1/32):

    - m2 = GPG-2(c2, c3, c4, c5) (64 ch, 1/4, dilations {1, 2, 4, 8});
      m3 = GPG-3(c3, c4, c5) (128 ch, 1/8, {1, 2, 4}); m4 = GPG-4(c4, c5) (256 ch, 1/16, {1, 2}).
    - d4 = ReLU(decoder5(SAPF(c5)) + m4)  (decoder5: x2 + 1x1 512 -> 256 only)
    - d3 = ReLU(decoder4(d4) + m3)        (256 -> 128)
    - d2 = ReLU(decoder3(d3) + m2)        (128 -> 64)
    - d1 = decoder2(d2) + c1              (64 -> 64, no ReLU; both terms are ReLU outputs, so d1 >= 0)
    - out = log_softmax(head(d1), dim=1)  (head: x2, 64 -> 32 -> 32 -> num_classes)

    Args:
        in_channels: 3 (the original: the previous, current and next slice of a volume stacked
            as 3 channels, scaled to [0, 1]; or an RGB image) or 1 (a grey image, repeated to 3
            channels inside ``forward`` because the ImageNet stem takes 3: a single-slice
            stand-in for the original's 2.5D input, with the same weights).
        num_classes: output channels = classes including background (the original's argument
            is ``out_planes``, default 1; its only released config, OCT, uses 4; medseg's default
            is 2 for binary tasks). ``out_planes`` is accepted as an alias.
        expansion, base_channel: the original's channel-plan switches; only the original's
            defaults (2, 32) fit its ResNet-34 encoder, anything else is a ValueError.
        keep_unused: build the original's never-used modules (ResNet ``fc``, each DecoderBlock's
            SAPF, SAPF's second attention set, decoder5's 3x3 conv) so the layout equals the
            authors' state dict (see :func:`load_original`). Outputs do not change.
        encoder_weights: path to torchvision's ImageNet ``resnet34-333f7ec4.pth`` (or its
            re-save ``resnet34-b627a593.pth``), loaded strictly into ``encoder`` (its ``fc.*`` is
            dropped unless ``keep_unused``); None trains from scratch. The original always
            starts from these weights.
        out_planes: alias of ``num_classes`` (the original's name); wins over a ``num_classes``
            left at its default, a different explicit ``num_classes`` is a ValueError.

    Parameters: 30,650,757 with 2 classes (+33 per extra class); 43,269,891 with
    ``keep_unused=True``.

    Shapes: (N, in_channels, H, W) float32, H and W multiples of 32 (``size_divisor``) ->
    (N, num_classes, H, W) float32 **log-probabilities** (log-softmax over dim 1; ``exp`` sums
    to 1). softmax of the output is the class probability, so the engine's softmax is correct.
    Contract (:mod:`medseg.models.contract`): ``out_channels`` = ``num_classes``,
    ``size_divisor`` 32, ``output_activation`` "auto" (softmax of the log-softmax), one output.

    Raises:
        ValueError: in ``__init__``, in_channels not 1 or 3, num_classes < 1, conflicting
            ``out_planes``, unsupported expansion/base_channel; in ``forward``, a size that is
            not a multiple of 32 or a wrong channel count.
        medseg.errors.CheckpointError: ``encoder_weights`` does not fit torchvision's ResNet-34.
    """

    size_divisor = 32  # five stride-2 stages; decoder x2 upsamplings are added to the skips
    __constants__ = ["size_divisor"]

    @property
    def out_channels(self) -> int:
        """Output channels C_out: the contract's name for ``num_classes`` (the authors'
        ``out_planes``), which stays the constructor argument and attribute; read-only."""
        return self.num_classes

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        expansion: int = 2,
        base_channel: int = 32,
        keep_unused: bool = False,
        encoder_weights: str | os.PathLike[str] | None = None,
        out_planes: int | None = None,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(
                f"CPFNet takes in_channels 1 (grey, repeated to RGB) or 3 (RGB / 3 stacked slices), got {in_channels}"
            )
        if out_planes is not None:
            if num_classes not in (2, out_planes):
                raise ValueError(f"num_classes={num_classes} and its alias out_planes={out_planes} disagree")
            num_classes = out_planes
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if (expansion, base_channel) != (2, 32):
            raise ValueError(
                f"expansion={expansion}, base_channel={base_channel}: only the original's default "
                "channel plan (expansion=2, base_channel=32) fits its ResNet-34 encoder"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.keep_unused = keep_unused

        self.encoder: ResNetEncoder = resnet34_encoder(keep_fc=keep_unused)
        if encoder_weights is not None:
            self.encoder.load_weights(encoder_weights)
        self.sap = SAPF(512, keep_unused=keep_unused)
        self.decoder5 = DecoderBlock(512, 256, last=True, keep_unused=keep_unused)
        self.decoder4 = DecoderBlock(256, 128, keep_unused=keep_unused)
        self.decoder3 = DecoderBlock(128, 64, keep_unused=keep_unused)
        self.decoder2 = DecoderBlock(64, 64, keep_unused=keep_unused)
        self.mce_2 = GPG((64, 128, 256, 512), width=64)
        self.mce_3 = GPG((128, 256, 512), width=128)
        self.mce_4 = GPG((256, 512), width=256)
        self.main_head = CPFNetHead(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) float32 -> (N, num_classes, H, W) float32 log-softmax.

        Raises:
            ValueError: x is not (N, in_channels, H, W), or H or W is not a multiple of 32
                (:func:`~medseg.models.contract.check_input_size`).
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"CPFNet expects (N, {self.in_channels}, H, W) input, got {list(x.shape)}")
        check_input_size(x, self.size_divisor, "CPFNet", "five stride-2 stages")
        if self.in_channels == 1:
            x = x.repeat(1, 3, 1, 1)
        feats = self.encoder(x)
        c1, c2, c3, c4, c5 = feats[0], feats[1], feats[2], feats[3], feats[4]
        m2 = self.mce_2([c2, c3, c4, c5])
        m3 = self.mce_3([c3, c4, c5])
        m4 = self.mce_4([c4, c5])
        d4 = F.relu(self.decoder5(self.sap(c5)) + m4)
        d3 = F.relu(self.decoder4(d4) + m3)
        d2 = F.relu(self.decoder3(d3) + m2)
        d1 = self.decoder2(d2) + c1
        return F.log_softmax(self.main_head(d1), dim=1)


def original_key_to_medseg(key: str) -> str:
    """Map one key of the authors' CPFNet state dict to ours: ``backbone.`` -> ``encoder.``, any
    other key unchanged (``module.`` prefixes are stripped earlier by ``read_state_dict``)."""
    return "encoder." + key[len("backbone.") :] if key.startswith("backbone.") else key


def load_original(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, torch.Tensor], in_channels: int = 3
) -> CPFNet:
    """Build a CPFNet from a state dict saved by the authors' code and load it strictly.

    Accepts a path (their ``checkpoints/*.pth.tar``: ``{"state_dict": ...}`` of an
    ``nn.DataParallel`` model) or a mapping. Key map, nothing else renamed:

    - a leading ``module.`` (``nn.DataParallel``) is stripped;
    - ``backbone.<rest>`` -> ``encoder.<rest>`` (ResNet-34 incl. ``backbone.fc.*``);
    - every other key (``sap.*``, ``decoder5.*`` ... ``decoder2.*`` incl. their unused ``sap.*``,
      ``mce_2.*``/``mce_3.*``/``mce_4.*``, ``main_head.*``) is the same in both.

    The number of classes is read from ``main_head.conv_1x1_2.weight`` (classes, 32, 1, 1); the
    network is built with ``keep_unused=True`` (the original's layout, 43,269,891 parameters with
    2 classes). ``in_channels`` = 1 gives a network that repeats grey input to 3 channels (same
    weights).

    Returns:
        CPFNet (in train mode, as constructed) holding the file's tensors.

    Raises:
        medseg.errors.CheckpointError: unreadable file, ``main_head.conv_1x1_2.weight`` missing
            or not a (classes, 32, 1, 1) conv weight, or missing / unexpected keys or shape
            mismatches (all listed, under our names; ``encoder.*`` keys are the file's
            ``backbone.*``).
    """
    where = describe_source(path_or_state_dict)
    state = read_state_dict(path_or_state_dict)
    head_key = "main_head.conv_1x1_2.weight"
    if head_key not in state:
        raise CheckpointError(
            f"{where}: not an authors' CPFNet state dict; missing key {head_key} (needed for the class count)"
        )
    head = state[head_key]
    if head.dim() != 4 or tuple(head.shape[1:]) != (32, 1, 1):
        raise CheckpointError(f"{where}: {head_key} has shape {tuple(head.shape)}, expected (classes, 32, 1, 1)")
    model = CPFNet(in_channels=in_channels, num_classes=int(head.shape[0]), keep_unused=True)
    what = f"authors' CPFNet ({model.num_classes} classes, keep_unused=True; backbone.* read as encoder.*)"
    return load_strict(model, state, where, what, original_key_to_medseg)
