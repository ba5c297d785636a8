"""``"folder"``: a generic 2-D dataset of images and masks paired by file name.

Layouts (file names are paired by stem, ``case_007.png`` with ``case_007.tif``; any image format
:func:`medseg.data.io.read_image` reads: PNG, JPEG, BMP, GIF, TIFF (TIFFs Pillow refuses are read
with tifffile))::

    <root>/images/<id>.<ext>            flat: one pool of images, split by medseg (seeded over
    <root>/masks/<id>.<ext>             patients) or by a split_file

    <root>/<split>/images/<id>.<ext>    split subfolders: every subfolder holding images/ is a
    <root>/<split>/masks/<id>.<ext>     split named after it (train, val, test, ...)

Labels: ``labels="binary"`` (default) reads 0/255 or 0/1 masks (palette files through their
palette) and binarises them with :func:`medseg.data.io.binarize_mask` (foreground ``> max / 2``);
``labels="multiclass"`` reads label maps whose pixel values are class indices 0..num_classes-1
(palette PNGs give their *indices*, not their colours). Each binary mask is binarised on its own,
so one folder may mix 0/1 and 0/255 masks (``medseg data check`` warns that it does).

File names: image and mask are paired by stem; any characters are fine (spaces, accents, CJK).
Stems are compared after **Unicode NFC normalisation**, so ``café.png`` written on macOS (NFD:
``e`` + combining accent) pairs with ``café.png`` written elsewhere (NFC); the case id is the NFC
form. **Letter case must match exactly**: ``Case7.png`` and ``case7.png`` are not paired (on
Linux they are two different names), and the error names both files. Hidden files (``.DS_Store``,
``._c1.png`` AppleDouble files) and non-image files (``Thumbs.db``) are ignored. Symbolic links
(a linked ``images/`` folder, linked files) are followed; a broken or looping link with an image
extension is an error naming it; a split subfolder that links back to the dataset folder (a
loop) is skipped. Folders are not walked recursively, so link loops cannot recurse.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.base import Case, register_dataset
from medseg.data.files import FileDataset
from medseg.data.io.images import (
    displayed_shape,
    exif_orientation,
    is_image_file,
    link_problem,
    read_image,
    size_text,
    to_display,
)
from medseg.data.io.masks import read_label_map, read_mask_facts
from medseg.data.records import Inventory, Problem, Record, list_files, natural_key, pair_by_stem, seeded_split
from medseg.errors import ConfigError, DataError

_LAYOUT = "<root>/images + <root>/masks (paired by file stem), or <root>/<split>/images + <root>/<split>/masks"
#: Usual order of split subfolders; others follow in natural order.
_SPLIT_ORDER = ("train", "training", "val", "valid", "validation", "test", "testing")


# --------------------------------------------------------------------------- option helpers


def parse_size(size: Any, dataset: str) -> tuple[int, int]:
    """``352`` -> ``(352, 352)``; ``[H, W]`` -> ``(H, W)``.

    Raises:
        ConfigError: not a positive int or a pair of positive ints.
    """
    if isinstance(size, bool):
        raise ConfigError(f"dataset {dataset!r}: size must be an int or [H, W], got {size!r}")
    if isinstance(size, int):
        size = (size, size)
    if (
        isinstance(size, Sequence)
        and not isinstance(size, str)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        return int(size[0]), int(size[1])
    raise ConfigError(f"dataset {dataset!r}: size must be a positive int or [H, W] of positive ints, got {size!r}")


def split_fractions(opts: dict[str, Any], dataset: str) -> dict[str, float]:
    """Split name -> fraction from options ``test_fraction`` and ``val_fraction`` (and ``seed``
    checked): ``{"train": 1 - t - v, "val": v, "test": t}`` without the zero entries.

    Raises:
        ConfigError: a fraction outside [0, 1), fractions summing to 1 or more, a non-int seed.
    """
    out: dict[str, float] = {}
    for key in ("test_fraction", "val_fraction"):
        f = opts.get(key, 0.0)
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise ConfigError(f"dataset {dataset!r}: {key} must be a number in [0, 1), got {f!r}")
    t, v = float(opts.get("test_fraction", 0.0)), float(opts.get("val_fraction", 0.0))
    if t + v >= 1:
        raise ConfigError(f"dataset {dataset!r}: test_fraction + val_fraction must be < 1, got {t} + {v}")
    seed = opts.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"dataset {dataset!r}: seed must be an int, got {seed!r}")
    out["train"] = 1.0 - t - v
    if v > 0:
        out["val"] = v
    if t > 0:
        out["test"] = t
    return out


def fraction_split(groups: Sequence[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Group -> split by :func:`medseg.data.records.seeded_split` with the test share (then val)
    drawn first, so that rounding changes the size of "train" only.

    Raises:
        DataError: fewer groups than splits.
    """
    order = [k for k in ("test", "val") if k in fractions] + [k for k in fractions if k not in ("test", "val")]
    return seeded_split(groups, {k: fractions[k] for k in order}, seed)


# --------------------------------------------------------------------------- label readers


# --------------------------------------------------------------------------- file pairing


def _stem_key(p: Path) -> str:
    """The pairing key of a file: its stem in Unicode NFC (macOS writes names in NFD)."""
    return unicodedata.normalize("NFC", p.stem)


def _dangling_links(folder: Path) -> list[Path]:
    """Symbolic links with an image extension in ``folder`` whose target cannot be reached
    (missing target or a link loop); hidden names are ignored like everywhere else."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    return sorted(
        (p for p in entries if is_image_file(p) and p.is_symlink() and not p.exists()),
        key=lambda p: natural_key(p.name),
    )


def _hint_letter_case(problems: list[Problem], images: list[Path], masks: list[Path]) -> None:
    """Add to "has no mask" / "has no image" problems the file whose stem differs only in letter
    case, so the user sees why two files that look alike were not paired."""
    by_fold: dict[str, list[Path]] = {}
    for f in list(images) + list(masks):
        by_fold.setdefault(_stem_key(f).casefold(), []).append(f)
    for prob in problems:
        if prob.severity != "error" or "has no" not in prob.message or not isinstance(prob.path, Path):
            continue
        key = _stem_key(prob.path)
        others = [f for f in by_fold.get(key.casefold(), []) if f.parent != prob.path.parent and _stem_key(f) != key]
        if others:
            names = ", ".join(f"{o.parent.name}/{o.name}" for o in others)
            prob.message += (
                f"; {names} differs from it only in letter case: ids must match exactly, "
                "letter case included (rename one of them)"
            )


# --------------------------------------------------------------------------- the dataset


@register_dataset("folder")
class FolderDataset(FileDataset):
    """Any folder of 2-D images and masks paired by file stem (see the module docstring for the
    two layouts).

    Args:
        root: the folder (required: there is no default location).
        split: a split of the layout (subfolder name), of the seeded split ("train", "val" when
            ``val_fraction`` > 0, "test" when ``test_fraction`` > 0) or of ``split_file``.
        labels: "binary" (default; masks 0/255 or 0/1, see :func:`medseg.data.io.masks.read_mask`) or
            "multiclass" (label maps 0..num_classes-1, see :func:`read_label_map`).
        num_classes: classes including background; required for "multiclass" (2..256), must be
            None or 2 for "binary".
        channels: "auto" (default; keep what the files have: grey gives C = 1, RGB C = 3, and a
            split mixing both is a DataError), "rgb" (C = 3, grey repeated) or "gray" (C = 1,
            BT.601 luminance): the first step of the default pipeline ``[<channels>, zscore]``
            (no channel step for "auto"); zscore is per channel over the whole image.
        test_fraction, val_fraction, seed: the seeded split of a flat layout over patients
            (defaults 0.2, 0.0, 0; :func:`medseg.data.records.seeded_split`); test_fraction 0
            puts everything in "train". Ignored for split subfolders.
        patient_pattern: a regular expression; the patient of an image is the first capture
            group of its first match in the file stem (the whole match if the pattern has no
            group), e.g. ``r"^(\\w+?)_"`` makes ``p01_slice3`` patient "p01". Seeded splits keep
            each patient in one split, and any layout in which a patient appears in two splits
            is refused. A stem that does not match is its own patient (a warning).
        max_intermediate: tolerated fraction of mask pixels between the two levels in binary mode
            (default 0.01; use 1.0 for JPEG masks).
        preprocess, split_file, centerline: see :class:`~medseg.data.files.FileDataset`.

    Cases: ``id`` the file stem; ``image`` float32 (C, H, W), per-channel z-scored (default
    pipeline); ``mask`` uint8 (H, W); ``fov`` all True; ``display`` uint8 (H, W) or (H, W, 3)
    (16-bit images min-max scaled); ``patient`` from ``patient_pattern`` or None;
    ``num_classes`` 2 or ``num_classes``.

    Raises:
        ConfigError: root not given, bad option values, bad regular expression, unknown split.
        DataError: before decoding, missing ``images``/``masks`` folders, an image without mask, a
            mask without image, two files with one stem, an id or a patient in two split
            subfolders (all listed together); while decoding, an unreadable file, an image and
            mask of different sizes, a non-binary mask (binary mode), label values outside
            0..num_classes-1 or colour label maps (multiclass mode); mixed grey and RGB images
            with ``channels="auto"``. Messages name the files.
    """

    dataset_name = "folder"
    folder = ""
    layout = _LAYOUT
    splits = ("train", "test")
    option_defaults: dict[str, Any] = {
        "labels": "binary",
        "num_classes": None,
        "channels": "auto",
        "test_fraction": 0.2,
        "val_fraction": 0.0,
        "seed": 0,
        "patient_pattern": None,
        "max_intermediate": 0.01,
    }

    @classmethod
    def default_pipeline(cls, opts: dict[str, Any]) -> list:
        cls._check_options(opts)
        return ["zscore"] if opts["channels"] == "auto" else [opts["channels"], "zscore"]

    @classmethod
    def check_split(cls, split: str, opts: dict[str, Any]) -> None:
        cls._check_options(opts)

    @classmethod
    def _check_options(cls, opts: dict[str, Any]) -> tuple[int, re.Pattern | None]:
        """Validate the options; returns (num_classes, compiled patient pattern). ConfigError."""
        labels, nc = opts["labels"], opts["num_classes"]
        if labels not in ("binary", "multiclass"):
            raise ConfigError(f"dataset 'folder': labels must be 'binary' or 'multiclass', got {labels!r}")
        if labels == "multiclass":
            if isinstance(nc, bool) or not isinstance(nc, int) or not 2 <= nc <= 256:
                raise ConfigError(
                    f"dataset 'folder': labels='multiclass' needs num_classes, an int in 2..256 "
                    f"(background included), got {nc!r}"
                )
        elif nc not in (None, 2):
            raise ConfigError(
                f"dataset 'folder': labels='binary' has 2 classes, got num_classes={nc!r} "
                "(use labels='multiclass' for more)"
            )
        if opts["channels"] not in ("auto", "rgb", "gray"):
            raise ConfigError(f"dataset 'folder': channels must be 'auto', 'rgb' or 'gray', got {opts['channels']!r}")
        mi = opts["max_intermediate"]
        if isinstance(mi, bool) or not isinstance(mi, (int, float)) or not 0 <= mi <= 1:
            raise ConfigError(f"dataset 'folder': max_intermediate must be a fraction in [0, 1], got {mi!r}")
        split_fractions(opts, "folder")
        pattern = opts["patient_pattern"]
        rx = None
        if pattern is not None:
            if not isinstance(pattern, str):
                raise ConfigError(
                    f"dataset 'folder': patient_pattern must be a regular expression string, got {pattern!r}"
                )
            try:
                rx = re.compile(pattern)
            except re.error as exc:
                raise ConfigError(
                    f"dataset 'folder': patient_pattern {pattern!r} is not a valid regular expression: {exc}"
                ) from None
        return (2 if labels == "binary" else int(nc)), rx

    @classmethod
    def locate(cls, root: str | os.PathLike | None) -> Path:
        if root is None:
            raise ConfigError(
                "dataset 'folder' needs root=<folder> holding images/ and masks/ (or <split>/images and <split>/masks)"
            )
        return super().locate(root)

    @classmethod
    def find(cls, root: Path, opts: dict[str, Any]) -> Inventory:
        _, rx = cls._check_options(opts)
        problems: list[Problem] = []
        split_dirs = cls._split_dirs(root)
        if (root / "images").is_dir():
            if split_dirs:
                problems.append(
                    Problem(
                        root,
                        f"split subfolders {', '.join(d.name for d in split_dirs)} are ignored "
                        "because the folder also has images/ (flat layout)",
                        "warning",
                    )
                )
            pairs, probs = cls._pair(root, None)
            problems += probs
            items = [(k, img, m, cls._patient(k, img, rx, problems)) for k, img, m in pairs]
            fractions = split_fractions(opts, "folder")
            records: list[Record] = []
            source = (
                f"seeded over patients (seed {opts['seed']}, test_fraction {opts['test_fraction']}, "
                f"val_fraction {opts['val_fraction']})"
            )
            if items:
                groups = [pat if pat is not None else k for k, _, _, pat in items]
                try:
                    assign = fraction_split(groups, fractions, int(opts["seed"]))
                except DataError as exc:
                    problems.append(Problem(root, f"{exc}; lower test_fraction/val_fraction or give split_file="))
                    assign = {}
                records = [
                    Record(k, assign[g], img, mask=m, patient=pat)
                    for (k, img, m, pat), g in zip(items, groups)
                    if g in assign
                ]
                order = {s: i for i, s in enumerate(fractions)}
                records.sort(key=lambda r: (order[r.split], natural_key(r.id)))
            return Inventory(cls.dataset_name, root, records, problems, split_source=source)
        if not split_dirs:
            return Inventory(
                cls.dataset_name,
                root,
                [],
                [Problem(root, f"no images/ folder and no split subfolders holding images/; expected {_LAYOUT}")],
            )
        records = []
        for d in split_dirs:
            pairs, probs = cls._pair(d, d.name)
            problems += probs
            records += [
                Record(k, d.name, img, mask=m, patient=cls._patient(k, img, rx, problems, d.name))
                for k, img, m in pairs
            ]
        return Inventory(
            cls.dataset_name,
            root,
            records,
            problems,
            split_source=f"layout ({', '.join(d.name + '/' for d in split_dirs)})",
        )

    @staticmethod
    def _split_dirs(root: Path) -> list[Path]:
        try:
            dirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and (d / "images").is_dir()]
        except OSError:
            return []
        try:
            here = root.resolve()
            # a symbolic link back to the folder itself or to a folder above it is a loop, not a split
            dirs = [d for d in dirs if not (d.is_symlink() and (d.resolve() == here or d.resolve() in here.parents))]
        except (OSError, RuntimeError):  # RuntimeError: a link loop resolve() cannot follow
            dirs = [d for d in dirs if not d.is_symlink()]

        def key(d: Path) -> tuple:
            name = d.name.lower()
            return (_SPLIT_ORDER.index(name) if name in _SPLIT_ORDER else len(_SPLIT_ORDER), natural_key(d.name))

        return sorted(dirs, key=key)

    @staticmethod
    def _pair(base: Path, split: str | None) -> tuple[list[tuple[str, Path, Path]], list[Problem]]:
        if not (base / "masks").is_dir():
            return [], [Problem(base, f"folder has images/ but no masks/; expected {_LAYOUT}", split=split)]
        try:
            images = list_files(base / "images", is_image_file)
            masks = list_files(base / "masks", is_image_file)
        except DataError as exc:
            return [], [Problem(base, str(exc), split=split)]
        dangling = _dangling_links(base / "images") + _dangling_links(base / "masks")
        if dangling:
            images = sorted(
                images + [p for p in dangling if p.parent.name == "images"], key=lambda p: natural_key(p.name)
            )
            masks = sorted(masks + [p for p in dangling if p.parent.name == "masks"], key=lambda p: natural_key(p.name))
        if not images:
            return [], [
                Problem(base / "images", "holds no image files (.png, .jpg, .tif, .bmp, .gif, ...)", split=split)
            ]
        pairs, problems = pair_by_stem(images, masks, image_key=_stem_key, label_key=_stem_key)
        _hint_letter_case(problems, images, masks)
        broken = set(dangling)
        problems += [Problem(p, link_problem(p)) for p in dangling]
        pairs = [(k, img, m) for k, img, m in pairs if img not in broken and m not in broken]
        problems = [p for p in problems if not (p.path in broken and "has no" in p.message)]
        for p in problems:
            p.split = split
        return pairs, problems

    @staticmethod
    def _patient(
        stem: str, path: Path, rx: re.Pattern | None, problems: list[Problem], split: str | None = None
    ) -> str | None:
        if rx is None:
            return None
        m = rx.search(stem)
        if m is None or not (m.group(1) if rx.groups else m.group(0)):
            problems.append(
                Problem(
                    path,
                    f"file stem {stem!r} does not match patient_pattern {rx.pattern!r}; the image is its own patient",
                    "warning",
                    split,
                )
            )
            return None
        return m.group(1) if rx.groups else m.group(0)

    @classmethod
    def read(cls, record: Record, opts: dict[str, Any]) -> list[Case]:
        num_classes, _ = cls._check_options(opts)
        raw = read_image(record.image)
        meta: dict[str, Any] = {}
        if opts["labels"] == "binary":
            mask, facts = read_mask_facts(record.mask, float(opts["max_intermediate"]))
            meta = {f"mask_{k}": v for k, v in facts.items()}
        else:
            mask = read_label_map(record.mask, num_classes)
        if mask.shape != raw.shape[:2]:
            msg = (
                f"mask {record.mask} is {size_text(mask.shape)} but image {record.image} is "
                f"{size_text(raw.shape)}; image and mask must have the same size"
            )
            orientation = exif_orientation(record.image)
            if orientation != 1 and displayed_shape(raw.shape, orientation) == mask.shape:
                msg += (
                    f". The image has EXIF Orientation {orientation} (viewers show it as "
                    f"{size_text(displayed_shape(raw.shape, orientation))}, the mask's size): the mask was "
                    "probably drawn on the rotated view, while medseg reads pixels as stored; save the image "
                    "with the rotation applied (PIL.ImageOps.exif_transpose) so that file and view agree"
                )
            raise DataError(msg)
        image = (raw[None] if raw.ndim == 2 else np.moveaxis(raw, -1, 0)).astype(np.float32)
        return [
            Case(
                id=record.id,
                image=image,
                mask=mask,
                fov=np.ones(mask.shape, dtype=bool),
                display=to_display(raw),
                path=str(record.image),
                patient=record.patient,
                num_classes=num_classes,
                meta=meta,
            )
        ]


__all__ = ["FolderDataset", "parse_size", "split_fractions", "fraction_split"]
