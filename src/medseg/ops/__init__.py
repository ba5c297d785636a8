"""Custom operators.

- :class:`DSConv2d`: Dynamic Snake Convolution (Qi et al., ICCV 2023), see :mod:`medseg.ops.dsconv`;
  a gather-based reference implementation for tests and benchmarks is in
  :mod:`medseg.ops.dsconv_reference`.
"""

from medseg.ops.dsconv import DSConv2d

__all__ = ["DSConv2d"]
