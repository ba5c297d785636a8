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

import os
from pathlib import Path

import numpy as np

from medseg.data.base import Case, CaseDataset, register_dataset, resolve_root, zscore_in_fov
from medseg.data.io import is_image_file, read_image, read_mask, select_channels, size_text
from medseg.errors import ConfigError, DataError, closest

_SPLITS = {"train": "training", "test": "test"}
_LAYOUT = "training/{images,1st_manual,mask} and test/{images,1st_manual,2nd_manual,mask}"
_MAX_LISTED = 10


def _case_id(path: Path) -> str:
    """``21_training.tif`` -> ``"21"``; ``21_manual1.gif`` -> ``"21"``."""
    return path.stem.split("_")[0]


def _sort_key(case_id: str) -> tuple[int, int | str]:
    return (0, int(case_id)) if case_id.isdigit() else (1, case_id)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


@register_dataset("drive")
class DriveDataset(CaseDataset):
    """DRIVE (Staal et al., IEEE TMI 2004): 20 training (ids 21-40) and 20 test (01-20) images.

    Args:
        root: the DRIVE folder (holding ``training/`` and ``test/``), or a folder holding
            ``DRIVE/``; None uses ``$MEDSEG_DATA/DRIVE`` or ``<repo>/../shared/data/DRIVE``.
        split: "train" (``training/``) or "test" (``test/``).
        channels: "green" (default, C = 1, the standard fundus vessel channel), "rgb" (C = 3) or
            "gray" (C = 1, BT.601 luminance).
        annotator: 1 (``1st_manual``, the reference) or 2 (``2nd_manual``, test split only).

    Cases: ``id`` "21".."40" / "01".."20"; ``image`` float32 (C, 584, 565) z-scored per channel
    over the FOV and 0 outside it; ``mask`` uint8 (584, 565) {0, 1}; ``fov`` bool (584, 565); ``display`` the raw
    uint8 RGB image (584, 565, 3); ``path`` the TIFF.

    Raises:
        ConfigError: unknown split or channels, annotator not 1/2, annotator 2 for "train".
        DataError: before any decoding, when the folder or a subfolder is missing, a folder holds
            no images, an image lacks its mask or FOV file, or a mask/FOV file has no image (all
            such problems are listed together); then, while decoding, an unreadable or truncated
            file, sizes that differ, a non-binary mask or an empty FOV. Messages name the files.
            Files are only read, never modified.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        channels: str = "green",
        annotator: int = 1,
    ) -> None:
        if split not in _SPLITS:
            near = closest(str(split), _SPLITS)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"DRIVE split must be 'train' or 'test', got {split!r}{hint}")
        if channels not in ("green", "rgb", "gray"):
            raise ConfigError(f"DRIVE channels must be 'green', 'rgb' or 'gray', got {channels!r}")
        if annotator not in (1, 2):
            raise ConfigError(f"DRIVE annotator must be 1 or 2, got {annotator!r}")
        if annotator == 2 and split != "test":
            raise ConfigError("DRIVE has a second annotator (2nd_manual) only for the test split")
        self.root = self._find_root(resolve_root(root, "DRIVE"))
        self.channels = channels
        self.annotator = annotator
        pairs = self._pair_files(split, annotator)
        cases = [self._load(cid, img, gt, fov, channels) for cid, (img, gt, fov) in pairs.items()]
        super().__init__(cases, name="drive", split=split)

    @staticmethod
    def _find_root(root: Path) -> Path:
        if not root.exists():
            raise DataError(f"DRIVE folder {root} does not exist (expected a folder with {_LAYOUT})")
        if not root.is_dir():
            raise DataError(f"DRIVE folder {root} is not a folder")
        if not (root / "training").is_dir() and not (root / "test").is_dir() and (root / "DRIVE").is_dir():
            return root / "DRIVE"
        return root

    def _pair_files(self, split: str, annotator: int) -> dict[str, tuple[Path, Path, Path]]:
        """Match every image with its ground truth and FOV file; list all problems at once."""
        word = _SPLITS[split]
        base = self.root / word
        if not base.is_dir():
            raise DataError(
                f"DRIVE folder {self.root} has no '{word}' folder ({base} is missing); "
                f"expected the original DRIVE layout: {_LAYOUT}"
            )
        gt_dir_name = "1st_manual" if annotator == 1 else "2nd_manual"
        folders = {"images": base / "images", gt_dir_name: base / gt_dir_name, "mask": base / "mask"}
        for what, folder in folders.items():
            if not folder.is_dir():
                raise DataError(
                    f"DRIVE {word} folder {base} has no '{what}' folder ({folder} is missing); "
                    f"expected {word}/images, {word}/{gt_dir_name} and {word}/mask"
                )
        images = _image_files(folders["images"])
        if not images:
            others = [p.name for p in folders["images"].iterdir()]
            extra = f" (it holds only: {', '.join(others[:5])})" if others else ""
            raise DataError(
                f"DRIVE image folder {folders['images']} holds no images{extra}; expected files "
                f"such as {'21_training' if split == 'train' else '01_test'}.tif"
            )
        gt_files = _image_files(folders[gt_dir_name])
        fov_files = _image_files(folders["mask"])
        gt_by_stem = {p.stem: p for p in gt_files}
        fov_by_stem = {p.stem: p for p in fov_files}

        problems: list[str] = []
        pairs: dict[str, tuple[Path, Path, Path]] = {}
        by_id: dict[str, Path] = {}
        for img in images:
            cid = _case_id(img)
            if cid in by_id:
                problems.append(f"images {by_id[cid]} and {img} have the same id {cid!r}")
                continue
            by_id[cid] = img
            gt = gt_by_stem.get(f"{cid}_manual{annotator}")
            fov = fov_by_stem.get(f"{cid}_{word}_mask")
            if gt is None:
                problems.append(
                    f"image {img} has no vessel mask: expected {folders[gt_dir_name] / f'{cid}_manual{annotator}.gif'}"
                )
            if fov is None:
                problems.append(
                    f"image {img} has no FOV mask: expected {folders['mask'] / f'{cid}_{word}_mask.gif'}"
                )
            if gt is not None and fov is not None:
                pairs[cid] = (img, gt, fov)
        for kind, files in (("vessel mask", gt_files), ("FOV mask", fov_files)):
            for f in files:
                if _case_id(f) not in by_id:
                    problems.append(
                        f"{kind} {f} has no image: expected {folders['images'] / f'{_case_id(f)}_{word}.tif'}"
                    )
        if problems:
            shown = problems[:_MAX_LISTED]
            more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
            raise DataError(
                f"DRIVE {word} folder {base} is inconsistent ({len(problems)} problem"
                f"{'s' if len(problems) > 1 else ''}):\n  " + "\n  ".join(shown) + more
            )
        return {cid: pairs[cid] for cid in sorted(pairs, key=_sort_key)}

    @staticmethod
    def _load(cid: str, img_path: Path, gt_path: Path, fov_path: Path, channels: str) -> Case:
        raw = read_image(img_path)
        mask = read_mask(gt_path)
        fov = read_mask(fov_path).astype(bool)
        for what, arr, path in (("mask", mask, gt_path), ("FOV mask", fov, fov_path)):
            if arr.shape != raw.shape[:2]:
                raise DataError(
                    f"{what} {path} is {size_text(arr.shape)} but image {img_path} is {size_text(raw.shape)}"
                )
        if not fov.any():
            raise DataError(f"FOV mask {fov_path} is empty (no pixel above half its maximum)")
        image = zscore_in_fov(select_channels(raw, channels, img_path), fov)
        return Case(id=cid, image=image, mask=mask, fov=fov, display=raw, path=str(img_path))


__all__ = ["DriveDataset"]
