"""Datasets, readers and training-patch sampling, in three wings: ``datasets/``, ``io/``, ``transforms/``.

- :mod:`medseg.data.base`: :class:`Case`, :class:`CaseDataset`, the :data:`DATASETS` registry,
  :func:`create_dataset`, :func:`list_datasets`.
- :mod:`medseg.data.io`: image/mask readers raising :class:`~medseg.errors.DataError` that names
  the file.
- :mod:`medseg.data.datasets.synthetic`: ``"synthetic_vessels"``, the built-in default input (generated,
  no files).
- :mod:`medseg.data.records`, :mod:`medseg.data.files`: inventories (records, problems, splits)
  and the :class:`~medseg.data.files.FileDataset` base every file dataset builds on.
- :mod:`medseg.data.transforms.preprocess`: the preprocessing steps a recipe can name.
- :mod:`medseg.data.check`: ``medseg data check``.
- file datasets, each in its released layout: :mod:`~medseg.data.datasets.drive` (``drive``),
  :mod:`~medseg.data.datasets.chase_db1` (``chase_db1``), :mod:`~medseg.data.datasets.stare` (``stare``),
  :mod:`~medseg.data.datasets.octa` (``rose1``, ``rose2``, ``rossa``, ``octa500``),
  :mod:`~medseg.data.datasets.polyp` (``kvasir_seg``, ``cvc_clinicdb``), :mod:`~medseg.data.datasets.folder`
  (``folder``), :mod:`~medseg.data.datasets.volumes` (``msd``, ``dicom``; readers and NIfTI write-back in
  :mod:`medseg.data.io`).
- :mod:`medseg.data.transforms`: :class:`PatchDataset` (and :class:`VolumePatchDataset` for 3-D), :class:`AugmentConfig`,
  :func:`full_image_sample` (MONAI augmentation; imported lazily because MONAI is slow to load).
"""

from __future__ import annotations

from typing import Any

from medseg.data.base import (
    DATASETS,
    Case,
    CaseDataset,
    create_dataset,
    data_root,
    list_datasets,
    register_dataset,
    zscore_in_fov,
)
from medseg.data.datasets.drive import DriveDataset
from medseg.data.datasets.synthetic import SyntheticVessels, generate_vessel_case
from medseg.data.io import read_image, read_label, read_mask

_LAZY = {"PatchDataset", "VolumePatchDataset", "AugmentConfig", "full_image_sample"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from medseg.data import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module 'medseg.data' has no attribute {name!r}")


__all__ = [
    "Case",
    "CaseDataset",
    "DATASETS",
    "register_dataset",
    "create_dataset",
    "list_datasets",
    "data_root",
    "zscore_in_fov",
    "read_image",
    "read_label",
    "read_mask",
    "DriveDataset",
    "SyntheticVessels",
    "generate_vessel_case",
    "PatchDataset",
    "VolumePatchDataset",
    "AugmentConfig",
    "full_image_sample",
]
