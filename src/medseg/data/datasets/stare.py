"""STARE retinal vessel dataset (the 20 hand-labelled images), read from its released layout.

Source: A. Hoover, V. Kouznetsova, M. Goldbaum, "Locating blood vessels in retinal images by
piecewise threshold probing of a matched filter response", IEEE TMI 19(3):203-210, 2000
(STructured Analysis of the REtina, UC San Diego; cecas.clemson.edu/~ahoover/stare/). Of the
release's 400 fundus photographs, 20 (700x605 PPM, 24-bit RGB) have manual vessel labels by two
observers, Adam Hoover (``labels-ah``, the usual reference) and Valentina Kouznetsova
(``labels-vk``). The release ships every file gzipped; both ``.ppm`` and ``.ppm.gz`` are read::

    STARE/stare-images/im0001.ppm(.gz) ..         the photographs (all 400, or just the 20)
    STARE/labels-ah/im0001.ah.ppm(.gz) ..         20 labels, observer AH (reference)
    STARE/labels-vk/im0001.vk.ppm(.gz) ..         20 labels, observer VK (annotator 2)

The 20 labelled ids are :data:`LABELLED_IDS`. Images in ``stare-images`` that are not among
them are ignored (one warning says how many); a labelled image without its label, or a label
without its image, is an error.

**Split.** STARE has no official split; papers use leave-one-out, 10/10 or k-fold. medseg's
default is a 10/10 split by id, a common convention: the first 10 labelled ids (im0001 ..
im0139) train, the last 10 (im0162 .. im0324) test. Scores on it are not comparable with
leave-one-out scores; state the split when reporting. Any other split, including leave-one-out
folds, is given with ``split_file=`` (a JSON/YAML mapping split name -> ids). Each image is its
own patient.

**Field of view.** STARE ships no FOV mask. ``fov="computed"`` (default) derives one with
:func:`medseg.data.transforms.fov.fov_from_image` (red-channel threshold + morphology); ``fov="none"`` takes
every pixel, mlscorecheck's convention for STARE scores (20 AH labels, all pixels: 644,053
vessel pixels).
"""

from __future__ import annotations

import gzip
import io as _bytes_io
import re
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medseg.data.base import Case, register_dataset
from medseg.data.datasets.chase_db1 import FundusDataset, retina_case
from medseg.data.io import LUMA_WEIGHTS, binarize_mask, read_image, read_label
from medseg.data.records import Inventory, Problem, Record, list_files, natural_key
from medseg.errors import DataError

#: The 20 STARE images with manual vessel labels (Hoover et al. 2000), in id order.
LABELLED_IDS = (
    "im0001",
    "im0002",
    "im0003",
    "im0004",
    "im0005",
    "im0044",
    "im0077",
    "im0081",
    "im0082",
    "im0139",
    "im0162",
    "im0163",
    "im0235",
    "im0236",
    "im0239",
    "im0240",
    "im0255",
    "im0291",
    "im0319",
    "im0324",
)
#: Default split: first 10 labelled ids train, last 10 test.
TRAIN_IDS = LABELLED_IDS[:10]
TEST_IDS = LABELLED_IDS[10:]

_LAYOUT = "stare-images/im0001.ppm[.gz], labels-ah/im0001.ah.ppm[.gz] and labels-vk/im0001.vk.ppm[.gz]"
_IMAGE_RE = re.compile(r"^(im\d{4})\.ppm(\.gz)?$", re.IGNORECASE)
_OBSERVERS = {1: "ah", 2: "vk"}


def _label_re(observer: str) -> re.Pattern:
    return re.compile(rf"^(im\d{{4}})\.{observer}\.ppm(\.gz)?$", re.IGNORECASE)


def _is_gz(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _open_gz(path: Path, what: str) -> Image.Image:
    """Gunzip ``path`` in memory and decode the image inside with Pillow.

    Raises:
        DataError: missing/unreadable file, not gzip, truncated gzip stream, or undecodable image.
    """
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    try:
        data = gzip.decompress(path.read_bytes())
    except PermissionError:
        raise DataError(f"{what} {path} cannot be read (permission denied)") from None
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"{what} {path} cannot be decompressed (not gzip, or truncated/corrupt): {exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(_bytes_io.BytesIO(data)) as im:
                im.load()
                return im.copy()
    except Image.UnidentifiedImageError:
        raise DataError(
            f"{what} {path} decompresses to {len(data)} bytes that are not an image Pillow can read"
        ) from None
    except Exception as exc:  # OSError, ValueError, SyntaxError, EOFError, struct.error ...
        raise DataError(f"{what} {path} cannot be decoded after decompression (truncated or corrupt?): {exc}") from None


def read_stare_image(path: str | Path) -> np.ndarray:
    """Read a STARE photograph, ``.ppm`` or gzipped ``.ppm.gz``.

    Returns:
        The stored pixels, as :func:`medseg.data.io.read_image`: uint8 ``(H, W, 3)`` for the RGB
        PPMs of the release (``(H, W)`` for a grey file, uint16 for a 16-bit one).

    Raises:
        DataError: missing, unreadable, not gzip / truncated, or not an image (names the file).
    """
    p = Path(path)
    if not _is_gz(p):
        return read_image(p)
    im = _open_gz(p, "image")
    if im.mode in ("L", "RGB"):
        return np.asarray(im, dtype=np.uint8).copy()
    if im.mode in ("1", "LA"):
        return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    if im.mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def read_stare_mask(path: str | Path) -> np.ndarray:
    """Read and binarise a STARE label, ``.ppm`` or ``.ppm.gz``.

    The labels are 0/255 images (white vessels); colour files with three equal channels are
    reduced to one channel, others to BT.601 luminance, then
    :func:`medseg.data.io.binarize_mask` applies (``> 127`` for 0/255).

    Returns:
        uint8 ``(H, W)`` in {0, 1}, vessel = 1.

    Raises:
        DataError: unreadable or corrupt file, or a mask that is not binary (names the file).
    """
    p = Path(path)
    if not _is_gz(p):
        return binarize_mask(read_label(p), p)
    im = _open_gz(p, "mask")
    if im.mode in ("1", "LA", "P", "PA"):
        im = im.convert("RGB") if im.mode in ("P", "PA") else im.convert("L")
    arr = np.asarray(im)
    if arr.ndim == 3:
        rgb = arr[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            arr = np.ascontiguousarray(rgb[..., 0])
        else:
            grey = rgb.astype(np.float32) @ np.asarray(LUMA_WEIGHTS, np.float32)
            arr = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return binarize_mask(arr, p)


def _scan(folder: Path, pattern: re.Pattern, what: str, problems: list[Problem]) -> dict[str, Path]:
    """id -> file for the files of ``folder`` matching ``pattern``; a plain and a gzipped copy
    of one id: the plain one is used (warning)."""
    found: dict[str, Path] = {}
    for p in list_files(folder, lambda q: bool(pattern.match(q.name))):
        cid = pattern.match(p.name).group(1).lower()
        prev = found.get(cid)
        if prev is None:
            found[cid] = p
            continue
        plain, other = (prev, p) if not _is_gz(prev) else (p, prev)
        if _is_gz(plain) == _is_gz(other):
            problems.append(Problem(p, f"{what} has the same id {cid!r} as {prev}"))
            continue
        found[cid] = plain
        problems.append(
            Problem(
                other,
                f"{what} {cid!r} is also stored uncompressed as {plain.name}; that one is used",
                severity="warning",
            )
        )
    return found


@register_dataset("stare")
class StareDataset(FundusDataset):
    """STARE (Hoover et al., IEEE TMI 2000): the 20 labelled images, split 10 train / 10 test.

    Args:
        root: the STARE folder (holding ``stare-images/``, ``labels-ah/``, ``labels-vk/``), or a
            folder holding ``STARE/``; None uses ``$MEDSEG_DATA/STARE`` or
            ``<repo>/../shared/data/STARE``.
        split: "train" (im0001 .. im0139) or "test" (im0162 .. im0324); see the module docstring.
        channels: "green" (default, C = 1), "rgb" (C = 3) or "gray" (C = 1, BT.601 luminance):
            the first step of the default pipeline ``[<channels>, zscore]``.
        annotator: 1 (``labels-ah``, Hoover, the reference, default) or 2 (``labels-vk``).
        fov: "computed" (default; :func:`medseg.data.transforms.fov.fov_from_image`) or "none" (every pixel).
        preprocess, split_file, centerline: see :class:`~medseg.data.files.FileDataset`.

    Cases: ``id`` "im0001" ...; ``image`` float32 (C, 605, 700) z-scored per channel over the
    FOV and 0 outside it (default pipeline); ``mask`` uint8 (605, 700) {0, 1}; ``fov`` bool
    (605, 700); ``display`` the raw uint8 RGB image (605, 700, 3); ``path`` the image file;
    ``meta["fov"]`` the FOV mode.

    Raises:
        ConfigError: unknown split or option value.
        DataError: before decoding, a missing ``stare-images`` or label folder, a labelled image
            without its label or a label without its image (all listed together); while
            decoding, a file that is not gzip, truncated or not an image, a label whose size
            differs from its image, a non-binary label, or an image from which no FOV can be
            computed. Messages name the files; files are only read (``.gz`` files are
            decompressed in memory).
    """

    dataset_name = "stare"
    folder = "STARE"
    layout = _LAYOUT

    @classmethod
    def looks_like_root(cls, path: Path) -> bool:
        return (path / "stare-images").is_dir()

    @classmethod
    def find(cls, root: Path, opts: dict[str, Any]) -> Inventory:
        observer = _OBSERVERS[opts["annotator"]]
        img_dir, lab_dir = root / "stare-images", root / f"labels-{observer}"
        problems: list[Problem] = []
        for d in (img_dir, lab_dir):
            if not d.is_dir():
                problems.append(Problem(d, f"STARE folder {root} has no '{d.name}' folder; expected {_LAYOUT}"))
        if problems:
            return Inventory("stare", root, [], problems)
        images = _scan(img_dir, _IMAGE_RE, "image", problems)
        labels = _scan(lab_dir, _label_re(observer), "label", problems)
        labelled = set(LABELLED_IDS)
        records: list[Record] = []
        absent: list[str] = []
        for cid in LABELLED_IDS:
            split = "train" if cid in TRAIN_IDS else "test"
            img, lab = images.get(cid), labels.get(cid)
            if img is not None and lab is not None:
                records.append(Record(cid, split, img, mask=lab))
            elif img is not None:
                want = lab_dir / f"{cid}.{observer}.ppm.gz"
                msg = f"labelled STARE image has no label: expected {want} (or .ppm)"
                problems.append(Problem(img, msg, split=split))
            elif lab is not None:
                want = img_dir / f"{cid}.ppm.gz"
                problems.append(Problem(lab, f"label has no image: expected {want} (or .ppm)", split=split))
            else:
                absent.append(cid)
        for cid in sorted(set(labels) - labelled, key=natural_key):
            msg = f"{cid} is not one of the 20 labelled STARE images; ignored"
            problems.append(Problem(labels[cid], msg, severity="warning"))
        unlabelled = sorted(set(images) - labelled - set(labels), key=natural_key)
        if unlabelled:
            n = len(unlabelled)
            shown = ", ".join(unlabelled[:3]) + (", ..." if n > 3 else "")
            msg = (
                f"{n} image{'s' if n != 1 else ''} without manual labels ignored ({shown}); "
                "only the 20 labelled images are used"
            )
            problems.append(Problem(img_dir, msg, severity="warning"))
        if absent and len(absent) < len(LABELLED_IDS):
            msg = f"{len(absent)} of the 20 labelled images are absent (no image, no label): {', '.join(absent)}"
            problems.append(Problem(root, msg, severity="warning"))
        elif absent:
            msg = (
                f"holds none of the 20 labelled STARE images ({LABELLED_IDS[0]} .. {LABELLED_IDS[-1]}); "
                f"expected {_LAYOUT}"
            )
            problems.append(Problem(img_dir, msg))
        return Inventory(
            "stare",
            root,
            records,
            problems,
            split_source="first 10 labelled ids train, last 10 test (no official split)",
        )

    @classmethod
    def read(cls, record: Record, opts: dict[str, Any]) -> list[Case]:
        raw = read_stare_image(record.image)
        mask = read_stare_mask(record.mask)
        return [retina_case(record, raw, mask, opts["fov"], "STARE")]


__all__ = ["StareDataset", "LABELLED_IDS", "TRAIN_IDS", "TEST_IDS", "read_stare_image", "read_stare_mask"]
