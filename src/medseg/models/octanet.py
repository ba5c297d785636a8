"""OCTA-Net (Ma et al., "ROSE: A Retinal OCT-Angiography Vessel Segmentation Dataset and New
Model", IEEE TMI 40(3):928-939, 2021, doi 10.1109/TMI.2020.3042802; arXiv 2007.05201).

Two stages, as in the authors' code (github.com/iMED-Lab/OCTA-Net-OCTA-Vessel-Segmentation-Network,
``code/OCTA-Net/first_stage.py`` class ``SRF_UNet``, ``second_stage.py`` class ``fusion``):

- ``octanet_coarse`` (:class:`OCTANetCoarse`): split-based coarse segmentation (SCS), an
  ImageNet ResNeSt-50 encoder (:mod:`medseg.models.encoders.resnest`) with a full pixel-level
  ("thick") U-Net decoder from layer4 and a shallow centerline-level ("thin") decoder from
  layer1; decoder blocks are residual blocks with a split-attention conv. Outputs are sigmoid
  probabilities; the main output is their elementwise maximum.
- ``octanet_fine`` (:class:`OCTANetFine`): split-based refined segmentation (SRS), a 3-conv CNN
  predicting, per pixel, softmax weights over its 3x3 neighbourhood, used to re-aggregate
  ``max(thick, thin)``.
- ``octanet`` (:class:`OCTANet`): both in one module for the two-stage recipe.

Written independently; module names are the authors' where their state dicts need them
(``Up5_thick``, ``Up_conv5_thick``, ..., ``Conv_1x1_thin``; ``backbone.conv1_kernel``, ...,
``adagg.weight``), except that the encoder lives in ``encoder`` with the ResNeSt authors' names
(:func:`load_original` maps ``firstconv``/``firstbn``/``encoder1..4``).

All outputs are probabilities in [0, 1] (``output_activation = "none"``): the original's heads end
in a sigmoid, the fine stage is a convex combination of them, and its MSE losses are defined on
these probabilities.

Training recipe (github.com/iMED-Lab/OCTA-Net-OCTA-Vessel-Segmentation-Network, ``code/OCTA-Net``:
``front_main.py``, ``fusion_main.py``, ``train.py``): stage 1 MSE(thick, pixel GT) + MSE(thin, centerline GT), Adam
3e-4, weight decay 1e-4, poly 0.9, 300 epochs, batch 2; stage 2 coarse frozen, MSE(fine, GT),
same optimiser, 300 epochs. Inputs in [0, 1] (no mean/std normalisation).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.errors import CheckpointError
from medseg.models import register_model
from medseg.models.contract import NetworkContract, check_input_size, nearest_sizes
from medseg.models.encoders.resnest import ResNeStEncoder, SplAtConv2d
from medseg.models.weights import describe_source, load_strict, read_state_dict

__all__ = [
    "ResConvBlock",
    "UpConv",
    "OCTANetCoarse",
    "OCTANetFine",
    "OCTANet",
    "FusionCoefficients",
    "AdaptiveAggregation",
    "load_original",
    "original_key_to_ours",
    "working_sizes",
]

_DIVISOR = 16

#: Why the coarse stage needs multiples of 16, and what that means for the ROSE images; the
#: text of its size error (:func:`medseg.models.contract.check_input_size`).
_SIZE_REASON = (
    "the decoder concatenates each upsampled map with the 1/8, 1/4 and 1/2 skips, so H/2, H/4 and "
    "H/8 must be even; only an odd 1/16 map is padded, as in the original"
)
_SIZE_NOTE = (
    "Working sizes include 304 (ROSE-1), 400, 512, 832 and 848; the original also fails on 840x840 "
    "ROSE-2 images (nearest to 840: 832 or 848), which it expects resized."
)


def working_sizes(size: int, divisor: int = _DIVISOR) -> tuple[int, int]:
    """The nearest sizes at or below / above ``size`` that the coarse stage takes (multiples of
    ``divisor``, at least ``divisor``; :func:`medseg.models.contract.nearest_sizes`)."""
    return nearest_sizes(size, divisor)


class UpConv(nn.Module):
    """2x2 transposed convolution, stride 2 (the authors' ``up_conv``; key ``up.0``).

    (N, ch_in, H, W) float -> (N, ch_out, 2H, 2W) float."""

    def __init__(self, ch_in: int, ch_out: int) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose2d(ch_in, ch_out, kernel_size=2, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ch_in, H, W) -> (N, ch_out, 2H, 2W)."""
        return self.up(x)


class ResConvBlock(nn.Module):
    """The authors' decoder block ``res_conv_block`` (``first_stage.py``).

    ``conv``: 3x3 conv (no bias) -> BN -> ReLU -> split-attention 3x3 conv (:class:`SplAtConv2d`,
    radix 2, groups 2, conv bias, BN inside) -> ReLU; ``downsample``: 1x1 conv (no bias) -> BN;
    output ReLU(conv(x) + downsample(x)).

    Args:
        ch_in, ch_out: channels.
        softmax_layout: the split-attention variant (see :class:`SplAtConv2d`); "flat" by
            default, see :class:`OCTANetCoarse`.

    Shapes: (N, ch_in, H, W) float -> (N, ch_out, H, W) float, values >= 0; training needs N >= 2.
    """

    def __init__(self, ch_in: int, ch_out: int, softmax_layout: str = "flat") -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(ch_in, ch_out, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(ch_out),
            nn.ReLU(inplace=True),
            SplAtConv2d(ch_out, ch_out, 3, padding=1, groups=2, bias=True, radix=2, softmax_layout=softmax_layout),
            nn.ReLU(inplace=True),
        )
        self.downsample = nn.Sequential(nn.Conv2d(ch_in, ch_out, kernel_size=1, bias=False), nn.BatchNorm2d(ch_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ch_in, H, W) -> (N, ch_out, H, W)."""
        return F.relu(self.conv(x) + self.downsample(x))


@register_model("octanet_coarse")
class OCTANetCoarse(NetworkContract):
    """OCTA-Net coarse stage, split-based coarse segmentation (SCS); the authors' ``SRF_UNet``.

    Encoder ``encoder``: ResNeSt-50 (:class:`~medseg.models.encoders.resnest.ResNeStEncoder`),
    giving x0 (stem, 64 ch, 1/2), x2 = layer1 (256, 1/4), x3 = layer2 (512, 1/8), x4 = layer3
    (1024, 1/16), x5 = layer4 (2048, 1/32). If layer3's map has odd height (width), it is
    zero-padded by one row at the bottom (column at the right) before layer4, and the first
    decoder level is cropped back after concatenation, exactly as the original.

    Pixel-level ("thick") decoder, each level ``UpN`` (:class:`UpConv`, 2x) then concatenation
    [skip, upsampled] then ``Up_convN`` (:class:`ResConvBlock`): Up5 2048->1024 + x4 -> 2048->1024;
    Up4 ->512 + x3 -> 1024->512; Up3 ->256 + x2 -> 512->256; Up2 ->64 + x0 -> 128->64; Up1 ->64
    (no skip) -> 64->32; ``Conv_1x1_thick`` 32 -> out_channels; sigmoid.

    Centerline-level ("thin") decoder, deliberately shallow (from layer1): Up2_thin 256->64 + x0
    -> 128->64; Up1_thin ->64 -> 64->32; ``Conv_1x1_thin``; sigmoid.

    The constructor of the original also builds a deep thin decoder (``Up5_thin`` ...
    ``Up_conv3_thin``, commented out of its forward) and a fusion head (``Up_conv1``,
    ``Conv_1x1``) that are never used: ``keep_unused=True`` builds them too (for parameter and
    state-dict parity: 117,461,315 parameters; they get no gradient), ``keep_unused=False``
    (default) leaves them out: 71,647,682 parameters (25,434,240 in the encoder).

    Args:
        in_channels: 3, or 1: a grey image is repeated to RGB inside ``forward``, as the
            original's data loader converts grey images to RGB (its ``img_ch`` argument is
            ignored by its network).
        out_channels: channels of each head (the original's ``output_ch``, 1).
        encoder_weights: path (or state dict) of the ResNeSt-50 ImageNet weights, the authors'
            ``resnest50-528c19ca.pth`` (as the original loads) or timm's ``resnest50d``; loaded
            strictly into ``encoder`` (``fc.*`` dropped). None: random initialisation.
        keep_unused: build the original's unused modules (see above).
        softmax_layout: split-attention variant of the decoder blocks (groups 2), see
            :class:`~medseg.models.encoders.resnest.SplAtConv2d`. OCTA-Net's own ``splat.py``
            could not be read (reconstructed): its ``resnet.py`` is a ResNeSt revision with
            ``is_first`` but still ``radix > 1`` tests, older than ResNeSt commit 8029829
            (``radix >= 1``), whose ``splat.py`` still reads the attention as (radix, channel);
            ``rSoftMax`` came later. So "flat" is the default here; "grouped" gives the later
            ResNeSt/timm variant. Both have the same parameters and keys; the choice matters
            only for weights trained with one of them.

    Initialisation: decoder PyTorch defaults (the original's ``init_weights`` is never called);
    encoder as :class:`ResNeStEncoder` unless ``encoder_weights`` is given.

    Shapes: (N, in_channels, H, W) float32 in [0, 1] (no normalisation in the original) ->
    ``forward``: (N, out_channels, H, W) float32 max(thick, thin) in [0, 1]. H and W must be
    multiples of 16 (304, 400, 512 work; 840 does not, as in the original). Training needs N >= 2
    (BatchNorm on pooled attention features). Contract (:mod:`medseg.models.contract`):
    ``size_divisor`` 16, ``output_activation`` "none" (probabilities), outputs "out", "pixel"
    (thick), "centerline" (thin).

    Raises:
        ValueError (constructor): ``in_channels`` not 1 or 3, ``out_channels`` < 1.
        ValueError (forward): wrong channel count, or H/W not multiples of 16
            (:func:`~medseg.models.contract.check_input_size`; the message names the size and the
            nearest working sizes).
        medseg.errors.CheckpointError (constructor): ``encoder_weights`` does not fit.
    """

    output_activation = "none"
    size_divisor = _DIVISOR

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        encoder_weights: Any = None,
        keep_unused: bool = False,
        softmax_layout: str = "flat",
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"OCTA-Net takes 1 (grey, repeated to RGB) or 3 input channels, got {in_channels}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.keep_unused = bool(keep_unused)
        self.encoder = ResNeStEncoder()
        if encoder_weights is not None:
            self.encoder.load_weights(encoder_weights)

        def block(cin: int, cout: int) -> ResConvBlock:
            return ResConvBlock(cin, cout, softmax_layout)

        self.Up5_thick = UpConv(2048, 1024)
        self.Up_conv5_thick = block(2048, 1024)
        self.Up4_thick = UpConv(1024, 512)
        self.Up_conv4_thick = block(1024, 512)
        self.Up3_thick = UpConv(512, 256)
        self.Up_conv3_thick = block(512, 256)
        self.Up2_thick = UpConv(256, 64)
        self.Up_conv2_thick = block(128, 64)
        self.Up1_thick = UpConv(64, 64)
        self.Up_conv1_thick = block(64, 32)
        self.Conv_1x1_thick = nn.Conv2d(32, out_channels, kernel_size=1)

        if self.keep_unused:  # the original's deep thin decoder, never called
            self.Up5_thin = UpConv(2048, 1024)
            self.Up_conv5_thin = block(2048, 1024)
            self.Up4_thin = UpConv(1024, 512)
            self.Up_conv4_thin = block(1024, 512)
            self.Up3_thin = UpConv(512, 256)
            self.Up_conv3_thin = block(512, 256)
        self.Up2_thin = UpConv(256, 64)
        self.Up_conv2_thin = block(128, 64)
        self.Up1_thin = UpConv(64, 64)
        self.Up_conv1_thin = block(64, 32)
        self.Conv_1x1_thin = nn.Conv2d(32, out_channels, kernel_size=1)
        if self.keep_unused:  # the original's fusion head, never called
            self.Up_conv1 = block(64, 32)
            self.Conv_1x1 = nn.Conv2d(32, out_channels, kernel_size=1)

    def _rgb(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"OCTA-Net coarse stage built for {self.in_channels} input channel(s) expects "
                f"(N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        check_input_size(x, self.size_divisor, "OCTA-Net coarse stage", _SIZE_REASON, _SIZE_NOTE)
        return x.expand(-1, 3, -1, -1) if self.in_channels == 1 else x

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, in_channels, H, W) -> (thick, thin), each (N, out_channels, H, W) float in [0, 1].

        Raises ValueError as ``forward``."""
        x = self._rgb(x)
        enc = self.encoder
        x0 = enc.forward_stem(x)
        x2 = enc.forward_stage(1, x0)
        x3 = enc.forward_stage(2, x2)
        x4 = enc.forward_stage(3, x3)
        h4, w4 = int(x4.shape[2]), int(x4.shape[3])
        if h4 % 2 or w4 % 2:  # the original pads an odd 1/16 map before layer4
            x4 = F.pad(x4, (0, w4 % 2, 0, h4 % 2))
        x5 = enc.forward_stage(4, x4)

        d = torch.cat((x4, self.Up5_thick(x5)), dim=1)[:, :, :h4, :w4]
        d = self.Up_conv5_thick(d)
        d = self.Up_conv4_thick(torch.cat((x3, self.Up4_thick(d)), dim=1))
        d = self.Up_conv3_thick(torch.cat((x2, self.Up3_thick(d)), dim=1))
        d = self.Up_conv2_thick(torch.cat((x0, self.Up2_thick(d)), dim=1))
        d = self.Up_conv1_thick(self.Up1_thick(d))
        thick = torch.sigmoid(self.Conv_1x1_thick(d))

        t = self.Up_conv2_thin(torch.cat((x0, self.Up2_thin(x2)), dim=1))
        t = self.Up_conv1_thin(self.Up1_thin(t))
        thin = torch.sigmoid(self.Conv_1x1_thin(t))
        return thick, thin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) float32 -> (N, out_channels, H, W) max(thick, thin) in [0, 1].

        Raises:
            ValueError: wrong channel count or a size that is not a multiple of 16.
        """
        thick, thin = self.heads(x)
        return torch.maximum(thick, thin)

    def forward_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"out": max(thick, thin), "pixel": thick, "centerline": thin}, each (N, out_channels,
        H, W) float32 in [0, 1]. Raises ValueError as ``forward``."""
        thick, thin = self.heads(x)
        return {"out": torch.maximum(thick, thin), "pixel": thick, "centerline": thin}


def _normal_kernel(c_out: int, c_in: int, k: int, std: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(c_out, c_in, k, k) * std)


class FusionCoefficients(nn.Module):
    """The fine stage's coefficient CNN (the authors' ``base`` in ``second_stage.py``).

    3x3 conv 3 -> ``channels`` (no bias) -> ``bn1`` -> ReLU -> 3x3 conv -> 2*``channels`` (no
    bias) -> ``bn4`` -> ReLU -> 3x3 conv -> pn_size^2 (bias ``conv7_bias``) -> ``bn7`` -> ReLU ->
    softmax over the pn_size^2 channels. The conv kernels are plain parameters
    ``conv1_kernel``, ``conv4_kernel``, ``conv7_kernel`` drawn from N(avg, std^2) (0, 0.1^2) and
    the bias is one-hot at the centre neighbour (index pn_size^2 // 2), as the original.

    Shapes: (N, 3, H, W) float -> (N, pn_size^2, H, W) float, >= 0, summing to 1 over dim 1.
    """

    def __init__(
        self, channels: int = 64, pn_size: int = 3, kernel_size: int = 3, avg: float = 0.0, std: float = 0.1
    ) -> None:
        super().__init__()
        if pn_size < 1 or pn_size % 2 == 0 or kernel_size % 2 == 0:
            raise ValueError(f"pn_size and kernel_size must be odd and positive, got {pn_size}, {kernel_size}")
        self.kernel_size = int(kernel_size)
        n = pn_size * pn_size
        self.conv1_kernel = _normal_kernel(channels, 3, kernel_size, std)
        self.conv4_kernel = _normal_kernel(2 * channels, channels, kernel_size, std)
        self.conv7_kernel = _normal_kernel(n, 2 * channels, kernel_size, std)
        with torch.no_grad():
            for p in (self.conv1_kernel, self.conv4_kernel, self.conv7_kernel):
                p.add_(avg)
        bias = torch.zeros(n)
        bias[n // 2] = 1.0
        self.conv7_bias = nn.Parameter(bias)
        self.bn1 = nn.BatchNorm2d(channels)
        self.bn4 = nn.BatchNorm2d(2 * channels)
        self.bn7 = nn.BatchNorm2d(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, pn_size^2, H, W) softmax weights."""
        p = self.kernel_size // 2
        f = F.relu(self.bn1(F.conv2d(x, self.conv1_kernel, padding=p)))
        f = F.relu(self.bn4(F.conv2d(f, self.conv4_kernel, padding=p)))
        f = F.relu(self.bn7(F.conv2d(f, self.conv7_kernel, self.conv7_bias, padding=p)))
        return torch.softmax(f, dim=1)


class AdaptiveAggregation(nn.Module):
    """Gathers each pixel's pn_size x pn_size neighbourhood (the authors' ``adaptive_aggregation``).

    ``weight``: the fixed one-hot mapping kernel (pn^2, 1, pn, pn), ``weight[h*pn + w, 0, h, w] =
    1``, a parameter with ``requires_grad=False`` as the original (so it is counted by
    ``parameters()``: 81 of the fine stage's 86,316 for pn = 3, and saved as ``adagg.weight``).

    Shapes: ``forward(saliency, coeff)``: (N, 1, H, W) and (N, pn^2, H, W) -> (N, 1, H, W), the
    coefficient-weighted sum of the zero-padded neighbours.
    """

    def __init__(self, pn_size: int = 3) -> None:
        super().__init__()
        self.kernel_size = int(pn_size)
        n = pn_size * pn_size
        kernel = torch.zeros(n, 1, pn_size, pn_size)
        for h in range(pn_size):
            for w in range(pn_size):
                kernel[h * pn_size + w, 0, h, w] = 1.0
        self.weight = nn.Parameter(kernel, requires_grad=False)

    def neighbours(self, saliency: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) -> (N, pn^2, H, W): channel h*pn + w holds the pixel at offset
        (h - pn//2, w - pn//2), zero outside the image."""
        return F.conv2d(saliency, self.weight, padding=self.kernel_size // 2)

    def forward(self, saliency: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W), (N, pn^2, H, W) -> (N, 1, H, W)."""
        return (self.neighbours(saliency) * coeff).sum(dim=1, keepdim=True)


@register_model("octanet_fine")
class OCTANetFine(NetworkContract):
    """OCTA-Net fine stage, split-based refined segmentation (SRS); the authors' ``fusion``.

    Input channels: [image first channel, thick map, thin map] (the original calls
    ``fusion(img[:, :1], thick, thin)``; here they come concatenated). ``backbone``
    (:class:`FusionCoefficients`) predicts per-pixel softmax weights over the pn_size^2
    neighbours; ``adagg`` (:class:`AdaptiveAggregation`) returns the weighted sum of the
    neighbours of max(thick, thin). No final sigmoid: with thick and thin in [0, 1], the output
    is a convex combination of values in [0, 1] (zero padding outside the image).

    Parameters with the defaults (channels 64, pn_size 3): 86,316, of which 86,235 trainable
    (the 81 mapping weights are frozen).

    Args:
        in_channels: must be 3 (the three maps above).
        channels: width of the first conv (the original's ``--base_channels``, 64).
        pn_size: neighbourhood size (the original's ``--pn_size``, 3).
        kernel_size: conv kernel size (3).
        avg, std: mean and standard deviation of the normal initialisation (0, 0.1).

    Shapes: (N, 3, H, W) float32, channels 1 and 2 in [0, 1] -> (N, 1, H, W) float32 in [0, 1];
    any H, W >= 1. Contract (:mod:`medseg.models.contract`): ``in_channels`` 3, ``out_channels``
    1, ``size_divisor`` 1, ``output_activation`` "none", one output.

    Raises:
        ValueError: ``in_channels`` != 3, even ``pn_size``, or (forward) an input that is not
            (N, 3, H, W).
    """

    output_activation = "none"

    def __init__(
        self,
        in_channels: int = 3,
        channels: int = 64,
        pn_size: int = 3,
        kernel_size: int = 3,
        avg: float = 0.0,
        std: float = 0.1,
    ) -> None:
        super().__init__()
        if in_channels != 3:
            raise ValueError(f"OCTA-Net fine stage takes 3 input channels (image, thick, thin), got {in_channels}")
        self.in_channels, self.out_channels = 3, 1
        self.pn_size = int(pn_size)
        self.backbone = FusionCoefficients(channels, pn_size, kernel_size, avg, std)
        self.adagg = AdaptiveAggregation(pn_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) [image, thick, thin] -> (N, 1, H, W) refined map in [0, 1].

        Raises:
            ValueError: ``x`` is not (N, 3, H, W).
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"OCTA-Net fine stage expects (N, 3, H, W) [image, thick, thin], got {tuple(x.shape)}")
        coeff = self.backbone(x)
        return self.adagg(torch.maximum(x[:, 1:2], x[:, 2:3]), coeff)

    def fuse(self, image: torch.Tensor, thick: torch.Tensor, thin: torch.Tensor) -> torch.Tensor:
        """The original's three-argument call: (N, 1, H, W) each -> (N, 1, H, W)."""
        return self(torch.cat((image, thick, thin), dim=1))


@register_model("octanet")
class OCTANet(NetworkContract):
    """OCTA-Net, both stages: ``coarse`` (:class:`OCTANetCoarse`) and ``fine``
    (:class:`OCTANetFine`).

    ``forward(x) = fine(cat(x[:, :1], thick, thin))`` with (thick, thin) from ``coarse`` (the
    first channel as the original's ``img[:, :1]``; for a grey input, the grey image).

    Difference from the original: its second stage takes ``thick`` from the checkpoint with the
    best thick AUC (``--first_suffix``) and ``thin`` from the best-thin checkpoint
    (``--first_suffix1``), two copies of the coarse network; here one coarse network supplies
    both (load the two checkpoints into two :class:`OCTANetCoarse` and call ``fine`` yourself
    to reproduce that). The released wiring is broken anyway: it passes each coarse model's
    whole output tuple into ``fusion`` (same repository, ``code/OCTA-Net/fusion_main.py`` and
    ``train.py``, ``train_second_stage``).

    Two-stage recipe: stage 1 trains ``coarse`` with losses on "pixel" and "centerline" (the
    fine stage then gets no gradient); stage 2 calls :meth:`set_stage` (2), which freezes
    ``coarse`` (no gradients, kept in eval mode as the original's ``first_net.eval()``) and trains
    ``fine`` with a loss on "out".

    Args:
        in_channels: 1 or 3 (see :class:`OCTANetCoarse`).
        encoder_weights: ResNeSt-50 ImageNet weights for ``coarse`` (see there).
        keep_unused: passed to ``coarse``.
        channels, pn_size: passed to ``fine``.
        softmax_layout: passed to ``coarse``.

    Parameters: 71,647,682 + 86,316 = 71,733,998 (117,547,631 with ``keep_unused``).

    Shapes: (N, in_channels, H, W) float32 in [0, 1] -> (N, 1, H, W) float32 in [0, 1]; H, W
    multiples of 16. Raises ValueError as :class:`OCTANetCoarse`. Contract
    (:mod:`medseg.models.contract`): ``in_channels`` the coarse stage's, ``out_channels`` 1,
    ``size_divisor`` 16, ``output_activation`` "none", outputs "out", "coarse", "pixel",
    "centerline".
    """

    output_activation = "none"
    size_divisor = _DIVISOR

    def __init__(
        self,
        in_channels: int = 3,
        encoder_weights: Any = None,
        keep_unused: bool = False,
        channels: int = 64,
        pn_size: int = 3,
        softmax_layout: str = "flat",
    ) -> None:
        super().__init__()
        self.coarse = OCTANetCoarse(
            in_channels, 1, encoder_weights=encoder_weights, keep_unused=keep_unused, softmax_layout=softmax_layout
        )
        self.fine = OCTANetFine(3, channels=channels, pn_size=pn_size)
        self.stage = 1

    @property
    def in_channels(self) -> int:
        """Input channels: the coarse stage's (1 or 3)."""
        return self.coarse.in_channels

    @property
    def out_channels(self) -> int:
        """Output channels: the fine stage's (1)."""
        return self.fine.out_channels

    @property
    def encoder(self) -> ResNeStEncoder:
        """The coarse stage's ResNeSt-50 (so that encoder-wide settings find it)."""
        return self.coarse.encoder

    def set_stage(self, stage: int) -> OCTANet:
        """1: everything trainable; 2: ``coarse`` frozen (requires_grad False, eval mode kept by
        :meth:`train`, outputs detached). Returns ``self``. Raises ValueError for other values."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        self.stage = int(stage)
        for p in self.coarse.parameters():
            p.requires_grad_(stage == 1)
        return self.train(self.training)

    def train(self, mode: bool = True) -> OCTANet:
        """As :meth:`torch.nn.Module.train`, but ``coarse`` stays in eval mode in stage 2."""
        super().train(mode)
        if self.stage == 2:
            self.coarse.eval()
        return self

    def forward_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"out": fine, "coarse": max(thick, thin), "pixel": thick, "centerline": thin}, each
        (N, 1, H, W) float32 in [0, 1]. Raises ValueError as :class:`OCTANetCoarse`."""
        thick, thin = self.coarse.heads(x)
        if self.stage == 2:
            thick, thin = thick.detach(), thin.detach()
        out = self.fine(torch.cat((x[:, :1], thick, thin), dim=1))
        return {"out": out, "coarse": torch.maximum(thick, thin), "pixel": thick, "centerline": thin}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, 1, H, W) refined map in [0, 1]."""
        thick, thin = self.coarse.heads(x)
        if self.stage == 2:
            thick, thin = thick.detach(), thin.detach()
        return self.fine(torch.cat((x[:, :1], thick, thin), dim=1))


_ENCODER_PREFIXES = {
    "firstconv.": "encoder.conv1.",
    "firstbn.": "encoder.bn1.",
    "encoder1.": "encoder.layer1.",
    "encoder2.": "encoder.layer2.",
    "encoder3.": "encoder.layer3.",
    "encoder4.": "encoder.layer4.",
}


def original_key_to_ours(key: str) -> str:
    """Map a key of the authors' ``SRF_UNet`` state dict to :class:`OCTANetCoarse`'s:
    ``firstconv.*`` -> ``encoder.conv1.*``, ``firstbn.*`` -> ``encoder.bn1.*``, ``encoderN.*`` ->
    ``encoder.layerN.*`` (N = 1..4); every decoder key (``Up5_thick.up.0.weight``,
    ``Up_conv5_thick.conv.3.fc1.weight``, ...) is unchanged."""
    for old, new in _ENCODER_PREFIXES.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def load_original(path_or_state_dict: Any) -> nn.Module:
    """Build the OCTA-Net stage matching a checkpoint of the authors' code and load it strictly.

    Recognises:

    - a coarse stage (``SRF_UNet``: keys ``firstconv.0.weight``, ``encoder1.*``,
      ``Up5_thick.up.0.weight``, ...) -> :class:`OCTANetCoarse` with ``keep_unused=True`` (the
      original registers its unused deep thin decoder and fusion head, so their keys are in its
      state dicts); ``out_channels`` from ``Conv_1x1_thick.weight``. Key map
      :func:`original_key_to_ours` (encoder prefixes only).
    - a fine stage (``fusion``: keys ``backbone.conv1_kernel``, ``adagg.weight``, ...) ->
      :class:`OCTANetFine`, ``channels`` and ``pn_size`` from the shapes of
      ``backbone.conv1_kernel`` and ``adagg.weight``; keys unchanged.

    The released code saves whole pickled modules (``torch.save(model)``, inside DataParallel);
    convert such a file to a state dict first where the authors' code is importable
    (``torch.load(f, weights_only=False).state_dict()``). A ``module.`` prefix is stripped.

    Returns:
        :class:`OCTANetCoarse` or :class:`OCTANetFine` on CPU in training mode, all weights and
        buffers loaded.

    Raises:
        medseg.errors.CheckpointError: unreadable file, a state dict that is neither stage, or
            missing / unexpected keys / shape mismatches (all listed; keys are named in our
            layout, e.g. ``encoder.layer1.0.conv1.weight`` for the file's
            ``encoder1.0.conv1.weight``).
    """
    where = describe_source(path_or_state_dict)
    state = read_state_dict(path_or_state_dict)
    is_coarse = "firstconv.0.weight" in state or "Up5_thick.up.0.weight" in state
    is_fine = "backbone.conv1_kernel" in state or "adagg.weight" in state
    if is_coarse == is_fine:
        found = "both" if is_coarse else "neither"
        raise CheckpointError(
            f"{where}: cannot tell the OCTA-Net stage: {found} of the coarse-stage keys "
            "('firstconv.0.weight' / 'Up5_thick.up.0.weight', SRF_UNet) and the fine-stage keys "
            "('backbone.conv1_kernel' / 'adagg.weight', fusion) found"
        )
    if is_coarse:
        head = state.get("Conv_1x1_thick.weight")
        out_ch = int(head.shape[0]) if head is not None and head.dim() == 4 else 1
        model: nn.Module = OCTANetCoarse(3, out_ch, keep_unused=True)
        what = "OCTA-Net coarse stage (SRF_UNet, keep_unused=True)"
        return load_strict(model, state, where, what, original_key_to_ours)
    missing = [k for k in ("backbone.conv1_kernel", "adagg.weight") if k not in state]
    if missing:
        raise CheckpointError(f"{where}: fine-stage state dict lacks {', '.join(missing)} needed to infer its shape")
    c1, agg = state["backbone.conv1_kernel"], state["adagg.weight"]
    if c1.dim() != 4 or agg.dim() != 4:
        raise CheckpointError(f"{where}: backbone.conv1_kernel / adagg.weight are not 4-D kernels")
    model = OCTANetFine(3, channels=int(c1.shape[0]), pn_size=int(agg.shape[-1]), kernel_size=int(c1.shape[-1]))
    return load_strict(model, state, where, "OCTA-Net fine stage (fusion)")
