"""What happens to a loaded case before the network sees it.

- :mod:`medseg.data.transforms.preprocess`: the preprocessing steps a recipe names (``STEPS``,
  :class:`~medseg.data.transforms.preprocess.Pipeline`), run once per case at load time.
- :mod:`medseg.data.transforms.fov`: the field of view estimated from a fundus image.
- :mod:`medseg.data.transforms.intensity`: CT windows and MRI normalisation of volumes.
- :mod:`medseg.data.transforms.augment`: :class:`AugmentConfig` and :func:`color_jitter`
  (their parameters; the MONAI transforms run in :mod:`~medseg.data.transforms.patches`).
- :mod:`medseg.data.transforms.patches`: :class:`PatchDataset` (random training patches,
  reproducible from ``(seed, epoch, index)``) and :func:`full_image_sample`.
- :mod:`medseg.data.transforms.patches3d`: :class:`VolumePatchDataset`, its 3-D counterpart for
  volume cases (foreground-biased crops, MONAI 3-D rotations and flips).

The augmentation names are resolved lazily (``from medseg.data.transforms import PatchDataset``
works) because MONAI takes seconds to import and most commands never augment.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "AugmentConfig": "augment",
    "color_jitter": "augment",
    "PatchDataset": "patches",
    "full_image_sample": "patches",
    "VolumePatchDataset": "patches3d",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"medseg.data.transforms.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'medseg.data.transforms' has no attribute {name!r}")


__all__ = list(_LAZY)
