"""DICOM series reading: a folder of slices to one ``(I, J, K)`` volume in RAS+ geometry.

Conventions (array order, spacing, affine): :mod:`medseg.data.io.nifti`. Source: DICOM PS3.3
C.7.6.2 (Image Plane Module) and C.11.1 (RescaleSlope/Intercept).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.io.nifti import canonical_modality
from medseg.errors import DataError

#: LPS (DICOM patient space) -> RAS (NIfTI world space): negate x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


#: A gap between sorted slice positions larger than this many median spacings is a missing slice.
MISSING_SLICE_FACTOR = 1.5


def _dicom_magic(p: Path) -> bool:
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _floats(ds, tag: str, n: int, f: Path) -> np.ndarray:
    v = getattr(ds, tag, None)
    try:
        arr = np.array([float(x) for x in v], dtype=np.float64) if v is not None else None
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.size != n or not np.isfinite(arr).all():
        raise DataError(f"DICOM file {f} has no valid {tag} (got {v!r}); it is needed to place the slice in space")
    return arr


def _sop_class_name(ds) -> str:
    uid = getattr(ds, "SOPClassUID", None) or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    return str(getattr(uid, "name", uid) or "unknown SOP class")


def _is_image_object(ds) -> bool:
    """True for a DICOM image object (an "... Image Storage" SOP class, or image tags present)."""
    return "Image Storage" in _sop_class_name(ds) or any(t in ds for t in ("Rows", "ImagePositionPatient"))


@dataclass
class _Slice:
    path: Path
    ds: Any
    position: np.ndarray
    orientation: np.ndarray
    spacing: np.ndarray
    rows: int
    cols: int
    series: str
    dist: float = 0.0


def _read_dicom_file(p: Path):
    """The pydicom dataset of ``p`` or None when ``p`` is not a DICOM file (DataError when it is
    DICOM but cannot be parsed)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    magic = _dicom_magic(p)
    try:
        return pydicom.dcmread(str(p), force=not magic)
    except InvalidDicomError:
        return None
    except PermissionError:
        raise DataError(f"DICOM file {p} cannot be read (permission denied)") from None
    except Exception as exc:
        if not magic:
            return None
        raise DataError(
            f"DICOM file {p} cannot be parsed (truncated or corrupt?): {type(exc).__name__}: {exc}"
        ) from None


def _series_files(root: Path) -> list[Path]:
    """The visible files of the series folder ``root``, sorted by name; DataError when it is missing,
    not a folder, unreadable or holds no file."""
    if not root.exists():
        raise DataError(f"DICOM folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"DICOM series {root} is not a folder; expected a folder of DICOM slice files")
    try:
        entries = sorted(root.iterdir(), key=lambda q: q.name)
    except OSError as exc:
        raise DataError(f"DICOM folder {root} cannot be listed: {exc.strerror or exc}") from None
    files = [q for q in entries if q.is_file() and not q.name.startswith(".")]
    subdirs = [q.name for q in entries if q.is_dir() and not q.name.startswith(".")]
    if not files:
        hint = f" (it holds only folders: {', '.join(subdirs[:5])}; point at one series folder)" if subdirs else ""
        raise DataError(f"DICOM folder {root} is empty: no files{hint}")

    return files


def _read_slices(root: Path, files: list[Path]) -> tuple[list[_Slice], list[str]]:
    """Parse every file's header: ``(image slices, skipped files with the reason)``; DataError for
    a truncated image, a multi-frame or colour image, or a folder without any DICOM image."""
    slices: list[_Slice] = []
    skipped: list[str] = []
    for f in files:
        ds = _read_dicom_file(f)
        if ds is not None and not _dicom_magic(f) and not ("PixelData" in ds and "ImagePositionPatient" in ds):
            ds = None  # a force-parsed non-DICOM file (text, image ...)
        if ds is not None and "PixelData" not in ds and _is_image_object(ds):
            raise DataError(
                f"DICOM file {f} is an image ({_sop_class_name(ds)}) without pixel data: a truncated "
                f"file ({f.stat().st_size} bytes)?"
            )
        if ds is None or "PixelData" not in ds:
            skipped.append(f"{f.name} ({'not a DICOM file' if ds is None else 'DICOM without pixel data'})")
            continue
        nframes = int(getattr(ds, "NumberOfFrames", 1) or 1)
        if nframes > 1:
            raise DataError(
                f"DICOM file {f} is a multi-frame image ({nframes} frames); medseg reads series of "
                "single-frame slices (convert it to NIfTI, e.g. with dcm2niix)"
            )
        if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
            raise DataError(
                f"DICOM file {f} is a colour image (SamplesPerPixel={ds.SamplesPerPixel}); expected grey slices"
            )
        slices.append(
            _Slice(
                f,
                ds,
                position=_floats(ds, "ImagePositionPatient", 3, f),
                orientation=_floats(ds, "ImageOrientationPatient", 6, f),
                spacing=_floats(ds, "PixelSpacing", 2, f),
                rows=int(getattr(ds, "Rows", 0) or 0),
                cols=int(getattr(ds, "Columns", 0) or 0),
                series=str(getattr(ds, "SeriesInstanceUID", "") or ""),
            )
        )
    if skipped:
        warnings.warn(
            f"DICOM folder {root}: skipped {len(skipped)} file(s) that are not DICOM images: "
            + ", ".join(skipped[:5])
            + (" ..." if len(skipped) > 5 else ""),
            stacklevel=4,
        )
    if not slices:
        raise DataError(
            f"DICOM folder {root} holds no DICOM image ({len(files)} files, none a DICOM image: "
            + ", ".join(skipped[:5])
            + ")"
        )

    return slices, skipped


def _check_geometry(root: Path, slices: list[_Slice]) -> None:
    """One series, one orientation, one size and one pixel spacing, else DataError naming the files."""
    # one series only
    by_series: dict[str, list[Path]] = {}
    for s in slices:
        by_series.setdefault(s.series, []).append(s.path)
    if len(by_series) > 1:
        parts = "; ".join(
            f"{uid or '(no SeriesInstanceUID)'}: {len(v)} files, e.g. {v[0].name}"
            for uid, v in sorted(by_series.items())
        )
        raise DataError(
            f"DICOM folder {root} mixes {len(by_series)} series ({parts}); put each series in its own folder"
        )

    ref = slices[0]
    for s in slices[1:]:
        if not np.allclose(s.orientation, ref.orientation, atol=1e-4):
            raise DataError(
                f"DICOM series {root}: {s.path.name} has ImageOrientationPatient {list(s.orientation)} but "
                f"{ref.path.name} has {list(ref.orientation)}; slices of one volume must share an orientation"
            )
        if (s.rows, s.cols) != (ref.rows, ref.cols):
            raise DataError(
                f"DICOM series {root}: {s.path.name} is {s.rows}x{s.cols} (rows x columns) but "
                f"{ref.path.name} is {ref.rows}x{ref.cols}"
            )
        if not np.allclose(s.spacing, ref.spacing, rtol=1e-4, atol=1e-5):
            raise DataError(
                f"DICOM series {root}: {s.path.name} has PixelSpacing {list(s.spacing)} but "
                f"{ref.path.name} has {list(ref.spacing)}"
            )


def _sort_along_normal(root: Path, slices: list[_Slice]) -> tuple[np.ndarray, np.ndarray]:
    """Sort ``slices`` in place by position along the slice normal; return ``(normal, step)``: the
    unit normal and the mean step between slices (mm, LPS). DataError for non-orthonormal
    orientation vectors, two slices at one position or a missing slice."""
    ref = slices[0]
    row_cos, col_cos = ref.orientation[:3], ref.orientation[3:]
    normal = np.cross(row_cos, col_cos)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise DataError(
            f"DICOM file {ref.path} has ImageOrientationPatient {list(ref.orientation)}, "
            "whose two vectors are not orthonormal"
        )
    for s in slices:
        s.dist = float(s.position @ normal)
    slices.sort(key=lambda s: s.dist)
    n = len(slices)
    if n > 1:
        dists = np.array([s.dist for s in slices])
        steps = np.diff(dists)
        for i, d in enumerate(steps):
            if d < 1e-4:
                raise DataError(
                    f"DICOM series {root}: {slices[i].path.name} and {slices[i + 1].path.name} lie at the "
                    f"same position ({slices[i].dist:.4g} mm along the slice normal): a duplicated slice "
                    "or two acquisitions in one folder"
                )
        med = float(np.sort(steps)[(len(steps) - 1) // 2])  # lower median: with 2 steps, the smaller
        big = np.flatnonzero(steps > MISSING_SLICE_FACTOR * med)
        if big.size:
            i = int(big[0])
            raise DataError(
                f"DICOM series {root} is missing a slice: the gap between {slices[i].path.name} "
                f"({slices[i].dist:.4g} mm) and {slices[i + 1].path.name} ({slices[i + 1].dist:.4g} mm) is "
                f"{steps[i]:.4g} mm, more than {MISSING_SLICE_FACTOR}x the median slice spacing {med:.4g} mm"
                + (f" ({big.size} such gaps)" if big.size > 1 else "")
            )
        if np.abs(steps - med).max() > 0.01 * med:
            warnings.warn(
                f"DICOM series {root}: uneven slice spacing ({steps.min():.4g}..{steps.max():.4g} mm); "
                "the affine uses the mean step",
                stacklevel=4,
            )
        step_vec = (slices[-1].position - slices[0].position) / (n - 1)
    else:
        thick = getattr(ref.ds, "SpacingBetweenSlices", None) or getattr(ref.ds, "SliceThickness", None) or 1.0
        step_vec = normal * float(thick)

    return normal, step_vec


def _stack_pixels(root: Path, slices: list[_Slice]) -> np.ndarray:
    """Decode and rescale every slice: float32 ``(I, J, K)`` = (columns, rows, slices)."""
    ref = slices[0]
    vol = np.empty((ref.cols, ref.rows, len(slices)), dtype=np.float32)
    for k, s in enumerate(slices):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                px = s.ds.pixel_array
        except Exception as exc:
            ts = getattr(getattr(s.ds, "file_meta", None), "TransferSyntaxUID", "?")
            raise DataError(
                f"DICOM file {s.path} pixel data cannot be decoded (transfer syntax {ts}; truncated data, or "
                f"compressed data without a decoder such as pylibjpeg/gdcm?): {type(exc).__name__}: {exc}"
            ) from None
        if px.shape != (ref.rows, ref.cols):
            raise DataError(
                f"DICOM file {s.path} pixel data has shape {px.shape}; its header says {ref.rows}x{ref.cols}"
            )
        slope = float(getattr(s.ds, "RescaleSlope", 1.0) or 1.0)
        inter = float(getattr(s.ds, "RescaleIntercept", 0.0) or 0.0)
        vol[:, :, k] = (px.astype(np.float32) * np.float32(slope) + np.float32(inter)).T
    if not np.isfinite(vol).all():
        raise DataError(f"DICOM series {root} yields NaN or infinite voxels after rescaling")

    return vol


def read_dicom_series(
    folder: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], dict]:
    """Read one DICOM series (a folder of single-frame slices) into a volume.

    Files are recognised by content (the ``DICM`` marker at byte 128, or a force-parsed file
    holding pixel data and ImagePositionPatient), not by extension. Files that are not DICOM
    (README, thumbnails, ``.DS_Store``) and DICOM objects without pixel data (DICOMDIR, reports)
    are **skipped with a warning** and listed in ``meta["skipped"]``; hidden files are ignored.
    A DICOM file that cannot be parsed or decoded is an error. Sub-folders are not searched.

    Slices are sorted by ImagePositionPatient projected on the slice normal (the cross product of
    the two ImageOrientationPatient vectors), and RescaleSlope/RescaleIntercept are applied per
    slice (Hounsfield units for CT).

    Returns:
        ``(volume, affine, spacing, meta)``:
        ``volume`` float32 ``(I, J, K)`` = (columns, rows, slices): ``volume[i, j, k]`` is pixel
        (row j, column i) of the k-th slice in position order, rescaled;
        ``affine`` (4, 4) voxel -> world in RAS+ mm (``diag(-1, -1, 1, 1) @`` the DICOM LPS
        affine, whose columns are PixelSpacing[1] * row cosine, PixelSpacing[0] * column cosine and
        the mean step between slice positions, and whose origin is the first slice's position);
        ``spacing`` (column spacing, row spacing, slice spacing) in mm, array-axis order;
        ``meta``: modality (canonical, "CT"/"MR"/...), modality_tag, series_uid, patient_id,
        study_uid, files (sorted paths as str), skipped (str), rescale (slope, intercept of the
        first slice), orientation (the six IOP values).

    Raises:
        DataError: the folder is missing, empty or holds no DICOM image; files of several series
            (every SeriesInstanceUID is listed with a file); an unparseable or undecodable file
            (compressed pixel data without a decoder, truncated pixel data); multi-frame or
            colour images; a slice without position/orientation/spacing; slices that disagree in
            orientation, size or pixel spacing; two slices at the same position; a missing slice
            (a gap larger than 1.5x the (lower) median slice spacing; the two neighbouring
            files are named). Messages name the folder or files.
    """
    root = Path(folder)
    files = _series_files(root)
    slices, skipped = _read_slices(root, files)
    _check_geometry(root, slices)
    ref = slices[0]
    row_cos, col_cos = ref.orientation[:3], ref.orientation[3:]
    _normal, step_vec = _sort_along_normal(root, slices)
    vol = _stack_pixels(root, slices)

    lps = np.eye(4)
    lps[:3, 0] = row_cos * ref.spacing[1]
    lps[:3, 1] = col_cos * ref.spacing[0]
    lps[:3, 2] = step_vec
    lps[:3, 3] = slices[0].position
    affine = LPS_TO_RAS @ lps
    spacing = (float(ref.spacing[1]), float(ref.spacing[0]), float(np.linalg.norm(step_vec)))
    ds0 = ref.ds
    tag = str(getattr(ds0, "Modality", "") or "")
    meta = {
        "modality": canonical_modality(tag),
        "modality_tag": tag,
        "series_uid": ref.series,
        "patient_id": str(getattr(ds0, "PatientID", "") or ""),
        "study_uid": str(getattr(ds0, "StudyInstanceUID", "") or ""),
        "files": [str(s.path) for s in slices],
        "skipped": skipped,
        "rescale": (
            float(getattr(ds0, "RescaleSlope", 1.0) or 1.0),
            float(getattr(ds0, "RescaleIntercept", 0.0) or 0.0),
        ),
        "orientation": [float(v) for v in ref.orientation],
    }
    return vol, affine, spacing, meta


def dicom_patient_id(folder: str | os.PathLike) -> str | None:
    """PatientID of the first DICOM file of ``folder`` (header only, no pixels), or None when no
    file is DICOM or the tag is empty. Never raises for bad files (they are reported on reading)."""
    import pydicom

    try:
        files = sorted(q for q in Path(folder).iterdir() if q.is_file() and not q.name.startswith("."))
    except OSError:
        return None
    for f in files:
        if not _dicom_magic(f):
            continue
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True, specific_tags=["PatientID"])
        except Exception:
            continue
        pid = str(getattr(ds, "PatientID", "") or "").strip()
        return pid or None
    return None


__all__ = ["LPS_TO_RAS", "MISSING_SLICE_FACTOR", "read_dicom_series", "dicom_patient_id"]
