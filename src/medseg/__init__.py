"""medseg: medical image segmentation networks faithful to their papers.

Subpackages, one concern each: ``models`` (networks and their registry), ``ops`` (custom
operators such as DSConv), ``data`` (datasets, readers, transforms), ``losses``, ``metrics``
(evaluation protocols as pure functions on arrays), ``engine`` (the only place that knows
Lightning), ``inference`` (sliding window), ``viz`` (figures) and ``cli``.
"""

__version__ = "0.1.0"
