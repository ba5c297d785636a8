"""NIfTI write-back: a label or prediction volume written in the geometry of its reference image.

Outputs are written atomically (:func:`medseg.atomic.atomic_path`) and never over their reference.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_path
from medseg.data.io.dicom import read_dicom_series
from medseg.data.io.nifti import NIFTI_SUFFIXES, _check_path, nifti_header_for
from medseg.data.io.volume import Volume
from medseg.errors import ConfigError, DataError


def _reference_geometry(reference: Any) -> tuple[np.ndarray, Any, tuple[int, ...], str]:
    """(affine, header or None, spatial shape, description) of a write-back reference."""
    import nibabel as nib

    if isinstance(reference, Volume):
        return reference.affine, reference.header, reference.array.shape, str(reference.path)
    if isinstance(reference, nib.Nifti1Image):
        return np.asarray(reference.affine), reference.header, tuple(reference.shape[:3]), "the reference image"
    if isinstance(reference, tuple) and len(reference) == 2:
        aff, hdr = reference
        shape = tuple(hdr.get_data_shape()[:3]) if hdr is not None else ()
        return np.asarray(aff, float), hdr, shape, "the reference geometry"
    p = Path(reference)
    if p.is_dir():
        vol, aff, _, meta = read_dicom_series(p)
        hdr = nifti_header_for(aff, vol.shape, np.uint8, descrip=f"medseg from DICOM {meta['series_uid']}")
        return aff, hdr, vol.shape, str(p)
    _check_path(p, "reference image")
    try:
        img = nib.load(str(p))
    except Exception as exc:
        raise DataError(f"reference image {p} is not a readable NIfTI file: {type(exc).__name__}: {exc}") from None
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    return np.array(img.affine, float), img.header, shape, str(p)


def _output_dtype(arr: np.ndarray, out: Path) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.dtype.kind in "iu" and arr.dtype.itemsize == 8:
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        for t in (np.uint8, np.int16, np.int32):
            if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
                return arr.astype(t)
        raise DataError(f"cannot write {out}: values {lo}..{hi} do not fit a 32-bit NIfTI integer type")
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    return arr


def write_nifti_like(array: np.ndarray, reference: Any, out_path: str | os.PathLike) -> Path:
    """Write ``array`` (a label or prediction volume) as NIfTI in the geometry of ``reference``.

    Args:
        array: ``(I, J, K)`` in the reference's array-axis order (e.g. uint8 labels). bool is
            written as uint8; 64-bit integers as the smallest of uint8/int16/int32 that holds
            them; other dtypes as given.
        reference: the image the array belongs to: a NIfTI file, a DICOM series folder, a
            :class:`Volume`, a ``nibabel.Nifti1Image`` or a tuple ``(affine, header_or_None)``.
        out_path: the ``.nii.gz`` (compressed) or ``.nii`` file to write.

    The written header is a copy of the reference's: affine, qform/sform (matrices and codes),
    pixdim and xyzt units are kept; the data type becomes the array's and intensity scaling is
    removed (``scl_slope`` = NaN). For a DICOM reference the header is built from the series
    geometry (:func:`nifti_header_for`, codes 1 = scanner). The file is written atomically and
    parent folders are created; an existing output (not the reference) is replaced.

    Returns:
        ``out_path`` as a Path.

    Raises:
        ConfigError: ``out_path`` is not ``.nii`` / ``.nii.gz``, is a folder, or is the
            reference file itself (the reference is never overwritten).
        DataError: the reference cannot be read, or ``array``'s shape differs from the
            reference's (both shapes are given).
    """
    import nibabel as nib

    out = Path(out_path)
    if not out.name.lower().endswith(NIFTI_SUFFIXES):
        raise ConfigError(f"output {out} must end in .nii.gz or .nii")
    if out.is_dir():
        raise ConfigError(f"output {out} is a folder; give a file name ending in .nii.gz")
    ref_path = None
    if isinstance(reference, Volume):
        ref_path = Path(reference.path)
    elif isinstance(reference, (str, os.PathLike)):
        ref_path = Path(reference)
    if ref_path is not None:
        if out.exists() and ref_path.exists() and os.path.samefile(out, ref_path):
            raise ConfigError(f"output {out} is the reference image itself; refusing to overwrite it")
        if ref_path.is_dir() and out.resolve().parent == ref_path.resolve():
            raise ConfigError(f"output {out} is inside the DICOM series folder {ref_path}; write it elsewhere")
    aff, hdr, shape, where = _reference_geometry(reference)
    arr = _output_dtype(np.asarray(array), out)
    if arr.ndim != 3 or (shape and tuple(arr.shape) != tuple(shape)):
        raise DataError(f"cannot write {out}: the array has shape {arr.shape} but {where} has shape {tuple(shape)}")
    if hdr is None:
        hdr = nifti_header_for(aff, arr.shape, arr.dtype)
    if isinstance(hdr, nib.Nifti1Header):
        new_hdr = hdr.copy()
    else:  # an Analyze/NIfTI-2 header: keep what NIfTI-1 can express
        new_hdr = nib.Nifti1Header.from_header(hdr)
    qaff, qcode = new_hdr.get_qform(coded=True)
    saff, scode = new_hdr.get_sform(coded=True)
    pixdim = np.array(new_hdr["pixdim"], copy=True)
    new_hdr.set_data_dtype(arr.dtype)
    img = nib.Nifti1Image(arr, aff, header=new_hdr)
    img.set_qform(qaff, code=int(qcode)) if qcode else img.set_qform(None, code=0)
    img.set_sform(saff, code=int(scode)) if scode else img.set_sform(None, code=0)
    if not qcode and not scode:  # neither code set: store the affine so it is not lost
        img.set_sform(aff, code=2)
    img.header["pixdim"][:] = pixdim
    img.header.set_data_dtype(arr.dtype)
    img.header["scl_slope"] = np.nan
    img.header["scl_inter"] = np.nan
    if arr.dtype.kind in "iu":
        img.header["cal_min"] = float(arr.min()) if arr.size else 0.0
        img.header["cal_max"] = float(arr.max()) if arr.size else 0.0
    suffix = ".nii.gz" if out.name.lower().endswith(".nii.gz") else ".nii"
    with atomic_path(out, suffix=suffix) as tmp:
        try:
            nib.save(img, str(tmp))
        except Exception as exc:
            raise DataError(f"cannot write {out}: {type(exc).__name__}: {exc}") from None
    return out


__all__ = ["write_nifti_like"]
