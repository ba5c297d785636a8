"""DRIVE retinal vessel dataset, read from its original folder layout.

Source: J. Staal, M. D. Abramoff, M. Niemeijer, M. A. Viergever, B. van Ginneken, "Ridge-based
vessel segmentation in color images of the retina", IEEE TMI 23(4):501-509, 2004 (Image Sciences
Institute, UMC Utrecht; drive.grand-challenge.org). Users obtain DRIVE themselves; its terms forbid
redistribution, so medseg ships no DRIVE file and only reads the layout below in place::

    DRIVE/training/images/21_training.tif       .. 40   RGB TIFF (LZW), 565x584
    DRIVE/training/1st_manual/21_manual1.gif     .. 40   vessel ground truth, GIF L {0, 255}
    DRIVE/training/mask/21_training_mask.gif     .. 40   field-of-view mask, GIF L {0, 255}
    DRIVE/test/images/01_test.tif                .. 20
    DRIVE/test/1st_manual/01_manual1.gif         .. 20   observer 1 (the reference)
    DRIVE/test/2nd_manual/01_manual2.gif         .. 20   observer 2, palette GIF, indices {0, 1}
    DRIVE/test/mask/01_test_mask.gif             .. 20

Note the naming clash: DRIVE's ``mask`` folder holds the **field of view** (``Case.fov``); the
vessel ground truth (``Case.mask``) comes from ``1st_manual`` / ``2nd_manual``.

Masks are binarised with :func:`medseg.data.io.binarize_mask` (``> 127`` for the 0/255 GIFs; the
palette ``2nd_manual`` GIFs are read through their palette, grey 3/253, and thresholded at the
midpoint, i.e. raw index > 0). With annotator 1 this reproduces the reference pixel counts of
mlscorecheck (test FOV: 577,649 vessel / 3,960,494 background pixels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.base import Case, register_dataset
from medseg.data.files import FileDataset
from medseg.data.io import is_image_file, read_image, read_mask, size_text
from medseg.data.records import Inventory, Problem, Record, natural_key, pair_files
from medseg.errors import ConfigError, DataError, did_you_mean

_SPLITS = {"train": "training", "test": "test"}
_LAYOUT = "training/{images,1st_manual,mask} and test/{images,1st_manual,2nd_manual,mask}"


def _case_id(path: Path) -> str:
    """``21_training.tif`` -> ``"21"``; ``21_manual1.gif`` -> ``"21"``."""
    return path.stem.split("_")[0]


def _image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and is_image_file(p)), key=lambda p: natural_key(p.name))


@register_dataset("drive")
class DriveDataset(FileDataset):
    """DRIVE (Staal et al., IEEE TMI 2004): 20 training (ids 21-40) and 20 test (01-20) images.

    Args:
        root: the DRIVE folder (holding ``training/`` and ``test/``), or a folder holding
            ``DRIVE/``; None uses ``$MEDSEG_DATA/DRIVE`` or ``<repo>/../shared/data/DRIVE``.
        split: "train" (``training/``) or "test" (``test/``).
        channels: "green" (default, C = 1, the standard fundus vessel channel), "rgb" (C = 3) or
            "gray" (C = 1, BT.601 luminance): the first step of the default pipeline
            ``[<channels>, zscore]``.
        annotator: 1 (``1st_manual``, the reference) or 2 (``2nd_manual``, test split only).
        preprocess, split_file, centerline: see :class:`~medseg.data.files.FileDataset`.

    Cases: ``id`` "21".."40" / "01".."20"; ``image`` float32 (C, 584, 565) z-scored per channel
    over the FOV and 0 outside it (default pipeline); ``mask`` uint8 (584, 565) {0, 1}; ``fov``
    bool (584, 565); ``display`` the raw uint8 RGB image (584, 565, 3); ``path`` the TIFF.

    Raises:
        ConfigError: unknown split or channels, annotator not 1/2, annotator 2 for "train".
        DataError: before any decoding, when the folder or a subfolder is missing, a folder holds
            no images, an image lacks its mask or FOV file, or a mask/FOV file has no image (all
            such problems are listed together); then, while decoding, an unreadable or truncated
            file, sizes that differ, a non-binary mask or an empty FOV. Messages name the files.
            Files are only read, never modified.
    """

    dataset_name = "drive"
    folder = "DRIVE"
    fov_kind = "shipped"
    layout = _LAYOUT
    splits = ("train", "test")
    option_defaults = {"channels": "green", "annotator": 1}

    @classmethod
    def default_pipeline(cls, opts: dict[str, Any]) -> list:
        return [opts["channels"], "zscore"]

    @classmethod
    def check_split(cls, split: str, opts: dict[str, Any]) -> None:
        if split not in _SPLITS:
            hint = did_you_mean(str(split), _SPLITS)
            raise ConfigError(f"DRIVE split must be 'train' or 'test', got {split!r}{hint}")
        if opts["channels"] not in ("green", "rgb", "gray"):
            raise ConfigError(f"DRIVE channels must be 'green', 'rgb' or 'gray', got {opts['channels']!r}")
        if opts["annotator"] not in (1, 2):
            raise ConfigError(f"DRIVE annotator must be 1 or 2, got {opts['annotator']!r}")
        if opts["annotator"] == 2 and split != "test":
            raise ConfigError("DRIVE has a second annotator (2nd_manual) only for the test split")

    @classmethod
    def looks_like_root(cls, path: Path) -> bool:
        return (path / "training").is_dir() or (path / "test").is_dir()

    @classmethod
    def find(cls, root: Path, opts: dict[str, Any]) -> Inventory:
        records: list[Record] = []
        problems: list[Problem] = []
        for split, word in _SPLITS.items():
            annotator = opts["annotator"] if split == "test" else 1
            recs, probs = cls._pair_files(root, split, word, annotator)
            records += recs
            problems += probs
        return Inventory("drive", root, records, problems, split_source="layout (training/, test/)")

    @staticmethod
    def _pair_files(root: Path, split: str, word: str, annotator: int) -> tuple[list[Record], list[Problem]]:
        """Match every image with its ground truth and FOV file; report all problems."""
        base = root / word
        if not base.is_dir():
            return [], [
                Problem(
                    base,
                    f"DRIVE folder {root} has no '{word}' folder; expected the original DRIVE layout: {_LAYOUT}",
                    split=split,
                )
            ]
        gt_dir_name = "1st_manual" if annotator == 1 else "2nd_manual"
        folders = {"images": base / "images", gt_dir_name: base / gt_dir_name, "mask": base / "mask"}
        for what, folder in folders.items():
            if not folder.is_dir():
                return [], [
                    Problem(
                        folder,
                        f"DRIVE {word} folder {base} has no '{what}' folder; expected "
                        f"{word}/images, {word}/{gt_dir_name} and {word}/mask",
                        split=split,
                    )
                ]
        images = _image_files(folders["images"])
        if not images:
            others = [p.name for p in folders["images"].iterdir()]
            extra = f" (it holds only: {', '.join(others[:5])})" if others else ""
            example = "21_training" if split == "train" else "01_test"
            return [], [
                Problem(
                    folders["images"],
                    f"DRIVE image folder holds no images{extra}; expected files such as {example}.tif",
                    split=split,
                )
            ]
        gt_suffix, fov_suffix = f"_manual{annotator}", f"_{word}_mask"

        def key(suffix: str):  # "21_manual1" -> "21"; a stem without the suffix stays whole (reported)
            return lambda p: p.stem[: -len(suffix)] if p.stem.endswith(suffix) else p.stem

        items, problems = pair_files(
            images,
            {"vessel mask": _image_files(folders[gt_dir_name]), "FOV mask": _image_files(folders["mask"])},
            image_key=_case_id,
            label_key={"vessel mask": key(gt_suffix), "FOV mask": key(fov_suffix)},
            expected={
                "vessel mask": lambda cid: folders[gt_dir_name] / f"{cid}{gt_suffix}.gif",
                "FOV mask": lambda cid: folders["mask"] / f"{cid}{fov_suffix}.gif",
            },
            expected_image=lambda cid: folders["images"] / f"{_case_id(Path(cid))}_{word}.tif",
            split=split,
        )
        records = [Record(cid, split, img, mask=labs["vessel mask"], fov=labs["FOV mask"]) for cid, img, labs in items]
        records.sort(key=lambda r: natural_key(r.id))
        return records, problems

    @classmethod
    def read(cls, record: Record, opts: dict[str, Any]) -> list[Case]:
        raw = read_image(record.image)
        if raw.dtype != np.uint8:
            raise DataError(f"image {record.image} is {raw.dtype}; DRIVE images are 8-bit RGB")
        mask = read_mask(record.mask)
        fov = read_mask(record.fov).astype(bool)
        for what, arr, path in (("mask", mask, record.mask), ("FOV mask", fov, record.fov)):
            if arr.shape != raw.shape[:2]:
                raise DataError(
                    f"{what} {path} is {size_text(arr.shape)} but image {record.image} is {size_text(raw.shape)}"
                )
        if not fov.any():
            raise DataError(f"FOV mask {record.fov} is empty (no pixel above half its maximum)")
        image = (raw[None] if raw.ndim == 2 else np.moveaxis(raw, -1, 0)).astype(np.float32)
        return [Case(id=record.id, image=image, mask=mask, fov=fov, display=raw, path=str(record.image))]


__all__ = ["DriveDataset"]
