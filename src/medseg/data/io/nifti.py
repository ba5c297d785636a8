"""NIfTI reading, and the volume conventions every reader in :mod:`medseg.data.io` follows.

DICOM series: :mod:`medseg.data.io.dicom`; either kind: :func:`medseg.data.io.volume.read_volume`;
write-back: :mod:`medseg.data.io.writeback`; intensity: :mod:`medseg.data.transforms.intensity`.

Everything here either returns arrays in a documented layout or raises
:class:`~medseg.errors.DataError` naming the file (or folder) and the problem; nibabel and
pydicom failures never escape as raw tracebacks. Inputs are only read; outputs are written
atomically (:func:`medseg.atomic.atomic_path`) and never over their reference image.

Conventions
-----------
- **Array order.** Volumes are numpy arrays in *array-axis order* ``(I, J, K)`` as stored in the
  NIfTI file (nibabel's order; for most files I, J, K run roughly along x, y, z). DICOM series are
  returned in the same order a NIfTI converter would write: ``I`` = column index of a slice (along
  the first ImageOrientationPatient vector), ``J`` = row index, ``K`` = slice index after sorting
  by position along the slice normal, so ``volume[:, :, k]`` is slice ``k`` transposed.
- **Spacing** is always given in array-axis order (mm per voxel along I, J, K), derived from the
  header (NIfTI ``pixdim``) or from PixelSpacing and the slice positions (DICOM). Reversing it is
  the classic distance-metric bug: on anisotropic voxels it changes every HD95 and surface distance.
- **Affine** maps ``(i, j, k, 1)`` to world coordinates in mm in the NIfTI convention, RAS+
  (+x = towards the patient's Right, +y = Anterior, +z = Superior). DICOM ImagePositionPatient
  is in LPS+ (+x = Left, +y = Posterior, +z = Superior), so
  ``affine_RAS = diag(-1, -1, 1, 1) @ affine_LPS``, as dcm2niix, ITK and nibabel do.
- **Intensity** handling is per volume (statistics over the whole volume, before slicing):
  :func:`medseg.data.transforms.intensity.normalize_intensity`.

Sources: NIfTI-1 format (nifti.nimh.nih.gov/nifti-1), DICOM PS3.3 C.7.6.2 (Image Plane Module:
ImagePositionPatient, ImageOrientationPatient, PixelSpacing) and C.11.1 (RescaleSlope/Intercept
-> Hounsfield units for CT).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import DataError

#: File name endings read as NIfTI.
NIFTI_SUFFIXES = (".nii.gz", ".nii")


# --------------------------------------------------------------------------------- helpers


def is_nifti_file(path: str | os.PathLike) -> bool:
    """True for a visible file named ``*.nii`` or ``*.nii.gz`` (case-insensitive)."""
    name = Path(path).name
    return not name.startswith(".") and name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | os.PathLike) -> str:
    """``hippocampus_001.nii.gz`` -> ``hippocampus_001`` (``.nii`` / ``.nii.gz`` removed)."""
    name = Path(path).name
    for suf in NIFTI_SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(name).stem


def same_affine(a: np.ndarray, b: np.ndarray) -> bool:
    """Affines equal up to float32 storage precision (1e-3 mm + 1e-5 relative)."""
    return bool(np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-5, atol=1e-3))


def affine_text(a: np.ndarray) -> str:
    """A 4x4 affine on one line, rows separated by ``;`` (for error messages)."""
    rows = np.asarray(a, float)[:3]
    return "[" + "; ".join(" ".join(f"{v:.4g}" for v in r) for r in rows) + "]"


def _check_path(p: Path, what: str) -> None:
    if not p.exists():
        raise DataError(f"{what} {p} does not exist")
    if p.is_dir():
        raise DataError(f"{what} {p} is a folder; expected a .nii or .nii.gz file")
    if not os.access(p, os.R_OK):
        raise DataError(f"{what} {p} cannot be read (permission denied)")


def canonical_modality(text: str | None) -> str | None:
    """Map modality names to "CT" or "MR" (others upper-cased as given; None stays None).

    "CT" -> "CT"; "MR", "MRI", "T1", "T1w", "T2", "FLAIR", "ADC", "DWI", "t1gd" ... -> "MR"
    (the names MSD ``dataset.json`` files and the DICOM Modality tag use).
    """
    if text is None:
        return None
    t = str(text).strip().upper()
    if not t:
        return None
    if t == "CT" or t.startswith("CT"):
        return "CT"
    if t.startswith("MR") or any(k in t for k in ("T1", "T2", "FLAIR", "ADC", "DWI", "PD")):
        return "MR"
    return t


# --------------------------------------------------------------------------------- NIfTI


def _load_nifti(path: str | os.PathLike, what: str):
    """(nibabel image, stored array with scl_slope/inter applied) of a 3-D NIfTI; DataError on failure."""
    import nibabel as nib

    p = Path(path)
    _check_path(p, what)
    try:
        img = nib.load(str(p), mmap=False)
    except Exception as exc:  # ImageFileError, OSError, EOFError, zlib.error, ValueError ...
        from medseg.data.io.dicom import _dicom_magic  # here: dicom imports this module

        size = p.stat().st_size
        if _dicom_magic(p):
            raise DataError(f"{what} {p} is a DICOM file, not NIfTI: give the folder of its series instead") from None
        raise DataError(
            f"{what} {p} is not a readable NIfTI file ({size} bytes): {type(exc).__name__}: {exc}"
        ) from None
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3:
        raise DataError(
            f"{what} {p} has shape {tuple(img.shape)}: a {len(img.shape)}-D image (several "
            "modalities, time points or components in one file); medseg expects one 3-D volume per "
            "file (split it, e.g. with nibabel.four_to_three, and name the channel you want)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated gzip (EOFError), short buffer (ValueError), zlib.error ...
        raise DataError(
            f"{what} {p} cannot be decoded (truncated or corrupt file?): {type(exc).__name__}: {exc}"
        ) from None
    arr = np.asarray(arr).reshape(shape)
    if arr.dtype.kind == "c" or arr.dtype.fields is not None:
        raise DataError(f"{what} {p} holds {arr.dtype} voxels (complex or RGB); expected one scalar per voxel")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise DataError(f"{what} {p} contains {bad} NaN or infinite voxels")
    return img, arr


def _spacing_of(img, ndim: int = 3) -> tuple[float, float, float]:
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    while len(zooms) < ndim:
        zooms.append(1.0)
    return tuple(zooms[:3])  # type: ignore[return-value]


def read_nifti(
    path: str | os.PathLike, what: str = "image"
) -> tuple[np.ndarray, np.ndarray, Any, tuple[float, float, float]]:
    """Read a 3-D NIfTI image (``.nii`` / ``.nii.gz``) with nibabel.

    Args:
        path: the file.
        what: the word used in error messages ("image", "label", ...).

    Returns:
        ``(volume, affine, header, spacing)``: float32 ``(I, J, K)`` in array-axis order holding
        the stored values after the header's ``scl_slope``/``scl_inter`` (HU for CT, scanner units
        for MR); the (4, 4) float64 voxel-to-world affine (nibabel's best affine: sform, else
        qform; RAS+ mm); the nibabel header (a copy you may modify); spacing in mm per voxel in
        array-axis order (``pixdim[1:4]``). A trailing singleton 4th dimension is squeezed; a 2-D
        image becomes ``(I, J, 1)``.

    Raises:
        DataError: missing, unreadable, not NIfTI, truncated or corrupt file; a 4-D (or higher)
            volume (the shape is given: one volume per file is expected); complex/RGB voxels;
            NaN or infinite voxels. The message names the file.
    """
    img, arr = _load_nifti(path, what)
    return (
        arr.astype(np.float32, copy=False),
        np.array(img.affine, dtype=np.float64),
        img.header.copy(),
        _spacing_of(img),
    )


def read_label_nifti(
    path: str | os.PathLike, what: str = "label"
) -> tuple[np.ndarray, np.ndarray, Any, tuple[float, float, float]]:
    """Read a NIfTI label volume and cast it to uint8 (some MSD labels are stored as float32
    0.0 / 1.0 / 2.0).

    Returns:
        ``(labels, affine, header, spacing)`` as :func:`read_nifti`, with ``labels`` uint8
        ``(I, J, K)`` holding the class indices 0..255.

    Raises:
        DataError: as :func:`read_nifti`; negative, non-integer (a probability map or a label
            resampled with linear interpolation?) or > 255 values. The message names the file.
    """
    img, arr = _load_nifti(path, what)
    p = Path(path)
    if arr.dtype == np.uint8:
        lab = arr
    else:
        if arr.dtype.kind == "f":
            frac = arr != np.round(arr)
            if frac.any():
                ex = arr[frac].flat[0]
                raise DataError(
                    f"{what} {p} holds non-integer values (e.g. {ex:g}, in {int(frac.sum())} voxels): "
                    "not a label map (a probability map, or labels resampled with linear interpolation?)"
                )
        lo, hi = (arr.min(), arr.max()) if arr.size else (0, 0)
        if lo < 0 or hi > 255:
            raise DataError(f"{what} {p} holds values {lo:g}..{hi:g}; expected class indices 0..255")
        lab = arr.astype(np.uint8)
    return lab, np.array(img.affine, dtype=np.float64), img.header.copy(), _spacing_of(img)


def nifti_header_for(affine: np.ndarray, shape: tuple[int, ...], dtype: Any = np.float32, descrip: str = "") -> Any:
    """A NIfTI-1 header for a volume of ``shape`` placed by ``affine`` (e.g. built from a DICOM
    series): qform and sform set to the affine with code 1 (scanner), pixdim from the affine,
    units mm / s, data type ``dtype``, no intensity scaling."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(tuple(int(s) for s in shape))
    hdr.set_data_dtype(np.dtype(dtype))
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr.set_xyzt_units("mm", "sec")
    if descrip:
        hdr["descrip"] = descrip[:79].encode("ascii", "replace")
    return hdr


__all__ = [
    "nifti_header_for",
    "NIFTI_SUFFIXES",
    "is_nifti_file",
    "nifti_stem",
    "same_affine",
    "affine_text",
    "canonical_modality",
    "read_nifti",
    "read_label_nifti",
    "nifti_header_for",
]
