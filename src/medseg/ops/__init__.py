"""Custom operators.

- :class:`DSConv2d`: Dynamic Snake Convolution (Qi et al., ICCV 2023), see :mod:`medseg.ops.dsconv`;
  a gather-based reference implementation for tests and benchmarks is in
  :mod:`medseg.ops.dsconv_reference`.
- :class:`DSConv3d`: the 3D Dynamic Snake Convolution of the authors' 3D DSCNet (``DCN_Conv``), inputs
  (N, C, D, H, W), kernels along x, y or z; see :mod:`medseg.ops.dsconv3d`, with its gather-based
  reference in :mod:`medseg.ops.dsconv3d_reference`.
"""

from medseg.ops.dsconv import DSConv2d
from medseg.ops.dsconv3d import DSConv3d

__all__ = ["DSConv2d", "DSConv3d"]
