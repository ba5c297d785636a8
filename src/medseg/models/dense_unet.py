"""Dense U-Nets for CT/MRI slices.

Two networks, under two names:

- ``dense_unet``: :class:`DenseUNet`, the **2D DenseUNet of H-DenseUNet** (X. Li, H. Chen, X. Qi,
  Q. Dou, C.-W. Fu, P.-A. Heng, "H-DenseUNet: Hybrid Densely Connected UNet for Liver and Tumor
  Segmentation from CT Volumes", IEEE TMI 37(12):2663-2674, 2018), as built
  by the authors' Keras code ``denseunet.py`` (github.com/xmengli/H-DenseUNet, function
  ``DenseUNet``): a DenseNet-161 encoder and a U-Net-style decoder that *adds* (not
  concatenates) the skips. This is the network "Dense U-Net for CT" most often refers to and
  the one medseg calls ``dense_unet``. H-DenseUNet's 3D DenseUNet and hybrid feature-fusion
  layer are not implemented.
- ``dense_block_unet``: :class:`DenseBlockUNet`, a compact U-Net whose every level is a dense
  block (BN-ReLU-3x3 conv layers with a growth rate and dropout), with transitions down and up,
  for training from scratch on CPU. It is *neither* H-DenseUNet *nor* FC-DenseNet ("Tiramisu",
  Jégou et al., CVPRW 2017); see its docstring for where it comes from.

Written independently of the authors' code; layer names of the decoder follow ``denseunet.py``
(``line0``, ``conv_up0`` ... ``conv_up4``, ``bn_up0`` ... ``bn_up4``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.models import register_model
from medseg.models.contract import NetworkContract, check_input_size
from medseg.models.encoders.densenet import DenseNetEncoder

__all__ = ["DenseUNet", "DenseBlockUNet", "DenseConvLayer", "DenseConvBlock", "TransitionDown"]


def _check_channels(x: torch.Tensor, in_channels: int, net: str) -> None:
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{net} was built for in_channels={in_channels} but got an input with "
            f"{int(x.shape[1])} channels (shape {tuple(x.shape)})"
        )


# ------------------------------------------------------------------------------------------------
# H-DenseUNet's 2D DenseUNet


@register_model("dense_unet")
class DenseUNet(NetworkContract):
    """H-DenseUNet's 2D DenseUNet (Li et al., IEEE TMI 2018; ``denseunet.py``, ``DenseUNet``).

    Encoder: DenseNet-161 (:func:`medseg.models.encoders.densenet.densenet161`, torchvision
    layout) giving, as the authors' ``box`` list, the stem ReLU (96 ch, 1/2), dense blocks 1-3
    before their transitions (384, 1/4; 768, 1/8; 2112, 1/16) and block 4 after the final
    BN-ReLU (2208, 1/32).

    Decoder (``denseunet.py``; every conv has a bias, as Keras' default):

    - ``line0``: 1x1 conv 2112 -> 2208 on block 3; added to the 2x nearest upsampling of the
      2208-channel bottom map; ``conv_up0`` 3x3 2208 -> 768, ``bn_up0``, ReLU (1/16);
    - nearest x2, add block 2 (768); ``conv_up1`` 3x3 768 -> 384, BN, ReLU (1/8);
    - nearest x2, add block 1 (384); ``conv_up2`` 3x3 384 -> 96, BN, ReLU (1/4);
    - nearest x2, add the stem (96); ``conv_up3`` 3x3 96 -> 96, BN, ReLU (1/2);
    - nearest x2 (full resolution); ``conv_up4`` 3x3 96 -> 64, Dropout(0.3), ``bn_up4``, ReLU;
      ``classifier`` 1x1 64 -> num_classes (Keras name ``dense167classifer``).

    Parameters (defaults, 3 classes): **49,527,843** = 26,472,000 encoder + 23,055,843 decoder
    (counted from the layer list of github.com/xmengli/H-DenseUNet, ``denseunet.py``: about
    26.47 M + 23.06 M). The Keras model has 219,936 more trainable
    parameters, all in the encoder: its Caffe-converted DenseNet follows every BatchNormalization
    (gamma, beta) by a separate ``Scale`` layer (another gamma, beta), i.e. two affine pairs per
    BN where PyTorch's affine BN has one; the product of two affine maps is one affine map, so the
    function class is the same. (Keras also counts BN moving mean/variance as non-trainable
    parameters; PyTorch keeps them as buffers.)

    Code details followed (paper silent): decoder BatchNorm epsilon 1e-3 (Keras' default; the
    encoder's is PyTorch's 1e-5 where the Caffe conversion used 1.1e-5); decoder conv kernels
    initialised N(0, 0.05) (Keras 2.0.8 ``kernel_initializer="normal"``), biases 0; the dropout
    sits between ``conv_up4`` and ``bn_up4``. BatchNorm momentum is PyTorch's 0.1 (Keras: 0.01
    in PyTorch terms); it changes only the running statistics.

    Input channels: the original takes three adjacent axial CT slices (2.5D, the middle one
    labelled) as a 3-channel image, so ``in_channels=3`` is the default and the ImageNet conv0
    loads unchanged. ``in_channels=1`` (a single slice) repeats the slice three times inside
    ``forward`` (a 2.5D stack with no context), keeping conv0 and the state dict identical to the
    3-channel network. Any other count (2.5D with context k gives 2k + 1 slices, e.g. 5 or 7)
    builds conv0 with that many inputs; with ``encoder_weights`` its RGB kernel is then adapted by
    averaging the three RGB kernels and scaling by 3 / in_channels
    (:func:`medseg.models.encoders.densenet.adapt_input_conv`); all other weights load as they are.

    Intensities: the original subtracts a mean of 48 from its preprocessed CT (HU window
    -200..250 in the paper); that is the data pipeline's job, not the network's.

    Args:
        in_channels: 3 (default, 2.5D), 1, or any other count (see above).
        num_classes: output channels (3: background, liver, tumour, as LiTS in the paper).
        encoder_weights: path to torchvision's ``densenet161-8d451a50.pth`` (or any DenseNet-161
            state dict in either key style), loaded strictly into ``encoder`` at construction;
            None trains from scratch.
        dropout: dropout probability before ``bn_up4`` (0.3).
        memory_efficient: checkpoint each dense layer's bottleneck (see
            :class:`medseg.models.encoders.densenet.DenseLayer`).
        growth_rate, block_config, num_init_features, bn_size: the DenseNet encoder (48,
            (6, 12, 36, 24), 96, 4: DenseNet-161, the original). Other values (e.g. torchvision's
            DenseNet-121: 32, (6, 12, 24, 16), 64, 4) give the same construction with the decoder
            widths taken from the encoder as in the original (``line0`` block 3 -> bottom
            width; ``conv_up0..3`` to the block-2, block-1, stem, stem widths; ``conv_up4`` to
            64); the tests use a tiny encoder this way. Only DenseNet-161 is H-DenseUNet.

    Shapes: (N, in_channels, H, W) float32, H and W multiples of 32 -> (N, num_classes, H, W)
    float32 **logits** (the original's loss applies the softmax; so does the engine).
    Contract (:mod:`medseg.models.contract`): ``out_channels`` = ``num_classes``,
    ``size_divisor`` 32, ``output_activation`` "auto", one output.

    Raises:
        ValueError: ``in_channels`` < 1, ``num_classes`` < 1, or ``block_config`` without
            exactly 4 blocks; in ``forward``, an input that is not 4-D, has the wrong channel
            count, or whose H or W is not a multiple of 32 (the message names the size and the
            nearest valid ones).
        medseg.errors.CheckpointError: ``encoder_weights`` unreadable or not a DenseNet-161
            state dict (missing/unexpected keys listed).
    """

    #: H and W must be multiples of this (five 2x downsamplings).
    size_divisor = 32

    @property
    def out_channels(self) -> int:
        """Output channels C_out (the contract's name for ``num_classes``; read-only)."""
        return self.num_classes

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 3,
        encoder_weights: str | None = None,
        dropout: float = 0.3,
        memory_efficient: bool = False,
        growth_rate: int = 48,
        block_config: Sequence[int] = (6, 12, 36, 24),
        num_init_features: int = 96,
        bn_size: int = 4,
    ) -> None:
        super().__init__()
        if len(block_config) != 4:
            raise ValueError(f"DenseUNet needs a DenseNet with 4 dense blocks, got block_config={block_config}")
        if in_channels < 1:
            raise ValueError(f"DenseUNet in_channels must be >= 1, got {in_channels}")
        if num_classes < 1:
            raise ValueError(f"DenseUNet num_classes must be >= 1, got {num_classes}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.repeat_grey = in_channels == 1
        self.encoder = DenseNetEncoder(
            growth_rate,
            tuple(block_config),
            num_init_features,
            bn_size,
            in_channels=3 if in_channels in (1, 3) else in_channels,
            memory_efficient=memory_efficient,
        )
        is_161 = (growth_rate, tuple(block_config), num_init_features, bn_size) == (
            48, (6, 12, 36, 24), 96, 4,
        )  # fmt: skip
        self._encoder_name = (
            "torchvision DenseNet-161"
            if is_161
            else (
                f"DenseNet (growth {growth_rate}, blocks {tuple(block_config)}, "
                f"{num_init_features} initial features, bn_size {bn_size})"
            )
        )
        c0, c1, c2, c3, c4 = self.encoder.out_channels  # 96, 384, 768, 2112, 2208
        self.line0 = nn.Conv2d(c3, c4, 1)
        self.conv_up0 = nn.Conv2d(c4, c2, 3, padding=1)
        self.bn_up0 = nn.BatchNorm2d(c2, eps=1e-3)
        self.conv_up1 = nn.Conv2d(c2, c1, 3, padding=1)
        self.bn_up1 = nn.BatchNorm2d(c1, eps=1e-3)
        self.conv_up2 = nn.Conv2d(c1, c0, 3, padding=1)
        self.bn_up2 = nn.BatchNorm2d(c0, eps=1e-3)
        self.conv_up3 = nn.Conv2d(c0, c0, 3, padding=1)
        self.bn_up3 = nn.BatchNorm2d(c0, eps=1e-3)
        self.conv_up4 = nn.Conv2d(c0, 64, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.bn_up4 = nn.BatchNorm2d(64, eps=1e-3)
        self.classifier = nn.Conv2d(64, num_classes, 1)
        decoder_convs = (
            self.line0, self.conv_up0, self.conv_up1, self.conv_up2, self.conv_up3, self.conv_up4,
            self.classifier,
        )  # fmt: skip
        for m in decoder_convs:
            nn.init.normal_(m.weight, 0.0, 0.05)
            nn.init.zeros_(m.bias)
        if encoder_weights is not None:
            self.encoder.load_weights(encoder_weights, what=self._encoder_name)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, num_classes, H, W) logits; H, W multiples of 32."""
        check_input_size(x, self.size_divisor, "DenseUNet", "five 2x downsamplings in DenseNet-161")
        _check_channels(x, self.in_channels, "DenseUNet")
        if self.repeat_grey:
            x = x.expand(-1, 3, -1, -1)
        f0, f1, f2, f3, f4 = self.encoder(x)
        d = self._up(f4) + self.line0(f3)
        d = F.relu(self.bn_up0(self.conv_up0(d)))
        d = self._up(d) + f2
        d = F.relu(self.bn_up1(self.conv_up1(d)))
        d = self._up(d) + f1
        d = F.relu(self.bn_up2(self.conv_up2(d)))
        d = self._up(d) + f0
        d = F.relu(self.bn_up3(self.conv_up3(d)))
        d = self._up(d)
        d = F.relu(self.bn_up4(self.dropout(self.conv_up4(d))))
        return self.classifier(d)


# ------------------------------------------------------------------------------------------------
# Compact dense-block U-Net


class DenseConvLayer(nn.Module):
    """BN - ReLU - 3x3 conv (``growth_rate`` outputs, no bias) - dropout: the DenseNet composite
    function H_l without bottleneck (Huang et al., CVPR 2017, §3; FC-DenseNet's "layer").

    (N, in_channels, H, W) -> (N, growth_rate, H, W).
    """

    def __init__(self, in_channels: int, growth_rate: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, growth_rate, 3, padding=1, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, growth_rate, H, W)."""
        return self.drop(self.conv(self.relu(self.norm(x))))


class DenseConvBlock(nn.Module):
    """``num_layers`` :class:`DenseConvLayer` s, each fed the concatenation of the block input and
    every earlier layer's output; returns all of them concatenated.

    (N, in_channels, H, W) -> (N, out_channels, H, W) with
    ``out_channels = in_channels + num_layers * growth_rate`` (attributes ``in_channels``,
    ``out_channels``, ``num_layers``, ``growth_rate``).
    """

    def __init__(self, in_channels: int, num_layers: int, growth_rate: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseConvLayer(in_channels + i * growth_rate, growth_rate, dropout) for i in range(num_layers)
        )
        self.in_channels = in_channels
        self.num_layers = num_layers
        self.growth_rate = growth_rate
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, in_channels + num_layers * growth_rate, H, W)."""
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return x


class TransitionDown(nn.Module):
    """BN - ReLU - 1x1 conv (``out_channels``, no bias) - dropout - 2x2 average pooling (the
    DenseNet-BC transition, with FC-DenseNet's dropout).

    (N, in_channels, H, W) -> (N, out_channels, H // 2, W // 2).
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.drop = nn.Dropout(dropout)
        self.pool = nn.AvgPool2d(2, stride=2)
        self.in_channels = in_channels
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H / 2, W / 2)."""
        return self.pool(self.drop(self.conv(self.relu(self.norm(x)))))


@register_model("dense_block_unet")
class DenseBlockUNet(NetworkContract):
    """A compact U-Net whose every level is a dense block, trained from scratch on CT/MRI slices.

    Where it comes from: a "Dense U-Net: dense blocks (BN-ReLU-conv, dropout, growth rate) in a
    U-Net for CT/MRI slices", as in the tutorial
    "医学图像分割实战:用PyTorch从零搭建Dense U-Net" (hhlsq.com, 2026). Only that tutorial's
    opening (environment set-up and NIfTI/CLAHE preprocessing) could be retrieved, not its
    network code, so the tutorial's growth rate, layers per block and transition design could
    not be checked, nor its reported channel-arithmetic bug (its network is said not to run).
    The defaults (growth 16, 4 layers per block, dropout 0.2 as in FC-DenseNet) are therefore
    medseg's choice, not the tutorial's. This network is therefore designed
    from that description, with every width computed from the blocks' own
    ``out_channels`` so that the channel arithmetic holds by construction
    (``out = in + layers * growth`` for every dense block; tested block by block). It is **not**
    H-DenseUNet (no ImageNet DenseNet, concatenated rather than added skips; that is
    ``dense_unet``) and **not** FC-DenseNet (which keeps all channels in its max-pooling
    transitions down, upsamples only the new features of the block below with a 3x3 transposed
    conv where this network reads all of that block's channels with a 2x2 one, and has no
    compression and no BN-ReLU before its classifier).

    Layout (defaults ``init_features=32, growth_rate=16, layers_per_block=4, depth=4,
    compression=0.5, dropout=0.2``):

    - ``stem``: 3x3 conv in_channels -> init_features;
    - encoder level i = 1..depth: dense block (c -> c + L k; this is the skip), then
      :class:`TransitionDown` to ``floor(compression * (c + L k))`` channels at half resolution;
    - ``bottleneck``: dense block at 1 / 2**depth;
    - decoder level i = depth..1: transition up = 2x2 transposed conv, stride 2, from all
      channels of the block below to as many channels as that block added (its L k new
      features; this keeps the full-resolution widths small), concatenated with skip i, then a
      dense block;
    - ``head``: BN - ReLU - 1x1 conv to ``num_classes``.

    Widths with the defaults: encoder blocks 32 -> 96, 48 -> 112, 56 -> 120, 60 -> 124 (the
    skips); bottleneck 62 -> 126; transitions up to 64; decoder blocks 188 -> 252, 184 -> 248,
    176 -> 240, 160 -> 224. Parameters: 940,098 (1 input channel, 2 classes), small enough to
    train on a few CPU cores.

    Args:
        in_channels: input channels (1: one CT/MRI slice; 2k + 1 for a 2.5D stack).
        num_classes: output channels (2: background, foreground), logits for a softmax.
        init_features: stem width.
        growth_rate: k, new channels per dense layer.
        layers_per_block: L, an int for every block or a sequence of 2 * depth + 1 counts
            (encoder blocks, bottleneck, decoder blocks, in forward order).
        depth: number of 2x downsamplings.
        compression: theta in (0, 1], transition-down width factor.
        dropout: dropout after every dense-layer conv and transition-down conv.

    Shapes: (N, in_channels, H, W) float32, H and W multiples of 2**depth (16) ->
    (N, num_classes, H, W) float32 logits. Contract (:mod:`medseg.models.contract`):
    ``out_channels`` = ``num_classes``, ``size_divisor`` 2**depth, ``output_activation``
    "auto", one output.

    Raises:
        ValueError: invalid arguments; in ``forward``, an input that is not 4-D, has the wrong
            channel count, or whose H or W is not a multiple of 2**depth (sizes named).
    """

    #: H and W must be multiples of this (2**depth with the default depth 4; the instance
    #: attribute follows ``depth``).
    size_divisor = 16

    @property
    def out_channels(self) -> int:
        """Output channels C_out (the contract's name for ``num_classes``; read-only)."""
        return self.num_classes

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        init_features: int = 32,
        growth_rate: int = 16,
        layers_per_block: int | Sequence[int] = 4,
        depth: int = 4,
        compression: float = 0.5,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"DenseBlockUNet depth must be >= 1, got {depth}")
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"DenseBlockUNet compression must be in (0, 1], got {compression}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"DenseBlockUNet dropout must be in [0, 1), got {dropout}")
        if min(in_channels, num_classes, init_features, growth_rate) < 1:
            raise ValueError(
                "DenseBlockUNet in_channels, num_classes, init_features and growth_rate must be "
                f">= 1, got {in_channels}, {num_classes}, {init_features}, {growth_rate}"
            )
        n_blocks = 2 * depth + 1
        if isinstance(layers_per_block, int):
            layers = [layers_per_block] * n_blocks
        else:
            layers = [int(n) for n in layers_per_block]
            if len(layers) != n_blocks:
                raise ValueError(
                    f"DenseBlockUNet layers_per_block needs {n_blocks} counts for depth {depth} "
                    f"(encoder, bottleneck, decoder), got {len(layers)}: {layers}"
                )
        if min(layers) < 1:
            raise ValueError(f"DenseBlockUNet layers_per_block must be >= 1, got {layers}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = depth
        self.size_divisor = 2**depth
        self.stem = nn.Conv2d(in_channels, init_features, 3, padding=1, bias=False)
        self.down_blocks = nn.ModuleList()
        self.transitions_down = nn.ModuleList()
        c = init_features
        skips = []
        for i in range(depth):
            block = DenseConvBlock(c, layers[i], growth_rate, dropout)
            self.down_blocks.append(block)
            skips.append(block.out_channels)
            width = max(1, int(compression * block.out_channels))
            td = TransitionDown(block.out_channels, width, dropout)
            self.transitions_down.append(td)
            c = td.out_channels
        self.bottleneck = DenseConvBlock(c, layers[depth], growth_rate, dropout)
        c = self.bottleneck.out_channels
        self.transitions_up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        prev = self.bottleneck
        for j, skip in enumerate(reversed(skips)):
            # as many channels as the block below added (its L * k new features)
            up = nn.ConvTranspose2d(c, prev.num_layers * growth_rate, 2, stride=2)
            self.transitions_up.append(up)
            n = layers[depth + 1 + j]
            prev = DenseConvBlock(up.out_channels + skip, n, growth_rate, dropout)
            self.up_blocks.append(prev)
            c = prev.out_channels
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, num_classes, 1))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def dense_blocks(self) -> list[DenseConvBlock]:
        """All dense blocks in forward order: encoder, bottleneck, decoder."""
        return [*self.down_blocks, self.bottleneck, *self.up_blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, num_classes, H, W) logits; H, W multiples of 2**depth."""
        check_input_size(x, self.size_divisor, "DenseBlockUNet", f"{self.depth} 2x downsamplings")
        _check_channels(x, self.in_channels, "DenseBlockUNet")
        x = self.stem(x)
        skips = []
        for block, down in zip(self.down_blocks, self.transitions_down):
            x = block(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for up, block in zip(self.transitions_up, self.up_blocks):
            x = block(torch.cat([up(x), skips.pop()], 1))
        return self.head(x)
