"""PraNet: Parallel Reverse Attention Network for polyp segmentation.

Fan, Ji, Zhou, Chen, Fu, Shen, Shao, "PraNet: Parallel Reverse Attention Network for Polyp
Segmentation", MICCAI 2020 (arXiv 2006.11392). Network of the authors' released code,
github.com/DengPingFan/PraNet ``lib/PraNet_Res2Net.py`` (with ``lib/Res2Net_v1b.py``), written
independently. Module names are the authors' (``rfb2_1``, ``rfb3_1``, ``rfb4_1``, ``agg1``,
``ra4_conv1`` ... ``ra4_conv5``, ``ra3_conv1`` ... ``ra3_conv4``, ``ra2_conv1`` ...
``ra2_conv4``; inside: ``branch0`` ... ``branch3``, ``conv_cat``, ``conv_res``,
``conv_upsample1`` ... ``conv_upsample5``, ``conv_concat2``, ``conv_concat3``, ``conv4``,
``conv5``, and ``conv``/``bn`` in every :class:`BasicConv2d`); only the backbone attribute is
renamed, ``resnet`` -> ``encoder`` (the medseg convention), see :func:`load_original`.

Where the paper and the released code differ, this follows the code:

- :class:`BasicConv2d` is conv + BatchNorm **without** ReLU: the authors construct a ReLU and
  never apply it. Reproduced (it changes what the network computes); the paper's figures suggest
  conv-BN-ReLU units.
- The reverse-attention conv stacks apply ReLU explicitly after their middle convs only (x4: after
  the three 5x5; x3/x2: after the two 3x3), as in the code.
- The partial decoder upsamples with ``align_corners=True``; every other resize (the prior maps,
  the outputs) is ``F.interpolate(..., mode="bilinear")`` with fixed scale factors and
  ``align_corners=False``, as in the code.
- Res2Net's ImageNet classifier ``fc`` is part of the original network (and its checkpoints)
  but never used: ``keep_fc=True`` keeps it for parameter parity (32,547,319) and
  :func:`load_original`; the default drops it (30,498,319 parameters, all used).
- The training loss (weighted BCE + weighted IoU, equal weights on the four outputs) and the
  test-time min-max normalisation live in the losses / evaluation code, not here.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.models import register_model
from medseg.models.contract import NetworkContract, check_input_size
from medseg.models.encoders import fill_num_batches_tracked
from medseg.models.encoders.res2net import Res2NetEncoder, res2net50_v1b_26w_4s
from medseg.models.weights import describe_source, load_strict, read_state_dict

__all__ = [
    "BasicConv2d",
    "RFBModified",
    "PartialDecoder",
    "ReverseAttention",
    "PraNet",
    "load_original",
]


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm, **no activation** (the authors' ``BasicConv2d``).

    The original constructs ``self.relu = nn.ReLU(inplace=True)`` but its forward returns
    ``bn(conv(x))``: the ReLU is never applied. Reproduced here (``relu`` is kept as an unused,
    parameter-free attribute), so outputs can be negative.

    Shapes: (N, in_planes, H, W) -> (N, out_planes, H', W') (H' = H for the "same" paddings
    used in PraNet), float32, unbounded.
    """

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_planes, out_planes, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False
        )
        self.bn = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)  # constructed, never applied (as in the original)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``bn(conv(x))``, no ReLU."""
        return self.bn(self.conv(x))


class RFBModified(nn.Module):
    """Receptive-field-block-like module (the authors' ``RFB_modified``; PraNet Sec. 2.1).

    Four branches on the same input, each starting with a 1x1 :class:`BasicConv2d` to
    ``out_channel``: ``branch0`` stops there; ``branch1``/``2``/``3`` continue with 1xk, kx1 and a
    3x3 conv of dilation k for k = 3, 5, 7. The four outputs are concatenated, fused by
    ``conv_cat`` (3x3, 4*out -> out), added to ``conv_res`` (1x1 of the input) and passed through
    a ReLU (the only activation in the module, see :class:`BasicConv2d`).

    Shapes: (N, in_channel, H, W) -> (N, out_channel, H, W), float32, >= 0.
    """

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.branch0 = nn.Sequential(BasicConv2d(in_channel, out_channel, 1))
        for i, k in ((1, 3), (2, 5), (3, 7)):
            branch = nn.Sequential(
                BasicConv2d(in_channel, out_channel, 1),
                BasicConv2d(out_channel, out_channel, (1, k), padding=(0, k // 2)),
                BasicConv2d(out_channel, out_channel, (k, 1), padding=(k // 2, 0)),
                BasicConv2d(out_channel, out_channel, 3, padding=k, dilation=k),
            )
            self.add_module(f"branch{i}", branch)
        self.conv_cat = BasicConv2d(4 * out_channel, out_channel, 3, padding=1)
        self.conv_res = BasicConv2d(in_channel, out_channel, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channel, H, W) -> (N, out_channel, H, W)."""
        cat = torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], dim=1)
        return self.relu(self.conv_cat(cat) + self.conv_res(x))


class PartialDecoder(nn.Module):
    """Parallel partial decoder (the authors' ``aggregation``; PraNet Sec. 2.1, Eq. 1).

    Inputs: the RFB outputs of layer4 (``x1``, 1/32), layer3 (``x2``, 1/16), layer2 (``x3``,
    1/8), each ``channel`` wide. ``up`` = bilinear x2 upsampling with align_corners=True; every
    ``conv_*`` is a 3x3 :class:`BasicConv2d` (no ReLU):

    - ``x2_1 = conv_upsample1(up(x1)) * x2``
    - ``x3_1 = conv_upsample2(up(up(x1))) * conv_upsample3(up(x2)) * x3``
    - ``x2_2 = conv_concat2(cat(x2_1, conv_upsample4(up(x1))))``  (2*channel)
    - ``x3_2 = conv_concat3(cat(x3_1, conv_upsample5(up(x2_2))))``  (3*channel)
    - output ``conv5(conv4(x3_2))``, ``conv5`` a plain 1x1 conv with bias to one channel.

    Shapes: x1 (N, C, h, w), x2 (N, C, 2h, 2w), x3 (N, C, 4h, 4w) -> (N, 1, 4h, 4w) logits (the
    global map S_g at 1/8 of the input).
    """

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)  # constructed, never applied (as in the original)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        for i in range(1, 5):
            self.add_module(f"conv_upsample{i}", BasicConv2d(channel, channel, 3, padding=1))
        self.conv_upsample5 = BasicConv2d(2 * channel, 2 * channel, 3, padding=1)
        self.conv_concat2 = BasicConv2d(2 * channel, 2 * channel, 3, padding=1)
        self.conv_concat3 = BasicConv2d(3 * channel, 3 * channel, 3, padding=1)
        self.conv4 = BasicConv2d(3 * channel, 3 * channel, 3, padding=1)
        self.conv5 = nn.Conv2d(3 * channel, 1, 1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w), (N, C, 2h, 2w), (N, C, 4h, 4w) -> (N, 1, 4h, 4w)."""
        up = self.upsample
        x2_1 = self.conv_upsample1(up(x1)) * x2
        x3_1 = self.conv_upsample2(up(up(x1))) * self.conv_upsample3(up(x2)) * x3
        x2_2 = self.conv_concat2(torch.cat([x2_1, self.conv_upsample4(up(x1))], dim=1))
        x3_2 = self.conv_concat3(torch.cat([x3_1, self.conv_upsample5(up(x2_2))], dim=1))
        return self.conv5(self.conv4(x3_2))


class ReverseAttention(nn.Module):
    """Reverse attention (PraNet Sec. 2.2, Eq. 2): ``R = f * (1 - sigmoid(S))``.

    ``S`` is the higher-level prediction (logits) already resized to the features' resolution;
    the attention ``A = 1 - sigmoid(S)`` (in (0, 1), large where the prior says "background")
    erases the currently predicted foreground from the side-output features ``f`` so the
    following convs mine the missed regions and boundaries. The authors broadcast the one-channel
    attention with ``expand(-1, C, -1, -1)`` and multiply; identical to broadcasting here.
    Parameter-free.

    Shapes: features (N, C, H, W), prior (N, 1, H, W) logits -> (N, C, H, W) float32.
    """

    @staticmethod
    def attention(prior: torch.Tensor) -> torch.Tensor:
        """``1 - sigmoid(prior)``: (N, 1, H, W) logits -> (N, 1, H, W) in (0, 1)."""
        return 1.0 - torch.sigmoid(prior)

    def forward(self, features: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W), (N, 1, H, W) -> (N, C, H, W) = features * (1 - sigmoid(prior))."""
        return features * self.attention(prior)


@register_model("pranet")
class PraNet(NetworkContract):
    """PraNet with a Res2Net-50 v1b 26w 4s encoder (``lib/PraNet_Res2Net.py``).

    Data flow (input H x W, both multiples of 32; authors' shapes for 352 x 352 in brackets):

    1. ``encoder`` (Res2Net, :class:`~medseg.models.encoders.res2net.Res2NetEncoder`):
       x2 = layer2 (512, 1/8) [44], x3 = layer3 (1024, 1/16) [22], x4 = layer4 (2048, 1/32) [11];
       the stem and layer1 are computed but not used by the decoder.
    2. ``rfb2_1``/``rfb3_1``/``rfb4_1`` (:class:`RFBModified`) reduce x2/x3/x4 to ``channel`` (32).
    3. ``agg1`` (:class:`PartialDecoder`) -> global map S_g at 1/8; ``aux3`` = S_g upsampled x8.
    4. Reverse-attention stage 4: prior = S_g resized x0.25 (to 1/32); x4 weighted by
       1 - sigmoid(prior) (:class:`ReverseAttention`); ``ra4_conv1`` 1x1 -> 256,
       ``ra4_conv2..4`` 5x5 each followed by ReLU, ``ra4_conv5`` 1x1 -> 1; plus the prior
       -> S_4 (1/32); ``aux2`` = S_4 upsampled x32.
    5. Stage 3: prior = S_4 upsampled x2; x3 weighted; ``ra3_conv1`` 1x1 -> 64, ``ra3_conv2..3``
       3x3 + ReLU, ``ra3_conv4`` 3x3 -> 1; plus the prior -> S_3 (1/16); ``aux1`` = S_3 x16.
    6. Stage 2: the same on x2 with ``ra2_conv*`` -> S_2 (1/8); ``out`` = S_2 upsampled x8.

    All convs are :class:`BasicConv2d` (conv + BN, **no ReLU**, as in the authors' code) except
    ``agg1.conv5``. Outputs are logits (the authors apply sigmoid in the loss and at test time).

    Args:
        in_channels: 3 (RGB, as the original) or 1: a grey image is repeated to three identical
            channels inside ``forward`` (the ImageNet encoder expects RGB), as an RGB loader
            would do on a grey file.
        out_channels: must be 1 (the reverse-attention design predicts one foreground map).
        channel: width of the RFB outputs and the partial decoder (32 in the original).
        keep_fc: keep Res2Net's unused ImageNet classifier (``encoder.fc``, 2,049,000
            parameters) for parameter parity with the original (32,547,319 parameters) and to
            load its checkpoints (:func:`load_original` sets it). Default False: 30,498,319.
        encoder_weights: path to the Res2Net authors' ImageNet file
            ``res2net50_v1b_26w_4s-3cf99910.pth`` (or a state dict), loaded strictly into
            ``encoder`` (``fc.*`` dropped unless ``keep_fc``); None: random initialisation.

    Shapes: (N, in_channels, H, W) float32 (ImageNet-normalised) -> (N, 1, H, W) float32 logits.
    Contract (:mod:`medseg.models.contract`): ``size_divisor`` 32, ``output_activation``
    "auto", four named outputs (:meth:`forward_outputs`).

    Raises:
        ValueError: bad arguments; in ``forward``: not 4-D, wrong channel count, or H/W not a
            multiple of 32 (:func:`~medseg.models.contract.check_input_size`; the message names
            the size and the nearest valid sizes).
        CheckpointError: ``encoder_weights`` does not fit.

    Input sizes: H and W must be multiples of 32 (``size_divisor``). The original resizes with
    fixed scale factors (x8, x0.25, x32, x2, x16, x2, x8) and multiplies maps of neighbouring
    stages in the partial decoder; any other size makes these shapes disagree (the original
    crashes in ``aggregation`` or returns maps that are not the input size), so it is rejected
    up front rather than silently changed.
    """

    size_divisor = 32
    output_activation = "auto"

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        channel: int = 32,
        keep_fc: bool = False,
        encoder_weights: str | None = None,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"PraNet takes in_channels 3 (RGB) or 1 (grey, repeated to RGB), got {in_channels}")
        if out_channels != 1:
            raise ValueError(f"PraNet predicts one foreground map: out_channels must be 1, got {out_channels}")
        if channel < 1:
            raise ValueError(f"channel must be positive, got {channel}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.encoder: Res2NetEncoder = res2net50_v1b_26w_4s(keep_fc=keep_fc)
        self.rfb2_1 = RFBModified(512, channel)
        self.rfb3_1 = RFBModified(1024, channel)
        self.rfb4_1 = RFBModified(2048, channel)
        self.agg1 = PartialDecoder(channel)
        self.reverse_attention = ReverseAttention()
        self.ra4_conv1 = BasicConv2d(2048, 256, 1)
        self.ra4_conv2 = BasicConv2d(256, 256, 5, padding=2)
        self.ra4_conv3 = BasicConv2d(256, 256, 5, padding=2)
        self.ra4_conv4 = BasicConv2d(256, 256, 5, padding=2)
        self.ra4_conv5 = BasicConv2d(256, 1, 1)
        for stage, c_in in ((3, 1024), (2, 512)):
            self.add_module(f"ra{stage}_conv1", BasicConv2d(c_in, 64, 1))
            self.add_module(f"ra{stage}_conv2", BasicConv2d(64, 64, 3, padding=1))
            self.add_module(f"ra{stage}_conv3", BasicConv2d(64, 64, 3, padding=1))
            self.add_module(f"ra{stage}_conv4", BasicConv2d(64, 1, 3, padding=1))
        if encoder_weights is not None:
            self.encoder.load_weights(encoder_weights)

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"PraNet expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"PraNet was built with in_channels={self.in_channels}, got input with {x.shape[1]} "
                f"channels (shape {tuple(x.shape)})"
            )
        check_input_size(
            x,
            self.size_divisor,
            "PraNet",
            "encoder stride 32 and the original's fixed x8/x16/x32 resizes",
            "The original trains at 352x352 (resized).",
        )
        if self.in_channels == 1:
            x = torch.cat([x, x, x], dim=1)
        return x

    def _lateral_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The authors' (lateral_map_5, lateral_map_4, lateral_map_3, lateral_map_2)."""
        x = self._check_input(x)
        feats = self.encoder(x)
        x2, x3, x4 = feats[2], feats[3], feats[4]
        ra5_feat = self.agg1(self.rfb4_1(x4), self.rfb3_1(x3), self.rfb2_1(x2))
        map5 = F.interpolate(ra5_feat, scale_factor=8.0, mode="bilinear")

        prior4 = F.interpolate(ra5_feat, scale_factor=0.25, mode="bilinear")
        y = self.ra4_conv1(self.reverse_attention(x4, prior4))
        y = F.relu(self.ra4_conv2(y))
        y = F.relu(self.ra4_conv3(y))
        y = F.relu(self.ra4_conv4(y))
        s4 = self.ra4_conv5(y) + prior4
        map4 = F.interpolate(s4, scale_factor=32.0, mode="bilinear")

        prior3 = F.interpolate(s4, scale_factor=2.0, mode="bilinear")
        y = self.ra3_conv1(self.reverse_attention(x3, prior3))
        y = F.relu(self.ra3_conv2(y))
        y = F.relu(self.ra3_conv3(y))
        s3 = self.ra3_conv4(y) + prior3
        map3 = F.interpolate(s3, scale_factor=16.0, mode="bilinear")

        prior2 = F.interpolate(s3, scale_factor=2.0, mode="bilinear")
        y = self.ra2_conv1(self.reverse_attention(x2, prior2))
        y = F.relu(self.ra2_conv2(y))
        y = F.relu(self.ra2_conv3(y))
        s2 = self.ra2_conv4(y) + prior2
        map2 = F.interpolate(s2, scale_factor=8.0, mode="bilinear")
        return map5, map4, map3, map2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, 1, H, W) logits: the finest map (``lateral_map_2``)."""
        return self._lateral_maps(x)[3]

    def forward_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All four deep-supervision maps, (N, 1, H, W) logits each, at input size.

        "out" = lateral_map_2 (stage 2, 1/8; what ``forward`` returns and the authors test),
        "aux1" = lateral_map_3 (stage 3, 1/16), "aux2" = lateral_map_4 (stage 4, 1/32),
        "aux3" = lateral_map_5 (partial decoder's global map, 1/8). The original trains with
        the structure loss on all four with equal weights.
        """
        map5, map4, map3, map2 = self._lateral_maps(x)
        return {"out": map2, "aux1": map3, "aux2": map4, "aux3": map5}


def _original_to_ours(key: str) -> str:
    return "encoder." + key[len("resnet.") :] if key.startswith("resnet.") else key


def load_original(path_or_state_dict: Any) -> PraNet:
    """Build a :class:`PraNet` from a checkpoint of the authors' code (e.g. ``PraNet-19.pth``).

    Key map: ``resnet.<k>`` -> ``encoder.<k>``; every other key (``rfb2_1.*``, ``agg1.*``,
    ``ra4_conv1.*``, ...) is unchanged. The checkpoint holds the unused Res2Net classifier
    (``resnet.fc.weight``, ``resnet.fc.bias``), so the network is built with ``keep_fc=True``
    when those keys are present (``keep_fc=False`` otherwise). ``channel`` is read from
    ``rfb2_1.conv_cat.conv.weight``. BatchNorm ``num_batches_tracked`` counters are filled with
    0 only if the file holds none (legacy files); the authors' ``torch.save(model.state_dict())``
    files hold them. Input channels are 3 (the original's RGB).

    Args:
        path_or_state_dict: path to a ``torch.save``/``.safetensors`` file or a mapping
            (``module.`` prefixes and ``{"state_dict": ...}`` wrappers are removed).

    Returns:
        A :class:`PraNet` on CPU in training mode with every tensor loaded.

    Raises:
        CheckpointError: unreadable file, missing/unexpected keys or shape mismatches; keys are
            named in medseg's layout (``encoder.`` for the authors' ``resnet.``).
    """
    where = describe_source(path_or_state_dict)
    state = {_original_to_ours(k): v for k, v in read_state_dict(path_or_state_dict).items()}
    keep_fc = "encoder.fc.weight" in state or "encoder.fc.bias" in state
    cat = state.get("rfb2_1.conv_cat.conv.weight")
    channel = int(cat.shape[0]) if cat is not None and cat.dim() == 4 else 32
    model = PraNet(in_channels=3, channel=channel, keep_fc=keep_fc)
    state = fill_num_batches_tracked(model, state, prefix="")
    load_strict(model, state, where, f"authors' PraNet (Res2Net, channel={channel}, keep_fc={keep_fc})")
    return model
