"""OCTA (optical coherence tomography angiography) en-face vessel datasets: ROSE-1, ROSE-2,
ROSSA and OCTA-500 (3 mm), each read in place from its released folder layout.

All four are 2-D grey en-face projections with binary vessel labels and no field-of-view mask
(``Case.fov`` is all True, ``meta["fov"] = "none"``). They share one pairing routine (images and
label files matched by file stem, extension ignored, every problem reported with its file) and one
reader; the classes differ in layout, splits and in what each label folder means.

==========  ==========================================================================  =========
name        layout (what medseg reads)                                                  size
==========  ==========================================================================  =========
rose1       ``ROSE-1/{SVC,DVC,SVC_DVC}/{train,test}/{img,gt[,thick_gt,thin_gt]}/``      304x304
rose2       ``ROSE-2/{train,test}/{original,gt}/``                                      840x840
rossa       ``ROSSA/{train_manual,val,test}/{image,label}/<n>.png``                     320x320
octa500     ``OCTA500_3M/{train,val,test}/{image,label}/<subject>.bmp``                 304x304
==========  ==========================================================================  =========

**Default preprocessing** (all four): ``[gray, minmax]``, i.e. one grey channel scaled to
[0, 1]. This follows OCTA-Net (Ma et al., IEEE TMI 2021; the ROSE paper), whose loader converts
each image to grey (PIL ``convert("L")``, the BT.601 luminance that the ``gray`` step uses) and
feeds ``ToTensor()`` output, i.e. ``x / 255`` in [0, 1], with no mean/std normalisation
(github.com/iMED-Lab/OCTA-Net-OCTA-Vessel-Segmentation-Network, ``code/OCTA-Net/octa_dataset.py``).
``minmax`` is per-image min-max scaling; it equals ``x / 255`` exactly for every image whose
grey levels span 0..255, which holds for all 300 ROSSA and all 50 OCTA-500 test images
(checked on the copies in ``shared/data``). For the exact fixed scaling on other data use
``preprocess: [gray, {imagenet: {mean: [0.0], std: [1.0]}}]`` (x / 255).
OCTA-Net's ResNeSt encoder takes 3 channels: add ``rgb`` (grey repeated) in the recipe.

**Labels** are binarised with :func:`medseg.data.io.binarize_mask` (``> max / 2``, i.e.
``>= 128`` for 0/255 files, the same rule as OCTA-Net's ``gt >= 128``). ``meta["label_level"]``
says whether ``Case.mask`` is a *pixel-level* label (vessel area) or a *centerline-level* label
(1-px manual tracings): the ROSE evaluation code counts TP and FP against the ground truth
dilated by a 3x3 ellipse for centerline-level labels (ROSE-1 DVC and ROSE-2) and without
tolerance for pixel-level ones (the same repository, ``evaluation/utils.py``: "DCC & ROSE-2:
kernel_size=(3, 3)").

**Centerlines**: ROSE ships manual centerline-level labels, which fill ``Case.centerline``
(see :class:`Rose1Dataset`, :class:`Rose2Dataset`). ROSSA and OCTA-500 ship none; with
``centerline=True`` the base class gives the skeleton of the mask
(:func:`medseg.data.files.skeleton_centerline`) as a *substitute* for manual centerlines.

Sources: see each class. ROSE is distributed on request by iMED/NIMTE (imed.nimte.ac.cn,
"academic research use only"); it is not in ``shared/data``, so the ROSE loaders are tested on
synthetic folders in the same layout. ROSSA and OCTA-500 (3M test split) are in ``shared/data``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medseg.data.base import Case, register_dataset
from medseg.data.files import FileDataset
from medseg.data.io import is_image_file, read_image, read_mask, size_text, to_display
from medseg.data.records import Inventory, Problem, Record, list_files, natural_key, pair_files
from medseg.errors import ConfigError, DataError, did_you_mean

#: Pipeline of all OCTA loaders (see the module docstring for why).
OCTA_PREPROCESS = ("gray", "minmax")

PIXEL = "pixel"
CENTERLINE = "centerline"


# --------------------------------------------------------------------------- shared helpers


def _pair_folder(
    dataset: str,
    split: str,
    base: Path,
    image_sub: str,
    labels: dict[str, tuple[bool, str]],
) -> tuple[list[tuple[str, Path, dict[str, Path]]], list[Problem]]:
    """Pair the images of ``base/image_sub`` with files of the same stem in each label folder.

    Args:
        dataset: dataset name for messages ("ROSE-1 SVC", "ROSSA", ...).
        split: split name, attached to every problem.
        base: the split folder (e.g. ``ROSE-1/SVC/train``).
        image_sub: image subfolder name ("img", "original", "image").
        labels: label subfolder name -> ``(required, note)``. A required folder that is missing
            is an error (``note`` is appended to the message); an optional one is skipped. A label
            folder that exists must hold a label for every image and no label without an image.

    Returns:
        ``(items, problems)``: ``(stem, image, {label subfolder: file})`` for every image whose
        labels were all found, in natural order; and every problem (missing folder, empty image
        folder, and what :func:`~medseg.data.records.pair_files` finds: duplicate stems such as
        ``01.tif`` beside ``01.png``, image without label, label without image), each naming its
        file. Nothing is decoded.
    """
    problems: list[Problem] = []
    img_dir = base / image_sub
    if not img_dir.is_dir():
        return [], [Problem(img_dir, f"{dataset} image folder {img_dir} is missing", split=split)]
    images = list_files(img_dir, is_image_file)
    if not images:
        others = sorted(p.name for p in img_dir.iterdir() if not p.name.startswith("."))[:5]
        extra = f" (it holds only: {', '.join(others)})" if others else ""
        return [], [Problem(img_dir, f"{dataset} image folder {img_dir} holds no images{extra}", split=split)]

    label_sets: dict[str, list[Path]] = {}  # "label (gt)" -> files: the set names the messages use
    expected: dict[str, Any] = {}
    sub_of: dict[str, str] = {}
    for sub, (required, note) in labels.items():
        d = base / sub
        if not d.is_dir():
            if required:
                problems.append(Problem(d, f"{dataset} label folder {d} is missing{note}", split=split))
                return [], problems
            continue
        what = f"label ({sub})"
        label_sets[what], sub_of[what] = list_files(d, is_image_file), sub
        expected[what] = lambda stem, d=d: f"{d / stem}.<ext> (same name stem as the image)"
    paired, problems = pair_files(
        images, label_sets, expected=expected, expected_image=lambda stem: f"{img_dir / stem}.<ext>", split=split
    )
    items = [(stem, img, {sub_of[what]: p for what, p in found.items()}) for stem, img, found in paired]
    items.sort(key=lambda t: natural_key(t[0]))
    return items, problems


def _read_label(path: Path, image_path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
    """Read and binarise one label file and check it has the image's size.

    Returns:
        uint8 ``(H, W)`` in {0, 1}.

    Raises:
        DataError: missing/unreadable/non-binary file, or a size other than the image's (both
            files named).
    """
    lab = read_mask(path)
    if lab.shape != shape:
        raise DataError(f"{what} {path} is {size_text(lab.shape)} but image {image_path} is {size_text(shape)}")
    return lab


def _read_octa_case(record: Record, meta: dict[str, Any]) -> Case:
    """Decode an OCTA record: the image as stored, its mask and (if any) centerline label.

    Returns:
        A raw Case: ``image`` float32 ``(C, H, W)`` with the stored values (0..255 for the 8-bit
        files of these datasets; C = 1 for grey, 3 for a colour file), ``mask`` uint8 ``(H, W)``
        {0, 1} from ``record.mask``, ``centerline`` uint8 {0, 1} from ``record.centerline`` or
        None, ``fov`` all True, ``display`` the image as uint8, ``meta`` = ``meta`` plus
        ``fov="none"``.

    Raises:
        DataError: unreadable/corrupt image, missing/unreadable/non-binary label, a label whose
            size differs from the image's. The message names the file(s).
    """
    raw = read_image(record.image)
    hw = (int(raw.shape[0]), int(raw.shape[1]))
    if record.mask is None:
        raise DataError(f"image {record.image} has no label file")
    mask = _read_label(record.mask, record.image, hw, "label")
    centerline = None
    if record.centerline is not None:
        if record.centerline == record.mask:
            centerline = mask.copy()
        else:
            centerline = _read_label(record.centerline, record.image, hw, "centerline label")
    image = (raw[None] if raw.ndim == 2 else np.moveaxis(raw, -1, 0)).astype(np.float32)
    return Case(
        id=record.id,
        image=image,
        mask=mask,
        fov=np.ones(hw, dtype=bool),
        display=to_display(raw),
        path=str(record.image),
        centerline=centerline,
        patient=record.patient,
        num_classes=2,
        meta={"fov": "none", **meta},
    )


def _choice(dataset: str, option: str, value: Any, choices: Sequence[str]) -> None:
    """Raise ConfigError unless ``value`` is one of ``choices`` (closest suggested)."""
    if value not in choices:
        hint = did_you_mean(str(value), choices)
        raise ConfigError(
            f"{dataset} option {option} must be one of {', '.join(map(repr, choices))}, got {value!r}{hint}"
        )


class _OctaDataset(FileDataset):
    """Shared parts of the OCTA loaders: default pipeline, split folders, reading.

    Subclasses set ``split_folders`` (split name -> folder name under the dataset root),
    ``image_sub`` and ``label_sub`` and may override :meth:`find`.
    """

    protocol = "octa"

    default_preprocess = OCTA_PREPROCESS
    split_folders: dict[str, str] = {}
    image_sub: str = "image"
    label_sub: str = "label"
    #: Label level of ``Case.mask`` ("pixel" or "centerline").
    label_level: str = PIXEL

    @classmethod
    def looks_like_root(cls, path: Path) -> bool:
        return any((path / f).is_dir() for f in cls.split_folders.values())

    @classmethod
    def check_split(cls, split: str, opts: dict[str, Any]) -> None:
        cls.check_options(opts)

    @classmethod
    def check_options(cls, opts: dict[str, Any]) -> None:
        """Refuse invalid option values (ConfigError). Default: nothing to check."""

    @classmethod
    def _split_items(cls, root: Path, name: str, labels: dict[str, tuple[bool, str]]):
        """Pair every split folder present; a missing split folder is a warning, none at all an
        error."""
        out: list[tuple[str, tuple[str, Path, dict[str, Path]]]] = []
        problems: list[Problem] = []
        present = 0
        for split, word in cls.split_folders.items():
            base = root / word
            if not base.is_dir():
                problems.append(
                    Problem(
                        base,
                        f"{name} split folder {base} is missing: split {split!r} is not available",
                        severity="warning",
                        split=split,
                    )
                )
                continue
            present += 1
            items, probs = _pair_folder(name, split, base, cls.image_sub, labels)
            out += [(split, it) for it in items]
            problems += probs
        if not present:
            problems.append(
                Problem(
                    root,
                    f"{name} folder {root} holds none of the split folders "
                    f"{', '.join(cls.split_folders.values())} (expected {cls.layout})",
                )
            )
        return out, problems

    @classmethod
    def find(cls, root: Path, opts: dict[str, Any]) -> Inventory:
        cls.check_options(opts)
        items, problems = cls._split_items(root, cls.folder, {cls.label_sub: (True, "")})
        records = [
            Record(stem, split, img, mask=labs[cls.label_sub], extra={"label_level": cls.label_level})
            for split, (stem, img, labs) in items
        ]
        present = [w + "/" for w in cls.split_folders.values() if (root / w).is_dir()]
        return Inventory(cls.dataset_name, root, records, problems, split_source=f"layout ({', '.join(present)})")

    @classmethod
    def read(cls, record: Record, opts: dict[str, Any]) -> list[Case]:
        meta = {"label_level": record.extra.get("label_level", cls.label_level)}
        return [_read_octa_case(record, meta)]


# --------------------------------------------------------------------------- ROSE-1

ROSE1_LAYERS = ("SVC", "DVC", "SVC_DVC")
ROSE1_LABELS = ("gt", "thick_gt", "thin_gt")

#: Per layer: the level of ``gt`` and the folder holding the manual centerline-level label.
_ROSE1_GT_LEVEL = {"SVC": PIXEL, "DVC": CENTERLINE, "SVC_DVC": PIXEL}
_ROSE1_LEVEL = {"thick_gt": PIXEL, "thin_gt": CENTERLINE}
_ON_REQUEST = (
    " (the SVC+DVC thick/thin labels are not in the public ROSE-1 release; the ROSE authors "
    "send them on request, OCTA-Net issue #14)"
)


@register_dataset("rose1")
class Rose1Dataset(_OctaDataset):
    """ROSE-1 (Ma et al., "ROSE: A Retinal OCT-Angiography Vessel Segmentation Dataset and New
    Model", IEEE TMI 40(3):928-939, 2021): 117 en-face OCTA images, 304x304 (3x3 mm, fovea
    centred), of 39 subjects, one image per subject in each of three layers: SVC (superficial
    vascular complex), DVC (deep vascular complex) and SVC+DVC (inner retina).

    Layout (as released; per layer the split is the folders, 30 train / 9 test subjects)::

        ROSE-1/SVC/{train,test}/img/<id>.tif          en-face image
        ROSE-1/SVC/{train,test}/gt/<id>.tif           pixel-level vessel label
        ROSE-1/SVC/{train,test}/thick_gt/<id>.tif     pixel-level label of the thick vessels
        ROSE-1/SVC/{train,test}/thin_gt/<id>.tif      centerline-level label
        ROSE-1/DVC/{train,test}/{img,gt}/<id>.tif     gt = centerline-level label
        ROSE-1/SVC_DVC/{train,test}/{img,gt}/<id>.tif gt = pixel-level label

    Files are paired by name stem (``.tif`` and ``.png`` both accepted).

    Where this comes from: the folder names ``train|test/img|gt|thin_gt|thick_gt`` are the ones
    read by the authors' ``code/OCTA-Net/octa_dataset.py`` (class ``ROSE``, which uses ``img`` and
    ``gt``); the layer folder names ``SVC``, ``DVC``, ``SVC_DVC`` and the file types (``.tif``,
    ``.png``) are those of third-party loaders of the released data (OCTAve's ``interfaces/rose.py``;
    klee232/adp-3-human-retina-python ``data_rose_1_loader.py``, which reads ``*.tif`` everywhere and
    finds thick/thin folders only under SVC). The authors' ``readme.txt`` names the layers SCC, DCC
    and WRCC (an earlier naming of SVC, DVC, SVC+DVC). Level of each label: the evaluation code
    applies the 3x3 centerline tolerance to "DCC & ROSE-2" only, and the authors answer a DVC
    question with "tolerance region around the manually traced centerlines" (OCTA-Net issue #12),
    so DVC ``gt`` is centerline-level and SVC / SVC+DVC ``gt`` pixel-level; ``thick_gt`` and
    ``thin_gt`` are the pixel-level (thick-vessel) and centerline-level (thin-vessel) targets of
    OCTA-Net's two coarse branches. Only SVC ships them; the SVC+DVC ones are sent on request
    (OCTA-Net issue #14) and are used when present. Not verified on the data itself (ROSE is not
    available here); one third-party loader calls SVC ``gt`` a "mixed" label.

    Args:
        root: the ``ROSE-1`` folder, a folder holding ``ROSE-1/``, or one layer folder (e.g.
            ``ROSE-1/SVC``, as OCTA-Net's ``--data_dir``; its name must match ``layer``); None uses
            ``$MEDSEG_DATA/ROSE-1``.
        split: "train" or "test".
        layer: "SVC" (default), "DVC" or "SVC_DVC".
        label: the folder that fills ``Case.mask``: "gt" (default), "thick_gt" or "thin_gt"
            (SVC, and SVC_DVC when the requested labels are present). For OCTA-Net's coarse stage
            use ``label="thick_gt"``: ``mask`` is then the thick target and ``centerline`` the
            thin target.
        preprocess, split_file, centerline: see :class:`~medseg.data.files.FileDataset`.

    Cases: ``id`` the file stem (e.g. "01"); ``patient`` the same stem: the file names carry
    no other subject code, each layer holds one image per subject, and the same number across
    SVC/DVC/SVC_DVC is taken to be the same subject (an assumption of medseg, stated here);
    ``image`` float32 (1, 304, 304) in [0, 1] (default ``[gray, minmax]``); ``mask`` uint8
    (304, 304) {0, 1}; ``centerline`` uint8 {0, 1}, the *manual* centerline-level label:
    ``thin_gt`` for SVC and SVC_DVC (when shipped), ``gt`` for DVC (there ``mask`` and
    ``centerline`` are the same label); it need not lie inside ``mask``. ``meta``:
    ``layer``, ``label`` (folder of the mask), ``label_level`` ("pixel" or "centerline": use the
    3x3 tolerance when scoring centerline-level masks), ``centerline_source`` (folder or None).

    Raises:
        ConfigError: unknown split, layer or label, or a thick/thin label asked for DVC.
        DataError: missing folders, images without labels and labels without images (all
            listed, each with its file), then the first unreadable image, non-binary label or
            label whose size differs from its image's.
    """

    dataset_name = "rose1"
    folder = "ROSE-1"
    layout = "ROSE-1/{SVC,DVC,SVC_DVC}/{train,test}/{img,gt[,thick_gt,thin_gt]}/<id>.tif|.png"
    splits = ("train", "test")
    split_folders = {"train": "train", "test": "test"}
    image_sub = "img"
    option_defaults = {"layer": "SVC", "label": "gt"}

    @classmethod
    def looks_like_root(cls, path: Path) -> bool:
        return any((path / layer).is_dir() for layer in ROSE1_LAYERS)

    @classmethod
    def check_options(cls, opts: dict[str, Any]) -> None:
        _choice("ROSE-1", "layer", opts["layer"], ROSE1_LAYERS)
        _choice("ROSE-1", "label", opts["label"], ROSE1_LABELS)
        if opts["layer"] == "DVC" and opts["label"] != "gt":
            raise ConfigError(
                f"ROSE-1 DVC has only the centerline-level 'gt' label; label={opts['label']!r} "
                "exists for SVC (and SVC_DVC on request)"
            )

    @classmethod
    def find(cls, root: Path, opts: dict[str, Any]) -> Inventory:
        cls.check_options(opts)
        layer, label = opts["layer"], opts["label"]
        layer_dir = root / layer
        problems: list[Problem] = []
        if not layer_dir.is_dir():
            if root.name in ROSE1_LAYERS and ((root / "train").is_dir() or (root / "test").is_dir()):
                if root.name != layer:
                    problems.append(
                        Problem(
                            root,
                            f"folder {root} is the ROSE-1 {root.name} layer but layer={layer!r}; "
                            f"pass layer={root.name!r} or the ROSE-1 folder",
                        )
                    )
                    return Inventory(cls.dataset_name, root, [], problems)
                layer_dir = root
            else:
                present = [p.name for p in sorted(root.iterdir()) if p.is_dir()][:6] if root.is_dir() else []
                problems.append(
                    Problem(
                        layer_dir,
                        f"ROSE-1 layer folder {layer_dir} is missing ({root} holds: "
                        f"{', '.join(present) or 'nothing'}; expected {cls.layout})",
                    )
                )
                return Inventory(cls.dataset_name, root, [], problems)
        # Label folders: gt always; thick_gt/thin_gt where the layer has them (SVC ships both,
        # SVC_DVC only on request, DVC none). The one chosen for the mask is required.
        labels: dict[str, tuple[bool, str]] = {"gt": (label == "gt", "")}
        if layer != "DVC":
            note = _ON_REQUEST if layer == "SVC_DVC" else ""
            for sub in ("thick_gt", "thin_gt"):
                labels[sub] = (label == sub, note)
        items: list[tuple[str, tuple[str, Path, dict[str, Path]]]] = []
        present = 0
        for split in cls.split_folders:
            base = layer_dir / split
            if not base.is_dir():
                problems.append(
                    Problem(
                        base,
                        f"ROSE-1 {layer} split folder {base} is missing: split {split!r} is not available",
                        severity="warning",
                        split=split,
                    )
                )
                continue
            present += 1
            got, probs = _pair_folder(f"ROSE-1 {layer}", split, base, "img", labels)
            if layer == "SVC" and got:
                for sub in ("thick_gt", "thin_gt"):
                    if not (base / sub).is_dir():
                        probs.append(
                            Problem(
                                base / sub,
                                f"ROSE-1 SVC label folder {base / sub} is missing "
                                "(the release ships it; cases get no manual "
                                + ("centerline)" if sub == "thin_gt" else "thick label)"),
                                severity="warning",
                                split=split,
                            )
                        )
            items += [(split, it) for it in got]
            problems += probs
        if not present:
            problems.append(Problem(layer_dir, f"ROSE-1 {layer} folder {layer_dir} has neither 'train' nor 'test'"))
        records: list[Record] = []
        for split, (stem, img, labs) in items:
            level = _ROSE1_GT_LEVEL[layer] if label == "gt" else _ROSE1_LEVEL[label]
            cl_sub = "gt" if layer == "DVC" else ("thin_gt" if "thin_gt" in labs else None)
            extra: dict[str, Any] = {k: v for k, v in labs.items()}
            extra.update(layer=layer, label=label, label_level=level, centerline_source=cl_sub)
            records.append(
                Record(
                    stem,
                    split,
                    img,
                    mask=labs[label],
                    centerline=labs.get(cl_sub) if cl_sub else None,
                    patient=stem,
                    extra=extra,
                )
            )
        return Inventory(
            cls.dataset_name, root, records, problems, split_source=f"layout ({layer}/train, {layer}/test)"
        )

    @classmethod
    def read(cls, record: Record, opts: dict[str, Any]) -> list[Case]:
        meta = {k: record.extra.get(k) for k in ("layer", "label", "label_level", "centerline_source")}
        return [_read_octa_case(record, meta)]


# --------------------------------------------------------------------------- ROSE-2


def resize_centerline(label: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize a 1-px centerline label without breaking it: footprint mapping, then thinning.

    Nearest-neighbour resampling keeps only the input rows/columns it samples, so shrinking
    840 -> 512 drops about 39 % of them: a horizontal 1-px line on a dropped row vanishes, and
    oblique lines fall apart into dashes. Instead every foreground input pixel marks each output
    pixel its footprint overlaps (for shrinking: the output pixel(s) its area falls in), which
    maps an 8-connected line to an 8-connected band one or two pixels wide, and the band is then
    thinned back to one pixel with scikit-image ``skeletonize`` (which preserves connectivity).

    Args:
        label: ``(H, W)`` centerline label, foreground > 0.
        size: output ``(h, w)``.

    Returns:
        uint8 ``(h, w)`` in {0, 1}: a 1-px, 8-connected centerline; every 8-connected component
        of the input stays one component (isolated pixels stay single pixels).
    """
    from skimage.morphology import skeletonize

    lab = np.asarray(label) > 0
    H, W = lab.shape
    h, w = int(size[0]), int(size[1])
    out = np.zeros((h, w), dtype=bool)
    rr, cc = np.nonzero(lab)
    if rr.size:
        r0, r1 = (rr * h) // H, -((-(rr + 1) * h) // H)  # first output row, last + 1 (ceil)
        c0, c1 = (cc * w) // W, -((-(cc + 1) * w) // W)
        for dr in range(int((r1 - r0).max())):
            for dc in range(int((c1 - c0).max())):
                keep = (r0 + dr < r1) & (c0 + dc < c1)
                out[r0[keep] + dr, c0[keep] + dc] = True
    return skeletonize(out).astype(np.uint8)


def _size_option(value: Any) -> tuple[int, int] | None:
    """``size`` option: None, an int, or [H, W] -> (H, W) or None. Raises ConfigError."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"ROSE-2 option size must be None, an int or [H, W], got {value!r}")
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"ROSE-2 option size must be None, an int or [H, W], got {value!r}") from None
    if h < 1 or w < 1:
        raise ConfigError(f"ROSE-2 option size must be positive, got {value!r}")
    return h, w


@register_dataset("rose2")
class Rose2Dataset(_OctaDataset):
    """ROSE-2 (Ma et al., IEEE TMI 2021, see :class:`Rose1Dataset`): 112 en-face OCTA images of
    the SVC, 840x840 (3x3 mm; Heidelberg Spectralis), with manual centerline-level vessel
    labels only; split by the folders (90 train / 22 test).

    Layout (as released)::

        ROSE-2/{train,test}/original/<id>.png   en-face image
        ROSE-2/{train,test}/gt/<id>.png         centerline-level vessel label

    Where this comes from: ``original`` and ``gt`` are the folders the authors' loader reads for
    ROSE-2 (``code/OCTA-Net/octa_dataset.py``, class ``CRIA``; ``readme.txt``: "ROSE-2:
    --dataset cria --data_dir ../../data/ROSE-2"); ``.png`` files per a third-party loader of the
    released data (klee232/adp-3-human-retina-python ``data_rose_2_loader.py``). Files are paired by
    name stem (any image extension).

    **Size.** OCTA-Net cannot run at 840x840 (its decoder fails on that size) and its options
    default to ``scale_size`` 512, so this loader resizes to ``size`` (default 512x512) while
    reading, before the pipeline; ``size=None`` keeps 840x840. The image is resized bilinearly
    with anti-aliasing (the ``resize`` step of :mod:`medseg.data.transforms.preprocess`). The label is
    *not* resized nearest-neighbour: that keeps 512 of 840 rows and columns and breaks 1-px
    centerlines into dashes (whole horizontal lines vanish); :func:`resize_centerline` maps each
    label pixel to the output pixels its footprint covers and thins the result back to one
    pixel, so every traced vessel stays one connected 1-px line. Resizing later with the
    pipeline's ``resize`` step (nearest) would break it again: change ``size`` instead.

    Args:
        root: the ``ROSE-2`` folder (or one holding ``ROSE-2/``); None uses ``$MEDSEG_DATA/ROSE-2``.
        split: "train" or "test".
        size: output size: 512 (default), [H, W], or None (native size).
        preprocess, split_file, centerline: see :class:`~medseg.data.files.FileDataset`.

    Cases: ``id`` the file stem; ``patient`` None (the file names carry no subject code, so
    each image counts as its own patient); ``image`` float32 (1, 512, 512) in [0, 1];
    ``mask`` and ``centerline`` the same uint8 (512, 512) {0, 1} centerline label (ROSE-2 has no
    pixel-level label; score it with the 3x3 tolerance); ``meta``: ``label_level="centerline"``,
    ``native_size`` (H, W) of the file, ``label_resize`` (how the label was resized, or None).

    Raises:
        ConfigError: unknown split, bad ``size``.
        DataError: as :class:`Rose1Dataset`.
    """

    dataset_name = "rose2"
    folder = "ROSE-2"
    layout = "ROSE-2/{train,test}/{original,gt}/<id>.png"
    splits = ("train", "test")
    split_folders = {"train": "train", "test": "test"}
    image_sub = "original"
    label_sub = "gt"
    label_level = CENTERLINE
    option_defaults = {"size": 512}

    @classmethod
    def check_options(cls, opts: dict[str, Any]) -> None:
        _size_option(opts["size"])

    @classmethod
    def find(cls, root: Path, opts: dict[str, Any]) -> Inventory:
        inv = super().find(root, opts)
        for r in inv.records:
            r.centerline = r.mask  # the label is the centerline
        return inv

    @classmethod
    def read(cls, record: Record, opts: dict[str, Any]) -> list[Case]:
        from medseg.data.transforms.preprocess import resize

        case = _read_octa_case(record, {"label_level": CENTERLINE, "label_resize": None})
        case.meta["native_size"] = case.shape
        size = _size_option(opts["size"])
        if size is None or size == case.shape:
            return [case]
        label = resize_centerline(case.mask, size)
        small = resize(case, size)
        small.mask = label
        small.centerline = label.copy()
        small.meta = {**case.meta, "label_resize": "footprint mapping + skeletonize (resize_centerline)"}
        return [small]


# --------------------------------------------------------------------------- ROSSA


@register_dataset("rossa")
class RossaDataset(_OctaDataset):
    """ROSSA (H. Ning, C. Wang, X. Chen, S. Li, "An Accurate and Efficient Neural Network for
    OCTA Vessel Segmentation and a New Dataset", ICASSP 2024, arXiv:2309.09483; data in GitHub
    ``nhjydywd/OCTA-FRNet``, MIT licence): OCTA en-face images, 320x320 grey PNG, with
    pixel-level vessel labels {0, 255}.

    Layout (as released)::

        ROSSA/train_manual/{image,label}/1.png .. 100.png     manual labels
        ROSSA/val/{image,label}/101.png .. 200.png
        ROSSA/test/{image,label}/201.png .. 300.png
        ROSSA/train_sam/{image,label}/301.png .. 918.png      SAM-made labels (optional)

    Args:
        root: the ``ROSSA`` folder (or one holding ``ROSSA/``); None uses ``$MEDSEG_DATA/ROSSA``.
        split: "train" (``train_manual``), "val", "test", or "train_sam" when that folder is
            present (618 semi-automatic labels; absent from ``shared/data``).
        preprocess, split_file, centerline: see :class:`~medseg.data.files.FileDataset`.

    Cases: ``id`` "1".."300"; ``patient`` None (no subject information is released);
    ``image`` float32 (1, 320, 320) in [0, 1] (default ``[gray, minmax]``); ``mask`` uint8
    (320, 320) {0, 1}, ``label_level="pixel"``. No centerline ships: ``centerline=True`` gives
    the mask's skeleton as a substitute for manual centerlines.

    Raises:
        ConfigError: unknown split. DataError: as :class:`Rose1Dataset`.
    """

    dataset_name = "rossa"
    folder = "ROSSA"
    layout = "ROSSA/{train_manual,val,test}/{image,label}/<n>.png"
    splits = ("train", "val", "test", "train_sam")
    split_folders = {"train": "train_manual", "val": "val", "test": "test"}

    @classmethod
    def find(cls, root: Path, opts: dict[str, Any]) -> Inventory:
        inv = super().find(root, opts)
        if (root / "train_sam").is_dir():
            items, probs = _pair_folder("ROSSA", "train_sam", root / "train_sam", "image", {"label": (True, "")})
            inv.records += [
                Record(s, "train_sam", i, mask=labs["label"], extra={"label_level": PIXEL}) for s, i, labs in items
            ]
            inv.problems += probs
        return inv


# --------------------------------------------------------------------------- OCTA-500


@register_dataset("octa500")
class Octa500Dataset(_OctaDataset):
    """OCTA-500, 3 mm x 3 mm subset (M. Li et al., "OCTA-500: A retinal dataset for optical
    coherence tomography angiography study", Medical Image Analysis 93:103092, 2024,
    arXiv:2012.07261), in the repackaging of GitHub ``nhjydywd/OCTA-FRNet``: en-face projections,
    304x304 8-bit BMP, with vessel labels {0, 255} (large vessels; see ``shared/data/OCTA500_3M/
    SOURCE.md``).

    Layout::

        OCTA500_3M/train/{image,label}/10301.bmp .. 10440.bmp   140
        OCTA500_3M/val/{image,label}/10441.bmp .. 10450.bmp      10
        OCTA500_3M/test/{image,label}/10451.bmp .. 10500.bmp     50

    The splits are the split folders that are present (the copy in ``shared/data`` has only
    ``test``); a missing one is reported as a warning by ``medseg data check``. The same
    repository's ``OCTA500_6M`` (400x400) has the same layout: pass its folder as ``root``.

    Args:
        root: the ``OCTA500_3M`` folder (or one holding it); None uses ``$MEDSEG_DATA/OCTA500_3M``.
        split: "train", "val" or "test" (when present).
        preprocess, split_file, centerline: see :class:`~medseg.data.files.FileDataset`.

    Cases: ``id`` the OCTA-500 subject number ("10451"); ``patient`` None: OCTA-500 has one
    image per subject, so each image is its own patient; ``image`` float32 (1, 304, 304) in
    [0, 1]; ``mask`` uint8 (304, 304) {0, 1}, ``label_level="pixel"``. No centerline ships:
    ``centerline=True`` gives the mask's skeleton as a substitute.

    Raises:
        ConfigError: unknown or absent split. DataError: as :class:`Rose1Dataset`.
    """

    dataset_name = "octa500"
    folder = "OCTA500_3M"
    layout = "OCTA500_3M/{train,val,test}/{image,label}/<subject>.bmp"
    splits = ("train", "val", "test")
    split_folders = {"train": "train", "val": "val", "test": "test"}


__all__ = [
    "OCTA_PREPROCESS",
    "Rose1Dataset",
    "Rose2Dataset",
    "RossaDataset",
    "Octa500Dataset",
    "resize_centerline",
]
