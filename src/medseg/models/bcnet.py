"""BCNet, reconstructed from the paper's description (Yue, Han, Jiang, Zhou, Cong, Wang, "Boundary
Constraint Network With Cross Layer Feature Integration for Polyp Segmentation", IEEE J. Biomed.
Health Inform. 26(8):4090-4099, 2022, doi 10.1109/JBHI.2022.3173948).

**Reconstructed from the paper description, not from the authors' code: no official code was
found** (none is linked from the paper or its PubMed record, PMID 35536816; the GitHub repositories
named BCNet are unrelated networks). What is established (the abstract):

- a cross-layer feature integration strategy (CFIS) fuses the features of the **top three**
  encoder layers with **three** attention-driven cross-layer feature interaction modules
  (ACFIM: "adaptively fuses the context information of the top-three highest layers via the
  self-attention mechanism instead of direct addition or concatenation") and **two** global
  feature integration modules (GFIM: "integrates the fused information across layers with the
  guidance from global attention");
- a bilateral boundary extraction module (BBEM) "explores the polyp and non-polyp information of
  the shallow layer collaboratively based on the high-level location information and boundary
  supervision";
- training supervises the polyp area and its boundary jointly.

Everything else here (backbone, widths, the exact attention, the wiring of the three ACFIMs, the
heads, the loss weights) is our reading, listed with reasons in :class:`BCNet`. The medseg
mission adds that the ACFIM carries a reverse-attention background branch and that the GFIM is a
global channel attention. Unverified tutorial figures (aerodat.com "用PyTorch复现BCNet"): 28.7 M
parameters, Dice 0.891 / 0.914 on Kvasir-SEG, 352x352 inputs.

Module names are the field's: ACFIM, GFIM, CFIS, BBEM, reverse attention (Fan et al., PraNet,
MICCAI 2020), squeeze-and-excitation (Hu et al., CVPR 2018), non-local attention (Wang et al.,
CVPR 2018).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.models import register_model
from medseg.models.contract import NetworkContract, check_input_size

__all__ = [
    "ConvBNReLU",
    "PredictionHead",
    "ACFIM",
    "GFIM",
    "BBEM",
    "BCNet",
    "DEFAULT_LOSS_WEIGHTS",
]

#: Default weights of the joint area + boundary supervision, by output name (the keys of
#: :meth:`BCNet.forward_outputs`); the engine's BCNet recipe multiplies each output's loss by
#: its weight and sums. Reasons: the paper's abstract supervises "the polyp area and boundary"
#: jointly without (in what we could read) giving weights, so
#:
#: - area outputs ("out", "aux1", "aux2", "aux3") get equal weights 1.0, the deep-supervision
#:   convention of the PraNet baseline (four side outputs, equal weights) so that the polyp
#:   comparison is on equal terms; the side outputs must be real predictions because they are
#:   the location guides of the reverse attention (aux3, aux2) and of the BBEM (aux1);
#: - "boundary" gets 1.0: the abstract names boundary supervision as one of the two jointly
#:   supervised targets, so it is given the same weight as the main area output. Boundary
#:   targets are thin (a few % of pixels): pair it with a loss that handles imbalance (the
#:   engine's BCE + Dice), not plain BCE.
DEFAULT_LOSS_WEIGHTS: dict[str, float] = {
    "out": 1.0,
    "aux1": 1.0,
    "aux2": 1.0,
    "aux3": 1.0,
    "boundary": 1.0,
}


def _resize_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of (N, C, h, w) to ref's (H, W)."""
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Sequential):
    """Conv (no bias, "same" padding) -> BatchNorm -> ReLU.

    (N, in_ch, H, W) float -> (N, out_ch, H, W) float, values >= 0. Unlike PraNet's
    ``BasicConv2d`` (whose ReLU is constructed but not applied; github.com/DengPingFan/PraNet, ``lib/PraNet_Res2Net.py``), the ReLU is
    applied: BCNet's description gives no reason to copy that quirk.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class PredictionHead(nn.Sequential):
    """3x3 ConvBNReLU (C -> C) then a 1x1 conv (C -> 1, with bias): a one-channel logit map.

    (N, C, H, W) float -> (N, 1, H, W) float logits (pre-sigmoid), same resolution. Used for the
    deep-supervision side outputs, which double as location guides.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(ConvBNReLU(channels, channels, 3), nn.Conv2d(channels, 1, 1))


class ACFIM(nn.Module):
    """Attention-driven cross-layer feature interaction module (BCNet, paper §"CFIS").

    Fuses a deeper level ``deep`` (N, C, h, w) into a shallower level ``shallow``
    (N, C, H, W) (H >= h, W >= w), guided by a deeper one-channel prediction ``guide``
    (N, 1, h_g, w_g) logits at any resolution. Three parts:

    1. **Cross-layer attention** (the abstract's "self-attention mechanism instead of direct
       addition or concatenation"): non-local / scaled dot-product attention whose queries come
       from the shallow level and whose keys and values come from the deep level at its own,
       lower resolution. Each shallow position gathers the deep context of the positions that
       resemble it; :meth:`attend` returns ``shallow + W_o(context)`` and the attention rows.
       Queries and keys have ``key_channels`` channels (non-local's C/2 by default).
    2. **Reverse-attention background branch** (medseg's choice, after PraNet's reverse attention):
       the shallow features weighted by ``1 - sigmoid(guide)`` (guide resized to H x W), i.e.
       the regions the deeper prediction does *not* yet claim as polyp, where missed polyp
       parts and the boundary lie; :meth:`background` returns the weighted features before the
       branch's 3x3 ConvBNReLU.
    3. **Fusion**: concat(attended shallow, upsampled deep, background branch) -> 3x3
       ConvBNReLU (3C -> C).

    Shapes: forward(shallow (N, C, H, W), deep (N, C, h, w), guide (N, 1, h', w')) ->
    (N, C, H, W) float.
    """

    def __init__(self, channels: int, key_channels: int | None = None) -> None:
        super().__init__()
        kc = key_channels if key_channels is not None else max(1, channels // 2)
        if kc < 1:
            raise ValueError(f"ACFIM key_channels must be >= 1, got {kc}")
        self.channels = channels
        self.key_channels = kc
        self.scale = 1.0 / math.sqrt(kc)
        self.query = nn.Conv2d(channels, kc, 1)
        self.key = nn.Conv2d(channels, kc, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        # output projection of the attended context, BN so its scale is learned
        self.proj = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.bg_conv = ConvBNReLU(channels, channels, 3)
        self.fuse = ConvBNReLU(3 * channels, channels, 3)

    def attend(self, shallow: torch.Tensor, deep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-layer attention: shallow queries, deep keys/values.

        Args:
            shallow: (N, C, H, W) float.
            deep: (N, C, h, w) float.

        Returns:
            ``(shallow + proj(context), attn)``: (N, C, H, W) and the attention weights
            (N, H*W, h*w), each row a softmax (non-negative, sums to 1).
        """
        q = self.query(shallow).flatten(2).transpose(1, 2)  # (N, HW, Ck)
        k = self.key(deep).flatten(2)  # (N, Ck, hw)
        v = self.value(deep).flatten(2).transpose(1, 2)  # (N, hw, C)
        attn = torch.softmax(torch.bmm(q, k) * self.scale, dim=-1)  # (N, HW, hw)
        context = torch.bmm(attn, v).transpose(1, 2).reshape_as(shallow)
        return shallow + self.proj(context), attn

    @staticmethod
    def background(shallow: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """Reverse attention: ``shallow * (1 - sigmoid(guide))`` with guide resized to shallow.

        Args:
            shallow: (N, C, H, W) float.
            guide: (N, 1, h, w) logits of a deeper prediction.

        Returns:
            (N, C, H, W) float; ~0 where the guide is confidently polyp (large positive logits),
            ~``shallow`` where it is confidently background.
        """
        return shallow * (1.0 - torch.sigmoid(_resize_to(guide, shallow)))

    def forward(self, shallow: torch.Tensor, deep: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W), (N, C, h, w), (N, 1, h', w') -> fused (N, C, H, W)."""
        attended, _ = self.attend(shallow, deep)
        bg = self.bg_conv(self.background(shallow, guide))
        return self.fuse(torch.cat([attended, _resize_to(deep, shallow), bg], dim=1))


class GFIM(nn.Module):
    """Global feature integration module (BCNet, paper §"CFIS"), guided by global attention.

    Integrates two fused maps ``a`` (N, C, h, w) (resized to b's size) and ``b`` (N, C, H, W):
    concat -> 3x3 ConvBNReLU (2C -> C) = ``z``; global channel attention in the
    squeeze-and-excitation form (global average pool -> 1x1 conv C -> C/r -> ReLU -> 1x1 conv
    C/r -> C -> sigmoid) gives weights ``w`` (N, C, 1, 1) in (0, 1); output = 3x3 ConvBNReLU
    (C -> C) of ``z * w``. The abstract says only "with the guidance from global attention";
    the SE form (squeeze-and-excitation, Hu et al., CVPR 2018) is medseg's reading of it.

    Shapes: forward(a (N, C, h, w), b (N, C, H, W)) -> (N, C, H, W) float.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        if reduction < 1 or channels // reduction < 1:
            raise ValueError(f"GFIM reduction must be in 1..{channels}, got {reduction}")
        self.merge = ConvBNReLU(2 * channels, channels, 3)
        self.squeeze = nn.Conv2d(channels, channels // reduction, 1)
        self.excite = nn.Conv2d(channels // reduction, channels, 1)
        self.out = ConvBNReLU(channels, channels, 3)

    def integrate(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The merged features ``z`` (N, C, H, W) and the channel weights ``w`` (N, C, 1, 1),
        values in (0, 1)."""
        z = self.merge(torch.cat([_resize_to(a, b), b], dim=1))
        g = F.adaptive_avg_pool2d(z, 1)
        w = torch.sigmoid(self.excite(F.relu(self.squeeze(g))))
        return z, w

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w), (N, C, H, W) -> (N, C, H, W)."""
        z, w = self.integrate(a, b)
        return self.out(z * w)


class BBEM(nn.Module):
    """Bilateral boundary extraction module (BCNet, paper §"BBEM").

    Works on a shallow encoder level ``shallow`` (N, C_in, H, W) with a high-level location
    guide ``guide`` (N, 1, h, w) logits (the CFIS coarse prediction). Steps:

    1. 3x3 ConvBNReLU C_in -> C = ``x``.
    2. **Bilateral split** (:meth:`split`): foreground ``x * sigmoid(g)`` (polyp side) and
       background ``x * (1 - sigmoid(g))`` (non-polyp side), g = guide resized to H x W; the
       two weights sum to 1, so the two parts sum to ``x``.
    3. Each side: 3x3 ConvBNReLU (C -> C) and a 1x1 conv (C -> 1) predicting a boundary map as
       seen from that side.
    4. The two one-channel maps are combined by a 1x1 conv (2 -> 1, bias) into the boundary
       logits (supervised by a boundary target derived from the mask).
    5. Boundary-refined features: concat(both sides) -> 3x3 ConvBNReLU (2C -> C), then
       ``f * (1 + sigmoid(boundary))``: boundary attention that emphasises the features on the
       predicted contour while keeping the rest (the residual "1 +" keeps gradients alive where
       the boundary map is ~0).

    Shapes: forward(shallow (N, C_in, H, W), guide (N, 1, h, w)) -> (features (N, C, H, W),
    boundary logits (N, 1, H, W)).
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.reduce = ConvBNReLU(in_channels, channels, 3)
        self.fg_conv = ConvBNReLU(channels, channels, 3)
        self.bg_conv = ConvBNReLU(channels, channels, 3)
        self.fg_edge = nn.Conv2d(channels, 1, 1)
        self.bg_edge = nn.Conv2d(channels, 1, 1)
        self.edge_fuse = nn.Conv2d(2, 1, 1)
        self.feat_fuse = ConvBNReLU(2 * channels, channels, 3)

    @staticmethod
    def split(x: torch.Tensor, guide: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x * sigmoid(g), x * (1 - sigmoid(g)))`` with g = guide resized to x's H x W.

        Args:
            x: (N, C, H, W) float.
            guide: (N, 1, h, w) logits.

        Returns:
            foreground and background parts, both (N, C, H, W); they sum to ``x``.
        """
        p = torch.sigmoid(_resize_to(guide, x))
        return x * p, x * (1.0 - p)

    def forward(self, shallow: torch.Tensor, guide: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C_in, H, W), (N, 1, h, w) -> refined features (N, C, H, W), boundary logits
        (N, 1, H, W)."""
        fg, bg = self.split(self.reduce(shallow), guide)
        fg = self.fg_conv(fg)
        bg = self.bg_conv(bg)
        boundary = self.edge_fuse(torch.cat([self.fg_edge(fg), self.bg_edge(bg)], dim=1))
        feat = self.feat_fuse(torch.cat([fg, bg], dim=1))
        return feat * (1.0 + torch.sigmoid(boundary)), boundary


@register_model("bcnet")
class BCNet(NetworkContract):
    """BCNet (Yue et al., IEEE JBHI 2022), **reconstructed from the paper's description**.

    Data flow (N = batch; strides relative to the input; C = ``width``):

    - Encoder ``encoder``: Res2Net-50 v1b 26w4s (ImageNet), the PraNet baseline's backbone;
      taps layer1 (256 ch, 1/4), layer2 (512, 1/8), layer3 (1024, 1/16), layer4 (2048, 1/32).
    - Reductions ``reduce2/3/4``: 3x3 ConvBNReLU of layer2/3/4 to C -> r2, r3, r4.
    - Top guide: ``head4(r4)`` -> p4 (1/32), output "aux3".
    - CFIS, three ACFIMs (deep -> shallow) and two GFIMs:
      ``acfim43``: r4 -> r3 guided by p4 -> a1 (1/16); ``head3(a1)`` -> p3, output "aux2";
      ``acfim32``: r3 -> r2 guided by p3 -> a2 (1/8);
      ``acfim42``: r4 -> r2 guided by p4 -> a3 (1/8);
      ``gfim1(a1, a2)`` -> g1; ``gfim2(g1, a3)`` -> g2 (1/8);
      ``head_coarse(g2)`` -> coarse polyp logits (1/8), output "aux1", the BBEM location guide.
    - ``bbem(layer1, coarse)`` -> boundary-refined features e (C, 1/4) and boundary logits
      (1/4), output "boundary".
    - Final: concat(g2 resized to 1/4, e) -> two ConvBNReLU (2C -> C -> C) ``fuse`` -> 1x1 conv
      ``head_out`` -> logits + coarse resized to 1/4 (residual refinement of the coarse map,
      as in PraNet) -> output "out". All outputs are bilinearly upsampled to the input size.

    Choices not fixed by the abstract, and why:

    - **Backbone Res2Net-50 v1b 26w4s**: the paper's backbone could not be confirmed; the
      PraNet baseline uses this one, so the comparison is on equal terms.
    - **Top three layers = layer2/3/4**, shallow layer = layer1: the top three of the four
      residual stages; layer1 is the shallowest with 256-channel features at 1/4 (the stem at
      1/2 carries little semantics and costs 4x the memory).
    - **Width 64** for every reduced level (PraNet reduces to 32; 64 gives the attention
      enough channels); the 3x3 reductions bring the total near the tutorial's 28.7 M.
    - **ACFIM wiring**: three ACFIMs over three levels = the three pairs of levels, each fusing
      the deeper into the shallower: (l4 -> l3), (l3 -> l2), (l4 -> l2); the two outputs at 1/8
      and the one at 1/16 then need exactly two binary GFIMs to become one map, which matches
      the abstract's "three ACFIMs and two GFIMs". The (l3 -> l2) module is guided by the
      prediction from the (l4 -> l3) output, the other two by the layer4 prediction (the
      deepest available location information for each).
    - **ACFIM attention**: single-head scaled dot-product attention, queries from the shallow
      level and keys/values from the deep level at its own (coarser) resolution, key width
      C/2 (non-local block); residual with a BN-scaled 1x1 projection. Cost O(HW * hw) stays
      small (at 352 input: 1936 x 121 for l4 -> l2).
    - **Reverse-attention background branch in ACFIM** (medseg's choice): PraNet's
      ``1 - sigmoid(prior)`` weighting of the shallow features.
    - **GFIM = concat + 3x3 conv + SE channel attention** (reduction 4).
    - **BBEM**: see :class:`BBEM`; fg/bg boundary maps combined by a learned 1x1 conv; the
      refined features use boundary attention ``f * (1 + sigmoid(boundary))``.
    - **Residual final prediction** (final = refinement + coarse): PraNet's convention; the
      coarse map is already supervised, the final head learns the boundary-aware correction.
    - **Deep supervision**: four area outputs + boundary, weights in
      :data:`DEFAULT_LOSS_WEIGHTS` (reasons there).
    - **Grey input**: ``in_channels=1`` repeats the channel to RGB inside ``forward`` (the
      ImageNet encoder expects three channels), as PraNet-family loaders convert to RGB.

    Parameters with the defaults (width 64): **26,958,481** (asserted in ``tests/models/test_bcnet.py``),
    of which the encoder (Res2Net-50 v1b 26w4s without its fc) has 23,669,352 and the
    reductions, CFIS, BBEM and heads 3,289,129 (reductions 2,064,768; three ACFIMs 480,768; two
    GFIMs 225,952; BBEM 295,557; final fuse + head 110,913; three side heads 111,171). Width
    32: 25,045,633. The tutorial's unverified "28.7 M" is of the same order. Every parameter
    receives a gradient from a loss on all outputs. ``in_channels=1`` adds no parameter.

    Export: ``torch.export`` (symbolic batch) and ONNX opset 17 (TorchScript-based exporter)
    are tested; ``torch.jit.script`` fails inside the shared encoder helper ``run_stage``
    (``torch.jit.trace`` works).

    Args:
        in_channels: 3 (RGB, default) or 1 (grey, repeated to RGB).
        num_classes: output channels; must be 1 (binary polyp segmentation: the reverse
            attention and the bilateral split need one foreground probability).
        encoder_weights: path to the published Res2Net-50 v1b 26w4s ImageNet state dict
            (``res2net50_v1b_26w_4s-3cf99910.pth``), loaded strictly into ``encoder`` at
            construction (the classifier ``fc.*`` is dropped); None trains from scratch.
        width: channels of the reduced levels and of every CFIS/BBEM module (64).
        key_channels: query/key channels of the ACFIM attention (None: width // 2).
        se_reduction: GFIM channel-attention reduction ratio (4).

    Shapes: (N, in_channels, H, W) float32, H and W multiples of 32 -> (N, 1, H, W) float32
    logits (pre-sigmoid). Contract (:mod:`medseg.models.contract`): ``out_channels`` =
    ``num_classes`` = 1, ``size_divisor`` 32, ``output_activation`` "auto", five named outputs
    (:meth:`forward_outputs`).

    Raises:
        ValueError: bad arguments; in ``forward``, an input that is not 4-D, has the wrong
            number of channels, or has H or W not divisible by 32
            (:func:`~medseg.models.contract.check_input_size`; the message names the size and
            the nearest valid sizes).
        medseg.errors.CheckpointError: ``encoder_weights`` missing, unreadable, or not fitting
            the encoder (missing/unexpected keys listed).
    """

    #: H and W must be multiples of this (the encoder's 1/32 output stride).
    size_divisor = 32
    #: Default loss weights of the recipe, by output name.
    loss_weights = DEFAULT_LOSS_WEIGHTS

    @property
    def out_channels(self) -> int:
        """Output channels C_out (the contract's name for ``num_classes``, always 1; read-only)."""
        return self.num_classes

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        encoder_weights: str | None = None,
        width: int = 64,
        key_channels: int | None = None,
        se_reduction: int = 4,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"BCNet takes in_channels 1 (grey, repeated to RGB) or 3 (RGB), got {in_channels}")
        if num_classes != 1:
            raise ValueError(
                f"BCNet is a binary (polyp vs background) network: num_classes must be 1, got {num_classes}"
            )
        if width < 1:
            raise ValueError(f"BCNet width must be >= 1, got {width}")
        from medseg.models.encoders.res2net import res2net50_v1b_26w_4s

        self.in_channels = in_channels
        self.num_classes = num_classes
        self.width = width
        self.encoder = res2net50_v1b_26w_4s(keep_fc=False)
        if encoder_weights is not None:
            self.encoder.load_weights(encoder_weights)
        ch = tuple(self.encoder.out_channels)  # (64, 256, 512, 1024, 2048)
        c = width
        self.reduce2 = ConvBNReLU(ch[2], c, 3)
        self.reduce3 = ConvBNReLU(ch[3], c, 3)
        self.reduce4 = ConvBNReLU(ch[4], c, 3)
        self.head4 = PredictionHead(c)
        self.acfim43 = ACFIM(c, key_channels)
        self.head3 = PredictionHead(c)
        self.acfim32 = ACFIM(c, key_channels)
        self.acfim42 = ACFIM(c, key_channels)
        self.gfim1 = GFIM(c, se_reduction)
        self.gfim2 = GFIM(c, se_reduction)
        self.head_coarse = PredictionHead(c)
        self.bbem = BBEM(ch[1], c)
        self.fuse = nn.Sequential(ConvBNReLU(2 * c, c, 3), ConvBNReLU(c, c, 3))
        self.head_out = nn.Conv2d(c, num_classes, 1)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"BCNet expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"BCNet was built with in_channels={self.in_channels} but the input has "
                f"{x.shape[1]} channels (shape {tuple(x.shape)})"
            )
        check_input_size(x, self.size_divisor, "BCNet", "the Res2Net encoder's output stride")

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self._check_input(x)
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        feats = self.encoder(x)
        l1, l2, l3, l4 = feats[1], feats[2], feats[3], feats[4]
        r2 = self.reduce2(l2)
        r3 = self.reduce3(l3)
        r4 = self.reduce4(l4)
        # CFIS
        p4 = self.head4(r4)
        a1 = self.acfim43(r3, r4, p4)
        p3 = self.head3(a1)
        a2 = self.acfim32(r2, r3, p3)
        a3 = self.acfim42(r2, r4, p4)
        g2 = self.gfim2(self.gfim1(a1, a2), a3)
        coarse = self.head_coarse(g2)
        # BBEM on the shallow level, guided by the CFIS location map
        edge_feat, boundary = self.bbem(l1, coarse)
        fused = self.fuse(torch.cat([_resize_to(g2, edge_feat), edge_feat], dim=1))
        final = self.head_out(fused) + _resize_to(coarse, edge_feat)
        return {
            "out": _resize_to(final, x),
            "aux1": _resize_to(coarse, x),
            "aux2": _resize_to(p3, x),
            "aux3": _resize_to(p4, x),
            "boundary": _resize_to(boundary, x),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) float32 -> final area logits (N, 1, H, W) float32; H, W
        multiples of 32."""
        return self._forward(x)["out"]

    def forward_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All outputs, each (N, 1, H, W) float32 logits at the input size.

        Keys: "out" (final area prediction, the same tensor as :meth:`forward`), "aux1" (CFIS
        coarse polyp map, 1/8 before upsampling; the BBEM guide), "aux2" (prediction of the
        l4 -> l3 ACFIM, 1/16), "aux3" (prediction from layer4, 1/32), "boundary" (BBEM boundary
        logits, 1/4). Loss weights: :data:`DEFAULT_LOSS_WEIGHTS`.
        """
        return self._forward(x)
