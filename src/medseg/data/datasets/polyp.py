"""Colonoscopy polyp datasets: Kvasir-SEG and CVC-ClinicDB, read in their released layouts.

Both load as 8-bit RGB frames with binary polyp masks (polyp = 1) and, by default, the input
handling of the polyp models (PraNet, Fan et al. MICCAI 2020; BCNet): resize to 352x352 (image
bilinear with anti-aliasing, mask nearest neighbour) and ImageNet normalisation, i.e. the
pipeline ``[rgb, {resize: {size: [352, 352]}}, imagenet]``.

Polyp masks are read with ``read_mask(path, noisy=True)`` (:func:`medseg.data.io.masks.binarize_noisy_mask`:
``value > 127``), not required to be
exactly 0/255: Kvasir-SEG masks are JPEG files whose pixels carry compression noise (all within
0-15 or 240-255), and 24 of the first 50 CVC-ClinicDB masks hold grey values besides 0 and 255
(e.g. a region of value 11 at the left border of frame 1). Both are legitimate releases, so the
noise is thresholded away; a mask with many mid-grey pixels (a soft or probability map) is still
refused.

Evaluation note: the PraNet protocol (github.com/DengPingFan/PraNet, ``MyTest.py`` and
``eval/main.m``) scores predictions upsampled to the ground truth's *original* size; the cases
hold the resized mask, and ``Case.meta`` keeps ``original_size`` (H, W) and ``mask_path`` for that.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.base import Case, register_dataset
from medseg.data.datasets.folder import fraction_split, parse_size, split_fractions
from medseg.data.files import FileDataset
from medseg.data.io import is_image_file, read_image, size_text
from medseg.data.io.masks import NOISY_THRESHOLD, binarize_noisy_mask, read_mask
from medseg.data.records import (
    Inventory,
    Problem,
    Record,
    apply_split_file,
    list_files,
    natural_key,
    pair_by_stem,
    shipped_split,
    split_integrity,
)
from medseg.errors import ConfigError, DataError

#: The noisy-mask rule of :mod:`medseg.data.io.masks`, under the names this module has always had.
MASK_THRESHOLD = NOISY_THRESHOLD
threshold_polyp_mask = binarize_noisy_mask


def _read_rgb_frame(path: Path, dataset: str, hint: str = "") -> np.ndarray:
    """Read an 8-bit RGB frame (uint8 (H, W, 3)); DataError for grey or non-8-bit files."""
    raw = read_image(path)
    if raw.dtype != np.uint8:
        raise DataError(f"image {path} is {raw.dtype}; {dataset} frames are 8-bit RGB")
    if raw.ndim != 3:
        raise DataError(f"image {path} is grey (one channel); {dataset} frames are RGB colour{hint}")
    return raw


def _polyp_case(record: Record, raw: np.ndarray, mask: np.ndarray, meta: dict) -> Case:
    if mask.shape != raw.shape[:2]:
        raise DataError(
            f"mask {record.mask} is {size_text(mask.shape)} but image {record.image} is {size_text(raw.shape)}"
        )
    h, w = mask.shape
    return Case(
        id=record.id,
        image=np.moveaxis(raw, -1, 0).astype(np.float32),
        mask=mask,
        fov=np.ones((h, w), dtype=bool),
        display=raw,
        path=str(record.image),
        patient=record.patient,
        meta={"original_size": (h, w), "mask_path": str(record.mask), **meta},
    )


def _pair_folder(root: Path, image_dir: str, mask_dir: str, dataset: str, layout: str) -> tuple[list, list[Problem]]:
    """Pair ``root/image_dir`` with ``root/mask_dir`` by file stem; problems instead of raising."""
    problems: list[Problem] = []
    for sub in (image_dir, mask_dir):
        if not (root / sub).is_dir():
            problems.append(Problem(root / sub, f"{dataset} folder {root} has no '{sub}' folder; expected {layout}"))
    if problems:
        return [], problems
    try:
        images = list_files(root / image_dir, is_image_file)
        masks = list_files(root / mask_dir, is_image_file)
    except DataError as exc:
        return [], [Problem(root, str(exc))]
    if not images:
        return [], [Problem(root / image_dir, f"{dataset} image folder holds no images; expected {layout}")]
    return pair_by_stem(images, masks)


# --------------------------------------------------------------------------- Kvasir-SEG

_KVASIR_LAYOUT = "images/<id>.jpg and masks/<id>.jpg (the Kvasir-SEG release layout)"


@register_dataset("kvasir_seg")
class KvasirSegDataset(FileDataset):
    """Kvasir-SEG (Jha et al., MMM 2020, doi:10.1007/978-3-030-37734-2_37): 1,000 colonoscopy
    frames with polyp masks from Vestre Viken Health Trust, Norway (Simula Research Laboratory;
    datasets.simula.no/kvasir-seg; research and education use only, see its terms).

    Layout (the release; ids are file stems such as ``cju0qkwl35piu0993l0dewei2``)::

        Kvasir-SEG/images/<id>.jpg   1000  RGB JPEG, sizes vary (332..1920 x 352..1072 px)
        Kvasir-SEG/masks/<id>.jpg    1000  JPEG, polyp white, JPEG noise (thresholded > 127)

    **Split** (option ``split_list``). Two fixed 880 / 120 train / test lists of image ids ship
    with medseg (loaded with :func:`medseg.data.records.shipped_split`):

    * ``"published"`` (default): the dataset authors' split for fair comparison,
      ``medseg/data/datasets/splits/kvasir_seg_published.json``: their ``train.txt`` (880) as "train" and
      ``val.txt`` (120) as "test", from github.com/DebeshJha/2020-MediaEval-Medico-polyp-segmentation,
      folder ``kvasir-seg-train-val/`` (commit d594c08, 2020-09-15); the lists are disjoint and
      cover the 1,000 images. Papers that report "the official split" test on these 120.
    * ``"medseg"``: medseg's own seeded split, ``medseg/data/datasets/splits/kvasir_seg.json``: the 1,000
      ids sorted with :func:`medseg.data.records.natural_key`, permuted with
      ``numpy.random.default_rng(2026).permutation(1000)``, the first 880 "train", the last 120
      "test" (15 of its test images are in the published test list). Kept for runs made on it.

    Neither is PraNet's 900/100 split (PraNet also trains on CVC-ClinicDB; its test list is not
    published). Kvasir-SEG publishes no patient ids, so frames of one patient or polyp may fall in
    both splits (a limitation every published Kvasir-SEG split shares). A ``split_file`` replaces
    the shipped lists.

    Args:
        root: the Kvasir-SEG folder (or a folder holding ``Kvasir-SEG/``); None uses
            ``$MEDSEG_DATA/Kvasir-SEG`` or ``<repo>/../shared/data/Kvasir-SEG``.
        split: "train" (880) or "test" (120) of the shipped split, or a split of ``split_file``.
        size: network input size, an int (square) or [H, W]; default 352 (PraNet, BCNet).
        split_list: "published" (the dataset authors' lists, default) or "medseg" (see above).
        preprocess, split_file, centerline: see :class:`~medseg.data.files.FileDataset`.

    Cases: ``id`` the file stem; ``image`` float32 (3, 352, 352), ImageNet-normalised
    ``(x / 255 - mean) / std`` with mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225);
    ``mask`` uint8 (352, 352) {0, 1} (resized nearest neighbour); ``fov`` all True; ``display``
    uint8 (352, 352, 3) the resized RGB frame; ``patient`` None; ``meta["original_size"]`` the
    frame's (H, W) and ``meta["mask_path"]`` the original mask file.

    Raises:
        ConfigError: bad ``size`` or ``split_list``; unknown split.
        DataError: before decoding, missing ``images``/``masks`` folders, an image without mask
            or a mask without image, or an id of the shipped split missing from the folder (the
            folder is not the complete 1,000-image release: give a ``split_file``) - all listed
            together; images not in the shipped list are warnings and are not loaded. While
            decoding: an unreadable or grey/16-bit frame, a mask of another size, or a mask that
            is not binary after the > 127 threshold. Messages name the files.
    """

    protocol = "polyp"

    dataset_name = "kvasir_seg"
    folder = "Kvasir-SEG"
    layout = _KVASIR_LAYOUT
    splits = ("train", "test")
    option_defaults: dict[str, Any] = {"size": 352, "split_list": "published"}

    #: ``split_list`` value -> (shipped list name, how the inventory names its source).
    SPLIT_LISTS = {
        "published": (
            "kvasir_seg_published",
            "the dataset authors' published 880/120 lists (medseg/data/datasets/splits/kvasir_seg_published.json)",
        ),
        "medseg": ("kvasir_seg", "medseg's own seeded 880/120 (medseg/data/datasets/splits/kvasir_seg.json)"),
    }

    @classmethod
    def default_pipeline(cls, opts: dict[str, Any]) -> list:
        return ["rgb", {"resize": {"size": list(parse_size(opts["size"], cls.dataset_name))}}, "imagenet"]

    @classmethod
    def _split_list(cls, opts: dict[str, Any]) -> tuple[str, str]:
        which = opts.get("split_list", "published")
        if which not in cls.SPLIT_LISTS:
            raise ConfigError(
                f"kvasir_seg option split_list must be one of {', '.join(cls.SPLIT_LISTS)}, got {which!r}"
            )
        return cls.SPLIT_LISTS[which]

    @classmethod
    def looks_like_root(cls, path: Path) -> bool:
        return (path / "images").is_dir()

    @classmethod
    def find(cls, root: Path, opts: dict[str, Any]) -> Inventory:
        return cls._find(root, shipped=True, split_list=cls._split_list(opts))

    @classmethod
    def inventory(
        cls, root: str | os.PathLike | None = None, split_file: str | os.PathLike | None = None, **options: Any
    ) -> Inventory:
        """As :meth:`FileDataset.inventory`; with a ``split_file`` the shipped list is not
        consulted (so a partial or extended Kvasir-SEG copy can be used with the user's own split)."""
        if split_file is None:
            return super().inventory(root, None, **options)
        cls.parse_options(options)
        inv = apply_split_file(cls._find(cls.locate(root), shipped=False), split_file)
        inv.problems.extend(split_integrity(inv.records))
        return inv

    @classmethod
    def _find(cls, root: Path, shipped: bool, split_list: tuple[str, str] | None = None) -> Inventory:
        pairs, problems = _pair_folder(root, "images", "masks", "Kvasir-SEG", _KVASIR_LAYOUT)
        if not shipped:
            records = [Record(k, "unsplit", img, mask=m) for k, img, m in pairs]
            return Inventory(cls.dataset_name, root, records, problems, split_source="split file")
        list_name, source = split_list or cls.SPLIT_LISTS["published"]
        spec = shipped_split(list_name)
        by_id = {k: (img, m) for k, img, m in pairs}
        # ids already reported (an image without mask, a mask without image) are not reported again;
        # without any pair the folder problem above says it all.
        reported = {p.path.stem for p in problems if isinstance(p.path, Path)}
        records: list[Record] = []
        listed: set[str] = set()
        if pairs and not any(i in by_id for ids in spec.values() for i in ids):
            problems.append(
                Problem(
                    root,
                    f"none of the {len(pairs)} images is in the shipped Kvasir-SEG split "
                    "(1,000 ids of the release): not the Kvasir-SEG release? give split_file=",
                )
            )
            spec = {}
        for split, ids in spec.items():
            for i in ids:
                listed.add(i)
                if i in by_id:
                    img, m = by_id[i]
                    records.append(Record(i, split, img, mask=m))
                elif pairs and i not in reported:
                    problems.append(
                        Problem(
                            root / "images" / f"{i}.jpg",
                            f"image {i!r} of the shipped Kvasir-SEG split {split!r} is missing: the folder is not "
                            "the complete 1,000-image release (give split_file= to use your own split)",
                            split=split,
                        )
                    )
        for k, img, _ in pairs:
            if spec and k not in listed:
                problems.append(
                    Problem(
                        img,
                        f"image {k!r} is not in the shipped Kvasir-SEG split and is not "
                        "loaded (give split_file= to use it)",
                        "warning",
                    )
                )
        return Inventory(cls.dataset_name, root, records, problems, split_source=f"shipped list: {source}")

    @classmethod
    def read(cls, record: Record, opts: dict[str, Any]) -> list[Case]:
        raw = _read_rgb_frame(record.image, "Kvasir-SEG")
        mask = read_mask(record.mask, noisy=True)
        return [_polyp_case(record, raw, mask, {})]


# --------------------------------------------------------------------------- CVC-ClinicDB

#: Last frame of each of the 29 video sequences of CVC-ClinicDB (sequence k = frames
#: ``_CLINICDB_LAST[k-2] + 1 .. _CLINICDB_LAST[k-1]``), from the frame/sequence table of the
#: release's README: 1-25, 26-50, 51-67, 68-78, 79-103, 104-126, 127-151, 152-177, 178-199,
#: 200-205, 206-227, 228-252, 253-277, 278-297, 298-317, 318-342, 343-363, 364-383, 384-408,
#: 409-428, 429-447, 448-466, 467-478, 479-503, 504-528, 529-546, 547-571, 572-591, 592-612.
_CLINICDB_LAST = (
    25,
    50,
    67,
    78,
    103,
    126,
    151,
    177,
    199,
    205,
    227,
    252,
    277,
    297,
    317,
    342,
    363,
    383,
    408,
    428,
    447,
    466,
    478,
    503,
    528,
    546,
    571,
    591,
    612,
)
#: Frames in the full release.
CLINICDB_FRAMES = 612

_CLINICDB_LAYOUTS = (("images", "masks"), ("Original", "Ground Truth"))
_CLINICDB_LAYOUT = (
    "images/<frame>.tif and masks/<frame>.tif (frames 1..612), or the release's 'Original/' and 'Ground Truth/'"
)


def clinicdb_sequence(frame: int) -> int | None:
    """The CVC-ClinicDB video sequence (1..29) of frame number ``frame`` (1..612), per the
    frame/sequence table of the dataset's README; None outside 1..612."""
    if not 1 <= int(frame) <= CLINICDB_FRAMES:
        return None
    return bisect.bisect_left(_CLINICDB_LAST, int(frame)) + 1


@register_dataset("cvc_clinicdb")
class CvcClinicDbDataset(FileDataset):
    """CVC-ClinicDB (Bernal et al., Comput. Med. Imaging Graph. 43:99-111, 2015): 612 frames of 29
    colonoscopy video sequences (from 25 video studies) with polyp masks; Computer Vision Center
    and Hospital Clinic, Barcelona (research and education use only, see its README).

    Layout (file bytes as released; folder names as medseg's shared copy or the release)::

        CVC-ClinicDB/images/1.tif .. 612.tif   RGB TIFF 384x288 ("Original")
        CVC-ClinicDB/masks/1.tif  .. 612.tif   8-bit grey TIFF ("Ground Truth")

    The RGB TIFFs declare Photometric MinIsBlack with 3 samples, so Pillow cannot open them and
    OpenCV reads them as grey; :func:`medseg.data.io.read_image` reads them with tifffile, giving
    the true (288, 384, 3) colour frame. Masks are thresholded at > 127 (some hold stray grey
    values, e.g. 11, besides 0/255). Other image formats with the same stems (PNG copies) work too.

    **Patients.** The split unit (``patient``) is the video sequence, ``"seq01"``..``"seq29"``,
    from the frame-to-sequence table of the release README (frames 1-25 are sequence 1, 26-50
    sequence 2, ..., 592-612 sequence 29; see :func:`clinicdb_sequence`). The README says the 29
    sequences come from 25 video studies without saying which share a study, so the sequence is
    the finest grouping available. A frame whose stem is not a number in 1..612 gets patient None
    (it is its own group) and a warning. The shared copy of medseg's test machine holds only
    frames 1-50 (sequences 1 and 2).

    **Split.** No official split exists (PraNet's 550/62 frame split is random, sequences leak
    across it, and its lists are not available here). medseg's default is seeded **by sequence**:
    :func:`medseg.data.records.seeded_split` over the sequences present with fractions
    ``test_fraction`` (default 0.2) and ``val_fraction`` (default 0, no "val" split) and seed
    ``seed`` (default 0); frame counts per split therefore follow the sequence lengths. No
    sequence is ever in two splits (checked). A ``split_file`` replaces it.

    Args:
        root: the CVC-ClinicDB folder; None uses ``$MEDSEG_DATA/CVC-ClinicDB`` or
            ``<repo>/../shared/data/CVC-ClinicDB``.
        split: "train", "test", or "val" when ``val_fraction`` > 0.
        size: network input size, int or [H, W]; default 352.
        test_fraction, val_fraction: fractions of the sequences (0 <= f < 1, sum < 1).
        seed: seed of the sequence shuffle (int).
        preprocess, split_file, centerline: see :class:`~medseg.data.files.FileDataset`.

    Cases: ``id`` the frame number as text ("1".."612"); ``image`` float32 (3, 352, 352)
    ImageNet-normalised; ``mask`` uint8 (352, 352) {0, 1}; ``fov`` all True; ``display`` uint8
    (352, 352, 3); ``patient`` "seqNN"; ``meta`` ``original_size`` (288, 384), ``mask_path``,
    ``sequence`` (int or None).

    Raises:
        ConfigError: bad size, fractions or seed; unknown split.
        DataError: missing folders, unpaired files, too few sequences for the splits (listed
            together); then a grey or 16-bit frame (e.g. swapped image/mask folders, as in some
            public copies), sizes that differ, or a non-binary mask, naming the file.
    """

    protocol = "polyp"

    dataset_name = "cvc_clinicdb"
    folder = "CVC-ClinicDB"
    layout = _CLINICDB_LAYOUT
    splits = ("train", "val", "test")
    option_defaults: dict[str, Any] = {"size": 352, "test_fraction": 0.2, "val_fraction": 0.0, "seed": 0}

    @classmethod
    def default_pipeline(cls, opts: dict[str, Any]) -> list:
        return ["rgb", {"resize": {"size": list(parse_size(opts["size"], cls.dataset_name))}}, "imagenet"]

    @classmethod
    def check_split(cls, split: str, opts: dict[str, Any]) -> None:
        split_fractions(opts, cls.dataset_name)

    @classmethod
    def looks_like_root(cls, path: Path) -> bool:
        return any((path / a).is_dir() for a, _ in _CLINICDB_LAYOUTS)

    @classmethod
    def find(cls, root: Path, opts: dict[str, Any]) -> Inventory:
        fractions = split_fractions(opts, cls.dataset_name)
        image_dir, mask_dir = next(((a, b) for a, b in _CLINICDB_LAYOUTS if (root / a).is_dir()), _CLINICDB_LAYOUTS[0])
        pairs, problems = _pair_folder(root, image_dir, mask_dir, "CVC-ClinicDB", _CLINICDB_LAYOUT)
        items: list[tuple[str, Path, Path, str | None, int | None]] = []
        for k, img, m in pairs:
            seq = clinicdb_sequence(int(k)) if k.isdigit() else None
            if seq is None:
                problems.append(
                    Problem(
                        img,
                        f"frame {k!r} is not a CVC-ClinicDB frame number 1..{CLINICDB_FRAMES}; its "
                        "video sequence is unknown, so it is split as its own patient",
                        "warning",
                    )
                )
            items.append((k, img, m, None if seq is None else f"seq{seq:02d}", seq))
        records: list[Record] = []
        if items:
            groups = [pat if pat is not None else k for k, _, _, pat, _ in items]
            try:
                assign = fraction_split(groups, fractions, int(opts["seed"]))
            except DataError as exc:
                problems.append(
                    Problem(
                        root,
                        f"{exc} (CVC-ClinicDB is split by video sequence; lower the fractions or give split_file=)",
                    )
                )
                assign = {}
            for (k, img, m, pat, seq), g in zip(items, groups):
                if g in assign:
                    records.append(Record(k, assign[g], img, mask=m, patient=pat, extra={"sequence": seq}))
        order = {s: i for i, s in enumerate(fractions)}
        records.sort(key=lambda r: (order.get(r.split, 99), natural_key(r.id)))
        source = (
            f"seeded by video sequence (seed {opts['seed']}, test_fraction {opts['test_fraction']}, "
            f"val_fraction {opts['val_fraction']})"
        )
        return Inventory(cls.dataset_name, root, records, problems, split_source=source)

    @classmethod
    def read(cls, record: Record, opts: dict[str, Any]) -> list[Case]:
        raw = _read_rgb_frame(
            record.image,
            "CVC-ClinicDB",
            " (if the masks folder holds the colour frames, the image and mask folders are swapped, "
            "as in some public copies)",
        )
        mask = read_mask(record.mask, noisy=True)
        return [_polyp_case(record, raw, mask, {"sequence": record.extra.get("sequence")})]


__all__ = [
    "KvasirSegDataset",
    "CvcClinicDbDataset",
    "threshold_polyp_mask",
    "clinicdb_sequence",
    "CLINICDB_FRAMES",
    "MASK_THRESHOLD",
]
