"""CHASE_DB1 retinal vessel dataset, read from its released flat layout.

Source: M. M. Fraz, P. Remagnino, A. Hoppe, B. Uyyanonvara, A. R. Rudnicka, C. G. Owen,
S. A. Barman, "An ensemble classification-based approach applied to retinal blood vessel
segmentation", IEEE TBME 59(9):2538-2548, 2012 (Child Heart And Health Study in England,
Kingston University London; researchdata.kingston.ac.uk/96/, CC BY 4.0). 28 colour fundus
photographs of both eyes of 14 children, each with two manual vessel segmentations::

    CHASE_DB1/Image_01L.jpg .. Image_14R.jpg        28  RGB JPEG, 999x960 (W x H)
    CHASE_DB1/Image_01L_1stHO.png ..                 28  1st human observer, 1-bit PNG (reference)
    CHASE_DB1/Image_01L_2ndHO.png ..                 28  2nd human observer, 1-bit PNG

``XX`` in ``Image_XXY`` is the child (01..14), ``Y`` the eye (L/R). Other files in the folder
(README, checksums) are ignored.

**Split.** There is no official split. medseg uses the most common deep-learning convention
(FR-UNet, Liu et al., IEEE JBHI 2022, ``data_process.py``): the first 20 images (children
01-10: ``Image_01L`` .. ``Image_10R``) for training, the last 8 (children 11-14: ``Image_11L``
.. ``Image_14R``) for testing. The rule is applied per child (child <= 10 ->
train), so both eyes of a child are always in the same split (``Case.patient`` is the child
number, "01".."14"). Other splits (14/14, 4-fold) can be given with ``split_file=``.

**Field of view.** CHASE_DB1 ships no FOV mask. ``fov="computed"`` (default) derives one from
each image with :func:`medseg.data.transforms.fov.fov_from_image` (red-channel threshold + morphology);
``fov="none"`` takes every pixel, the convention of mlscorecheck (Kovacs & Fazekas) for CHASE_DB1
scores. Over all 28 images the first observer marks 1,861,974 vessel pixels (mlscorecheck's
reference count, reproduced by this loader on the stored masks).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.base import Case, register_dataset
from medseg.data.files import FileDataset
from medseg.data.io import is_image_file, read_image, read_mask, size_text
from medseg.data.records import Inventory, Problem, Record, list_files, natural_key
from medseg.data.transforms.fov import fov_from_image
from medseg.errors import ConfigError, DataError, did_you_mean

_LAYOUT = "a flat folder of Image_XXY.jpg with Image_XXY_1stHO.png and Image_XXY_2ndHO.png (XX = 01..14, Y = L/R)"
_IMAGE_RE = re.compile(r"^(Image_(\d{2})([LR]))\.jpe?g$", re.IGNORECASE)
_MASK_RE = re.compile(r"^(Image_(\d{2})([LR]))_(1st|2nd)HO\.png$", re.IGNORECASE)
#: Children 01..10 (20 images) train, 11..14 (8 images) test (FR-UNet convention).
LAST_TRAIN_CHILD = 10
FOV_MODES = ("computed", "none")


def _canonical(stem: str) -> str:
    """``image_01l`` -> ``Image_01L`` (ids keep the release's spelling whatever the file case)."""
    return f"Image_{stem[6:8]}{stem[8].upper()}"


def check_retina_options(name: str, opts: dict[str, Any]) -> None:
    """Shared checks of the ``channels``, ``annotator`` and ``fov`` options (CHASE_DB1, STARE).

    Raises:
        ConfigError: a value outside green/rgb/gray, 1/2, computed/none.
    """
    if opts["channels"] not in ("green", "rgb", "gray"):
        raise ConfigError(f"{name} channels must be 'green', 'rgb' or 'gray', got {opts['channels']!r}")
    if opts["annotator"] not in (1, 2) or isinstance(opts["annotator"], bool):
        raise ConfigError(f"{name} annotator must be 1 or 2, got {opts['annotator']!r}")
    if opts["fov"] not in FOV_MODES:
        hint = did_you_mean(str(opts["fov"]), FOV_MODES)
        raise ConfigError(f"{name} fov must be 'computed' or 'none', got {opts['fov']!r}{hint}")


def retina_case(record: Record, raw: np.ndarray, mask: np.ndarray, fov_mode: str, what: str) -> Case:
    """Build the raw Case of a colour fundus image (shared by CHASE_DB1 and STARE).

    Args:
        record: the record (its ``image`` and ``mask`` paths are named in errors).
        raw: the decoded image, must be uint8 ``(H, W, 3)``.
        mask: uint8 ``(H, W)`` {0, 1} vessel mask.
        fov_mode: "computed" (:func:`fov_from_image`) or "none" (all True).
        what: dataset name for messages.

    Raises:
        DataError: not 8-bit RGB, mask size differs from the image, no FOV can be computed.
    """
    if raw.dtype != np.uint8 or raw.ndim != 3:
        kind = f"{raw.dtype} {'grey' if raw.ndim == 2 else 'colour'}"
        raise DataError(f"image {record.image} is {kind}; {what} images are 8-bit RGB")
    if mask.shape != raw.shape[:2]:
        raise DataError(
            f"mask {record.mask} is {size_text(mask.shape)} but image {record.image} is {size_text(raw.shape)}"
        )
    if fov_mode == "computed":
        fov = fov_from_image(raw, path=str(record.image))
    else:
        fov = np.ones(mask.shape, dtype=bool)
    image = np.moveaxis(raw, -1, 0).astype(np.float32)
    return Case(
        id=record.id,
        image=image,
        mask=mask,
        fov=fov,
        display=raw,
        path=str(record.image),
        patient=record.patient,
        meta={"fov": fov_mode},
    )


class FundusDataset(FileDataset):
    """Shared options of fundus datasets without FOV files (CHASE_DB1, STARE): ``channels``
    (green/rgb/gray, the first step of the default pipeline ``[<channels>, zscore]``),
    ``annotator`` (1 or 2) and ``fov`` ("computed" or "none"); see :func:`check_retina_options`."""

    splits = ("train", "test")
    option_defaults = {"channels": "green", "annotator": 1, "fov": "computed"}

    @classmethod
    def fov_mode(cls, opts: dict[str, Any]) -> str:
        return str(opts["fov"])

    @classmethod
    def default_pipeline(cls, opts: dict[str, Any]) -> list:
        return [opts["channels"], "zscore"]

    @classmethod
    def check_split(cls, split: str, opts: dict[str, Any]) -> None:
        check_retina_options(cls.folder, opts)


@register_dataset("chase_db1")
class ChaseDB1Dataset(FundusDataset):
    """CHASE_DB1 (Fraz et al., IEEE TBME 2012): 28 images of 14 children, split 20 train / 8 test.

    Args:
        root: the CHASE_DB1 folder (flat: ``Image_01L.jpg``, ``Image_01L_1stHO.png``, ...), or a
            folder holding ``CHASE_DB1/``; None uses ``$MEDSEG_DATA/CHASE_DB1`` or
            ``<repo>/../shared/data/CHASE_DB1``.
        split: "train" (children 01-10, ``Image_01L`` .. ``Image_10R``) or "test" (children
            11-14, ``Image_11L`` .. ``Image_14R``).
        channels: "green" (default, C = 1), "rgb" (C = 3) or "gray" (C = 1, BT.601 luminance):
            the first step of the default pipeline ``[<channels>, zscore]``.
        annotator: 1 (``*_1stHO.png``, the reference, default) or 2 (``*_2ndHO.png``).
        fov: "computed" (default; :func:`medseg.data.transforms.fov.fov_from_image`) or "none" (every pixel
            is in the FOV, mlscorecheck's convention for CHASE_DB1).
        preprocess, split_file, centerline: see :class:`~medseg.data.files.FileDataset`.

    Cases: ``id`` "Image_01L" .. "Image_14R"; ``image`` float32 (C, 960, 999), z-scored per
    channel over the FOV and 0 outside it (default pipeline); ``mask`` uint8 (960, 999) {0, 1};
    ``fov`` bool (960, 999); ``display`` the raw uint8 RGB image (960, 999, 3); ``path`` the
    JPEG; ``patient`` the child, "01" .. "14"; ``meta["fov"]`` the FOV mode.

    Raises:
        ConfigError: unknown split or option value.
        DataError: before decoding, when the folder is missing or holds no CHASE_DB1 image, an
            image lacks its mask, or a mask has no image (all listed together); while decoding,
            an unreadable or corrupt file, a mask whose size differs from its image, a non-binary
            mask, or an image from which no FOV can be computed. Messages name the files; files
            are only read.
    """

    dataset_name = "chase_db1"
    folder = "CHASE_DB1"
    layout = _LAYOUT

    @classmethod
    def looks_like_root(cls, path: Path) -> bool:
        try:
            return any(_IMAGE_RE.match(p.name) for p in path.iterdir())
        except OSError:
            return True

    @classmethod
    def find(cls, root: Path, opts: dict[str, Any]) -> Inventory:
        files = list_files(root, lambda p: True)
        want = "1st" if opts["annotator"] == 1 else "2nd"
        images: dict[str, Path] = {}
        masks: dict[str, dict[str, Path]] = {"1st": {}, "2nd": {}}
        problems: list[Problem] = []
        for p in files:
            m = _IMAGE_RE.match(p.name)
            if m:
                cid = _canonical(m.group(1))
                if cid in images:
                    problems.append(Problem(p, f"image has the same id {cid!r} as {images[cid]}"))
                else:
                    images[cid] = p
                continue
            m = _MASK_RE.match(p.name)
            if m:
                cid, which = _canonical(m.group(1)), m.group(4).lower()
                if cid in masks[which]:
                    problems.append(Problem(p, f"mask has the same id {cid!r} as {masks[which][cid]}"))
                else:
                    masks[which][cid] = p
                continue
            if is_image_file(p):
                problems.append(
                    Problem(
                        p,
                        "not a CHASE_DB1 file name (expected Image_XXY.jpg or "
                        "Image_XXY_1stHO.png / _2ndHO.png); ignored",
                        severity="warning",
                    )
                )
        if not images:
            problems.append(Problem(root, f"holds no CHASE_DB1 image; expected {_LAYOUT}"))
        records: list[Record] = []
        for cid in sorted(images, key=natural_key):
            child = int(cid[6:8])
            split = "train" if child <= LAST_TRAIN_CHILD else "test"
            gt = masks[want].get(cid)
            if gt is None:
                expected = root / f"{cid}_{want}HO.png"
                problems.append(Problem(images[cid], f"image has no vessel mask: expected {expected}", split=split))
                continue
            records.append(Record(cid, split, images[cid], mask=gt, patient=f"{child:02d}"))
        for which, found in masks.items():
            for cid, p in found.items():
                if cid not in images:
                    child = int(cid[6:8])
                    problems.append(
                        Problem(
                            p,
                            f"mask has no image: expected {root / f'{cid}.jpg'}",
                            severity="error" if which == want else "warning",
                            split="train" if child <= LAST_TRAIN_CHILD else "test",
                        )
                    )
        source = f"children 01-{LAST_TRAIN_CHILD:02d} train, {LAST_TRAIN_CHILD + 1:02d}-14 test (FR-UNet convention)"
        return Inventory("chase_db1", root, records, problems, split_source=source)

    @classmethod
    def read(cls, record: Record, opts: dict[str, Any]) -> list[Case]:
        raw = read_image(record.image)
        mask = read_mask(record.mask)
        return [retina_case(record, raw, mask, opts["fov"], "CHASE_DB1")]


__all__ = ["ChaseDB1Dataset", "FundusDataset", "check_retina_options", "retina_case", "LAST_TRAIN_CHILD", "FOV_MODES"]
