"""DSCNet, 2D (Qi et al., "Dynamic Snake Convolution based on Topological Geometric Constraints
for Tubular Structure Segmentation", ICCV 2023, arXiv 2307.08388).

Network of the authors' released code, ``DSCNet_2D_opensource/Code/DRIVE/DSCNet/S3_DSCNet.py``
(with ``S3_DSConv.py``) and its faster rewrite ``Code/DRIVE/S3_DSCNet_pro.py`` (with
``S3_DSConv_pro.py``), github.com/YaoleiQi/DSCNet. Written independently; the module names are
the authors' (``conv00``, ``conv0x``, ``conv0y``, ``conv1``, ..., ``conv17``, ``out_conv``, and
inside each DSConv ``offset_conv``, ``bn``/``gn_offset``, ``dsc_conv_x``, ``dsc_conv_y``, ``gn``;
inside each plain block ``conv``, ``gn``), so their state dicts load with no renaming
(:func:`load_original`).

What the paper describes but the released code lacks: the multi-view feature-fusion strategy
with random drop of views (the ``dim`` argument of the authors' class is a placeholder) and the
persistent-homology topological loss TCLoss; the released code trains with plain BCE. DSConv
deviations from the authors' code are listed in :mod:`medseg.ops.dsconv`.

Two options, both off by default (off, the network is the authors' one: same parameters, same
state-dict keys, same outputs):

- ``fusion_head``: a multi-scale fusion head (the DSCNet tutorial this project follows; **not**
  the authors' network, see :class:`DSCNet`);
- ``multi_view``: our reconstruction of the paper's Sec. 3.2 multi-view feature fusion with
  random drop, which the authors announced and never released (see :class:`DSCNet` for every
  choice the text leaves open and :func:`fuse_views` for the drop).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.errors import CheckpointError
from medseg.models import register_model
from medseg.models.contract import NetworkContract, check_input_size
from medseg.models.weights import describe_source, load_strict, read_state_dict
from medseg.ops.dsconv import DSConv2d

__all__ = ["DSCNet", "ConvGNReLU", "fuse_views", "view_keep_mask", "load_original"]

# (prefix of the three branches, name of the fuse conv) per block, in forward order; the
# authors' attribute names: conv{p}0 = 3x3 branch, conv{p}x / conv{p}y = DSConv morph 0 / 1.
_ENCODER = (("0", "conv1"), ("2", "conv3"), ("4", "conv5"), ("6", "conv7"))
_DECODER = (("12", "conv13"), ("14", "conv15"), ("16", "conv17"))
# The fusion head's block continues the authors' numbering (conv17 is their last block).
_FUSION = ("18", "conv19")
# Levels the fusion head reads, named by the fuse conv that produces them (the 1x1 projection
# of level "13" is ``proj13``): bottleneck (8n, 1/8; only with fusion_bottleneck), then the
# three decoder blocks (4n at 1/4, 2n at 1/2, n at full resolution).
_BOTTLENECK_LEVEL = "7"
_DECODER_LEVELS = ("13", "15", "17")

#: Templates (the authors' ``dim``) and drop probability when ``multi_view=True`` and they are
#: not given; reasons in :class:`DSCNet`.
DEFAULT_VIEW_TEMPLATES = 2
DEFAULT_VIEW_DROP = 0.5


class ConvGNReLU(nn.Module):
    """3x3 conv (bias, padding 1) -> GroupNorm(out // 4) -> ReLU; the authors' ``EncoderConv`` /
    ``DecoderConv`` (identical classes). (N, in_ch, H, W) -> (N, out_ch, H, W)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.gn = nn.GroupNorm(out_ch // 4, out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_ch, H, W) -> (N, out_ch, H, W), values >= 0."""
        return self.relu(self.gn(self.conv(x)))


def view_keep_mask(n_views: int, drop: float, training: bool) -> list[bool]:
    """Which views of a multi-view block survive this forward pass (the paper's ``r^l``, Eq. 8).

    Args:
        n_views: number of view features of the block (2 per template: along x, along y).
        drop: probability in [0, 1) that a view is dropped.
        training: the module's ``training`` flag; in eval mode nothing is dropped.

    Returns:
        ``n_views`` bools, True = kept. In training mode with ``drop > 0`` each is an independent
        Bernoulli(1 - drop) draw from torch's default CPU generator (``torch.rand``), so
        ``torch.manual_seed`` fixes it whatever the device of the features; one draw per view per
        forward call, shared by the whole batch (the paper's multi-view figure crosses out a
        view's whole B x N block). Otherwise all True and no random number is consumed.
    """
    if not training or drop == 0.0:
        return [True] * n_views
    return (torch.rand(n_views) >= drop).tolist()


def fuse_views(views: Sequence[torch.Tensor | None], drop: float, like: torch.Tensor) -> torch.Tensor:
    """Fuse the template features of one axis: the sum of the kept views, inverted-dropout scaled.

    ``out = sum(kept views) / (m * (1 - drop))`` with ``m = len(views)``. In eval (``drop`` 0,
    nothing dropped) this is the mean of the m views; in training, a view kept with probability
    ``1 - drop`` and scaled by ``1 / (1 - drop)`` has expectation equal to itself, so for given
    view features the expected training output equals the eval output exactly (Srivastava et al.,
    "Dropout", JMLR 2014, with the scaling moved to training time as ``torch.nn.Dropout`` does).

    Args:
        views: m >= 1 tensors of one shape (N, C, H, W) float, or None for a dropped view (not
            computed, which is the paper's "without increasing extra computational burden").
        drop: the drop probability the views were sampled with, in [0, 1); pass 0.0 in eval.
        like: a tensor of the views' shape, dtype and device (zeros of it are returned when
            every view was dropped).

    Returns:
        (N, C, H, W) tensor, the dtype of the views.

    Raises:
        ValueError: no views, or ``drop`` outside [0, 1).
    """
    if not views:
        raise ValueError("fuse_views needs at least one view (template)")
    if not 0.0 <= drop < 1.0:
        raise ValueError(f"fuse_views drop must be in [0, 1), got {drop!r}")
    kept = [v for v in views if v is not None]
    if not kept:
        return like.new_zeros(like.shape)
    total = kept[0]
    for v in kept[1:]:
        total = total + v
    return total * (1.0 / (len(views) * (1.0 - drop)))


@register_model("dscnet")
class DSCNet(NetworkContract):
    """The authors' 2D DSCNet: a 4-level U-Net whose blocks run three branches in parallel.

    Every block applies to the same input (a) 3x3 conv + GroupNorm + ReLU, (b) a DSConv along x
    (morph 0), (c) a DSConv along y (morph 1), each in -> out channels; concatenates them
    (3*out) and fuses with a 3x3 conv + GroupNorm + ReLU to ``out``. Encoder widths
    in -> n -> 2n -> 4n -> 8n with three 2x2 max-poolings (bottleneck at 1/8); decoder: bilinear
    x2 upsampling (align_corners=True), concatenation with the skip, blocks 12n -> 4n, 6n -> 2n,
    3n -> n; head 1x1 conv n -> out_channels.

    Returns **logits**: the original ends with a sigmoid; by the medseg convention
    (:mod:`medseg.models`) networks return the pre-activation and the engine applies
    ``torch.sigmoid``. The original's constructed-but-unused Dropout(0.5) and Softmax have no
    parameters and are omitted.

    Parameters with the defaults: 2,094,169 registered. Each DSConv allocates both axis convs
    (as the original, for state-dict compatibility) and uses one, so 484,832 never receive a
    gradient: 1,609,337 are used.

    **Option 1, multi-scale fusion head** (``fusion_head=True``; the DSCNet tutorial this project
    follows, whose text could not be retrieved, so every choice below is ours; **not the authors'
    network**: no published number exists for it). The outputs of the three decoder blocks
    (``conv13``: 4n at 1/4, ``conv15``: 2n at 1/2, ``conv17``: n at full resolution), and with
    ``fusion_bottleneck=True`` also the bottleneck (``conv7``: 8n at 1/8), are each projected by
    a 1x1 conv with bias (``proj13``, ``proj15``, ``proj17``, ``proj7``) to ``fusion_width`` w
    channels, upsampled bilinearly (align_corners=True, the network's own upsampling) to full
    resolution, concatenated in forward order (bottleneck, 13, 15, 17: L*w channels) and fused by
    one more DSCNet block (``conv180`` 3x3 branch, ``conv18x`` / ``conv18y`` DSConv along x / y,
    ``conv19`` fuse conv; L*w -> w), whose output goes to ``out_conv`` (w -> out_channels). Choices:

    - Projection before upsampling: a 1x1 conv and bilinear upsampling are both linear and the
      upsampling weights of each output pixel sum to 1, so the order does not change the result
      and projecting first upsamples w instead of up to 8n channels. No norm or ReLU in the
      projection: the fusion block starts with conv + GroupNorm + ReLU on every branch.
    - The fuse is a full DSCNet block (3x3 branch + DSConv x + DSConv y + 3x3 fuse conv), not one
      DSConv pair: it is the unit every other stage of the network uses, the 3x3 branch is the
      one the authors add "since the target also has non-tubular structure regions"
      (``S3_DSCNet.py``), and it keeps the fusion's output GroupNorm-ed and rectified as every
      block output that feeds ``out_conv`` in the authors' network.
    - w defaults to n (the width ``out_conv`` reads in the authors' network, so the head stays
      the same size); it must be a multiple of 4 (GroupNorm groups of 4 channels, as every
      block). The bottleneck is off by default: every decoder level already derives from it.

    Parameters with ``fusion_head=True`` and the defaults (w = n = 16, no bottleneck):
    2,153,365 registered (59,196 more: projections 1,040 + 528 + 272, fusion block 57,356), of
    which 498,688 never receive a gradient (the unused axis convs, 13,856 of them in the
    fusion block's two DSConvs). With ``fusion_bottleneck=True``: 2,172,133 (proj7 2,064, and
    the fusion block reads 64 channels: 16,704 more in it).

    **Option 2, multi-view feature fusion with random drop** (``multi_view=True``): our
    reconstruction of Sec. 3.2 of the paper, announced and never released by the authors (their
    ``dim`` argument: "This version dim is set to 1 by default, referring to a group of x-axes and
    y-axes", ``S3_DSCNet.py``; issues #23, #49, #60 of github.com/YaoleiQi/DSCNet). The English
    text of Sec. 3.2 could not be retrieved here (the stored arXiv / ar5iv copies end before it); the
    quotes below are our English of a Chinese translation of the paper whose Sec. 3.2 ("3.2.
    多视角特征融合策略") carries Eq. 6-8: a public GitHub paper-notes page (front matter: author
    石昌文, 2023-10-23, citekey qiDynamicSnakeConvolution2023), checked against the paper's
    multi-view figure (Fig. 4 as issue #23 numbers it; panel "2) Multi-view feature fusion
    strategy" of ``Fig/method.png`` in the authors' repository) and the author's answers in
    issues #23 (2023-11-03) and #60 (2025-07-30):

    - Eq. 6: "for each K, two feature maps f^l(K_x) and f^l(K_y) are extracted from layer l
      along the x-axis and the y-axis".
    - Eq. 7: "based on Eq. 6 we extract m groups of features as T^l, containing different
      morphologies of DSConv": T^l = (T^l_1, ..., T^l_m), T^l_t = (f^l(K_x), f^l(K_y)).
    - Eq. 8: "feature fusion of multiple templates inevitably brings redundant noise, so a
      random drop strategy r^l is introduced in the training phase, to improve the performance
      of the model and prevent overfitting without increasing extra computational burden"
      (多模板的特征融合必然会带来冗余噪声。因此，在训练阶段引入了随机丢弃策略 r^l ... 以提高我们模型的性能，
      并在不增加额外计算负担的情况下防止过拟合): r^l ~ Bernoulli(p), hat T^l = r^l . T^l,
      f^{l+1}(K) = Sum^{floor(m x p)} hat T^l_t, "where p is the probability of random drop and
      r^l follows a Bernoulli distribution. The best dropping strategy is saved in the training
      phase and guides the model to fuse the key features in the testing phase" (其中 p 是随机丢弃的
      概率，且 r^l 满足 Bernoulli 分布。在训练阶段保存最佳的丢弃策略，并指导模型在测试阶段融合关键特征).
    - The figure: m templates, each with its "Features from x" / "from y" (/ "from z" in 3D) of
      C channels over B x N, single views crossed out ("Random drop during training"), the
      survivors gathered into "Features template 1 ... m*p" of C channels and summed.

    What is implemented, and why where the text leaves a choice:

    - Templates: every block (the seven of the network, and the fusion head's when both options
      are on) gets ``view_templates`` m DSConv pairs (x, y), each with its own offset conv, i.e.
      its own learned morphology (Eq. 7 "different morphologies of DSConv"; ``dim`` counts "a
      group of x-axes and y-axes"). Template 1 is the authors' ``conv{p}x`` / ``conv{p}y``;
      template t >= 2 is ``conv{p}x_t{t}`` / ``conv{p}y_t{t}``. (In #23 the author describes, as we
      read it, an engineering shortcut with one offset shared by the templates of an axis; not followed,
      because with a shared offset the templates would not differ in morphology as Eq. 7 says.)
    - What is dropped: single views (one axis of one template), as the figure draws and as the
      author answers in #23 / #60 ("randomly discard the features of some angle", "only in the
      training phase"), not whole templates (the other reading of r^l . T^l in Eq. 8, which
      #23 points out disagrees with the figure).
    - p: ``view_drop`` is the probability of dropping a view, as the text defines p. Bernoulli(p)
      and the sum's upper limit floor(m x p) (the count of survivors) then disagree: we follow
      the definition and take floor(m x p) as the expected number of survivors, m x (1 - p).
      Each view's draw is independent (Bernoulli, Eq. 8), one per view per forward call for the
      whole batch (the figure crosses out a whole B x N block); a dropped view is not computed at
      all (the paper's "without increasing extra computational burden"; its parameters get no
      gradient that step). See :func:`view_keep_mask`.
    - Fusion: per axis, the sum of the kept views (Eq. 8's sum, the figure's "+"), divided by
      m (1 - p) (:func:`fuse_views`); the axis sums take the places of the two DSConv branches
      in the block's concatenation [3x3 branch, x, y], so the fuse conv keeps its 3*out -> out
      shape. The 1/m keeps the DSConv branches on the 3x3 branch's scale, so m = 1 with p = 0 is
      exactly the authors' block; the 1/(1 - p) makes the expected training input of the fuse
      conv equal its eval input for given view features (inverted dropout). As with any dropout,
      the network output's expectation matches eval only up to the nonlinearities that follow.
      The 3x3 branch is never dropped (Sec. 3.2 is about the DSConv templates).
    - Test phase: every view is used (eval is deterministic). The sentence on "the best dropping
      strategy" saved in training and used at test gives no criterion for "best" and no
      procedure, so no mask is selected or stored.
    - Defaults (the paper gives no values): m = 2, the smallest number of templates that is
      multi-view (the released ``dim`` = 1 is single-view); p = 0.5, the usual dropout rate, with
      which floor(m x p) = 1 for m = 2 under either reading of p.

    Parameters with ``multi_view=True`` and the defaults (m = 2): 3,211,473 registered
    (1,117,304 more: one more DSConv pair per block), of which 969,664 never receive a gradient
    (the unused axis conv of every DSConv). With both options on (defaults): 3,314,105.

    Args:
        in_channels: input channels (1: the preprocessed grey DRIVE image of the released code).
        out_channels: output channels (1 in the released code).
        n_basic_layer: base width n (the authors' ``number``, 16); must be a multiple of 4.
        kernel_size: DSConv kernel points K, odd >= 3 (9).
        extend_scope: DSConv offset multiplier (1.0).
        if_offset: False makes every DSConv rigid (1xK / Kx1 conv).
        offset_norm: "batch" (original ``S3_DSConv.py``) or "group" (pro ``S3_DSConv_pro.py``).
        padding_mode: DSConv sampling outside the image: "zeros" (true bilinear zero padding,
            the default), "original" (the boundary of the authors' ``S3_DSConv.py`` exactly: what
            :func:`load_original` picks for their checkpoints) or "border" (pro); see
            :class:`medseg.ops.DSConv2d`.
        fusion_head: add the multi-scale fusion head (option 1, off: the authors' network).
        fusion_width: its common width w, a multiple of 4 (default n); only with ``fusion_head``.
        fusion_bottleneck: let the head read the bottleneck too (default False); only with
            ``fusion_head``.
        multi_view: use m DSConv templates per block with random view drop (option 2, off).
        view_templates: m >= 1, templates per block (the authors' ``dim``; default 2); only with
            ``multi_view``.
        view_drop: probability p in [0, 1) that a view is dropped in training (default 0.5);
            only with ``multi_view``.

    Shapes: (N, in_channels, H, W) float -> (N, out_channels, H, W) logits, H and W multiples
    of 8. Contract (:mod:`medseg.models.contract`): ``size_divisor`` 8, ``output_activation``
    "auto", one output.

    Raises:
        ValueError: invalid arguments (see :class:`medseg.ops.DSConv2d`; a ``fusion_width`` that
            is not a positive multiple of 4, ``view_templates`` < 1, ``view_drop`` outside
            [0, 1), or a fusion / view argument given while its option is off), or in
            ``forward`` an input that is not 4-D or whose H or W is not a multiple of 8
            (:func:`~medseg.models.contract.check_input_size`; the message names the nearest
            valid sizes).
    """

    #: H and W must be multiples of this (three 2x max-poolings); read by the inference code.
    size_divisor = 8

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        n_basic_layer: int = 16,
        kernel_size: int = 9,
        extend_scope: float = 1.0,
        if_offset: bool = True,
        offset_norm: str = "batch",
        padding_mode: str = "zeros",
        fusion_head: bool = False,
        fusion_width: int | None = None,
        fusion_bottleneck: bool = False,
        multi_view: bool = False,
        view_templates: int | None = None,
        view_drop: float | None = None,
    ) -> None:
        super().__init__()
        n = n_basic_layer
        if n < 4 or n % 4 != 0:
            raise ValueError(f"DSCNet n_basic_layer must be a positive multiple of 4, got {n}")
        if not fusion_head and (fusion_width is not None or fusion_bottleneck):
            raise ValueError("DSCNet fusion_width / fusion_bottleneck need fusion_head=True")
        if not multi_view and (view_templates is not None or view_drop is not None):
            raise ValueError("DSCNet view_templates / view_drop need multi_view=True")
        width = n if fusion_width is None else fusion_width
        if fusion_head and (isinstance(width, bool) or not isinstance(width, int) or width < 4 or width % 4):
            raise ValueError(f"DSCNet fusion_width must be a positive multiple of 4, got {fusion_width!r}")
        templates = DEFAULT_VIEW_TEMPLATES if view_templates is None else view_templates
        if multi_view and (isinstance(templates, bool) or not isinstance(templates, int) or templates < 1):
            raise ValueError(f"DSCNet view_templates must be an integer >= 1, got {view_templates!r}")
        drop = DEFAULT_VIEW_DROP if view_drop is None else float(view_drop)
        if multi_view and not 0.0 <= drop < 1.0:
            raise ValueError(f"DSCNet view_drop must be in [0, 1), got {view_drop!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.n_basic_layer = n
        self.kernel_size = kernel_size
        self.fusion_head = bool(fusion_head)
        self.fusion_width = width if fusion_head else None
        self.fusion_bottleneck = bool(fusion_bottleneck)
        self.multi_view = bool(multi_view)
        self.view_templates = templates if multi_view else 1
        self.view_drop = drop if multi_view else 0.0
        self._dsconv = dict(
            kernel_size=kernel_size,
            extend_scope=extend_scope,
            if_offset=if_offset,
            offset_norm=offset_norm,
            padding_mode=padding_mode,
        )
        # block prefix -> names of its (x, y) DSConv templates, template 1 first
        views: dict[str, list[tuple[str, str]]] = {}
        self._views = views
        widths = [
            # encoder (block input, block output)
            (in_channels, n), (n, 2 * n), (2 * n, 4 * n), (4 * n, 8 * n),
            # decoder: upsampled + skip
            (12 * n, 4 * n), (6 * n, 2 * n), (3 * n, n),
        ]  # fmt: skip
        for (prefix, fuse), (c_in, c_out) in zip(_ENCODER + _DECODER, widths):
            self._add_block(prefix, fuse, c_in, c_out)
        head_in = n
        if self.fusion_head:
            level_widths = {_BOTTLENECK_LEVEL: 8 * n, "13": 4 * n, "15": 2 * n, "17": n}
            for level in self._fusion_levels():
                self.add_module(f"proj{level}", nn.Conv2d(level_widths[level], width, 1))
            self._add_block(*_FUSION, len(self._fusion_levels()) * width, width)
            head_in = width
        self.out_conv = nn.Conv2d(head_in, out_channels, 1)

    def _fusion_levels(self) -> tuple[str, ...]:
        return ((_BOTTLENECK_LEVEL,) if self.fusion_bottleneck else ()) + _DECODER_LEVELS

    def _add_block(self, prefix: str, fuse: str, c_in: int, c_out: int) -> None:
        self.add_module(f"conv{prefix}0", ConvGNReLU(c_in, c_out))
        names = []
        for t in range(1, self.view_templates + 1):
            tail = "" if t == 1 else f"_t{t}"
            pair = (f"conv{prefix}x{tail}", f"conv{prefix}y{tail}")
            self.add_module(pair[0], DSConv2d(c_in, c_out, morph=0, **self._dsconv))
            self.add_module(pair[1], DSConv2d(c_in, c_out, morph=1, **self._dsconv))
            names.append(pair)
        self._views[prefix] = names
        self.add_module(fuse, ConvGNReLU(3 * c_out, c_out))

    def _block(self, prefix: str, fuse: str, x: torch.Tensor) -> torch.Tensor:
        base = getattr(self, f"conv{prefix}0")(x)
        views = self._views[prefix]
        if not self.multi_view:
            x_name, y_name = views[0]
            branches = [base, getattr(self, x_name)(x), getattr(self, y_name)(x)]
        else:
            drop = self.view_drop if self.training else 0.0
            keep = view_keep_mask(2 * len(views), drop, self.training)
            branches = [base]
            for axis in range(2):  # 0: the x views, 1: the y views
                feats = [getattr(self, pair[axis])(x) if keep[2 * t + axis] else None for t, pair in enumerate(views)]
                branches.append(fuse_views(feats, drop, base))
        return getattr(self, fuse)(torch.cat(branches, dim=1))

    def _fuse_levels(self, levels: dict[str, torch.Tensor]) -> torch.Tensor:
        full = levels[_DECODER_LEVELS[-1]].shape[-2:]
        parts = []
        for level in self._fusion_levels():
            y = getattr(self, f"proj{level}")(levels[level])
            if y.shape[-2:] != full:
                y = F.interpolate(y, size=full, mode="bilinear", align_corners=True)
            parts.append(y)
        return self._block(*_FUSION, torch.cat(parts, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H, W) logits; H, W multiples of 8."""
        check_input_size(x, self.size_divisor, "DSCNet", "three 2x poolings")
        skips = []
        for i, (prefix, fuse) in enumerate(_ENCODER):
            if i:
                x = F.max_pool2d(x, 2)
            x = self._block(prefix, fuse, x)
            skips.append(x)
        levels = {_BOTTLENECK_LEVEL: skips.pop()}
        for prefix, fuse in _DECODER:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            x = self._block(prefix, fuse, torch.cat([x, skips.pop()], dim=1))
            levels[fuse.removeprefix("conv")] = x
        if self.fusion_head:
            x = self._fuse_levels(levels)
        return self.out_conv(x)


# ------------------------------------------------------------------------------------------------
# Loading the authors' checkpoints


def load_original(path_or_state_dict: Any, padding_mode: str | None = None) -> DSCNet:
    """Build a :class:`DSCNet` matching a checkpoint of the authors' code and load it strictly.

    Accepts checkpoints saved by the original (``S3_DSCNet.py`` + ``S3_DSConv.py``) or the pro
    (``S3_DSCNet_pro.py`` + ``S3_DSConv_pro.py``) variant; they are told apart by their offset
    norm keys: ``conv0x.bn.running_mean`` etc. (BatchNorm, original -> ``offset_norm="batch"``)
    or ``conv0x.gn_offset.weight`` (GroupNorm, pro -> ``offset_norm="group"``). The input and
    output channels, ``n_basic_layer`` and ``kernel_size`` are read from the shapes of
    ``conv00.conv.weight``, ``out_conv.weight`` and ``conv0x.offset_conv.weight``. No key is
    renamed: medseg uses the authors' module names. ``extend_scope`` and ``if_offset`` are not
    stored in weights; the released configs' 1.0 and True are used (change
    ``module.extend_scope`` / ``module.if_offset`` on the DSConv2d modules if needed).

    Args:
        path_or_state_dict: a path (``str``/``os.PathLike``) to a file written by ``torch.save``
            (read with ``weights_only=True`` on CPU), or a mapping. A dict wrapping the state dict
            under ``"state_dict"`` or ``"model"`` is unwrapped, and a ``"module."`` prefix
            (DataParallel/DDP) is stripped.
        padding_mode: DSConv padding, "zeros", "original" or "border"; None picks the
            variant's own: "original" (their hand-written boundary, so a state dict trained with
            ``S3_DSConv.py`` gives their outputs near the border too) for the original, "border"
            for pro.

    Returns:
        A :class:`DSCNet` on CPU in training mode, with every weight and buffer loaded.

    Raises:
        CheckpointError: missing or unreadable file, content that is not a state dict, a variant
            that cannot be recognised, missing or unexpected keys, or shape mismatches; the
            message names the file and lists the offending keys.
    """
    where = describe_source(path_or_state_dict)
    state = read_state_dict(path_or_state_dict)
    has_bn = any(k.endswith(".bn.running_mean") for k in state)
    has_gn = any(k.endswith(".gn_offset.weight") for k in state)
    if has_bn == has_gn:
        found = "both" if has_bn else "neither"
        raise CheckpointError(
            f"{where}: cannot tell the DSCNet variant: {found} of '<dsconv>.bn.running_mean' "
            "(original S3_DSConv.py) and '<dsconv>.gn_offset.weight' (pro S3_DSConv_pro.py) "
            "keys found"
        )
    needed = ("conv00.conv.weight", "out_conv.weight", "conv0x.offset_conv.weight")
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointError(
            f"{where}: not a DSCNet state dict; missing keys needed to infer its shape: {', '.join(missing)}"
        )
    first = state["conv00.conv.weight"]
    if first.dim() != 4 or state["out_conv.weight"].dim() != 4:
        raise CheckpointError(f"{where}: conv00.conv.weight / out_conv.weight are not 4-D conv weights")
    variant = "original" if has_bn else "pro"
    if padding_mode is None:
        padding_mode = "original" if has_bn else "border"
    try:
        model = DSCNet(
            in_channels=int(first.shape[1]),
            out_channels=int(state["out_conv.weight"].shape[0]),
            n_basic_layer=int(first.shape[0]),
            kernel_size=int(state["conv0x.offset_conv.weight"].shape[0]) // 2,
            offset_norm="batch" if has_bn else "group",
            padding_mode=padding_mode,
        )
    except ValueError as exc:
        raise CheckpointError(f"{where}: shapes do not describe a valid DSCNet: {exc}") from exc
    load_strict(
        model,
        state,
        where,
        f"authors' DSCNet ({variant} variant, inferred n_basic_layer={model.n_basic_layer}, "
        f"kernel_size={model.kernel_size})",
    )
    return model
