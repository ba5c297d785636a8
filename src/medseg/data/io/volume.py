"""Any 3-D image with its geometry: :class:`Volume` and :func:`read_volume` (NIfTI file or DICOM folder)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.io.dicom import read_dicom_series
from medseg.data.io.nifti import nifti_header_for, read_nifti


@dataclass
class Volume:
    """A 3-D image with its geometry, as read by :func:`read_volume`.

    Attributes:
        array: float32 ``(I, J, K)`` stored values (HU for CT) in array-axis order.
        affine: (4, 4) voxel -> world (RAS+ mm).
        header: NIfTI header (the file's, or built from the DICOM geometry).
        spacing: mm per voxel along I, J, K.
        modality: "CT", "MR", ... or None when the file does not say (NIfTI).
        path: the file or DICOM folder.
        meta: reader facts (DICOM tags; empty for NIfTI).
    """

    array: np.ndarray
    affine: np.ndarray
    header: Any
    spacing: tuple[float, float, float]
    modality: str | None
    path: Path
    meta: dict = field(default_factory=dict)


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a NIfTI file or a DICOM series folder (a folder is read as DICOM).

    Raises:
        DataError: as :func:`read_nifti` / :func:`read_dicom_series`.
    """
    p = Path(path)
    if p.is_dir():
        vol, aff, spacing, meta = read_dicom_series(p)
        hdr = nifti_header_for(aff, vol.shape, np.float32, descrip=f"medseg from DICOM {meta['series_uid']}")
        return Volume(vol, aff, hdr, spacing, meta["modality"], p, meta)
    vol, aff, hdr, spacing = read_nifti(p)
    return Volume(vol, aff, hdr, spacing, None, p, {})


__all__ = ["Volume", "read_volume"]
