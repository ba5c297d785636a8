"""Image and mask readers that fail with a clear :class:`~medseg.errors.DataError`.

Every reader opens the file read-only with Pillow, decodes it completely (so a truncated file
fails here, not in the middle of training) and wraps any failure in a ``DataError`` whose message
holds the full path and the problem. Nothing is ever written.

Pillow reads the formats the supported datasets ship in: TIFF (including the LZW-compressed
DRIVE TIFFs), GIF (mode L and palette), PNG, JPEG, BMP.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from medseg.errors import DataError

#: File name endings treated as images when scanning a folder (lower case).
IMAGE_EXTENSIONS = (".tif", ".tiff", ".gif", ".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")

#: Luminance weights (ITU-R BT.601, the ones Pillow's ``convert("L")`` uses) for R, G, B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def is_image_file(path: str | os.PathLike) -> bool:
    """True when ``path`` has one of :data:`IMAGE_EXTENSIONS` and is not a hidden file."""
    name = Path(path).name
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _is_tiff(p: Path) -> bool:
    return p.suffix.lower() in (".tif", ".tiff")


def _read_tiff(p: Path, what: str) -> np.ndarray:
    """Decode a TIFF with tifffile (for files Pillow refuses, e.g. CVC-ClinicDB's RGB TIFFs whose
    header says MinIsBlack with 3 samples per pixel)."""
    import logging

    import tifffile

    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)  # a damaged file is reported below, once, naming it
    try:
        arr = np.asarray(tifffile.imread(p))
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error, ...
        raise DataError(f"{what} {p} cannot be decoded (truncated or corrupt TIFF?): {exc}") from None
    finally:
        log.setLevel(level)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar configuration
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise DataError(f"{what} {p} has array shape {arr.shape}; expected (H, W) or (H, W, 3)")
    return arr


def _decode(p: Path, what: str) -> Image.Image | np.ndarray:
    """The decoded Pillow image, or, for a TIFF Pillow cannot read, tifffile's array.

    Raises:
        DataError: Pillow fails (and, for a TIFF, tifffile too: Pillow's error with tifffile's
            reason appended).
    """
    try:
        return _open_decoded(p, what)
    except DataError as pil_error:
        if not _is_tiff(p) or not p.is_file():
            raise
        try:
            return _read_tiff(p, what)
        except DataError as tiff_error:
            reason = str(tiff_error).split(": ", 1)[-1]
            raise DataError(f"{pil_error} (tifffile: {reason})") from None


def _check_exists(p: Path, what: str) -> None:
    if not p.exists():
        raise DataError(f"{what} {p} does not exist")
    if not p.is_file():
        raise DataError(f"{what} {p} is not a file")
    if not os.access(p, os.R_OK):
        raise DataError(f"{what} {p} cannot be read (permission denied)")


def _open_decoded(path: str | os.PathLike, what: str) -> Image.Image:
    """Open ``path`` with Pillow and decode all its pixels; DataError on any failure."""
    p = Path(path)
    _check_exists(p, what)
    try:
        with warnings.catch_warnings():  # Pillow warns (e.g. "Corrupt EXIF") before failing
            warnings.simplefilter("ignore")
            with Image.open(p) as im:
                im.load()  # decodes everything: a truncated file fails here
                # Copy so the file handle can be closed; the copy keeps mode and palette.
                return im.copy()
    except PermissionError:
        raise DataError(f"{what} {p} cannot be read (permission denied)") from None
    except Image.UnidentifiedImageError:
        size = p.stat().st_size
        raise DataError(
            f"{what} {p} is not an image Pillow can read ({size} bytes): not an image at all, "
            "a truncated or corrupt file, or an unsupported format"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(f"{what} {p} cannot be decoded (truncated or corrupt file?): {exc}") from None
    except Exception as exc:  # pragma: no cover - any other decoder failure (struct.error, ...)
        raise DataError(f"{what} {p} cannot be decoded: {type(exc).__name__}: {exc}") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as stored (no resampling, no colour management).

    Args:
        path: an image file Pillow can read (TIFF, GIF, PNG, JPEG, BMP, ...); TIFFs Pillow
            cannot identify (CVC-ClinicDB's RGB TIFFs) are read with tifffile.

    Returns:
        ``(H, W)`` for grey images (Pillow modes L, 1, LA, I;16, I, F) or ``(H, W, 3)`` for
        colour ones (RGB; RGBA/CMYK/YCbCr are converted to RGB, alpha dropped; palette images are
        expanded through their palette to grey or RGB). dtype uint8 (0..255) for 8-bit files,
        uint16 for 16-bit files, int32 / float32 for 32-bit ones: the stored values, never
        rescaled (see :func:`to_display` for an 8-bit view).

    Raises:
        DataError: the file is missing, unreadable, not an image, truncated/corrupt, or holds
            NaN/infinite values. The message names the full path.
    """
    p = Path(path)
    im = _decode(p, "image")
    if isinstance(im, np.ndarray):  # a TIFF only tifffile could read
        _check_finite(im, p, "image")
        return im
    mode = im.mode
    if mode in ("L", "RGB"):
        return np.asarray(im, dtype=np.uint8).copy()
    if mode in ("1", "LA"):
        return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    if mode == "P":
        rgb = np.asarray(im.convert("RGB"))
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            return np.ascontiguousarray(rgb[..., 0])
        return rgb
    if mode in ("RGBA", "CMYK", "YCbCr", "PA", "RGBX", "LAB", "HSV"):
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    if mode in ("I", "F"):
        arr = np.asarray(im)
        _check_finite(arr, p, "image")
        return arr.copy()
    raise DataError(f"image {p} has Pillow mode {mode!r}, which medseg cannot interpret")


def _check_finite(arr: np.ndarray, p: Path, what: str) -> None:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataError(f"{what} {p} contains NaN or infinite values")


def to_display(image: np.ndarray) -> np.ndarray:
    """An 8-bit view of an image for figures: uint8 passes through; other dtypes are min-max
    scaled to 0..255 (non-finite values become 0).

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` of any numeric dtype.

    Returns:
        uint8 array of the same shape.
    """
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return a
    f = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(f.min()), float(f.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip(np.rint((f - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)


def probe(path: str | os.PathLike) -> dict:
    """File facts for ``medseg data check``, read from the header only (no decoding).

    Returns:
        ``{"format": "PNG", "mode": "L", "size": (W, H)}`` for images Pillow identifies;
        ``{"format": "TIFF", "mode": "tifffile", "size": (W, H), "dtype": "uint8"}`` for TIFFs
        only tifffile reads; ``{"format": "?", "mode": "?", "size": None}`` when neither can.
    """
    p = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(p) as im:
                return {"format": im.format or "?", "mode": im.mode, "size": tuple(im.size)}
    except Exception:
        pass
    if _is_tiff(p):
        try:
            import tifffile

            with tifffile.TiffFile(p) as tf:
                page = tf.pages[0]
                shape = page.shape
                return {"format": "TIFF", "mode": f"tifffile {page.photometric.name} x{page.samplesperpixel}",
                        "size": (int(shape[1]), int(shape[0])), "dtype": str(page.dtype)}
        except Exception:
            pass
    return {"format": "?", "mode": "?", "size": None}


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a label/mask image as grey levels, without binarising it.

    Palette images (Pillow mode P, e.g. DRIVE ``test/2nd_manual/*.gif`` whose raw indices are
    {0, 1} and whose palette maps them to grey 3 and 253) are read **through their palette**, so
    the result does not depend on the index order. Colour masks whose three channels are equal
    are reduced to one channel; other colour masks are converted to luminance.

    Returns:
        ``(H, W)`` array of the stored grey levels (uint8 for 8-bit files; uint16/int32/float32
        for 16-bit, 32-bit and float files).

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


def read_mask(path: str | os.PathLike, max_intermediate: float = 0.01) -> np.ndarray:
    """Read and binarise a mask file: :func:`read_label` then :func:`binarize_mask`.

    Returns:
        uint8 ``(H, W)`` in {0, 1}.

    Raises:
        DataError: unreadable file or non-binary mask (message names the full path).
    """
    return binarize_mask(read_label(path), path, max_intermediate=max_intermediate)


def select_channels(rgb: np.ndarray, channels: str, path: str | os.PathLike | None = None) -> np.ndarray:
    """Pick the network input channels from an 8-bit image.

    Args:
        rgb: uint8 ``(H, W, 3)`` or ``(H, W)``.
        channels: "green" (the G channel, the usual fundus vessel channel), "rgb" (all three) or
            "gray" (BT.601 luminance 0.299 R + 0.587 G + 0.114 B). A grey ``(H, W)`` image is
            accepted for "green" and "gray" (returned as is).

    Returns:
        float32 ``(C, H, W)`` with C = 1 (green, gray) or 3 (rgb), values 0..255.

    Raises:
        DataError: "rgb" asked for a grey image. ValueError: unknown ``channels``.
    """
    if channels not in ("green", "rgb", "gray"):
        raise ValueError(f"channels must be 'green', 'rgb' or 'gray', got {channels!r}")
    if rgb.ndim == 2:
        if channels == "rgb":
            where = f" {Path(path)}" if path is not None else ""
            raise DataError(f"image{where} is grey (one channel); use channels='gray' or 'green'")
        return rgb[None].astype(np.float32)
    if channels == "green":
        return rgb[None, :, :, 1].astype(np.float32)
    if channels == "gray":
        return (rgb.astype(np.float32) @ np.asarray(LUMA_WEIGHTS, dtype=np.float32))[None]
    return np.ascontiguousarray(np.moveaxis(rgb, -1, 0)).astype(np.float32)


def size_text(shape: tuple[int, ...]) -> str:
    """``(H, W[, C])`` -> ``"WxH"`` as image sizes are usually written (565x584 for DRIVE)."""
    return f"{shape[1]}x{shape[0]}"


__all__ = [
    "IMAGE_EXTENSIONS",
    "LUMA_WEIGHTS",
    "is_image_file",
    "read_image",
    "read_label",
    "binarize_mask",
    "read_mask",
    "select_channels",
    "size_text",
    "to_display",
    "probe",
]
