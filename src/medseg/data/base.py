"""Cases, case datasets and the dataset registry.

A :class:`Case` is one loaded image with its ground truth and field of view; a
:class:`CaseDataset` is an ordered, validated collection of cases (one split of a dataset).
Datasets load **eagerly** and check every file in their constructor, so a bad file is reported
before any training starts. Datasets register under a name in :data:`DATASETS`; build one with
:func:`create_dataset`.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, overload

import numpy as np
from torch.utils.data import Dataset

from medseg.errors import DataError, did_you_mean
from medseg.registry import Registry

DATASETS = Registry("dataset")
register_dataset = DATASETS.register

#: Environment variable naming the folder that holds the datasets (``$MEDSEG_DATA/DRIVE``, ...).
DATA_ENV = "MEDSEG_DATA"


@dataclass(eq=False)
class Case:
    """One 2-D image (or one slice of a volume) with its label map and field of view; or one whole
    3-D volume (a *volume case*, read by the volume datasets with ``spatial_dims: 3``).

    A volume case has one more spatial axis everywhere: image float32 ``(C, D, H, W)``, mask,
    fov and display ``(D, H, W)`` (display: the volume on a 0..255 grey scale), in the volume's
    array order (``D, H, W`` = array axes I, J, K); no centerline.

    Attributes:
        id: identifier inside its dataset, e.g. ``"21"`` for DRIVE ``21_training.tif`` or
            ``"hippocampus_001:z017"`` for slice 17 of a volume.
        image: float32 ``(C, H, W)``. A loader fills it with the stored values (0..255 for 8-bit
            images, HU or scanner units for volumes after the volume's intensity handling); the
            dataset's preprocessing pipeline (:mod:`medseg.data.transforms.preprocess`) then normalises it
            (for DRIVE: z-scored per channel over the FOV and 0 outside it).
        mask: uint8 ``(H, W)``, a label map with values 0..num_classes-1; binary datasets use
            {0, 1} with foreground (vessel, polyp) = 1.
        fov: bool ``(H, W)``, True inside the field of view (all True where a dataset has none).
        display: uint8 ``(H, W)`` or ``(H, W, 3)``: the image as a person looks at it, for figures.
        path: the source image file (or volume / DICOM folder), or None for generated data.
        centerline: uint8 ``(H, W)`` {0, 1} centerline target, or None. Manual where a dataset
            ships centerline labels (ROSE); otherwise the skeleton of the mask when asked for.
        patient: the patient (subject, volume, video sequence) the image belongs to; splits keep
            each patient in one split. None means the image is its own patient.
        num_classes: number of classes of ``mask`` including background (2 for binary).
        meta: loader-specific facts, e.g. ``{"volume": path, "slice": 17, "axis": 2}``.
    """

    id: str
    image: np.ndarray
    mask: np.ndarray
    fov: np.ndarray
    display: np.ndarray
    path: str | None = None
    centerline: np.ndarray | None = None
    patient: str | None = None
    num_classes: int = 2
    meta: dict = field(default_factory=dict)

    @property
    def group(self) -> str:
        """The split unit: ``patient`` when set, else ``id``."""
        return self.patient if self.patient is not None else self.id

    @property
    def shape(self) -> tuple[int, ...]:
        """``(H, W)``, or ``(D, H, W)`` for a volume case."""
        return tuple(int(s) for s in self.mask.shape)

    @property
    def spatial_dims(self) -> int:
        """2 for an image (or a slice), 3 for a volume case."""
        return int(self.mask.ndim)

    def validate(self) -> None:
        """Check dtypes, shapes and values against the contract above.

        Raises:
            DataError: naming the case (and its file) and the first problem found.
        """
        where = f"case {self.id!r}" + (f" ({self.path})" if self.path else "")
        if not isinstance(self.id, str) or not self.id:
            raise DataError(f"{where}: id must be a non-empty string, got {self.id!r}")
        volume = isinstance(self.mask, np.ndarray) and self.mask.ndim == 3
        for name, arr, dtype, ndims in (
            ("image", self.image, np.float32, (4,) if volume else (3,)),
            ("mask", self.mask, np.uint8, (3,) if volume else (2,)),
            ("fov", self.fov, np.bool_, (3,) if volume else (2,)),
            ("display", self.display, np.uint8, (3,) if volume else (2, 3)),
        ):
            if not isinstance(arr, np.ndarray):
                raise DataError(f"{where}: {name} must be a numpy array, got {type(arr).__name__}")
            if arr.dtype != dtype:
                raise DataError(f"{where}: {name} must be {np.dtype(dtype).name}, got {arr.dtype}")
            if arr.ndim not in ndims:
                raise DataError(f"{where}: {name} has shape {arr.shape}; expected {ndims[0]}-D")
        hw = self.mask.shape
        if self.image.shape[1:] != hw or self.fov.shape != hw or self.display.shape[: len(hw)] != hw:
            raise DataError(
                f"{where}: shapes disagree: image {self.image.shape}, mask {self.mask.shape}, "
                f"fov {self.fov.shape}, display {self.display.shape}"
            )
        if volume and self.centerline is not None:
            raise DataError(f"{where}: a volume case has no centerline")
        if not volume and self.display.ndim == 3 and self.display.shape[2] != 3:
            raise DataError(f"{where}: display has shape {self.display.shape}; expected (H, W, 3)")
        if self.image.shape[0] < 1 or min(hw) < 1:
            raise DataError(f"{where}: empty image of shape {self.image.shape}")
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise DataError(f"{where}: num_classes must be an int >= 2, got {self.num_classes!r}")
        if self.mask.max() >= self.num_classes:
            want = "{0, 1}" if self.num_classes == 2 else f"0..{self.num_classes - 1}"
            raise DataError(f"{where}: mask has values {np.unique(self.mask)[:8]}; expected {want}")
        if self.centerline is not None:
            cl = self.centerline
            if not isinstance(cl, np.ndarray) or cl.dtype != np.uint8 or cl.shape != hw or cl.max(initial=0) > 1:
                raise DataError(f"{where}: centerline must be uint8 {hw} with values {{0, 1}}")
        if not self.fov.any():
            raise DataError(f"{where}: the field of view is empty")
        if not np.isfinite(self.image).all():
            raise DataError(f"{where}: image contains NaN or infinite values")


def zscore_in_fov(image: np.ndarray, fov: np.ndarray, outside: float | None = 0.0) -> np.ndarray:
    """Standardise each channel with the mean and std of its FOV pixels.

    Args:
        image: ``(C, H, W)`` numeric.
        fov: bool ``(H, W)`` with at least one True pixel.
        outside: value written outside the FOV (default 0, the FOV mean, so that zero padding of
            crops, rotations and sliding windows continues the image seamlessly); None keeps the
            affine map there too.

    Returns:
        float32 ``(C, H, W)``: ``(image - mean_c) / std_c`` inside the FOV, with mean_c and std_c
        (population std) taken over the FOV; a constant channel (std < 1e-6) is only centred.
    """
    img = np.asarray(image, dtype=np.float64)
    inside = img[:, fov]
    mean = inside.mean(axis=1)
    std = inside.std(axis=1)
    std = np.where(std < 1e-6, 1.0, std)
    out = ((img - mean[:, None, None]) / std[:, None, None]).astype(np.float32)
    if outside is not None:
        out[:, ~fov] = outside
    return out


class CaseDataset(Dataset, Sequence):
    """An ordered, validated list of :class:`Case` (a torch ``Dataset`` and a ``Sequence``).

    Args:
        cases: the cases, in the order they will be served.
        name: the dataset's registry name (e.g. "drive").
        split: "train", "test", ...

    Attributes:
        name, split: as given. ``ids``: the case ids in order (a new list each call).

    Raises:
        DataError: no cases, duplicate ids, a case breaking the :class:`Case` contract, or
            cases with different channel counts.
    """

    def __init__(self, cases: Sequence[Case], name: str = "custom", split: str = "train") -> None:
        self.name = name
        self.split = split
        self._cases = list(cases)
        if not self._cases:
            raise DataError(f"dataset {name!r} split {split!r} has no images")
        seen: set[str] = set()
        for case in self._cases:
            if not isinstance(case, Case):
                raise DataError(f"dataset {name!r}: expected Case objects, got {type(case).__name__}")
            case.validate()
            if case.id in seen:
                raise DataError(f"dataset {name!r} split {split!r}: duplicate case id {case.id!r}")
            seen.add(case.id)
        channels = {c.image.shape[0] for c in self._cases}
        if len(channels) > 1:
            by_c: dict[int, list[str]] = {}
            for c in self._cases:
                by_c.setdefault(int(c.image.shape[0]), []).append(c.path or c.id)
            detail = "; ".join(
                f"{len(v)} with {k} channel{'s' if k > 1 else ''} (e.g. {v[0]})" for k, v in sorted(by_c.items())
            )
            raise DataError(
                f"dataset {name!r} split {split!r} mixes grey and colour images: {detail}; "
                "convert them to one kind or choose a channel step (gray/rgb) in the preprocessing"
            )
        classes = {c.num_classes for c in self._cases}
        if len(classes) > 1:
            raise DataError(f"dataset {name!r} split {split!r} mixes class counts {sorted(classes)}")
        self._index = {c.id: i for i, c in enumerate(self._cases)}

    @property
    def ids(self) -> list[str]:
        """Case ids in dataset order."""
        return [c.id for c in self._cases]

    @property
    def in_channels(self) -> int:
        """C of the images' ``(C, H, W)``."""
        return int(self._cases[0].image.shape[0])

    @property
    def num_classes(self) -> int:
        """Classes of the label maps, background included (2 for binary masks)."""
        return int(self._cases[0].num_classes)

    @property
    def groups(self) -> list[str]:
        """The patient (split unit) of each case, in dataset order (see :attr:`Case.group`)."""
        return [c.group for c in self._cases]

    def __len__(self) -> int:
        return len(self._cases)

    @overload
    def __getitem__(self, i: int) -> Case: ...

    @overload
    def __getitem__(self, i: slice) -> "CaseDataset": ...

    def __getitem__(self, i: Any) -> Any:
        """``ds[i]`` -> Case (negative indices allowed); ``ds[a:b]`` -> CaseDataset.

        Raises:
            IndexError: index out of range.
        """
        if isinstance(i, slice):
            return CaseDataset(self._cases[i], self.name, self.split)
        return self._cases[int(i)]

    def __iter__(self) -> Iterator[Case]:
        return iter(self._cases)

    def __contains__(self, item: object) -> bool:
        """``"21" in ds`` tests an id; ``case in ds`` tests identity."""
        if isinstance(item, str):
            return item in self._index
        return any(item is c for c in self._cases)

    def get(self, case_id: str) -> Case:
        """The case with id ``case_id``.

        Raises:
            DataError: unknown id (the closest ids are suggested).
        """
        key = str(case_id)
        if key not in self._index:
            hint = did_you_mean(key, self._index, n=3)
            raise DataError(
                f"dataset {self.name!r} split {self.split!r} has no case {key!r}{hint} "
                f"({len(self)} cases: {', '.join(self.ids[:8])}{', ...' if len(self) > 8 else ''})"
            )
        return self._cases[self._index[key]]

    def subset(self, ids: Sequence[str]) -> "CaseDataset":
        """A new CaseDataset with the cases ``ids``, in the order given (arrays are shared).

        Raises:
            DataError: an unknown id (closest ids suggested), a repeated id, or no ids.
        """
        ids = [str(i) for i in ids]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise DataError(f"subset of dataset {self.name!r}: ids repeated: {', '.join(dup)}")
        return CaseDataset([self.get(i) for i in ids], self.name, self.split)

    def __repr__(self) -> str:
        c = self._cases[0]
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"channels={c.image.shape[0]}, first_shape={c.shape})"
        )


def data_root() -> Path | None:
    """The folder holding the datasets: ``$MEDSEG_DATA`` when set, else ``<repo>/../shared/data``
    when that exists (a source checkout beside the shared data), else None."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[3]
    guess = repo.parent / "shared" / "data"
    return guess if guess.is_dir() else None


def resolve_root(root: str | os.PathLike | None, folder: str) -> Path:
    """The dataset folder: ``root`` when given, else ``data_root()/folder``.

    Raises:
        DataError: ``root`` is None and no data folder is configured (the message says how to
            set one).
    """
    if root is not None:
        return Path(root).expanduser()
    base = data_root()
    if base is None:
        raise DataError(
            f"no folder given for {folder}: pass root=<path to {folder}> or set ${DATA_ENV} to the "
            f"folder that contains {folder}/"
        )
    return base / folder


def _import_all() -> None:
    """Import every module of :mod:`medseg.data.datasets` (importing one registers its datasets)."""
    import medseg.data.datasets as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"medseg.data.datasets.{info.name}")


def create_dataset(
    name: str, root: str | os.PathLike | None = None, split: str = "train", **kwargs: Any
) -> CaseDataset:
    """Load split ``split`` of the dataset registered as ``name``.

    Args:
        name: a name from :func:`list_datasets` ("drive", "synthetic_vessels", ...).
        root: the dataset folder (ignored by generated datasets); None looks in
            ``$MEDSEG_DATA/<FOLDER>`` or ``<repo>/../shared/data/<FOLDER>``.
        split: "train" or "test".
        kwargs: dataset options (e.g. ``channels="rgb"`` for DRIVE).

    Raises:
        ConfigError: unknown name (closest names suggested) or option.
        DataError: missing or invalid files (the message names the file).
    """
    _import_all()
    return DATASETS.create(name, root=root, split=split, **kwargs)


def list_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    _import_all()
    return DATASETS.names()


__all__ = [
    "Case",
    "CaseDataset",
    "DATASETS",
    "register_dataset",
    "create_dataset",
    "list_datasets",
    "zscore_in_fov",
    "data_root",
    "resolve_root",
]
