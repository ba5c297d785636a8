"""U-Net baseline (Ronneberger, Fischer, Brox, MICCAI 2015, arXiv 1505.04597).

The original uses unpadded 3x3 convolutions (output smaller than input, Fig. 1) and no
normalisation. Like nearly every re-implementation users compare against, this one pads the
convolutions (output = input size) and adds BatchNorm after each conv; both are options
(``norm=None`` removes the norm). Width and depth are configurable; the paper's network is
``base_channels=64, depth=4, norm=None`` (31,030,658 parameters with 1 input and 2 output
channels and transposed-conv upsampling; 31,036,546 with the default BatchNorm; 31,036,481 as
``create_model("unet")`` builds it, with BatchNorm and one output channel of logits).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.models import register_model
from medseg.models.contract import NetworkContract


class DoubleConv(nn.Sequential):
    """(3x3 conv -> [BatchNorm] -> ReLU) x 2, padding 1: (N, C_in, H, W) float32 -> (N, C_out,
    H, W) float32 (the paper's unit, padded). Raises ValueError for a ``norm`` other than
    "batch" or None."""

    def __init__(self, in_channels: int, out_channels: int, norm: str | None = "batch") -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=1, bias=norm is None))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(out_channels))
            elif norm is not None:
                raise ValueError(f"norm must be 'batch' or None, got {norm!r}")
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


@register_model("unet")
class UNet(NetworkContract):
    """U-Net: ``depth`` 2x poolings, channels doubling from ``base_channels``.

    Contract (:mod:`medseg.models.contract`): ``in_channels``, ``out_channels`` as built,
    ``size_divisor`` 1 (any H, W), ``output_activation`` "auto" (logits), one output
    (``forward_outputs(x) == {"out": forward(x)}``).

    Args:
        in_channels: input channels (1 for a green-channel fundus image, 3 for RGB).
        out_channels: output channels; logits (apply sigmoid for 1, softmax for more).
        base_channels: width of the first level (64 in the paper).
        depth: number of 2x2 max-poolings (4 in the paper). H and W need not be divisible by
            ``2**depth``: the decoder pads odd sizes back before concatenation.
        upsample: "transpose" (2x2 transposed conv, as in the paper) or "bilinear" (parameter-free
            upsampling followed by a 1x1 conv halving the channels).
        norm: "batch" or None (the paper has none).

    Shapes: (N, in_channels, H, W) float32 -> (N, out_channels, H, W) float32 logits.

    Raises:
        ValueError: ``depth`` < 1, an unknown ``upsample`` or ``norm``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 64,
        depth: int = 4,
        upsample: str = "transpose",
        norm: str | None = "batch",
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if upsample not in ("transpose", "bilinear"):
            raise ValueError(f"upsample must be 'transpose' or 'bilinear', got {upsample!r}")
        self.in_channels, self.out_channels, self.depth = in_channels, out_channels, depth
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList([DoubleConv(in_channels, widths[0], norm)])
        self.encoder.extend(DoubleConv(widths[i], widths[i + 1], norm) for i in range(depth))
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in reversed(range(depth)):
            if upsample == "transpose":
                self.ups.append(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2))
            else:
                self.ups.append(
                    nn.Sequential(
                        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                        nn.Conv2d(widths[i + 1], widths[i], 1),
                    )
                )
            self.decoder.append(DoubleConv(2 * widths[i], widths[i], norm))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) float32 -> (N, out_channels, H, W) float32 logits, any H, W."""
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.ups, self.decoder):
            skip = skips.pop()
            x = up(x)
            dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
            if dh or dw:
                x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
            x = block(torch.cat([skip, x], dim=1))
        return self.head(x)
