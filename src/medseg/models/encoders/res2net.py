"""Res2Net-50 v1b 26w x 4s, the ImageNet encoder of PraNet and BCNet.

Res2Net: Gao, Cheng, Zhao, Zhang, Yang, Torr, "Res2Net: A New Multi-scale Backbone
Architecture", IEEE TPAMI 2021 (arXiv 1904.01169). The "v1b" variant is the one of the authors'
``res2net50_v1b_26w_4s-3cf99910.pth`` ImageNet file, as defined in ``Res2Net_v1b.py``
(github.com/Res2Net/Res2Net-PretrainedModels; the copy PraNet uses is
github.com/DengPingFan/PraNet ``lib/Res2Net_v1b.py``). Written independently from that code;
the attribute names are the file's keys, so it loads without renaming:

- Deep stem ``conv1`` (a Sequential): ``conv1.0`` 3x3 stride 2, 3 -> 32; ``conv1.1`` BN;
  ReLU; ``conv1.3`` 3x3, 32 -> 32; ``conv1.4`` BN; ReLU; ``conv1.6`` 3x3, 32 -> 64 (all convs
  bias-free, padding 1); then ``bn1``, ReLU, 3x3/2 max-pool (padding 1).
- ``layer1`` ... ``layer4``: 3, 4, 6, 3 :class:`Bottle2neck` blocks with planes 64, 128, 256,
  512 (outputs 256, 512, 1024, 2048 channels), strides 1, 2, 2, 2.
- v1b "avg-down" shortcut in the first block of every layer: ``downsample.0`` AvgPool2d
  (kernel = stride = layer stride, ceil_mode=True, count_include_pad=False; an identity for
  layer1), ``downsample.1`` 1x1 conv, ``downsample.2`` BN.
- ``fc`` (2048 -> 1000 classifier) only with ``keep_fc=True`` (never used by ``forward``).

Parameters: 23,669,352 without ``fc``; 25,718,352 with it (``fc`` = 2,049,000).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from medseg.models.encoders import drop_classifier, fill_num_batches_tracked, he_init, run_stage
from medseg.models.weights import describe_source, load_strict, read_state_dict

__all__ = ["Bottle2neck", "Res2NetEncoder", "res2net50_v1b_26w_4s"]


class Bottle2neck(nn.Module):
    """Res2Net bottleneck: 1x1 reduce, hierarchical 3x3 convs over ``scale`` splits, 1x1 expand.

    ``conv1`` (1x1, C_in -> width*scale) + ``bn1`` + ReLU; the result is split into ``scale``
    groups of ``width = floor(planes * base_width / 64)`` channels. The first ``scale - 1``
    groups each go through a 3x3 conv (``convs[i]``, stride ``stride``) + ``bns[i]`` + ReLU; in a
    "normal" block group i > 0 first adds the previous group's output (the hierarchical
    residual-like connection of the paper, Fig. 2); in a "stage" block (first block of a layer)
    the groups are independent and the last group passes through a 3x3 average pool (stride
    ``stride``, padding 1, zero padding counted) instead of being passed on unchanged. The
    ``scale`` outputs are concatenated, ``conv3`` (1x1 -> planes*4) + ``bn3``, plus the shortcut
    (``downsample`` or identity), ReLU. Source: Res2Net paper Sec. 3.1; ``Res2Net_v1b.py``.

    Shapes: (N, inplanes, H, W) -> (N, planes * 4, ceil(H / stride), ceil(W / stride)), >= 0.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        base_width: int = 26,
        scale: int = 4,
        stype: str = "normal",
    ) -> None:
        super().__init__()
        if stype not in ("normal", "stage"):
            raise ValueError(f"stype must be 'normal' or 'stage', got {stype!r}")
        if scale < 2:
            raise ValueError(f"scale must be >= 2 for the v1b blocks used here, got {scale}")
        width = int(math.floor(planes * (base_width / 64.0)))
        self.width = width
        self.scale = scale
        self.stype = stype
        self.conv1 = nn.Conv2d(inplanes, width * scale, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False) for _ in range(scale - 1)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(scale - 1))
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1) if stype == "stage" else nn.Identity()
        self.conv3 = nn.Conv2d(width * scale, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, inplanes, H, W) -> (N, planes * 4, H', W'), H' = ceil(H / stride)."""
        out = self.relu(self.bn1(self.conv1(x)))
        splits = torch.split(out, self.width, dim=1)
        pieces = []
        sp = splits[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            if i == 0 or self.stype == "stage":
                sp = splits[i]
            else:
                sp = sp + splits[i]
            sp = self.relu(bn(conv(sp)))
            pieces.append(sp)
        pieces.append(self.pool(splits[self.scale - 1]))
        out = self.bn3(self.conv3(torch.cat(pieces, dim=1)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Res2NetEncoder(nn.Module):
    """Res2Net v1b (deep stem, avg-down shortcuts) as a feature encoder.

    Args:
        layers: blocks per layer ((3, 4, 6, 3) for Res2Net-50).
        base_width: the "w" of "26w" (26).
        scale: the "s" of "4s" (4).
        keep_fc: also build the 2048 -> 1000 ImageNet classifier ``fc`` (unused by
            ``forward``), so that state dicts holding it (the ImageNet file, PraNet checkpoints)
            load as they are and the parameter count matches the original network.
        num_classes: outputs of ``fc`` (1000).

    Forward: (N, 3, H, W) float32 (ImageNet-normalised RGB) -> list of 5 float32 maps,
    shallowest first:

    ======  =====================================  ========  ==============================
    index   taken after                            channels  size
    ======  =====================================  ========  ==============================
    0       stem (``conv1``, ``bn1``, ReLU)        64        ceil(H/2)  x ceil(W/2)
    1       max-pool + ``layer1``                  256       ceil(H/4)  (exact for H % 4 == 0)
    2       ``layer2``                             512       1/8
    3       ``layer3``                             1024      1/16
    4       ``layer4``                             2048      1/32
    ======  =====================================  ========  ==============================

    Every stride-2 step rounds up (odd sizes are accepted, as in the original).
    ``out_channels`` = (64, 256, 512, 1024, 2048), ``reductions`` = (2, 4, 8, 16, 32).
    ``gradient_checkpointing`` (default False) runs ``conv1`` and each layer under
    :func:`medseg.models.encoders.run_stage`.
    """

    out_channels = (64, 256, 512, 1024, 2048)
    reductions = (2, 4, 8, 16, 32)

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        base_width: int = 26,
        scale: int = 4,
        keep_fc: bool = False,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.base_width = base_width
        self.scale = scale
        self.keep_fc = bool(keep_fc)
        self.gradient_checkpointing = False
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, 1, 1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, 1, 1, bias=False),
        )
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._inplanes = 64
        self.layer1 = self._make_layer(64, layers[0], stride=1)
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.fc = nn.Linear(512 * Bottle2neck.expansion, num_classes) if self.keep_fc else None
        he_init(self)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        out = planes * Bottle2neck.expansion
        downsample = None
        if stride != 1 or self._inplanes != out:
            downsample = nn.Sequential(
                nn.AvgPool2d(stride, stride=stride, ceil_mode=True, count_include_pad=False),
                nn.Conv2d(self._inplanes, out, 1, bias=False),
                nn.BatchNorm2d(out),
            )
        seq = [Bottle2neck(self._inplanes, planes, stride, downsample, self.base_width, self.scale, "stage")]
        self._inplanes = out
        seq += [Bottle2neck(out, planes, 1, None, self.base_width, self.scale) for _ in range(1, blocks)]
        return nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) -> [stem (64, 1/2), layer1 (256, 1/4), layer2 (512, 1/8),
        layer3 (1024, 1/16), layer4 (2048, 1/32)]."""
        gc = self.gradient_checkpointing
        x = self.relu(self.bn1(run_stage(self.conv1, x, gc)))
        feats = [x]
        x = run_stage(self.layer1, self.maxpool(x), gc)
        feats.append(x)
        for layer in (self.layer2, self.layer3, self.layer4):
            x = run_stage(layer, x, gc)
            feats.append(x)
        return feats

    def load_weights(self, path_or_state_dict: Any) -> "Res2NetEncoder":
        """Load the authors' ImageNet file (``res2net50_v1b_26w_4s-3cf99910.pth``) strictly.

        The file's keys are this module's names (``conv1.0.weight``, ``bn1.running_mean``,
        ``layer1.0.convs.0.weight``, ``layer1.0.bns.0.*``, ``layer1.0.conv3.weight``,
        ``layer1.0.downsample.1.weight``, ``fc.weight``, ...). ``fc.*`` is dropped unless the
        encoder was built with ``keep_fc=True`` (then it is required). BatchNorm
        ``num_batches_tracked`` counters: if the file holds none of them (files saved before
        PyTorch 0.4.1), they are set to 0, as ``torch.nn.BatchNorm2d`` itself does for such
        files; if it holds some, all are required.

        Args:
            path_or_state_dict: path to a ``torch.save`` / ``.safetensors`` file, or a mapping.

        Returns:
            self, with every tensor replaced.

        Raises:
            CheckpointError: unreadable file, missing/unexpected keys or shape mismatches (all
                listed).
        """
        where = describe_source(path_or_state_dict)
        state = read_state_dict(path_or_state_dict)
        state = fill_num_batches_tracked(self, state, prefix="")
        key_map = None if self.keep_fc else drop_classifier(("fc.",))
        load_strict(self, state, where, "Res2Net-50 v1b 26w 4s ImageNet encoder", key_map=key_map)
        return self


def res2net50_v1b_26w_4s(keep_fc: bool = False, weights: Any = None) -> Res2NetEncoder:
    """Res2Net-50 v1b 26w x 4s encoder (layers 3, 4, 6, 3); see :class:`Res2NetEncoder`.

    Args:
        keep_fc: build the unused ImageNet classifier ``fc`` (2,049,000 parameters).
        weights: optional path/mapping of the authors' ImageNet file, loaded strictly
            (:meth:`Res2NetEncoder.load_weights`).

    Raises:
        CheckpointError: ``weights`` does not fit.
    """
    enc = Res2NetEncoder((3, 4, 6, 3), base_width=26, scale=4, keep_fc=keep_fc)
    if weights is not None:
        enc.load_weights(weights)
    return enc
