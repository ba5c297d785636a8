"""Mask and label-map readers: one binary mask reader (:func:`read_mask`) every dataset uses.

- :func:`read_label`: the stored grey levels (palette files through their palette).
- :func:`binarize_mask`: the binarisation rule (``> 0`` for 0/1 masks, ``> max / 2`` else), and
  :func:`binarize_noisy_mask` for 8-bit masks with JPEG noise (the polyp releases).
- :func:`read_mask`: the two together, with a diagnosis when a mask is not binary (a colour
  mask, a JPEG mask); :func:`read_mask_facts` adds what ``medseg data check`` reports.
- :func:`read_label_map`: multi-class label maps whose pixel values are class indices.

Every reader raises :class:`~medseg.errors.DataError` naming the file; nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.io.images import LUMA_WEIGHTS, _decode, _open_decoded, probe, read_image
from medseg.errors import DataError

#: Pillow modes (and tifffile descriptions) of colour files.
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a label/mask image as grey levels, without binarising it.

    Palette images (Pillow mode P, e.g. DRIVE ``test/2nd_manual/*.gif`` whose raw indices are
    {0, 1} and whose palette maps them to grey 3 and 253) are read **through their palette**, so
    the result does not depend on the index order. Colour masks whose three channels are equal
    are reduced to one channel; other colour masks are converted to luminance.

    Returns:
        ``(H, W)`` array of the stored grey levels (uint8 for 8-bit files; uint16/int32/float32
        for 16-bit, 32-bit and float files).

    Pixels are read as stored, like :func:`read_image` (no EXIF rotation); the same refusals
    apply (broken links, empty files, multi-frame TIFFs, images above :func:`max_image_pixels`).

    Raises:
        DataError: missing, unreadable, truncated file (message names the full path).
    """
    im = _decode(Path(path), "mask")
    if isinstance(im, np.ndarray):  # a TIFF only tifffile could read
        return _rgb_to_grey(im) if im.ndim == 3 else im
    if im.mode in ("P", "PA"):
        rgb = np.asarray(im.convert("RGB"))
        return _rgb_to_grey(rgb)
    if im.mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr"):
        return _rgb_to_grey(np.asarray(im.convert("RGB")))
    if im.mode in ("1", "LA"):
        im = im.convert("L")
    arr = np.asarray(im)
    if arr.ndim != 2:
        raise DataError(f"mask {Path(path)} has shape {arr.shape}; expected a single-channel image")
    return arr.copy()


def _rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0])
    grey = rgb.astype(np.float32) @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def binarize_mask(
    values: np.ndarray, path: str | os.PathLike | None = None, max_intermediate: float = 0.01
) -> np.ndarray:
    """Binarise a stored mask robustly.

    Rule: if the largest value is <= 1 (index-style masks, {0, 1}), foreground is ``value > 0``;
    otherwise (0/255-style, or 3/253 after a palette) foreground is ``value > max / 2`` (for a
    0/255 mask this is exactly ``value > 127``). Masks are never compared with ``== 255``. A
    constant mask is all foreground when its value is 1 or above 127, else all background.

    Args:
        values: ``(H, W)`` array of grey levels, e.g. from :func:`read_label`.
        path: the file, only used in error messages.
        max_intermediate: largest tolerated fraction of pixels strictly between the lowest and
            highest value (anti-aliased edges); more means a soft or lossy (JPEG) mask.

    Returns:
        uint8 ``(H, W)`` with values {0, 1}.

    Raises:
        DataError: not 2-D, negative or non-finite values, or more than ``max_intermediate``
            of the pixels between the two levels (the mask is not binary). The message names
            ``path``.
    """
    name = f"mask {Path(path)}" if path is not None else "mask"
    v = np.asarray(values)
    if v.ndim != 2 or v.size == 0:
        raise DataError(f"{name} has shape {v.shape}; expected a non-empty (H, W) image")
    if v.dtype.kind == "f" and not np.isfinite(v).all():
        raise DataError(f"{name} contains NaN or infinite values")
    vmin, vmax = v.min(), v.max()
    if vmin < 0:
        raise DataError(f"{name} has negative values (min {vmin}); expected 0/1 or 0/255")
    if vmin == vmax:  # constant: all foreground for 1 or > 127, else all background
        return np.full(v.shape, bool(vmax == 1 or vmax > 127), dtype=np.uint8)
    if vmax <= 1:
        out = v > 0
        between = (v > 0) & (v < 1)
    else:
        out = v > vmax / 2
        between = (v > vmin) & (v < vmax)
    frac = float(between.mean())
    if frac > max_intermediate:
        raise DataError(
            f"{name} is not binary: {frac:.1%} of its pixels lie between {vmin} and {vmax} "
            f"({len(np.unique(v))} distinct values; a JPEG-compressed or soft mask?)"
        )
    return out.astype(np.uint8)


#: Noisy-mask rule (:func:`binarize_noisy_mask`): foreground is ``value > NOISY_THRESHOLD``.
NOISY_THRESHOLD = 127
#: Grey levels strictly between these count as "mid-grey" (neither background nor foreground).
NOISY_AMBIGUOUS_BAND = (32, 224)
#: Largest tolerated fraction of mid-grey mask pixels (JPEG noise stays far below it).
NOISY_MAX_AMBIGUOUS = 0.05


def binarize_noisy_mask(values: np.ndarray, path: str | os.PathLike | None = None) -> np.ndarray:
    """Binarise an 8-bit mask that may carry JPEG noise or stray grey levels (the polyp releases).

    Rule: foreground (polyp) is ``value > 127``; an index-style mask whose largest value is 1 uses
    ``value > 0``. Unlike :func:`binarize_mask` (which refuses more than 1 %
    intermediate pixels) this accepts any number of near-black / near-white noise pixels, as the
    Kvasir-SEG JPEG masks and the CVC-ClinicDB TIFF masks need; it refuses a mask with more than
    :data:`NOISY_MAX_AMBIGUOUS` (5 %) of its pixels in the mid-grey band 33..223, which is a soft or
    probability map rather than a binary annotation.

    Args:
        values: uint8 ``(H, W)`` grey levels 0..255 (e.g. from :func:`read_label`).
        path: the mask file, for error messages.

    Returns:
        uint8 ``(H, W)`` with values {0, 1}.

    Raises:
        DataError: not 2-D, not 8-bit, or too many mid-grey pixels; the message names ``path``.
    """
    name = f"mask {Path(path)}" if path is not None else "mask"
    v = np.asarray(values)
    if v.ndim != 2 or v.size == 0:
        raise DataError(f"{name} has shape {v.shape}; expected a non-empty (H, W) image")
    if v.dtype != np.uint8:
        raise DataError(f"{name} is {v.dtype}; polyp masks are 8-bit (0/255)")
    if int(v.max()) <= 1:
        return (v > 0).astype(np.uint8)
    lo, hi = NOISY_AMBIGUOUS_BAND
    frac = float(((v > lo) & (v < hi)).mean())
    if frac > NOISY_MAX_AMBIGUOUS:
        raise DataError(
            f"{name} is not a binary mask: {frac:.1%} of its pixels are mid-grey ({lo + 1}..{hi - 1}); "
            "expected polyp = white (> 127) on black (a soft or probability map?)"
        )
    return (v > NOISY_THRESHOLD).astype(np.uint8)


def _is_colour_file(path: Path) -> bool:
    mode = str(probe(path).get("mode", "?"))
    return mode in _COLOUR_MODES or (mode.startswith("tifffile") and mode.endswith(("x3", "x4")))


def read_mask(path: str | os.PathLike, max_intermediate: float = 0.01, noisy: bool = False) -> np.ndarray:
    """Read and binarise a mask file: :func:`read_label` then :func:`binarize_mask` (every dataset's reader).

    Grey masks 0/255 or 0/1 (any bit depth) are binarised with
    :func:`binarize_mask` (foreground ``value > max / 2``, or ``> 0`` for 0/1).
    Palette masks are read through their palette. **Colour masks** are converted to BT.601
    luminance and thresholded the same way: one colour on black (e.g. red polyps, luminance 76)
    works, and RGB JPEG masks whose channels differ only by compression noise work too; a mask
    with several colours has several grey levels and is refused as not binary (use
    ``labels="multiclass"`` with a palette or grey label map instead).

    Args:
        path: the mask file.
        max_intermediate: largest tolerated fraction of pixels between the two levels (default
            1 %; raise it, e.g. to 1.0, for JPEG masks).
        noisy: binarise with :func:`binarize_noisy_mask` instead (8-bit masks with JPEG noise or
            stray grey levels, as Kvasir-SEG and CVC-ClinicDB ship them); ``max_intermediate``
            is then unused.

    Returns:
        uint8 ``(H, W)`` {0, 1}.

    Raises:
        DataError: unreadable file, or not binary (the message names the file and, for colour
            masks, says so).
    """
    if noisy:
        return binarize_noisy_mask(read_label(path), path)
    return read_mask_facts(path, max_intermediate)[0]


def read_mask_facts(path: str | os.PathLike, max_intermediate: float = 0.01) -> tuple[np.ndarray, dict]:
    """:func:`read_mask` plus what ``medseg data check`` reports about the stored values.

    Returns:
        ``(mask, facts)``: mask uint8 ``(H, W)`` {0, 1}; facts ``{"encoding": "0/1" (largest
        value 1) | "0/255" (any grey-level mask: largest value above 1, e.g. 255, or 253 for
        DRIVE's palette GIFs) | None (constant mask), "intermediate": fraction of pixels strictly
        between the lowest and highest stored value, "threshold": "> 0" | "> <max/2>" | None}``.

    Raises:
        DataError: as :func:`read_mask`; a JPEG mask that is not binary enough is told to
            be saved as PNG or read with a higher ``max_intermediate``.
    """
    p = Path(path)
    values = read_label(p)
    try:
        mask = binarize_mask(values, p, max_intermediate=max_intermediate)
    except DataError as exc:
        if _is_colour_file(p):
            raise DataError(
                f"{exc}; it is a colour mask: binary masks are read as luminance, so use one colour on "
                "black, or labels='multiclass' with grey or palette label maps"
            ) from None
        if probe(p).get("format") == "JPEG":
            raise DataError(
                f"{exc}; it is a JPEG file, whose lossy compression leaves values between the two levels at "
                f"every edge: save masks as PNG, or set max_intermediate=1.0 to threshold it at half its maximum"
            ) from None
        raise
    vmin, vmax = values.min(), values.max()
    facts: dict[str, Any] = {"encoding": None, "intermediate": 0.0, "threshold": None}
    if vmin != vmax:
        top = float(vmax)
        facts["encoding"] = "0/1" if top <= 1 else "0/255"  # "0/255": any grey-level mask (max above 1)
        facts["threshold"] = "> 0" if top <= 1 else f"> {top / 2:g}"
        facts["intermediate"] = float(((values > vmin) & (values < vmax)).mean())
    return mask, facts


def read_label_map(path: str | os.PathLike, num_classes: int) -> np.ndarray:
    """Read a multi-class label map whose pixel values are class indices.

    Palette images (PNG/GIF mode P) give their palette **indices** (the class numbers), not the
    colours the palette shows; 1-bit images give {0, 1}; grey 8/16-bit images give their values;
    an RGB file is accepted only when its three channels are equal (a grey map saved as RGB).

    Args:
        path: the label file.
        num_classes: classes including background; values must lie in 0..num_classes-1.

    Returns:
        uint8 ``(H, W)`` with values 0..num_classes-1.

    Raises:
        DataError: unreadable file, a colour (RGB) label map, non-integer values, or values
            outside 0..num_classes-1 (the message lists the bad values and names the file).
    """
    p = Path(path)
    mode = str(probe(p).get("mode", "?"))
    if mode in ("P", "PA"):
        arr = np.asarray(_open_decoded(p, "mask"))
        arr = arr[..., 0] if arr.ndim == 3 else arr
    elif mode == "1":
        arr = (read_label(p) > 0).astype(np.uint8)
    elif _is_colour_file(p):
        rgb = read_image(p)
        if rgb.ndim == 3 and not (
            np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
        ):
            raise DataError(
                f"mask {p} is a colour image; multi-class masks must be label maps whose pixel values are the "
                "class indices (grey PNG/TIFF) or palette PNGs (index = class), not colour-coded RGB"
            )
        arr = rgb[..., 0] if rgb.ndim == 3 else rgb
    else:
        arr = read_label(p)
    if arr.ndim != 2:
        raise DataError(f"mask {p} has shape {arr.shape}; expected a single-channel label map")
    if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
        raise DataError(f"mask {p} holds non-integer values; expected class indices 0..{num_classes - 1}")
    values = np.unique(arr)
    bad = [v for v in values.tolist() if not 0 <= v < num_classes]
    if bad:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise DataError(
            f"mask {p} has label values {shown} outside 0..{num_classes - 1} (num_classes={num_classes}); "
            "a 0/255 binary mask needs labels='binary'"
        )
    return arr.astype(np.uint8)


__all__ = [
    "read_label",
    "binarize_mask",
    "binarize_noisy_mask",
    "read_mask",
    "read_mask_facts",
    "read_label_map",
    "NOISY_THRESHOLD",
    "NOISY_AMBIGUOUS_BAND",
    "NOISY_MAX_AMBIGUOUS",
]
