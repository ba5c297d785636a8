"""ResNeSt-50 encoder and the split-attention convolution (Zhang et al., "ResNeSt: Split-Attention
Networks", arXiv 2004.08955, 2020; Fig. 1 right and Fig. 2 for the split-attention block, Table
3 / Section 5.1 for "ResNeSt-50": deep stem, avg-down shortcuts, avd, radix 2, cardinality 1,
bottleneck width 64).

Written independently; the attribute names are the ResNeSt authors' (``resnest/torch/resnet.py``
and ``splat.py`` of github.com/zhanghang1989/ResNeSt, copied unchanged by OCTA-Net as
``code/OCTA-Net/resnet.py`` / ``splat.py``), so their ImageNet file ``resnest50-528c19ca.pth``
loads with no key map except dropping the classifier ``fc.*``.

Published key layouts (both checked against the sources):

==========================================  ===============================  ====================
what                                        authors' ``resnest50``           timm ``resnest50d``
==========================================  ===============================  ====================
deep stem convs (3x3: 3->32 s2, 32->32,     ``conv1.0``, ``conv1.3``,        same
32->64) / BNs between them                  ``conv1.6`` / ``conv1.1``,
                                            ``conv1.4``
stem BN after the last stem conv            ``bn1``                          same
block 1x1 reduce conv / BN                  ``layerL.B.conv1`` / ``bn1``     same
split-attention 3x3 conv (radix x width)    ``layerL.B.conv2.conv``          same (``SplitAttn``)
its BN / attention MLP / MLP BN / MLP out   ``conv2.bn0`` / ``conv2.fc1`` /  same
                                            ``conv2.bn1`` / ``conv2.fc2``
block 1x1 expand conv / BN                  ``layerL.B.conv3`` / ``bn3``     same
shortcut (avg-pool, 1x1 conv, BN)           ``layerL.0.downsample.1`` /      same (pool at index 0
                                            ``downsample.2``                 has no parameters)
classifier                                  ``fc``                           ``fc``
==========================================  ===============================  ====================

So the key map from timm's layout to ours is the identity (timm kept the authors' module names
"for weight compatibility"; its ``resnest50d`` weights are a port of the authors' file), and the
only differences a loader meets are (a) the classifier, dropped here, and (b) BatchNorm
``num_batches_tracked`` counters, which some re-saved files lack and which are filled with 0
when absent altogether (PyTorch's BatchNorm loader does the same). ``load_weights`` still takes
``layout="authors" | "timm" | "auto"`` so that callers can say which file they mean; the layout
is checked against the keys (``conv1.0.weight`` and ``layer1.0.conv2.fc1.weight`` must be
present: a plain ResNet-50 file such as torchvision's, whose stem is a single 7x7
``conv1.weight``, is rejected with a message saying so).

The attention MLP in the published ResNeSt-50 has cardinality 1, where every published
split-attention variant computes the same function. With cardinality > 1 (OCTA-Net's decoder
uses ``groups=2``) two variants exist, see :class:`SplAtConv2d` ``softmax_layout``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.errors import CheckpointError
from medseg.models.encoders import fill_num_batches_tracked, he_init, run_stage
from medseg.models.weights import describe_source, load_strict, read_state_dict

__all__ = ["SplAtConv2d", "ResNeStBottleneck", "ResNeStEncoder", "resnest50_encoder", "LAYOUTS"]

#: The published ResNeSt-50 state-dict layouts ``load_weights`` accepts (see the module doc).
LAYOUTS = ("authors", "timm")


class SplAtConv2d(nn.Module):
    """Split-attention convolution ("Split-Attention block", Zhang et al. 2020, Fig. 2 and Sec. 3).

    ``conv`` (k x k, ``channels * radix`` outputs, ``groups * radix`` groups) -> ``bn0`` -> ReLU
    gives ``radix`` splits ``U_r`` of ``channels`` channels each; their sum is global-average
    pooled to (N, channels, 1, 1), passed through ``fc1`` (1x1 conv, ``groups`` groups, bias) ->
    ``bn1`` -> ReLU -> ``fc2`` (1x1 conv to ``channels * radix``, ``groups`` groups, bias); a
    softmax across the ``radix`` splits (sigmoid when radix is 1) gives per-channel weights
    ``a_r`` and the output is ``sum_r a_r * U_r``. The MLP width is
    ``max(in_channels * radix // reduction_factor, 32)``, as the authors' ``splat.py``.

    Args:
        in_channels: input channels.
        channels: output channels.
        kernel_size, stride, padding, dilation: of ``conv``.
        groups: cardinality K (groups of ``conv`` are ``groups * radix``; of ``fc1``/``fc2``
            ``groups``). ``channels`` and the MLP width must be divisible by it.
        bias: bias on ``conv`` (False in the ResNeSt bottleneck, True in OCTA-Net's decoder).
        radix: number of splits R >= 1.
        reduction_factor: MLP reduction (4).
        norm: BatchNorm ``bn0``/``bn1`` present (True in ResNeSt and OCTA-Net).
        softmax_layout: how ``fc2``'s ``radix * channels`` outputs are read when ``groups > 1``
            (identical results for ``groups == 1``):

            - "grouped" (ResNeSt's later ``rSoftMax``, timm's ``RadixSoftmax``): as (group,
              radix, channel-in-group), so each cardinal group's attention comes from its own
              ``fc2`` group, as in the paper's Fig. 2.
            - "flat" (ResNeSt's ``splat.py`` up to at least commit 8029829, and
              PyTorch-Encoding's; the copy OCTA-Net uses): as (radix, channel), regardless of
              the groups.

    Shapes: (N, in_channels, H, W) float -> (N, channels, H', W') float, H' the conv's output
    size (``floor((H + 2p - d(k-1) - 1) / s) + 1``). In training mode BatchNorm on the pooled
    (N, C, 1, 1) attention input needs N >= 2, as in the original.

    Raises:
        ValueError: radix < 1, an unknown ``softmax_layout``, or channels / MLP width not
            divisible by ``groups``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        radix: int = 2,
        reduction_factor: int = 4,
        norm: bool = True,
        softmax_layout: str = "grouped",
    ) -> None:
        super().__init__()
        if radix < 1:
            raise ValueError(f"radix must be >= 1, got {radix}")
        if softmax_layout not in ("grouped", "flat"):
            raise ValueError(f"softmax_layout must be 'grouped' or 'flat', got {softmax_layout!r}")
        inter = max(in_channels * radix // reduction_factor, 32)
        if channels % groups or inter % groups:
            raise ValueError(
                f"channels ({channels}) and attention width ({inter}) must be divisible by groups ({groups})"
            )
        self.radix = int(radix)
        self.cardinality = int(groups)
        self.channels = int(channels)
        self.softmax_layout = softmax_layout
        self.conv = nn.Conv2d(
            in_channels, channels * radix, kernel_size, stride, padding, dilation, groups=groups * radix, bias=bias
        )
        self.bn0 = nn.BatchNorm2d(channels * radix) if norm else nn.Identity()
        self.fc1 = nn.Conv2d(channels, inter, 1, groups=groups)
        self.bn1 = nn.BatchNorm2d(inter) if norm else nn.Identity()
        self.fc2 = nn.Conv2d(inter, channels * radix, 1, groups=groups)

    def attention(self, gap: torch.Tensor) -> torch.Tensor:
        """Split weights from the pooled sum of the splits.

        (N, channels, 1, 1) -> (N, radix, channels): softmax over dim 1 (the splits) for radix
        > 1, so the weights of each channel sum to 1; sigmoid for radix 1.
        """
        a = self.fc2(F.relu(self.bn1(self.fc1(gap))))
        r, c = self.radix, self.channels
        if r == 1:
            return torch.sigmoid(a).reshape(-1, 1, c)
        if self.softmax_layout == "flat":
            return torch.softmax(a.reshape(-1, r, c), dim=1)
        k = self.cardinality
        a = torch.softmax(a.reshape(-1, k, r, c // k), dim=2)
        return a.transpose(1, 2).reshape(-1, r, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, channels, H', W'); see the class docstring."""
        u = F.relu(self.bn0(self.conv(x)))
        splits = torch.split(u, self.channels, dim=1)
        gap = splits[0]
        for s in splits[1:]:
            gap = gap + s
        gap = F.adaptive_avg_pool2d(gap, 1)
        att = self.attention(gap).unsqueeze(-1).unsqueeze(-1)  # (N, R, C, 1, 1)
        out = splits[0] * att[:, 0]
        for i in range(1, self.radix):
            out = out + splits[i] * att[:, i]
        return out


class ResNeStBottleneck(nn.Module):
    """ResNeSt bottleneck: 1x1 conv-BN-ReLU -> split-attention 3x3 -> [avd] -> 1x1 conv-BN,
    plus the shortcut, then ReLU (the authors' ``Bottleneck`` of ``resnet.py`` with radix 2,
    cardinality 1, ``avd=True, avd_first=False``).

    With stride 2 the 3x3 conv keeps stride 1 and a 3x3 average pool with stride 2, padding 1
    (``avd_layer``, zero padding counted) follows it ("avd"); the shortcut ``downsample`` is
    average pool 2x2 stride 2 (ceil mode, padding not counted) -> 1x1 conv -> BN ("avg-down",
    ResNet-D), an identity pool for stride 1. The first block of ``layer1`` (stride 1) has no
    avd in either published layout (the authors pass ``is_first=False`` there).

    Shapes: (N, in_planes, H, W) -> (N, 4 * planes, ceil(H / stride), ceil(W / stride)), >= 0.
    """

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        radix: int = 2,
        cardinality: int = 1,
        bottleneck_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (bottleneck_width / 64.0)) * cardinality
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = SplAtConv2d(width, width, 3, stride=1, padding=1, groups=cardinality, bias=False, radix=radix)
        self.avd_layer = nn.AvgPool2d(3, stride, padding=1) if stride > 1 else None
        self.conv3 = nn.Conv2d(width, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != out_planes:
            pool: nn.Module = (
                nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
            )
            self.downsample = nn.Sequential(
                pool, nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_planes, H, W) float -> (N, 4 * planes, H', W') float, H' = ceil(H / stride)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        if self.avd_layer is not None:
            out = self.avd_layer(out)
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNeStEncoder(nn.Module):
    """ImageNet ResNeSt trunk returning the five feature maps a U-shaped decoder taps.

    Deep stem ``conv1``: 3x3 conv stride 2 (3 -> 32) -> BN -> ReLU -> 3x3 (32 -> 32) -> BN ->
    ReLU -> 3x3 (32 -> 64), then ``bn1`` -> ReLU (the first map, 1/2), 3x3 max-pool stride 2,
    and four stages ``layer1`` ... ``layer4`` of :class:`ResNeStBottleneck` (strides 1, 2, 2, 2;
    planes 64, 128, 256, 512).

    Args:
        layers: blocks per stage ((3, 4, 6, 3) for ResNeSt-50).
        radix, cardinality, bottleneck_width: split-attention settings (2, 1, 64).
        stem_width: width of the first two stem convs (32; the stem outputs twice that).
        keep_fc: also build the ImageNet classifier ``fc`` (Linear 2048 -> 1000), unused by
            ``forward``. When False (default), ``load_weights`` drops the file's ``fc.*``.

    Attributes:
        out_channels: ``(64, 256, 512, 1024, 2048)`` for ResNeSt-50.
        reductions: ``(2, 4, 8, 16, 32)``.
        gradient_checkpointing: when True (and training with gradients), ``layer1`` ...
            ``layer4`` each run under activation checkpointing (:func:`run_stage`).

    Shapes: (N, 3, H, W) float32 (ImageNet-normalised RGB for the published weights; OCTA-Net
    feeds [0, 1] images unnormalised) -> list of five float32 maps, shallowest first: [stem
    (after ``bn1`` + ReLU, before the max-pool; 1/2), layer1 (1/4), layer2 (1/8), layer3 (1/16),
    layer4 (1/32)], each (N, out_channels[i], ceil(H / r_i) ...) (sizes halve with ceil at each
    stride-2 step); every value >= 0. In training mode N >= 2 (BatchNorm in the split
    attention).

    Parameters: 25,434,240 for ResNeSt-50 without ``fc`` (27,483,240 with it).

    Initialisation (when no weights are loaded): conv weights N(0, 2 / (k*k*out_channels)) as
    the authors' ``ResNet.__init__`` (= He-normal, fan_out), BN weight 1 / bias 0, conv biases
    (attention MLP) PyTorch's default.
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        radix: int = 2,
        cardinality: int = 1,
        bottleneck_width: int = 64,
        stem_width: int = 32,
        keep_fc: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {list(layers)}")
        self.layers = tuple(int(n) for n in layers)
        self.keep_fc = bool(keep_fc)
        self.name = "ResNeSt-50" if self.layers == (3, 4, 6, 3) else f"ResNeSt{list(self.layers)}"
        self.gradient_checkpointing = False
        s = stem_width
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, s, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(s),
            nn.ReLU(inplace=True),
            nn.Conv2d(s, s, 3, padding=1, bias=False),
            nn.BatchNorm2d(s),
            nn.ReLU(inplace=True),
            nn.Conv2d(s, 2 * s, 3, padding=1, bias=False),
        )
        self.bn1 = nn.BatchNorm2d(2 * s)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_planes = 2 * s
        stages = []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), self.layers)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(ResNeStBottleneck(in_planes, planes, stride, radix, cardinality, bottleneck_width))
                in_planes = planes * ResNeStBottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        if self.keep_fc:
            self.fc = nn.Linear(in_planes, 1000)
        self.out_channels: tuple[int, ...] = (2 * s, 256, 512, 1024, 2048)
        self.reductions: tuple[int, ...] = (2, 4, 8, 16, 32)
        he_init(self)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem: (N, 3, H, W) -> (N, 64, ceil(H/2), ceil(W/2)), after ``bn1`` + ReLU."""
        return F.relu(self.bn1(self.conv1(x)))

    def forward_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Stage ``layer{i}`` (i in 1..4; for i == 1 ``x`` is the stem map, max-pooled here),
        under activation checkpointing when ``gradient_checkpointing`` is set."""
        if i == 1:
            x = self.maxpool(x)
        stage = (self.layer1, self.layer2, self.layer3, self.layer4)[i - 1]
        return run_stage(stage, x, self.gradient_checkpointing)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) float32 -> [stem, layer1, layer2, layer3, layer4] (see class doc).

        Raises:
            ValueError: ``x`` is not 4-D with 3 channels.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name} encoder expects (N, 3, H, W) input, got {tuple(x.shape)}")
        feats = [self.forward_stem(x)]
        for i in range(1, 5):
            feats.append(self.forward_stage(i, feats[-1]))
        return feats

    def load_weights(
        self,
        path_or_state_dict: str | os.PathLike[str] | Mapping[str, torch.Tensor],
        layout: str = "auto",
    ) -> ResNeStEncoder:
        """Load a published ResNeSt ImageNet state dict strictly; return ``self``.

        Args:
            path_or_state_dict: a path (``torch.save`` file or ``.safetensors``) or a mapping
                (see :func:`medseg.models.weights.read_state_dict`; ``module.`` is stripped).
            layout: "authors" (``resnest50-528c19ca.pth`` of zhanghang1989/ResNeSt, as OCTA-Net
                uses), "timm" (timm's ``resnest50d``), or "auto" (recognised from the keys).
                Both map to our keys with the identity (see the module docstring); the
                classifier ``fc.weight``/``fc.bias`` is dropped unless ``keep_fc``, and BatchNorm
                ``num_batches_tracked`` buffers are filled with 0 when the file has none at all
                (a file with only some of them is an error).

        Raises:
            ValueError: unknown ``layout``.
            medseg.errors.CheckpointError: unreadable file; a file that is not a ResNeSt
                layout (e.g. a plain ResNet with a 7x7 ``conv1.weight``); missing or unexpected
                keys or shape mismatches, all listed by name.
        """
        if layout not in ("auto",) + LAYOUTS:
            raise ValueError(f"layout must be 'auto', 'authors' or 'timm', got {layout!r}")
        where = describe_source(path_or_state_dict)
        state = dict(read_state_dict(path_or_state_dict))
        if "conv1.0.weight" not in state and "conv1.weight" in state:
            raise CheckpointError(
                f"{where} has a single-conv stem 'conv1.weight' {tuple(state['conv1.weight'].shape)}: "
                f"a plain ResNet file, not {self.name} (which has the deep stem conv1.0/conv1.3/conv1.6)"
            )
        state = fill_num_batches_tracked(self, state)
        what = {"auto": "ResNeSt", "authors": "ResNeSt authors'", "timm": "timm"}[layout]

        def key_map(key: str) -> str | None:
            if not self.keep_fc and key.startswith("fc."):
                return None
            return key

        return load_strict(self, state, where, f"{what} {self.name} layout", key_map)


def resnest50_encoder(weights: Any = None, layout: str = "auto", **kwargs: Any) -> ResNeStEncoder:
    """ResNeSt-50 trunk (layers [3, 4, 6, 3], radix 2, cardinality 1, width 64, deep stem 32,
    avg-down, avd); out_channels (64, 256, 512, 1024, 2048); 25,434,240 parameters.

    ``weights``: optional path or state dict loaded with :meth:`ResNeStEncoder.load_weights`
    (``layout`` as there). Raises what ``load_weights`` raises."""
    enc = ResNeStEncoder((3, 4, 6, 3), **kwargs)
    if weights is not None:
        enc.load_weights(weights, layout=layout)
    return enc
