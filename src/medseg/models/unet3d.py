"""3D U-Net baseline: MONAI's ``BasicUNet`` for volumes (Çiçek et al., "3D U-Net: Learning Dense
Volumetric Segmentation from Sparse Annotation", MICCAI 2016, arXiv 1606.06650; the network is
MONAI's implementation, ``monai.networks.nets.BasicUNet``, github.com/Project-MONAI/MONAI,
``monai/networks/nets/basic_unet.py``).

A thin registered wrapper: the network is MONAI's, built with ``spatial_dims=3`` and MONAI's
defaults (features (32, 32, 64, 128, 256, 32), LeakyReLU(0.1), affine instance norm, bias,
no dropout, transposed-conv upsampling), and held as ``self.net``, so a MONAI ``BasicUNet``
state dict loads with ``model.net.load_state_dict(state)`` (this module's own keys carry the
prefix ``net.``). What the wrapper adds: the network contract of :mod:`medseg.models.contract`
(``spatial_dims`` 3, ``size_divisor`` 16, logits) and the one size check.

How it differs from the MICCAI 2016 3D U-Net (as MONAI's BasicUNet does): padded 3x3x3
convolutions (output = input size; the paper's are unpadded), instance norm instead of batch
norm, LeakyReLU instead of ReLU, four 2x poolings (the paper has three) and the narrower widths
above (the paper: 32/64 ... 256/512). It is the 3D baseline medseg compares :mod:`dscnet3d
<medseg.models.dscnet3d>` against, not a reproduction of the paper.

MONAI is imported inside the constructor (``medseg models`` and config errors must answer
without loading MONAI).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medseg.models import register_model
from medseg.models.contract import NetworkContract, check_input_size

__all__ = ["UNet3D", "MONAI_FEATURES"]

#: MONAI BasicUNet's default features: conv_0, down_1 ... down_4, and the last up-block's width.
MONAI_FEATURES = (32, 32, 64, 128, 256, 32)


@register_model("unet3d")
class UNet3D(NetworkContract):
    """3D U-Net (MONAI ``BasicUNet``, ``spatial_dims=3``): four 2x max-poolings, two 3x3x3
    conv + instance norm + LeakyReLU per level, transposed-conv upsampling, concatenation of the
    skips, 1x1x1 head.

    Contract (:mod:`medseg.models.contract`): ``spatial_dims`` 3, ``in_channels`` and
    ``out_channels`` as built, ``size_divisor`` 16 (D, H and W multiples of 16: four 2x
    poolings; MONAI itself would pad odd sizes, medseg refuses them so that every position of a
    sliding window sees the same receptive field), ``output_activation`` "auto" (logits: MONAI's
    ``final_conv`` has no activation; the engine applies sigmoid for one channel, softmax
    otherwise), one output.

    Smallest volumes: in training, instance norm needs more than one voxel per channel at the
    1/16 bottleneck, so a 16x16x16 input fails there (PyTorch's "Expected more than 1 spatial
    element when training"); use at least one side of 32. In eval mode 16x16x16 runs, but the
    bottleneck's instance norm then outputs only its bias.

    Parameters: 5,749,410 with the defaults (1 in, 2 out, MONAI features), as
    ``sum(p.numel() for p in BasicUNet(spatial_dims=3).parameters())``; 5,749,377 with one
    output channel.

    Args:
        in_channels: input channels (1: a CT or MRI volume; MONAI's default).
        out_channels: output channels, logits (2: MONAI's default; background + one class).
        features: six widths (conv_0, down_1, down_2, down_3, down_4, the last up-block), ints
            >= 1; MONAI's default :data:`MONAI_FEATURES`.

    Shapes: (N, in_channels, D, H, W) float32 -> (N, out_channels, D, H, W) float32 logits, D,
    H, W in voxels, multiples of 16.

    Raises:
        ValueError: ``features`` is not six positive ints; in ``forward``, an input that is not
            5-D (a 4-D image batch is refused: "expects a volume (N, C, D, H, W)") or whose D, H
            or W is not a multiple of 16 (:func:`~medseg.models.contract.check_input_size`; the
            message names the size and the nearest valid sizes).
        ImportError: MONAI is not installed.
    """

    # class attributes TorchScript reads in forward (torch.jit.script compiles this network)
    __constants__ = ["size_divisor", "spatial_dims"]

    #: The input is a volume batch (N, C, D, H, W).
    spatial_dims = 3
    #: D, H and W must be multiples of this (four 2x max-poolings); read by the inference code.
    size_divisor = 16

    def __init__(self, in_channels: int = 1, out_channels: int = 2, features: Sequence[int] = MONAI_FEATURES) -> None:
        super().__init__()
        feats = tuple(features) if isinstance(features, Sequence) else ()
        if len(feats) != 6 or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in feats):
            raise ValueError(f"UNet3D features must be six ints >= 1 (MONAI BasicUNet), got {features!r}")
        from monai.networks.nets import BasicUNet

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.features = feats
        self.net = BasicUNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, features=feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, D, H, W) float32 -> (N, out_channels, D, H, W) logits; D, H, W
        multiples of 16 (ValueError otherwise, see the class)."""
        check_input_size(x, self.size_divisor, "UNet3D", "four 2x poolings", spatial_dims=self.spatial_dims)
        return self.net(x)
