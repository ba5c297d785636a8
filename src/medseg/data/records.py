"""File inventories of datasets: records, problems and splits.

A dataset stored as files is first *inventoried*: its layout is walked, every image is paired
with its mask (and FOV, centerline) files and given a split, without decoding anything. The
result, an :class:`Inventory`, is what both the loaders (:mod:`medseg.data.files`) and
``medseg data check`` (:mod:`medseg.data.check`) start from, so the two cannot disagree.

Splits come from the layout (DRIVE's ``training/`` and ``test/``), from a list that ships with
medseg (``medseg/data/datasets/splits/<dataset>.json``), from a seeded draw over patients, or from a
user's split file (:func:`read_split_file`), which overrides the others.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.errors import DataError

#: How many problems an error message lists before summarising the rest.
MAX_LISTED = 10


@dataclass
class Record:
    """The files of one image (or one volume) of a dataset, before decoding.

    Attributes:
        id: identifier inside the dataset (unique over all splits), e.g. ``"21"``, ``"Image_01L"``.
        split: the split it belongs to ("train", "val", "test", ...).
        image: the image file, or a folder for a DICOM series.
        mask: the label file, or None where the split has no labels.
        fov: the field-of-view mask file, or None (loaders then compute or assume a FOV).
        centerline: the manual centerline label file, or None.
        patient: the patient / subject / sequence the image comes from; None means itself.
        extra: loader-specific paths or facts (e.g. ``{"thick": Path, "thin": Path}``).
    """

    id: str
    split: str
    image: Path
    mask: Path | None = None
    fov: Path | None = None
    centerline: Path | None = None
    patient: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def group(self) -> str:
        """The split unit: ``patient`` when set, else ``id``."""
        return self.patient if self.patient is not None else self.id

    def files(self) -> list[Path]:
        """Every file or folder the record names (image, mask, fov, centerline, extra paths)."""
        out = [p for p in (self.image, self.mask, self.fov, self.centerline) if p is not None]
        out += [v for v in self.extra.values() if isinstance(v, Path)]
        return out


@dataclass
class Problem:
    """One thing wrong with a dataset folder.

    Attributes:
        path: the file or folder concerned.
        message: what is wrong, in words a user can act on (without the path).
        severity: "error" (the dataset cannot be used as is) or "warning" (worth a look, e.g. an
            empty mask).
        split: the split it concerns, or None when it concerns the whole dataset.
    """

    path: Path | str
    message: str
    severity: str = "error"
    split: str | None = None

    def __str__(self) -> str:
        """``"<path>: <message>"``, or the message alone when it already names the path."""
        where = str(self.path)
        if not where or where in self.message:
            return self.message
        return f"{where}: {self.message}"


@dataclass
class Inventory:
    """Records of all splits of a dataset folder plus the problems found while pairing files.

    Attributes:
        name: dataset registry name.
        root: the dataset folder.
        records: every record, all splits, in a stable order.
        problems: pairing problems (an image without a mask, a mask without an image, ...).
        split_source: where the split came from ("layout", "shipped list ...", "seeded ...",
            "split file ...").
    """

    name: str
    root: Path
    records: list[Record]
    problems: list[Problem] = field(default_factory=list)
    split_source: str = "layout"

    @property
    def splits(self) -> list[str]:
        """Split names present, in first-seen order."""
        seen: dict[str, None] = {}
        for r in self.records:
            seen.setdefault(r.split, None)
        return list(seen)

    def split(self, name: str) -> list[Record]:
        """Records of split ``name`` in inventory order."""
        return [r for r in self.records if r.split == name]

    def errors(self, split: str | None = None) -> list[Problem]:
        """Problems of severity "error"; with ``split``, those of that split or of no split."""
        return [
            p for p in self.problems if p.severity == "error" and (split is None or p.split is None or p.split == split)
        ]

    def raise_errors(self, split: str | None = None, what: str | None = None) -> None:
        """Raise one DataError listing every error (of ``split`` and global ones; up to
        :data:`MAX_LISTED`).

        Raises:
            DataError: when there is at least one error; the message names each file.
        """
        errs = self.errors(split)
        if errs:
            raise DataError(problems_message(what or f"{self.name} folder {self.root}", errs))


def problems_message(subject: str, problems: Sequence[Problem]) -> str:
    """``"<subject> has N problems:\\n  path: message ..."`` listing at most :data:`MAX_LISTED`."""
    n = len(problems)
    shown = "\n  ".join(str(p) for p in problems[:MAX_LISTED])
    more = f"\n  ... and {n - MAX_LISTED} more" if n > MAX_LISTED else ""
    return f"{subject} has {n} problem{'s' if n != 1 else ''}:\n  {shown}{more}"


def natural_key(text: str) -> tuple:
    """Sort key that orders digit runs numerically: "2" < "10", "Image_2L" < "Image_10L"."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text) if t)


def list_files(folder: Path, accept) -> list[Path]:
    """Visible regular files of ``folder`` for which ``accept(path)`` is true, naturally sorted.

    Raises:
        DataError: ``folder`` is missing, not a folder, or cannot be listed (permissions).
    """
    if not folder.exists():
        raise DataError(f"folder {folder} does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder")
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise DataError(f"folder {folder} cannot be listed: {exc.strerror or exc}") from None
    files = [p for p in entries if not p.name.startswith(".") and p.is_file() and accept(p)]
    return sorted(files, key=lambda p: natural_key(p.name))


def _stem(p: Path) -> str:
    return p.stem


def pair_files(
    images: Sequence[Path],
    label_sets: Mapping[str, Sequence[Path]],
    *,
    image_key: Callable[[Path], str] = _stem,
    label_key: Callable[[Path], str] | Mapping[str, Callable[[Path], str]] = _stem,
    expected: Mapping[str, Callable[[str], Path | str]] | None = None,
    expected_image: Callable[[str], Path | str] | None = None,
    split: str | None = None,
) -> tuple[list[tuple[str, Path, dict[str, Path]]], list[Problem]]:
    """Pair images with one file of each label set by a key derived from each name (default: the
    file stem): the one pairing rule of the file datasets (:func:`pair_by_stem` is its one-set form).

    Args:
        images: the image files, in the order the pairs should come in.
        label_sets: set name ("mask", "vessel mask", "label (gt)", ...) -> its files; the name is
            how messages call those files.
        image_key: image file -> pairing key (DRIVE: ``21_training.tif`` -> "21").
        label_key: label file -> pairing key, one function for every set or one per set name
            (DRIVE: ``21_manual1.gif`` -> "21" for the vessel masks, ``21_training_mask.gif`` ->
            "21" for the FOV masks).
        expected: set name -> key -> the file that set should hold for that key; a missing label
            then says ``image has no <set>: expected <file>``.
        expected_image: key -> the image a label file should have; a label without an image then
            says ``<set> has no image: expected <file>``.
        split: attached to every problem.

    Returns:
        ``(items, problems)``: ``(key, image, {set name: file})`` for every image that has a file
        in every set, in image order; and a :class:`Problem` (naming the file) for each image
        without a file of some set, each label file without an image and each key used twice
        (the second file is left out). Nothing is read.
    """
    problems: list[Problem] = []
    expected = expected or {}
    by_set: dict[str, dict[str, Path]] = {}
    for what, labels in label_sets.items():
        key_of = label_key[what] if isinstance(label_key, Mapping) else label_key
        by_key: dict[str, Path] = {}
        for lab in labels:
            k = key_of(lab)
            if k in by_key:
                problems.append(Problem(lab, f"{what} has the same id {k!r} as {by_key[k]}", split=split))
                continue
            by_key[k] = lab
        by_set[what] = by_key
    items: list[tuple[str, Path, dict[str, Path]]] = []
    seen: dict[str, Path] = {}
    for img in images:
        k = image_key(img)
        if k in seen:
            problems.append(Problem(img, f"image has the same id {k!r} as {seen[k]}", split=split))
            continue
        seen[k] = img
        found: dict[str, Path] = {}
        for what, by_key in by_set.items():
            if k in by_key:
                found[what] = by_key[k]
            elif what in expected:
                problems.append(Problem(img, f"image has no {what}: expected {expected[what](k)}", split=split))
            else:
                problems.append(
                    Problem(img, f"image has no {what} (looked for id {k!r} among the {what} files)", split=split)
                )
        if len(found) == len(by_set):
            items.append((k, img, found))
    for what, by_key in by_set.items():
        for k, lab in by_key.items():
            if k not in seen:
                want = f": expected {expected_image(k)}" if expected_image is not None else f" (id {k!r})"
                problems.append(Problem(lab, f"{what} has no image{want}", split=split))
    return items, problems


def pair_by_stem(
    images: Sequence[Path],
    labels: Sequence[Path],
    *,
    image_key: Callable[[Path], str] = _stem,
    label_key: Callable[[Path], str] = _stem,
    what: str = "mask",
) -> tuple[list[tuple[str, Path, Path]], list[Problem]]:
    """:func:`pair_files` with one label set called ``what``.

    Returns:
        ``(pairs, problems)``: pairs ``(key, image, label)`` in image order; a problem for each
        image without a label, each label without an image and each key used twice.
    """
    items, problems = pair_files(images, {what: labels}, image_key=image_key, label_key=label_key)
    return [(k, img, labs[what]) for k, img, labs in items], problems


def seeded_split(groups: Sequence[str], fractions: dict[str, float], seed: int = 0) -> dict[str, str]:
    """Assign each distinct group (patient) to a split, by a seeded shuffle.

    Args:
        groups: group name of each item (repeats allowed; each distinct group is placed once).
        fractions: split name -> fraction of the groups, e.g. ``{"train": 0.8, "test": 0.2}``;
            must sum to 1. Counts are ``round(fraction * n)``, the last split takes the rest;
            every split with a positive fraction gets at least one group when there are enough.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        group -> split name. The same groups, fractions and seed always give the same split.

    Raises:
        DataError: fractions that do not sum to 1, or fewer groups than splits.
    """
    distinct = sorted(set(groups), key=natural_key)
    names = list(fractions)
    if abs(sum(fractions.values()) - 1.0) > 1e-6 or any(f < 0 for f in fractions.values()):
        raise DataError(f"split fractions {fractions} must be non-negative and sum to 1")
    positive = [k for k in names if fractions[k] > 0]
    if len(distinct) < len(positive):
        raise DataError(f"{len(distinct)} patients cannot fill the {len(positive)} splits {positive}")
    order = np.random.default_rng(seed).permutation(len(distinct))
    counts = [max(1, int(round(fractions[k] * len(distinct)))) if fractions[k] > 0 else 0 for k in names]
    counts[-1] = len(distinct) - sum(counts[:-1])
    while counts[-1] < (1 if fractions[names[-1]] > 0 else 0):  # rounding took too many
        i = int(np.argmax(counts[:-1]))
        counts[i] -= 1
        counts[-1] += 1
    out: dict[str, str] = {}
    start = 0
    for name, n in zip(names, counts):
        for j in order[start : start + n]:
            out[distinct[j]] = name
        start += n
    return out


def read_split_file(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a split file: JSON or YAML mapping split name -> list of ids.

    Example (JSON)::

        {"train": ["cju0qkwl35piu0993l0dewei2", ...], "test": [...]}

    Ids are image ids as the dataset names them (``medseg data check`` prints them). A split
    file may also carry ``"patients": {"<id>": "<patient>"}`` to group images by patient.

    Returns:
        split name -> list of ids (strings), in file order; "patients" (if present) is kept as a
        mapping under the key ``"patients"``.

    Raises:
        DataError: missing or unreadable file, not a mapping of lists of strings, an id listed
            twice (in one split or in two).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"split file {p} does not exist")
    try:
        text = p.read_text()
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"split file {p} cannot be read: {exc}") from None
    except Exception as exc:  # yaml.YAMLError
        raise DataError(f"split file {p} cannot be parsed: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise DataError(f'split file {p} must map split names to lists of ids, e.g. {{"train": [...]}}')
    out: dict = {}
    where: dict[str, str] = {}
    for split, ids in data.items():
        if split == "patients":
            if not isinstance(ids, dict):
                raise DataError(f"split file {p}: 'patients' must map ids to patient names")
            out["patients"] = {str(k): str(v) for k, v in ids.items()}
            continue
        if not isinstance(ids, list) or not all(isinstance(i, (str, int)) for i in ids):
            raise DataError(f"split file {p}: split {split!r} must be a list of ids (strings)")
        out[str(split)] = []
        for i in map(str, ids):
            if i in where:
                raise DataError(f"split file {p}: id {i!r} is listed in {where[i]!r} and again in {split!r}")
            where[i] = str(split)
            out[str(split)].append(i)
    return out


def apply_split_file(inv: Inventory, path: str | os.PathLike) -> Inventory:
    """Re-split ``inv`` with a split file (see :func:`read_split_file`); ids it omits are dropped.

    Returns:
        A new Inventory; an id of the file that the folder lacks becomes an error Problem.
    """
    spec = read_split_file(path)
    patients = spec.pop("patients", {})
    by_id = {r.id: r for r in inv.records}
    records: list[Record] = []
    problems = list(inv.problems)
    for split, ids in spec.items():
        for i in ids:
            r = by_id.get(i)
            if r is None:
                problems.append(
                    Problem(Path(path), f"split {split!r} lists id {i!r}, which {inv.root} does not have", split=split)
                )
                continue
            records.append(
                Record(r.id, split, r.image, r.mask, r.fov, r.centerline, patients.get(i, r.patient), dict(r.extra))
            )
    return Inventory(inv.name, inv.root, records, problems, split_source=f"split file {path}")


def split_integrity(records: Iterable[Record]) -> list[Problem]:
    """Problems with a split assignment: an id in two splits, a patient in two splits.

    They concern the dataset as a whole (``Problem.split`` None), so loading any split fails:
    a leaky split makes both training and evaluation meaningless."""
    problems: list[Problem] = []
    id_split: dict[str, Record] = {}
    group_split: dict[str, Record] = {}
    for r in records:
        prev = id_split.get(r.id)
        if prev is not None and prev.split != r.split:
            problems.append(Problem(r.image, f"id {r.id!r} is in split {prev.split!r} and in split {r.split!r}"))
        id_split.setdefault(r.id, r)
        if r.patient is not None:
            prevg = group_split.get(r.patient)
            if prevg is not None and prevg.split != r.split:
                problems.append(
                    Problem(
                        r.image,
                        f"patient {r.patient!r} is in split {prevg.split!r} ({prevg.id}) and in split "
                        f"{r.split!r} ({r.id})",
                    )
                )
            group_split.setdefault(r.patient, r)
    return problems


def shipped_split(dataset: str) -> dict[str, list[str]]:
    """The split list that ships with medseg for ``dataset`` (``medseg/data/datasets/splits/<dataset>.json``).

    Raises:
        DataError: no such list ships with this version.
    """
    path = Path(__file__).parent / "datasets" / "splits" / f"{dataset}.json"
    if not path.is_file():
        raise DataError(f"no split list ships for dataset {dataset!r} ({path} is missing)")
    return read_split_file(path)


__all__ = [
    "MAX_LISTED",
    "Record",
    "Problem",
    "Inventory",
    "problems_message",
    "natural_key",
    "list_files",
    "pair_files",
    "pair_by_stem",
    "seeded_split",
    "read_split_file",
    "apply_split_file",
    "split_integrity",
    "shipped_split",
]
