"""3-D volumes as 2-D (or 2.5-D) slice datasets: ``msd`` (NIfTI) and ``dicom`` (DICOM series).

Both datasets read each volume once, normalise its intensities over the **whole volume**
(:func:`medseg.data.transforms.intensity.normalize_intensity`: HU window for CT, 0.5-99.5 percentile window
for MR by default), then cut it into slices along one array axis. Each slice becomes a
:class:`~medseg.data.base.Case`:

- ``id`` ``"<volume>:z017"`` (axis letter x/y/z for array axis 0/1/2, slice index zero-padded
  to at least three digits), ``patient`` the volume (``msd``) or the DICOM PatientID (``dicom``);
- ``image`` float32 ``(C, H, W)`` with C = 2 * context + 1 adjacent slices as channels (2.5-D
  input as in H-DenseUNet, Li et al., IEEE TMI 2018; C = 1 for plain 2-D); slices beyond the
  volume's ends repeat the border slice; the middle channel is the slice itself. H and W are the
  two remaining array axes in order (axis 2 -> ``(I, J)``);
- ``mask`` uint8 ``(H, W)`` class indices of the middle slice; ``fov`` all True;
- ``display`` uint8 ``(H, W)``: the normalised slice on the volume's common 0..255 grey scale;
- ``meta`` ``{"volume": path, "slice": k, "axis": a, "affine": (4, 4) array, "spacing": mm per
  array axis, "shape": volume shape, "context": c, "modality": ..., "label": label path}``.

With the option ``spatial_dims: 3`` each volume is instead **one** volume case (the 3-D
training path of the 3-D networks, e.g. ``dscnet3d``, ``unet3d``): image float32 ``(1, I, J, K)``,
mask and display ``(I, J, K)``, id = the volume id (:func:`whole_volume_case`).

Splits are drawn over **patients** (seeded; ``test_fraction``, ``val_fraction``, ``seed``), so
no patient has slices in two splits; a ``split_file`` (ids = volume ids, e.g.
``"hippocampus_001"``, or series folder names) replaces the draw. The default preprocessing
pipeline is empty (intensity is handled per volume); a recipe may add e.g. ``resize``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.base import Case, register_dataset
from medseg.data.files import FileDataset
from medseg.data.io.dicom import dicom_patient_id, read_dicom_series
from medseg.data.io.nifti import (
    affine_text,
    canonical_modality,
    is_nifti_file,
    nifti_stem,
    read_label_nifti,
    read_nifti,
    same_affine,
)
from medseg.data.records import Inventory, Problem, Record, list_files, natural_key, seeded_split
from medseg.data.transforms.intensity import normalize_intensity, parse_intensity, to_display_volume
from medseg.errors import ConfigError, DataError

AXIS_LETTERS = "xyz"

#: Options shared by the volume datasets.
VOLUME_OPTIONS: dict[str, Any] = {
    "slice_axis": 2,
    "spatial_dims": 2,
    "context": 0,
    "skip_empty": False,
    "classes": "all",
    "num_classes": None,
    "intensity": "auto",
    "modality": None,
    "test_fraction": 0.2,
    "val_fraction": 0.0,
    "seed": 0,
}


# --------------------------------------------------------------------------------- slicing


def slice_stacks(volume: np.ndarray, axis: int = 2, context: int = 0) -> np.ndarray:
    """All 2.5-D slice stacks of a volume.

    Args:
        volume: ``(I, J, K)`` array.
        axis: the array axis to slice along (0, 1 or 2).
        context: slices on each side of the centre slice (0 = plain 2-D).

    Returns:
        ``(N, 2 * context + 1, H, W)`` (same dtype, a new contiguous array), N = the size of
        ``axis``, ``(H, W)`` the other two axes in order. Stack ``k`` holds slices
        ``k - context .. k + context``, indices clipped to ``0 .. N - 1`` (border slices
        repeated); channel ``context`` is slice ``k`` itself.
    """
    v = np.moveaxis(np.asarray(volume), axis, 0)
    n = v.shape[0]
    idx = np.clip(np.arange(n)[:, None] + np.arange(-context, context + 1)[None, :], 0, n - 1)
    return np.ascontiguousarray(v[idx])


def slice_id(volume_id: str, axis: int, k: int, n: int) -> str:
    """``("hippocampus_001", 2, 17, 36)`` -> ``"hippocampus_001:z017"``."""
    width = max(3, len(str(max(n - 1, 0))))
    return f"{volume_id}:{AXIS_LETTERS[axis]}{k:0{width}d}"


def volume_cases(
    record: Record,
    image: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    spacing: tuple[float, float, float],
    modality: str | None,
    opts: dict[str, Any],
) -> list[Case]:
    """Normalise one volume and cut it into slice cases (see the module docstring).

    Args:
        record: the volume's record (id, split, patient, image and mask paths; ``extra`` may
            hold ``num_classes``).
        image: float32 ``(I, J, K)`` stored values; labels: uint8 ``(I, J, K)`` class indices.
        affine, spacing, modality: the volume's geometry and modality ("CT"/"MR"/None).
        opts: dataset options (``slice_axis``, ``context``, ``skip_empty``, ``classes``,
            ``num_classes``, ``intensity``).

    Returns:
        One Case per slice (``skip_empty`` drops slices without foreground, on the "train" split
        only).

    Raises:
        DataError: label values >= the number of classes (naming the label file).
    """
    axis = int(opts["slice_axis"]) % 3
    context = int(opts["context"])
    if opts["classes"] == "binary":
        labels = (labels > 0).astype(np.uint8)
        num_classes = 2
    else:
        num_classes = int(record.extra.get("num_classes") or opts["num_classes"] or max(2, int(labels.max()) + 1))
        top = int(labels.max()) if labels.size else 0
        if top >= num_classes:
            raise DataError(
                f"label {record.mask} has class value {top} but the dataset has {num_classes} classes "
                f"(0..{num_classes - 1}; {record.extra.get('classes_from', 'option num_classes')}); "
                "set num_classes or classes='binary'"
            )
    norm = normalize_intensity(image, opts["intensity"], modality)
    if int(opts["spatial_dims"]) == 3:
        return [whole_volume_case(record, norm, labels, affine, spacing, modality, num_classes)]
    stacks = slice_stacks(norm, axis, context)
    masks = slice_stacks(labels, axis, 0)[:, 0]
    display = slice_stacks(to_display_volume(norm), axis, 0)[:, 0]
    n = stacks.shape[0]
    keep = range(n)
    if opts["skip_empty"] and record.split == "train":
        keep = [k for k in range(n) if masks[k].any()]
    path = str(record.image)
    cases: list[Case] = []
    for k in keep:
        cases.append(
            Case(
                id=slice_id(record.id, axis, k, n),
                image=stacks[k],
                mask=masks[k],
                fov=np.ones(masks.shape[1:], dtype=bool),
                display=display[k],
                path=path,
                patient=record.group,
                num_classes=num_classes,
                meta={
                    "volume": path,
                    "slice": k,
                    "axis": axis,
                    "affine": affine,
                    "spacing": tuple(spacing),
                    "shape": tuple(image.shape),
                    "context": context,
                    "modality": modality,
                    "label": str(record.mask) if record.mask is not None else None,
                },
            )
        )
    return cases


def whole_volume_case(
    record: Record,
    norm: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    spacing: tuple[float, float, float],
    modality: str | None,
    num_classes: int,
) -> Case:
    """One normalised volume as a volume case (``spatial_dims: 3``, the 3-D training path).

    Args:
        record: the volume's record; its id is the case id (e.g. ``"hippocampus_001"``).
        norm: float32 ``(I, J, K)`` intensities after :func:`normalize_intensity`.
        labels: uint8 ``(I, J, K)`` class indices.
        affine, spacing, modality: the volume's geometry (mm) and modality.
        num_classes: classes including background.

    Returns:
        A :class:`Case` with image ``(1, I, J, K)``, mask, fov (all True) and display ``(I, J, K)``
        in the volume's array order, and the meta of a slice case with ``slice`` and ``axis``
        None (the case is the whole volume).
    """
    path = str(record.image)
    return Case(
        id=record.id,
        image=np.ascontiguousarray(norm[None], dtype=np.float32),
        mask=np.ascontiguousarray(labels),
        fov=np.ones(labels.shape, dtype=bool),
        display=to_display_volume(norm),
        path=path,
        patient=record.group,
        num_classes=num_classes,
        meta={
            "volume": path,
            "slice": None,
            "axis": None,
            "affine": affine,
            "spacing": tuple(spacing),
            "shape": tuple(norm.shape),
            "context": 0,
            "modality": modality,
            "label": str(record.mask) if record.mask is not None else None,
        },
    )


# --------------------------------------------------------------------------------- base class


class VolumeDataset(FileDataset):
    """Shared machinery of the slice datasets (options, option checks, patient split, reading).

    Options (both datasets):
        slice_axis: array axis to slice along, 0, 1 or 2 (default 2, the last axis; for the MSD
            volumes, axial for CT and as stored for MR).
        spatial_dims: 2 (default: slice cases, the 2-D / 2.5-D networks) or 3 (one volume case
            per volume, :func:`whole_volume_case`, for the 3-D networks; ``context`` must be 0 and
            ``slice_axis`` / ``skip_empty`` do not apply).
        context: 0 (default, 2-D, C = 1) or n > 0 for 2.5-D stacks of 2n + 1 adjacent slices.
        skip_empty: drop slices without foreground from the **"train" split only** (validation
            and test splits always keep every slice, so volume metrics stay whole). Default False.
        classes: "all" (default; label values as stored) or "binary" (labels > 0 -> 1, for the
            binary engine).
        num_classes: classes including background; None takes them from dataset.json "labels",
            else max label + 1 over all label volumes (read once while listing the folder).
        intensity: per-volume intensity handling (:func:`medseg.data.transforms.intensity.parse_intensity`):
            "auto" (default: hu_window 40/400 for CT, percentile 0.5-99.5 otherwise), "percentile",
            "hu_window", "zscore", "minmax", None, or ``{method: {options}}``.
        modality: "CT" / "MR" overrides the modality from dataset.json or the DICOM tag.
        test_fraction, val_fraction, seed: the seeded patient-level split (defaults 0.2, 0, 0);
            a "val" split exists only when val_fraction > 0.
    """

    protocol = "volume"

    splits = ("train", "val", "test")
    default_preprocess: tuple = ()
    option_defaults = dict(VOLUME_OPTIONS)

    @classmethod
    def validate_options(cls, opts: dict[str, Any]) -> None:
        """Raise ConfigError for an invalid option value (checked before any file is read)."""
        name = cls.dataset_name
        if opts["slice_axis"] not in (0, 1, 2, -1, -2, -3) or isinstance(opts["slice_axis"], bool):
            raise ConfigError(f"{name} slice_axis must be 0, 1 or 2 (an array axis), got {opts['slice_axis']!r}")
        if opts["spatial_dims"] not in (2, 3) or isinstance(opts["spatial_dims"], bool):
            raise ConfigError(
                f"{name} spatial_dims must be 2 (slices) or 3 (whole volumes), got {opts['spatial_dims']!r}"
            )
        if opts["spatial_dims"] == 3 and opts["context"]:
            raise ConfigError(
                f"{name} context={opts['context']!r} stacks adjacent slices for 2-D networks; with spatial_dims: 3 "
                "the network sees the whole volume, so context must be 0"
            )
        if not isinstance(opts["context"], int) or isinstance(opts["context"], bool) or opts["context"] < 0:
            raise ConfigError(f"{name} context must be an integer >= 0 (slices on each side), got {opts['context']!r}")
        if not isinstance(opts["skip_empty"], bool):
            raise ConfigError(f"{name} skip_empty must be true or false, got {opts['skip_empty']!r}")
        if opts["classes"] not in ("all", "binary"):
            raise ConfigError(f"{name} classes must be 'all' or 'binary', got {opts['classes']!r}")
        nc = opts["num_classes"]
        if nc is not None and (not isinstance(nc, int) or isinstance(nc, bool) or nc < 2):
            raise ConfigError(f"{name} num_classes must be an integer >= 2 (background included), got {nc!r}")
        parse_intensity(opts["intensity"])
        if opts["modality"] is not None and not isinstance(opts["modality"], str):
            raise ConfigError(f"{name} modality must be 'CT', 'MR' or similar, got {opts['modality']!r}")
        fr = {k: opts[k] for k in ("test_fraction", "val_fraction")}
        for k, v in fr.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise ConfigError(f"{name} {k} must be a number in [0, 1), got {v!r}")
        if sum(fr.values()) >= 1:
            raise ConfigError(f"{name} test_fraction + val_fraction must be < 1, got {sum(fr.values())}")
        if not isinstance(opts["seed"], int) or isinstance(opts["seed"], bool):
            raise ConfigError(f"{name} seed must be an integer, got {opts['seed']!r}")

    @classmethod
    def check_split(cls, split: str, opts: dict[str, Any]) -> None:
        cls.validate_options(opts)

    @classmethod
    def assign_splits(cls, records: list[Record], opts: dict[str, Any]) -> tuple[list[Record], str, list[Problem]]:
        """Give each record its split by a seeded draw over patients (``Record.group``).

        Returns:
            ``(records, split_source, problems)``; records are ordered train, val, test, each in
            natural id order.
        """
        fractions = {
            "train": 1.0 - opts["test_fraction"] - opts["val_fraction"],
            "val": opts["val_fraction"],
            "test": opts["test_fraction"],
        }
        fractions = {k: v for k, v in fractions.items() if v > 0}
        source = (
            f"seeded patient split (test_fraction={opts['test_fraction']}, "
            f"val_fraction={opts['val_fraction']}, seed={opts['seed']})"
        )
        if not records:
            return [], source, []
        try:
            by_group = seeded_split([r.group for r in records], fractions, seed=opts["seed"])
        except DataError as exc:
            return [], source, [Problem(records[0].image.parent, str(exc))]
        order = {name: i for i, name in enumerate(fractions)}
        for r in records:
            r.split = by_group[r.group]
        records.sort(key=lambda r: (order[r.split], natural_key(r.id)))
        return records, source, []

    @classmethod
    def scan_num_classes(cls, records: list[Record]) -> int:
        """max label + 1 over the records' label volumes (>= 2); unreadable labels are skipped
        here (reading them later reports them)."""
        top = 1
        for r in records:
            if r.mask is None:
                continue
            try:
                lab = read_label_nifti(r.mask)[0]
            except DataError:
                continue
            if lab.size:
                top = max(top, int(lab.max()))
        return top + 1

    @classmethod
    def set_classes(cls, records: list[Record], opts: dict[str, Any], from_json: int | None) -> None:
        """Store the class count (and where it came from) in every record's ``extra``."""
        if opts["classes"] == "binary":
            n, src = 2, "classes='binary'"
        elif opts["num_classes"] is not None:
            n, src = int(opts["num_classes"]), "option num_classes"
        elif from_json is not None:
            n, src = from_json, "dataset.json labels"
        else:
            n, src = cls.scan_num_classes(records), "max label + 1 over all label volumes"
        for r in records:
            r.extra["num_classes"] = n
            r.extra["classes_from"] = src


# --------------------------------------------------------------------------------- msd


_MSD_LAYOUT = (
    "dataset.json + imagesTr/ + labelsTr/ (Medical Segmentation Decathlon), or imagesTr/ + "
    "labelsTr/, or images/ + labels/, holding <case>.nii.gz volumes with equal names"
)


def _json_labels(meta: dict) -> int | None:
    """Class count from dataset.json "labels": MSD ``{"0": "background", ...}`` or nnU-Net v2
    ``{"background": 0, ...}``; None when absent or not understood."""
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        return None
    keys = list(labels)
    if all(str(k).strip().isdigit() for k in keys):
        return max(int(k) for k in keys) + 1
    vals = list(labels.values())
    if all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return max(vals) + 1
    return None


def _json_modalities(meta: dict) -> list[str]:
    mod = meta.get("modality", meta.get("channel_names"))
    if isinstance(mod, dict):
        return [str(mod[k]) for k in sorted(mod, key=lambda k: natural_key(str(k)))]
    if isinstance(mod, str):
        return [mod]
    return []


def _image_key(stem: str, label_keys: set[str]) -> str:
    """nnU-Net names images ``<case>_0000``; pair them with label ``<case>``."""
    if stem not in label_keys and stem.endswith("_0000") and stem[:-5] in label_keys:
        return stem[:-5]
    return stem


@register_dataset("msd")
class MsdDataset(VolumeDataset):
    """Medical Segmentation Decathlon style NIfTI volumes as 2-D / 2.5-D slices.

    Source: M. Antonelli et al., "The Medical Segmentation Decathlon", Nature Communications
    13:4128, 2022 (medicaldecathlon.com; CC BY-SA 4.0). The default folder
    ``Hippocampus_MSD_Task04`` is Task04 Hippocampus (260 labelled T2 MR crops, labels
    0 = background, 1 = anterior, 2 = posterior hippocampus).

    Layouts (the first that matches is used):

    1. ``dataset.json`` with a "training" list (``{"image": "./imagesTr/x.nii.gz", "label":
       "./labelsTr/x.nii.gz"}``) - the official MSD layout; its "labels" give the class count and
       its "modality" the intensity default (CT -> HU window). Files of imagesTr not listed are
       reported as warnings. A dataset.json listing several modalities (4-D volumes) is refused.
    2. ``imagesTr/`` + ``labelsTr/`` (no or partial dataset.json), paired by file name; nnU-Net
       image names ``<case>_0000.nii.gz`` pair with ``<case>.nii.gz``.
    3. ``images/`` + ``labels/`` (our copy of Task04 Hippocampus).

    Unlabelled volumes (``imagesTs/``) are not part of any split; predict them with
    :func:`medseg.inference.volume.predict_volume`. Each volume is its own patient.

    Args:
        root: the dataset folder (or its parent); None uses ``$MEDSEG_DATA/Hippocampus_MSD_Task04``.
        split: "train", "test" (or "val" with val_fraction > 0, or a split file's names).
        preprocess, split_file, centerline: see :class:`~medseg.data.files.FileDataset`.
        **options: see :class:`VolumeDataset` (slice_axis, context, skip_empty, classes,
            num_classes, intensity, modality, test_fraction, val_fraction, seed).

    Raises:
        ConfigError: an unknown option or an invalid option value.
        DataError: (all listed together) a missing layout, images without labels or labels
            without images, files listed in dataset.json but missing; then while reading, the
            first unreadable/truncated/4-D/NaN volume, a label whose shape or affine differs from
            its image (both files, shapes and affines named), label values that are not class
            indices or exceed the class count.
    """

    dataset_name = "msd"
    folder = "Hippocampus_MSD_Task04"
    layout = _MSD_LAYOUT

    @classmethod
    def looks_like_root(cls, path: Path) -> bool:
        return (path / "dataset.json").is_file() or (path / "imagesTr").is_dir() or (path / "images").is_dir()

    @classmethod
    def find(cls, root: Path, opts: dict[str, Any]) -> Inventory:
        cls.validate_options(opts)
        problems: list[Problem] = []
        meta: dict = {}
        js = root / "dataset.json"
        if js.is_file():
            try:
                meta = json.loads(js.read_text(encoding="utf-8"))
                if not isinstance(meta, dict):
                    raise ValueError("not a JSON object")
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                problems.append(Problem(js, f"cannot be read as JSON: {exc}"))
                return Inventory(cls.dataset_name, root, [], problems)
        modalities = _json_modalities(meta)
        if len(modalities) > 1:
            problems.append(
                Problem(
                    js,
                    f"lists {len(modalities)} modalities ({', '.join(modalities)}): multi-modal "
                    "4-D volumes are not supported; medseg reads one 3-D volume per file",
                )
            )
        modality = canonical_modality(opts["modality"] or (modalities[0] if modalities else None))
        pairs: list[tuple[str, Path, Path]] = []
        training = meta.get("training")
        if isinstance(training, list) and training:
            pairs, probs = cls._pairs_from_json(root, js, training)
            problems += probs
        else:
            for img_dir, lab_dir in (("imagesTr", "labelsTr"), ("images", "labels")):
                if (root / img_dir).is_dir():
                    pairs, probs = cls._pairs_from_folders(root / img_dir, root / lab_dir)
                    problems += probs
                    break
            else:
                problems.append(Problem(root, f"holds no MSD volumes; expected {_MSD_LAYOUT}"))
        records = [
            Record(key, "train", img, mask=lab, patient=key, extra={"modality": modality}) for key, img, lab in pairs
        ]
        cls.set_classes(records, opts, _json_labels(meta))
        records, source, probs = cls.assign_splits(records, opts)
        problems += probs
        return Inventory(cls.dataset_name, root, records, problems, split_source=source)

    @staticmethod
    def _pairs_from_json(root: Path, js: Path, training: list) -> tuple[list[tuple[str, Path, Path]], list[Problem]]:
        pairs: list[tuple[str, Path, Path]] = []
        problems: list[Problem] = []
        listed: set[Path] = set()
        seen: dict[str, Path] = {}
        for i, entry in enumerate(training):
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("image"), str)
                or not isinstance(entry.get("label"), str)
            ):
                problems.append(
                    Problem(js, f"training entry {i} must be {{'image': path, 'label': path}}, got {entry!r}")
                )
                continue
            img, lab = Path(os.path.normpath(root / entry["image"])), Path(os.path.normpath(root / entry["label"]))
            listed.add(img)
            missing = [p for p in (img, lab) if not p.is_file()]
            for p in missing:
                problems.append(Problem(p, f"listed in {js.name} (training entry {i}) but missing"))
            if missing:
                continue
            key = nifti_stem(img)
            if key in seen:
                problems.append(Problem(img, f"has the same id {key!r} as {seen[key]}"))
                continue
            seen[key] = img
            pairs.append((key, img, lab))
        img_dir = root / "imagesTr"
        if img_dir.is_dir():
            for p in list_files(img_dir, is_nifti_file):
                if Path(os.path.normpath(p)) not in listed:
                    problems.append(Problem(p, f"is not listed in {js.name} 'training'; ignored", severity="warning"))
        pairs.sort(key=lambda t: natural_key(t[0]))
        return pairs, problems

    @staticmethod
    def _pairs_from_folders(img_dir: Path, lab_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[Problem]]:
        if not lab_dir.is_dir():
            return [], [Problem(lab_dir, f"label folder is missing (images are in {img_dir}); expected {_MSD_LAYOUT}")]
        images = list_files(img_dir, is_nifti_file)
        labels = list_files(lab_dir, is_nifti_file)
        if not images:
            return [], [Problem(img_dir, "holds no .nii/.nii.gz volumes")]
        from medseg.data.records import pair_by_stem

        label_keys = {nifti_stem(p) for p in labels}
        pairs, problems = pair_by_stem(
            images,
            labels,
            image_key=lambda p: _image_key(nifti_stem(p), label_keys),
            label_key=nifti_stem,
            what="label",
        )
        return pairs, problems

    @classmethod
    def read(cls, record: Record, opts: dict[str, Any]) -> list[Case]:
        image, affine, _, spacing = read_nifti(record.image, "image")
        labels, laffine, _, _ = read_label_nifti(record.mask, "label")
        if labels.shape != image.shape:
            raise DataError(
                f"label {record.mask} has shape {labels.shape} but its image {record.image} has shape {image.shape}"
            )
        if not same_affine(laffine, affine):
            raise DataError(
                f"label {record.mask} has affine {affine_text(laffine)} but its image {record.image} has "
                f"affine {affine_text(affine)}: they are not on the same voxel grid"
            )
        modality = canonical_modality(opts["modality"]) or record.extra.get("modality")
        return volume_cases(record, image, labels, affine, spacing, modality, opts)


# --------------------------------------------------------------------------------- dicom


def reorient_like(labels: np.ndarray, label_affine: np.ndarray, affine: np.ndarray, shape: tuple) -> np.ndarray | None:
    """``labels`` flipped/transposed onto the voxel grid of (``affine``, ``shape``), or None when
    it is not the same grid in another axis order (e.g. a label converted with dcm2niix, which may
    flip the row axis, matched to medseg's DICOM array order)."""
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

    try:
        t = ornt_transform(io_orientation(label_affine), io_orientation(affine))
        out = apply_orientation(labels, t)
        new_aff = label_affine @ inv_ornt_aff(t, labels.shape)
    except Exception:
        return None
    if tuple(out.shape) == tuple(shape) and same_affine(new_aff, affine):
        return np.ascontiguousarray(out)
    return None


@register_dataset("dicom")
class DicomDataset(VolumeDataset):
    """DICOM series (one folder of single-frame slices per series) with NIfTI labels, as slices.

    Layout::

        <root>/<series>/*            DICOM slices of one series (any file names; non-DICOM files
                                     are skipped with a warning)
        <root>/labels/<series>.nii.gz   label volume of that series (or .nii)

    Each series is read with :func:`medseg.data.io.dicom.read_dicom_series` (slices sorted by
    position, RescaleSlope/Intercept applied: HU for CT; modality from the DICOM Modality tag).
    A label must lie on the series' voxel grid (medseg's array order ``(columns, rows, slices)``
    and affine); a label on the same grid in another axis order or direction (as dcm2niix may
    write it) is reoriented to it; anything else is an error naming both.

    **Series without a label** are not part of any split: they are reported as warnings by
    ``medseg data check`` and are meant for prediction
    (:func:`medseg.inference.volume.predict_volume` takes a series folder). A folder where no
    series has a label is an error.

    Option ``group_by``: "patient" (default: series with the same DICOM PatientID, read from
    one header per series, share a split; series without one are their own patient) or
    "series" (each series its own patient; use it when PatientIDs were anonymised to one value).
    Other options: see :class:`VolumeDataset`.

    Raises:
        ConfigError: unknown or invalid option.
        DataError: (listed together) no series folders, labels without a series, no labelled
            series; then while reading: every problem of :func:`read_dicom_series` (empty folder,
            mixed series, missing slice, undecodable file, ...), unreadable/4-D labels, a label
            not on the series grid (shapes and affines of both given).
    """

    dataset_name = "dicom"
    folder = "DICOM"
    layout = "<root>/<series>/ folders of DICOM slices and <root>/labels/<series>.nii.gz label volumes"
    option_defaults = {**VOLUME_OPTIONS, "group_by": "patient"}

    @classmethod
    def validate_options(cls, opts: dict[str, Any]) -> None:
        super().validate_options(opts)
        if opts["group_by"] not in ("patient", "series"):
            raise ConfigError(f"dicom group_by must be 'patient' or 'series', got {opts['group_by']!r}")

    @classmethod
    def looks_like_root(cls, path: Path) -> bool:
        return (path / "labels").is_dir()

    @classmethod
    def find(cls, root: Path, opts: dict[str, Any]) -> Inventory:
        cls.validate_options(opts)
        problems: list[Problem] = []
        try:
            entries = sorted(root.iterdir(), key=lambda p: natural_key(p.name))
        except OSError as exc:
            return Inventory(cls.dataset_name, root, [], [Problem(root, f"cannot be listed: {exc.strerror or exc}")])
        series = [p for p in entries if p.is_dir() and not p.name.startswith(".") and p.name != "labels"]
        lab_dir = root / "labels"
        labels = {nifti_stem(p): p for p in list_files(lab_dir, is_nifti_file)} if lab_dir.is_dir() else {}
        if not series:
            problems.append(Problem(root, f"holds no series folders; expected {cls.layout}"))
        records: list[Record] = []
        for s in series:
            lab = labels.get(s.name)
            if lab is None:
                problems.append(
                    Problem(
                        s,
                        f"series has no label ({lab_dir / (s.name + '.nii.gz')} is missing); "
                        "it is left out of the splits (usable for prediction only)",
                        severity="warning",
                    )
                )
                continue
            patient = s.name
            if opts["group_by"] == "patient":
                pid = dicom_patient_id(s)
                patient = f"patient {pid}" if pid else s.name
            records.append(Record(s.name, "train", s, mask=lab, patient=patient))
        names = {s.name for s in series}
        for key, lab in labels.items():
            if key not in names:
                problems.append(Problem(lab, f"label has no series folder {root / key}"))
        if series and not records:
            problems.append(
                Problem(
                    root,
                    f"none of its {len(series)} series has a label in {lab_dir}; label them "
                    "(<series>.nii.gz) or use them for prediction only",
                )
            )
        cls.set_classes(records, opts, None)
        records, source, probs = cls.assign_splits(records, opts)
        return Inventory(cls.dataset_name, root, records, problems + probs, split_source=source)

    @classmethod
    def read(cls, record: Record, opts: dict[str, Any]) -> list[Case]:
        image, affine, spacing, meta = read_dicom_series(record.image)
        labels, laffine, _, _ = read_label_nifti(record.mask, "label")
        if labels.shape != image.shape or not same_affine(laffine, affine):
            fixed = reorient_like(labels, laffine, affine, image.shape)
            if fixed is None:
                raise DataError(
                    f"label {record.mask} (shape {labels.shape}, affine {affine_text(laffine)}) is not on the voxel "
                    f"grid of DICOM series {record.image} (shape {image.shape}, affine {affine_text(affine)})"
                )
            labels = fixed
        modality = canonical_modality(opts["modality"]) or meta["modality"]
        return volume_cases(record, image, labels, affine, spacing, modality, opts)


__all__ = [
    "AXIS_LETTERS",
    "VOLUME_OPTIONS",
    "slice_stacks",
    "slice_id",
    "volume_cases",
    "whole_volume_case",
    "reorient_like",
    "VolumeDataset",
    "MsdDataset",
    "DicomDataset",
]
