"""ResNet encoders in torchvision's parameter layout (He et al., "Deep Residual Learning for Image
Recognition", CVPR 2016, arXiv 1512.03385; Table 1 for the stage depths).

Written independently; the attribute names are torchvision's (``conv1``, ``bn1``, ``layer1`` ...
``layer4``, inside each block ``conv1``, ``bn1``, ``conv2``, ``bn2`` [, ``conv3``, ``bn3``] and
``downsample.0`` / ``downsample.1``, classifier ``fc``), so the published ImageNet files
(``resnet34-333f7ec4.pth`` and its re-save ``resnet34-b627a593.pth``, ``resnet18-5c106cde.pth``,
``resnet50-19c8e357.pth`` ...) load with no key map except dropping ``fc.*``. The authors of
CPFNet (``OCT/CPFNet/model/resnet.py``) and of many other segmentation networks use this same
layout under an attribute ``backbone``.

Bottleneck blocks put the stride on the 3x3 conv (torchvision's "ResNet v1.5"), as the
torchvision files expect.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from medseg.models.encoders import fill_num_batches_tracked, he_init, run_stage
from medseg.models.weights import describe_source, load_strict, read_state_dict

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNetEncoder",
    "resnet18_encoder",
    "resnet34_encoder",
    "resnet50_encoder",
]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN projection) shortcut, then ReLU.

    (N, in_planes, H, W) -> (N, planes, ceil(H / stride), ceil(W / stride)), values >= 0.
    Source: He et al. 2016, Fig. 2 left; torchvision ``BasicBlock`` names.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_planes, H, W) float -> (N, planes, H', W') float, H' = ceil(H / stride)."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 (reduce) -> 3x3 (stride) -> 1x1 (expand x4) conv-BN layers with a shortcut, then ReLU.

    (N, in_planes, H, W) -> (N, 4 * planes, ceil(H / stride), ceil(W / stride)), values >= 0.
    Source: He et al. 2016, Fig. 5 right; stride on the 3x3 conv as in torchvision.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        width = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_planes, H, W) float -> (N, 4 * planes, H', W') float, H' = ceil(H / stride)."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


_DEPTH_NAMES = {
    (BasicBlock, (2, 2, 2, 2)): "ResNet-18",
    (BasicBlock, (3, 4, 6, 3)): "ResNet-34",
    (Bottleneck, (3, 4, 6, 3)): "ResNet-50",
    (Bottleneck, (3, 4, 23, 3)): "ResNet-101",
    (Bottleneck, (3, 8, 36, 3)): "ResNet-152",
}


class ResNetEncoder(nn.Module):
    """ImageNet ResNet trunk returning the five feature maps a U-shaped decoder taps.

    Stem: 7x7 conv stride 2 (3 -> 64, no bias) -> BN -> ReLU (the first map), then 3x3 max-pool
    stride 2 and four stages ``layer1`` ... ``layer4`` of ``layers[i]`` blocks (stride 1, 2, 2, 2).

    Args:
        block: :class:`BasicBlock` (ResNet-18/34) or :class:`Bottleneck` (ResNet-50/101/152).
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-34.
        keep_fc: also build the ImageNet classifier ``fc`` (Linear 512*expansion -> 1000), unused
            by ``forward``; networks whose original keeps it (CPFNet) need it for their state
            dicts and parameter counts. When False, ``load_weights`` drops the file's ``fc.*``.

    Attributes:
        out_channels: channels of the five maps, ``(64, 64e, 128e, 256e, 512e)`` with e = 1 for
            BasicBlock, 4 for Bottleneck.
        reductions: their strides, ``(2, 4, 8, 16, 32)``.
        gradient_checkpointing: when True (and training with gradients), ``layer1`` ... ``layer4``
            each run under activation checkpointing (:func:`medseg.models.encoders.run_stage`);
            the stem is not checkpointed.

    Shapes: (N, 3, H, W) float32 (ImageNet-normalised RGB for the published weights) -> list of
    five float32 maps (N, out_channels[i], ceil(H / r_i), ceil(W / r_i)), shallowest first:
    [stem ReLU output (1/2), layer1 (1/4), layer2 (1/8), layer3 (1/16), layer4 (1/32)]; every
    value >= 0 (each ends with a ReLU). Any H, W >= 1 run; a network that adds upsampled maps to
    skips needs multiples of 32.

    Initialisation (when no weights are loaded): convs He-normal (fan_out, ReLU gain), BN weight
    1 and bias 0, as torchvision and the CPFNet authors' ``resnet.py``; ``fc`` PyTorch default.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        keep_fc: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {list(layers)}")
        self.block = block
        self.layers = tuple(int(n) for n in layers)
        self.keep_fc = bool(keep_fc)
        self.name = _DEPTH_NAMES.get((block, self.layers), f"ResNet{list(self.layers)}")
        self.gradient_checkpointing = False

        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_planes = 64
        stages = []
        for i, (planes, n_blocks) in enumerate(zip((64, 128, 256, 512), self.layers)):
            stride = 1 if i == 0 else 2
            stage, in_planes = self._make_stage(block, in_planes, planes, n_blocks, stride)
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        if self.keep_fc:
            self.fc = nn.Linear(512 * block.expansion, 1000)

        e = block.expansion
        self.out_channels: tuple[int, ...] = (64, 64 * e, 128 * e, 256 * e, 512 * e)
        self.reductions: tuple[int, ...] = (2, 4, 8, 16, 32)

        he_init(self)

    @staticmethod
    def _make_stage(
        block: type[BasicBlock] | type[Bottleneck], in_planes: int, planes: int, n_blocks: int, stride: int
    ) -> tuple[nn.Sequential, int]:
        out_planes = planes * block.expansion
        downsample = None
        if stride != 1 or in_planes != out_planes:
            downsample = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        blocks: list[nn.Module] = [block(in_planes, planes, stride, downsample)]
        blocks += [block(out_planes, planes) for _ in range(n_blocks - 1)]
        return nn.Sequential(*blocks), out_planes

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) float32 -> [stem, layer1, layer2, layer3, layer4] maps (see class doc).

        Raises:
            ValueError: ``x`` is not 4-D with 3 channels.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name} encoder expects (N, 3, H, W) input, got {list(x.shape)}")
        stem = self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(stem)
        if self.gradient_checkpointing and not torch.jit.is_scripting():
            c2 = self._checkpointed(self.layer1, x)
            c3 = self._checkpointed(self.layer2, c2)
            c4 = self._checkpointed(self.layer3, c3)
            c5 = self._checkpointed(self.layer4, c4)
        else:
            c2 = self.layer1(x)
            c3 = self.layer2(c2)
            c4 = self.layer3(c3)
            c5 = self.layer4(c4)
        return [stem, c2, c3, c4, c5]

    @torch.jit.unused
    def _checkpointed(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # run_stage uses torch.utils.checkpoint, which TorchScript cannot compile.
        return run_stage(stage, x, True)

    def load_weights(self, path_or_state_dict: str | os.PathLike[str] | Mapping[str, torch.Tensor]) -> ResNetEncoder:
        """Load a torchvision ImageNet state dict strictly; return ``self``.

        Accepts a path (``torch.save`` file or ``.safetensors``) or a mapping (see
        :func:`medseg.models.weights.read_state_dict`; a ``module.`` prefix is stripped). Every
        key of the file must belong to this encoder and vice versa, except:

        - ``fc.weight`` / ``fc.bias`` are dropped when the encoder has no ``fc``
          (``keep_fc=False``); with ``keep_fc=True`` they are required and loaded.
        - BatchNorm ``*.num_batches_tracked`` buffers are filled with 0 when the file has none at
          all: files saved before PyTorch 0.4.1 (``resnet34-333f7ec4.pth`` is from 2017) lack
          them, and PyTorch's own BatchNorm loader fills them in the same way. A file with some
          but not all of them is an error.

        Raises:
            medseg.errors.CheckpointError: unreadable file, or missing / unexpected keys or
                shape mismatches, all listed by name.
        """
        where = describe_source(path_or_state_dict)
        state = dict(read_state_dict(path_or_state_dict))
        state = fill_num_batches_tracked(self, state)

        def key_map(key: str) -> str | None:
            if not self.keep_fc and key.startswith("fc."):
                return None
            return key

        return load_strict(self, state, where, f"torchvision {self.name}", key_map)


def resnet18_encoder(**kwargs: Any) -> ResNetEncoder:
    """ResNet-18 trunk (BasicBlock, [2, 2, 2, 2]); out_channels (64, 64, 128, 256, 512)."""
    return ResNetEncoder(BasicBlock, (2, 2, 2, 2), **kwargs)


def resnet34_encoder(**kwargs: Any) -> ResNetEncoder:
    """ResNet-34 trunk (BasicBlock, [3, 4, 6, 3]); out_channels (64, 64, 128, 256, 512).

    21,284,672 parameters without ``fc`` (21,797,672 with it, as torchvision's ``resnet34``).
    Weight file: torchvision ``resnet34-333f7ec4.pth`` / ``resnet34-b627a593.pth``."""
    return ResNetEncoder(BasicBlock, (3, 4, 6, 3), **kwargs)


def resnet50_encoder(**kwargs: Any) -> ResNetEncoder:
    """ResNet-50 trunk (Bottleneck, [3, 4, 6, 3]); out_channels (64, 256, 512, 1024, 2048)."""
    return ResNetEncoder(Bottleneck, (3, 4, 6, 3), **kwargs)
