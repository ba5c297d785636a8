"""DenseNet encoders in torchvision's layout (Huang, Liu, van der Maaten, Weinberger, "Densely
Connected Convolutional Networks", CVPR 2017, arXiv 1608.06993; DenseNet-BC, Table 1).

DenseNet-161: growth rate k = 48, 96 initial features, dense blocks of (6, 12, 36, 24) layers,
bottleneck width 4k (``bn_size`` 4), transition compression 0.5. It is the encoder of
H-DenseUNet's 2D DenseUNet (Li et al., IEEE TMI 2018; authors' ``denseunet.py``), which used
Caffe-converted ImageNet weights of the same network; medseg loads torchvision's
``densenet161-8d451a50.pth`` instead.

Parameter names equal torchvision's ``densenet161`` state-dict keys: ``features.conv0``,
``features.norm0``, ``features.denseblock{b}.denselayer{l}.{norm1,conv1,norm2,conv2}``,
``features.transition{b}.{norm,conv}``, ``features.norm5``. The classifier (``classifier.*``,
2208 -> 1000) is not built; its keys are accepted in weight files and dropped.

**Two key styles.** torchvision's published file ``densenet161-8d451a50.pth`` was saved by an
early PyTorch whose dense layers named their modules ``norm.1``, ``conv.1``, ``norm.2``,
``conv.2`` (keys like ``features.denseblock1.denselayer1.norm.1.weight``); torchvision renames
them with a regular expression when it loads the file. It was also saved before BatchNorm had a
``num_batches_tracked`` buffer. :meth:`DenseNetEncoder.load_weights` accepts both that old style
and the current one (``norm1``, ``conv1``, ... with ``num_batches_tracked``, as a state dict
saved from a current torchvision model has them); see :func:`remap_legacy_keys`.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from medseg.models.encoders import drop_classifier, fill_num_batches_tracked, run_stage
from medseg.models.weights import describe_source, load_strict, read_state_dict

__all__ = [
    "DenseLayer",
    "DenseBlock",
    "Transition",
    "DenseNetEncoder",
    "densenet161",
    "remap_legacy_keys",
    "adapt_input_conv",
]

# features.denseblockB.denselayerL.{norm,relu,conv}.{1,2}.<param> (pre-0.4 torchvision files)
_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def remap_legacy_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename old-style dense-layer keys (``...denselayer1.norm.1.weight``) to the current ones
    (``...denselayer1.norm1.weight``); other keys pass unchanged.

    This is the renaming torchvision applies when it loads its published DenseNet files
    (``torchvision.models.densenet._load_state_dict``); only keys inside a ``denselayer`` are
    touched (``transition1.norm.weight`` stays as it is).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _LEGACY_KEY.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """An RGB first-conv kernel ``(C_out, 3, kh, kw)`` adapted to ``in_channels`` inputs.

    Every input channel gets the mean of the three RGB kernels, scaled by ``3 / in_channels``
    so that an input with the same value in every channel gives the same response as a grey RGB
    image. For ``in_channels`` = 3 the kernel is returned unchanged.

    Raises:
        ValueError: ``weight`` does not have 3 input channels.
    """
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise ValueError(f"expected an RGB kernel (C_out, 3, kh, kw), got {tuple(weight.shape)}")
    if in_channels == 3:
        return weight
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, in_channels, 1, 1) * (3.0 / in_channels)


class DenseLayer(nn.Module):
    """DenseNet-BC composite layer: BN-ReLU-1x1 conv (``bn_size * growth_rate``) then
    BN-ReLU-3x3 conv (``growth_rate``), optional dropout (paper §3 "Bottleneck layers").

    Input: the list of all earlier feature maps of the block, each (N, C_i, H, W) float32;
    they are concatenated (sum C_i = ``num_input_features``). Output: the new features
    (N, growth_rate, H, W).

    ``memory_efficient`` (bool): when True and training with gradients, the concatenation and
    the bottleneck (norm1-relu1-conv1) run under :func:`torch.utils.checkpoint.checkpoint` and
    are recomputed in the backward pass (Pleiss et al., "Memory-Efficient Implementation of
    DenseNets", arXiv 1707.06990; torchvision's ``memory_efficient``). Outputs and gradients are
    unchanged; norm1's running statistics are updated a second time by the recomputation (as with
    torchvision's ``memory_efficient``).
    """

    def __init__(
        self,
        num_input_features: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def _bottleneck(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.relu1(self.norm1(torch.cat(inputs, 1))))

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """list of (N, C_i, H, W) -> (N, growth_rate, H, W)."""
        if self.memory_efficient and self.training and torch.is_grad_enabled():
            out = checkpoint(self._bottleneck, *inputs, use_reentrant=False)
        else:
            out = self._bottleneck(*inputs)
        out = self.conv2(self.relu2(self.norm2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(nn.ModuleDict):
    """``num_layers`` :class:`DenseLayer` s (``denselayer1`` ...), each fed the concatenation of the
    block input and all earlier layers' outputs.

    (N, num_input_features, H, W) -> (N, num_input_features + num_layers * growth_rate, H, W).
    """

    def __init__(
        self,
        num_layers: int,
        num_input_features: int,
        bn_size: int,
        growth_rate: int,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            c_in = num_input_features + i * growth_rate
            layer = DenseLayer(c_in, growth_rate, bn_size, drop_rate, memory_efficient)
            self.add_module(f"denselayer{i + 1}", layer)
        self.in_channels = num_input_features
        self.out_channels = num_input_features + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_in + L * k, H, W): input and all new features, concatenated."""
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """DenseNet transition: BN-ReLU-1x1 conv (``num_output_features``) - 2x2 average pooling.

    (N, C_in, H, W) -> (N, C_out, H // 2, W // 2).
    """

    def __init__(self, num_input_features: int, num_output_features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(num_input_features, num_output_features, 1, bias=False)
        self.pool = nn.AvgPool2d(2, stride=2)


class DenseNetEncoder(nn.Module):
    """DenseNet-BC feature extractor (torchvision layout) returning five maps for a U-Net.

    Args:
        growth_rate: k (48 for DenseNet-161).
        block_config: layers per dense block ((6, 12, 36, 24) for DenseNet-161).
        num_init_features: channels of the 7x7 stem conv (96).
        bn_size: bottleneck width multiplier (4).
        drop_rate: dropout after every dense layer (0; H-DenseUNet used none).
        in_channels: input channels of ``features.conv0`` (3 for the ImageNet weights).
        memory_efficient: per-dense-layer checkpointing (see :class:`DenseLayer`).

    Forward: (N, in_channels, H, W) float32, H and W multiples of 32 for the maps to halve
    exactly -> list of five maps, shallowest first, as H-DenseUNet's ``denseunet.py`` collects
    them in its ``box`` list:

    0. stem: conv0-norm0-relu0 (before the max pooling): (N, 96, H/2, W/2), values >= 0;
    1. output of dense block 1, *before* transition 1 (its BN-ReLU is not applied):
       (N, 384, H/4, W/4);
    2. dense block 2 output: (N, 768, H/8, W/8);
    3. dense block 3 output: (N, 2112, H/16, W/16);
    4. dense block 4 - norm5 - ReLU: (N, 2208, H/32, W/32), values >= 0.

    ``out_channels`` and ``reductions`` give the channels and strides of these maps.

    ``gradient_checkpointing`` (bool, default False): each dense block runs through
    :func:`medseg.models.encoders.run_stage`. Outputs and gradients are unchanged, but the
    recomputation in the backward pass updates the blocks' BatchNorm running statistics a second
    time (measured with PyTorch 2.13).
    """

    def __init__(
        self,
        growth_rate: int = 48,
        block_config: tuple[int, ...] = (6, 12, 36, 24),
        num_init_features: int = 96,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        in_channels: int = 3,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.gradient_checkpointing = False
        modules: list[tuple[str, nn.Module]] = [
            ("conv0", nn.Conv2d(in_channels, num_init_features, 7, 2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(3, stride=2, padding=1)),
        ]
        channels = num_init_features
        out_channels = [num_init_features]
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(num_layers, channels, bn_size, growth_rate, drop_rate, memory_efficient)
            modules.append((f"denseblock{i + 1}", block))
            channels = block.out_channels
            out_channels.append(channels)
            if i != len(block_config) - 1:
                modules.append((f"transition{i + 1}", Transition(channels, channels // 2)))
                channels //= 2
        modules.append(("norm5", nn.BatchNorm2d(channels)))
        self.features = nn.Sequential(OrderedDict(modules))
        # The last map is block 4 after norm5 + ReLU; block 4's raw output has the same width.
        self.out_channels: tuple[int, ...] = tuple(out_channels[: len(block_config)]) + (channels,)
        self.reductions: tuple[int, ...] = tuple(2 ** (i + 1) for i in range(len(block_config) + 1))
        self.num_blocks = len(block_config)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def memory_efficient(self) -> bool:
        """Whether the dense layers checkpoint their bottleneck (settable)."""
        return any(m.memory_efficient for m in self.modules() if isinstance(m, DenseLayer))

    @memory_efficient.setter
    def memory_efficient(self, enabled: bool) -> None:
        for m in self.modules():
            if isinstance(m, DenseLayer):
                m.memory_efficient = bool(enabled)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, in_channels, H, W) -> five maps (see the class docstring), shallowest first."""
        f = self.features
        x = f.relu0(f.norm0(f.conv0(x)))
        outs = [x]
        x = f.pool0(x)
        for i in range(1, self.num_blocks + 1):
            if i > 1:
                x = getattr(f, f"transition{i - 1}")(x)
            x = run_stage(getattr(f, f"denseblock{i}"), x, self.gradient_checkpointing)
            if i < self.num_blocks:
                outs.append(x)
        outs.append(F.relu(f.norm5(x)))
        return outs

    def load_weights(self, source: Any, what: str = "torchvision DenseNet-161") -> "DenseNetEncoder":
        """Load a torchvision DenseNet state dict (path or mapping) strictly; return self.

        Accepted: both key styles (old ``norm.1``/``conv.1`` of the published
        ``densenet161-8d451a50.pth``, renamed by :func:`remap_legacy_keys`, and current
        ``norm1``/``conv1``); ``classifier.*`` is dropped; a file with no ``num_batches_tracked``
        buffer at all (saved before PyTorch 0.4.1, like the published one) gets zeros for them, as
        ``BatchNorm2d`` itself does when it loads such a file. Everything else must match: every
        other key present, no extra key, equal shapes.

        When this encoder's ``conv0`` has ``in_channels`` != 3 and the file's conv0 is RGB, the
        kernel is adapted with :func:`adapt_input_conv` (mean of the RGB kernels, scaled by
        3 / in_channels).

        Raises:
            CheckpointError: unreadable file, or missing/unexpected keys or shape mismatches
                (all listed, with our key names).
        """
        where = describe_source(source)
        state = remap_legacy_keys(read_state_dict(source))
        state = fill_num_batches_tracked(self, state)
        conv0 = state.get("features.conv0.weight")
        if conv0 is not None and self.in_channels != 3 and conv0.dim() == 4 and conv0.shape[1] == 3:
            state["features.conv0.weight"] = adapt_input_conv(conv0, self.in_channels)
        load_strict(self, state, where, what, key_map=drop_classifier(("classifier.",)))
        return self


def densenet161(in_channels: int = 3, memory_efficient: bool = False) -> DenseNetEncoder:
    """DenseNet-161 encoder (growth 48, 96 initial features, blocks 6/12/36/24, bn_size 4,
    compression 0.5): 26,472,000 parameters with 3 input channels (torchvision's 28,681,000
    minus the 2,209,000 of its classifier). Out channels (96, 384, 768, 2112, 2208), strides
    (2, 4, 8, 16, 32)."""
    return DenseNetEncoder(48, (6, 12, 36, 24), 96, 4, 0.0, in_channels, memory_efficient)
