"""Image readers that fail with a clear :class:`~medseg.errors.DataError`.

Every reader opens the file read-only with Pillow, decodes it completely (so a truncated file
fails here, not in the middle of training) and wraps any failure in a ``DataError`` whose message
holds the full path and the problem. Nothing is ever written.

Pillow reads the formats the supported datasets ship in: TIFF (including the LZW-compressed
DRIVE TIFFs), GIF (mode L and palette), PNG, JPEG, BMP.

What users send, and how it is handled (the bad-data corpus ``tests/data/test_bad_input.py`` checks
each):

- **EXIF orientation** (phone and camera JPEGs): pixels are read *as stored*; the Orientation tag
  is never applied (see :func:`read_image`, :func:`exif_orientation`).
- **Huge images**: an image of more than :func:`max_image_pixels` pixels (Pillow's
  decompression-bomb limit, ``PIL.Image.MAX_IMAGE_PIXELS``, 89,478,485 by default: about
  9459 x 9459) is refused from its header, before any pixel is decoded; the environment variable
  ``MEDSEG_MAX_IMAGE_PIXELS`` raises (or, with 0, removes) the limit.
- **Multi-frame TIFFs** are refused (medseg does not guess which page is the image).
- **Empty (0-byte) files, broken or looping symbolic links** are refused with their own message.
"""

from __future__ import annotations

import errno
import os
import re
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from medseg.errors import ConfigError, DataError

#: File name endings treated as images when scanning a folder (lower case).
IMAGE_EXTENSIONS = (".tif", ".tiff", ".gif", ".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")

#: Luminance weights (ITU-R BT.601, the ones Pillow's ``convert("L")`` uses) for R, G, B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

#: Environment variable that replaces Pillow's pixel limit (an int; 0 or "none": no limit).
PIXEL_LIMIT_ENV = "MEDSEG_MAX_IMAGE_PIXELS"

#: EXIF tag number of Orientation.
EXIF_ORIENTATION_TAG = 0x0112

#: EXIF Orientation value -> what a viewer that honours it does to the stored pixels.
EXIF_ORIENTATIONS = {
    1: "shown as stored",
    2: "viewers mirror it left-right",
    3: "viewers rotate it 180 degrees",
    4: "viewers mirror it top-bottom",
    5: "viewers transpose it (rows become columns)",
    6: "viewers rotate it 90 degrees clockwise",
    7: "viewers transverse it (rows become columns, across the other diagonal)",
    8: "viewers rotate it 90 degrees counter-clockwise",
}


class _Refused(DataError):
    """A file refused on purpose (too large, several frames): no other decoder is tried."""


def max_image_pixels() -> int | None:
    """The largest image (in pixels, W x H) medseg decodes, or None for no limit.

    It is ``$MEDSEG_MAX_IMAGE_PIXELS`` when set (an int; ``0`` or ``none`` removes the limit; it
    also becomes Pillow's own ``PIL.Image.MAX_IMAGE_PIXELS`` so that Pillow agrees), else
    Pillow's ``PIL.Image.MAX_IMAGE_PIXELS`` (89,478,485 by default). Above it Pillow only warns
    up to twice the limit and raises ``DecompressionBombError`` beyond; medseg refuses every
    image above the limit, from the header, before decoding a pixel.

    Raises:
        ConfigError: ``$MEDSEG_MAX_IMAGE_PIXELS`` is set but is not a non-negative int.
    """
    raw = os.environ.get(PIXEL_LIMIT_ENV)
    if raw is None or not raw.strip():
        return Image.MAX_IMAGE_PIXELS
    text = raw.strip().replace("_", "").replace(",", "")
    if text.lower() == "none":
        limit = None
    else:
        try:
            limit = int(text)
        except ValueError:
            raise ConfigError(
                f"{PIXEL_LIMIT_ENV}={raw!r} is not a number of pixels (an int, or 0 / none for no limit)"
            ) from None
        if limit < 0:
            raise ConfigError(f"{PIXEL_LIMIT_ENV}={raw!r} must be >= 0 (0 = no limit)")
        limit = limit or None
    Image.MAX_IMAGE_PIXELS = limit  # the user asked for it: Pillow's guard follows
    return limit


def _png_size(p: Path) -> tuple[int, int] | None:
    """(W, H) from a PNG's IHDR chunk, or None for anything else (reads 24 bytes)."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(24)
    except OSError:
        return None
    if len(head) == 24 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    return None


def _too_large(p: Path, what: str, size: tuple[int, int] | None, pixels: int | None, limit: int) -> _Refused:
    if size is not None:
        pixels = int(size[0]) * int(size[1])
        dims = f"{size[0]}x{size[1]} = {pixels:,} pixels"
    else:
        dims = f"{pixels:,} pixels" if pixels is not None else "larger than the limit"
    return _Refused(
        f"{what} {p} is too large: {dims}, above the limit of {limit:,} pixels (Pillow's decompression-bomb "
        f"guard, PIL.Image.MAX_IMAGE_PIXELS); it was not decoded. medseg does not tile images: cut it into "
        f"tiles or downscale it, or, if this machine has the memory (a float32 copy takes 4 bytes per pixel "
        f"and channel), raise the limit with the environment variable {PIXEL_LIMIT_ENV}=<pixels> (0: no limit)"
    )


def _check_pixels(p: Path, what: str, size: tuple[int, int]) -> None:
    limit = max_image_pixels()
    if limit is not None and int(size[0]) * int(size[1]) > limit:
        raise _too_large(p, what, (int(size[0]), int(size[1])), None, limit)


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF Orientation tag (1..8) of an image file, read from its header; 1 when the file has
    no EXIF data, no such tag, a value outside 1..8, or cannot be opened.

    medseg never applies it (see :func:`read_image`); ``medseg data check`` warns about every
    file whose orientation is not 1. PNGs whose eXIf chunk comes after the pixel data are not
    looked into (that would decode the image): they count as 1.
    """
    p = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(p) as im:
                if im.format == "PNG" and "exif" not in im.info:
                    return 1
                value = im.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # unreadable files are reported by the readers, not here
        return 1
    try:
        value = int(value)
    except (TypeError, ValueError):
        return 1
    return value if value in EXIF_ORIENTATIONS else 1


def displayed_shape(shape: tuple[int, ...], orientation: int) -> tuple[int, int]:
    """``(H, W)`` of an image of stored ``shape`` (H, W[, C]) as a viewer that applies the EXIF
    ``orientation`` shows it: H and W swapped for orientations 5-8 (the 90-degree ones)."""
    h, w = int(shape[0]), int(shape[1])
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


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
        with tifffile.TiffFile(p) as tf:
            if len(tf.pages) > 1:
                raise _Refused(
                    f"{what} {p} is a TIFF with {len(tf.pages)} pages; medseg reads single 2-D images "
                    "and does not guess which page is meant: save each page as its own file"
                )
            shape = tf.pages[0].shape
            if len(shape) >= 2:
                hw = (shape[1], shape[0]) if len(shape) == 2 or shape[-1] in (1, 3, 4) else (shape[-1], shape[-2])
                _check_pixels(p, what, hw)
            arr = np.asarray(tf.asarray())
    except (_Refused, ConfigError):
        raise
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
    except _Refused:
        raise
    except DataError as pil_error:
        if not _is_tiff(p) or not p.is_file():
            raise
        try:
            return _read_tiff(p, what)
        except DataError as tiff_error:
            reason = str(tiff_error).split(": ", 1)[-1]
            raise DataError(f"{pil_error} (tifffile: {reason})") from None


def _check_exists(p: Path, what: str) -> None:
    """Raise a DataError for a missing, dangling, looping, unreadable or empty file."""
    if p.is_symlink() and not p.exists():
        raise DataError(f"{what} {p} {link_problem(p)}")
    if not p.exists():
        raise DataError(f"{what} {p} does not exist")
    if not p.is_file():
        raise DataError(f"{what} {p} is not a file")
    if not os.access(p, os.R_OK):
        raise DataError(f"{what} {p} cannot be read (permission denied)")
    if p.stat().st_size == 0:
        raise DataError(f"{what} {p} is empty (0 bytes): an interrupted copy or download, or a placeholder file")


def link_problem(p: Path) -> str:
    """For a symbolic link whose target cannot be reached: what is wrong with it, in words
    (``"is a broken symbolic link to <target> (...)"`` or ``"is a symbolic link loop ..."``)."""
    try:
        target = os.readlink(p)
    except OSError:
        target = "?"
    try:
        os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"is a symbolic link loop (it points to {target}, which leads back to itself)"
    return f"is a broken symbolic link to {target} (the target does not exist)"


def _open_decoded(path: str | os.PathLike, what: str) -> Image.Image:
    """Open ``path`` with Pillow and decode all its pixels; DataError on any failure."""
    p = Path(path)
    _check_exists(p, what)
    try:
        with warnings.catch_warnings():  # Pillow warns (e.g. "Corrupt EXIF") before failing
            warnings.simplefilter("ignore")
            with Image.open(p) as im:
                _check_pixels(p, what, im.size)  # from the header, before decoding a pixel
                frames = int(getattr(im, "n_frames", 1) or 1)
                if frames > 1 and im.format == "TIFF":
                    raise _Refused(
                        f"{what} {p} is a TIFF with {frames} frames (pages); medseg reads single 2-D images and "
                        "does not guess which page is meant: save each page as its own file (or a volume as "
                        "NIfTI for a volume dataset)"
                    )
                im.load()  # decodes everything: a truncated file fails here
                # Copy so the file handle can be closed; the copy keeps mode and palette.
                return im.copy()
    except (_Refused, ConfigError):
        raise
    except PermissionError:
        raise DataError(f"{what} {p} cannot be read (permission denied)") from None
    except Image.DecompressionBombError as exc:  # Pillow refused at open: more than twice its limit
        found = re.search(r"\((\d+) pixels\)", str(exc))
        limit = max_image_pixels() or Image.MAX_IMAGE_PIXELS or 0
        raise _too_large(p, what, _png_size(p), int(found.group(1)) if found else None, limit) from None
    except Image.UnidentifiedImageError:
        size = p.stat().st_size
        raise DataError(
            f"{what} {p} is not an image Pillow can read ({size} bytes): not an image at all, "
            "a truncated or corrupt file, or an unsupported format"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{what} {p} cannot be decoded (truncated or corrupt file?): {exc}") from None
    except Exception as exc:  # pragma: no cover - any other decoder failure (struct.error, ...)
        raise DataError(f"{what} {p} cannot be decoded: {type(exc).__name__}: {exc}") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as stored (no resampling, no colour management, no EXIF rotation).

    **EXIF orientation is not applied.** A JPEG (or PNG/TIFF) whose EXIF Orientation tag is not
    1 (phone photos: 6 = viewers rotate it 90 degrees clockwise) is returned with its pixel rows
    as they are in the file, which is the grid that masks drawn on the raw array by annotation
    tools match; a photo viewer shows the same file rotated or mirrored.
    ``medseg data check`` prints a ``warning:`` naming every such file and its orientation
    (:func:`exif_orientation`), and when an image and its mask differ in size but the image's
    EXIF-rotated size is the mask's, the size error of the ``folder`` dataset says that the
    orientation is the likely cause. To train on the rotated view, save the images with the
    rotation applied (``PIL.ImageOps.exif_transpose``) and draw the masks on those.

    Args:
        path: an image file Pillow can read (TIFF, GIF, PNG, JPEG, BMP, ...); TIFFs Pillow
            cannot identify (CVC-ClinicDB's RGB TIFFs) are read with tifffile. Symbolic links
            are followed. Multi-frame JPEGs (MPO, from cameras) give their first (primary) image.

    Returns:
        ``(H, W)`` for grey images (Pillow modes L, 1, LA, I;16, I, F) or ``(H, W, 3)`` for
        colour ones (RGB; RGBA/CMYK/YCbCr are converted to RGB, alpha dropped; palette images are
        expanded through their palette to grey or RGB). dtype uint8 (0..255) for 8-bit files,
        uint16 for 16-bit files, int32 / float32 for 32-bit ones: the stored values, never
        rescaled (see :func:`to_display` for an 8-bit view).

    Raises:
        DataError: the file is missing, a broken or looping symbolic link, unreadable, empty
            (0 bytes), not an image, truncated/corrupt, a TIFF of several frames (pages), larger
            than :func:`max_image_pixels` (refused from the header before decoding, with the
            size, the limit and how to raise it), or holds NaN/infinite values. The message
            names the full path.
        ConfigError: ``$MEDSEG_MAX_IMAGE_PIXELS`` is not a valid number.
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
                return {
                    "format": "TIFF",
                    "mode": f"tifffile {page.photometric.name} x{page.samplesperpixel}",
                    "size": (int(shape[1]), int(shape[0])),
                    "dtype": str(page.dtype),
                }
        except Exception:
            pass
    return {"format": "?", "mode": "?", "size": None}


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
    "PIXEL_LIMIT_ENV",
    "EXIF_ORIENTATION_TAG",
    "EXIF_ORIENTATIONS",
    "max_image_pixels",
    "exif_orientation",
    "displayed_shape",
    "link_problem",
    "is_image_file",
    "read_image",
    "select_channels",
    "size_text",
    "to_display",
    "probe",
]
