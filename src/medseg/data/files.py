"""Base class of datasets read from files: inventory, read, preprocess, validate.

A file dataset is three class-level pieces, so that loading and ``medseg data check`` share them:

- :meth:`FileDataset.find` walks the layout and returns an :class:`~medseg.data.records.Inventory`
  (records of every split, pairing problems), decoding nothing;
- :meth:`FileDataset.read` decodes one record into raw cases (one for a 2-D image, one per
  slice for a volume) whose ``image`` holds stored values;
- ``default_preprocess``: the pipeline (:mod:`medseg.data.transforms.preprocess`) applied to each raw case
  unless a recipe names another.

Construction (``FileDataset(root, split, ...)``, or :func:`medseg.data.create_dataset`) runs them
in order and fails before training with a :class:`~medseg.errors.DataError` that names the files.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medseg.data.base import Case, CaseDataset, resolve_root
from medseg.data.records import Inventory, Record, apply_split_file, problems_message, split_integrity
from medseg.data.transforms.preprocess import Pipeline
from medseg.errors import ConfigError, DataError, did_you_mean


def skeleton_centerline(mask: np.ndarray) -> np.ndarray:
    """The centerline of a binary mask by skeletonisation (scikit-image ``skeletonize``, Zhang's
    2-D thinning): uint8 ``(H, W)`` in {0, 1}, one pixel wide, 8-connected.

    Used as the substitute for manual centerline labels on datasets that ship none (the ROSE
    centerline labels are drawn by hand; a skeleton runs along the same vessels but also has
    short spurs at vessel-width bulges).
    """
    from skimage.morphology import skeletonize

    return skeletonize(np.asarray(mask) > 0).astype(np.uint8)


class FileDataset(CaseDataset):
    """A dataset split read from a folder in its released layout.

    Args:
        root: the dataset folder; None looks in ``$MEDSEG_DATA/<folder>`` or
            ``<repo>/../shared/data/<folder>``. A folder holding ``<folder>/`` is accepted too.
        split: a split name of the dataset (``splits`` of the class; a split file may define
            others).
        preprocess: pipeline spec (see :mod:`medseg.data.transforms.preprocess`); None uses the class's
            ``default_preprocess``.
        split_file: a JSON/YAML file mapping split names to image ids; replaces the dataset's
            own split (:func:`medseg.data.records.read_split_file`).
        centerline: when True, cases whose dataset ships no centerline label get the skeleton of
            their mask (:func:`skeleton_centerline`) as centerline target.
        **options: dataset options (the class's ``option_defaults``).

    Raises:
        ConfigError: unknown option (closest suggested) or split.
        DataError: the folder is missing; pairing problems (all listed); then, while decoding,
            the first unreadable or inconsistent file (named).
    """

    #: Registry name, default folder name under the data root, and a one-line layout description.
    dataset_name: ClassVar[str] = ""
    folder: ClassVar[str] = ""
    layout: ClassVar[str] = ""
    #: Split names the layout defines.
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    #: Pipeline used when the recipe names none.
    default_preprocess: ClassVar[tuple] = ("zscore",)
    #: Dataset options and their defaults; anything else is a ConfigError.
    option_defaults: ClassVar[dict[str, Any]] = {}
    #: The evaluation protocol of the dataset's community (``eval.protocol: auto`` picks it):
    #: a name of :data:`medseg.workflows.protocols.PROTOCOLS`.
    protocol: ClassVar[str] = "vessel"
    #: Where the field of view comes from: "none" (every pixel), "shipped" (FOV files of the
    #: release, e.g. DRIVE's ``mask/``) or "computed" (:func:`medseg.data.transforms.fov.fov_from_image`).
    fov_kind: ClassVar[str] = "none"

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        preprocess: Any = None,
        split_file: str | os.PathLike | None = None,
        centerline: bool = False,
        **options: Any,
    ) -> None:
        opts = self.parse_options(options)
        self.check_split(split, opts)
        pipeline = self.pipeline_for(opts, preprocess)
        inv = self.inventory(root, split_file=split_file, **options)
        inv.raise_errors(split)
        if split not in inv.splits:
            hint = did_you_mean(str(split), inv.splits)
            raise ConfigError(
                f"{self.dataset_name} has no split {split!r}{hint} (splits: {', '.join(inv.splits) or 'none'})"
            )
        self.root = inv.root
        self.options = opts
        self.pipeline = pipeline
        self.split_source = inv.split_source
        cases: list[Case] = []
        for record in inv.split(split):
            for index, raw in enumerate(self.read(record, opts)):
                case = pipeline(raw)
                if case.mask.shape != raw.mask.shape:  # the pipeline resized: keep the way back
                    case.meta = {**case.meta, "reference": (record, index), "reference_shape": raw.mask.shape}
                if centerline and case.centerline is None:
                    case.centerline = skeleton_centerline(case.mask > 0)
                cases.append(case)
        super().__init__(cases, name=self.dataset_name, split=split)

    # -- class-level API shared with `medseg data check` ------------------------------------

    @classmethod
    def parse_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """``option_defaults`` updated with ``options``.

        Raises:
            ConfigError: an option the dataset does not have (closest names suggested).
        """
        for key in options:
            if key not in cls.option_defaults:
                hint = did_you_mean(key, cls.option_defaults)
                known = ", ".join(cls.option_defaults) or "none"
                raise ConfigError(f"dataset {cls.dataset_name!r} has no option {key!r}{hint} (options: {known})")
        return {**cls.option_defaults, **options}

    @classmethod
    def default_pipeline(cls, opts: dict[str, Any]) -> Any:
        """The pipeline used when the recipe names none (default: ``default_preprocess``)."""
        return list(cls.default_preprocess)

    @classmethod
    def pipeline_for(cls, opts: dict[str, Any], preprocess: Any = None) -> Pipeline:
        """The preprocessing :class:`~medseg.data.transforms.preprocess.Pipeline` of a recipe: ``preprocess``
        (the recipe's ``data.args.preprocess``) or the dataset's default for ``opts``. The
        dataset's loading and ``medseg predict`` both use it, so they prepare images alike."""
        return Pipeline(cls.default_pipeline(opts) if preprocess is None else preprocess)

    @classmethod
    def fov_mode(cls, opts: dict[str, Any]) -> str:
        """How this dataset gets its FOV with ``opts``: "none", "shipped" or "computed"
        (default: :attr:`fov_kind`; fundus datasets without FOV files follow their ``fov``
        option)."""
        return cls.fov_kind

    def reference(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        """The ground truth and FOV of ``case`` at the resolution of its source files.

        Protocols score predictions against the released annotation at its own size (PraNet's
        toolbox upsamples predictions to the ground truth's size). A pipeline that resizes keeps
        the record in ``case.meta["reference"]``; the record is then read again.

        Returns:
            ``(mask uint8 (H0, W0), fov bool (H0, W0))``; ``(case.mask, case.fov)`` when no step
            resized.

        Raises:
            DataError: the source files cannot be read again (named).
        """
        ref = case.meta.get("reference")
        if ref is None:
            return case.mask, case.fov
        record, index = ref
        raw = self.read(record, self.options)[index]
        return raw.mask, raw.fov

    @classmethod
    def check_split(cls, split: str, opts: dict[str, Any]) -> None:
        """Refuse a split/option combination early (default: accept). Raises ConfigError."""

    @classmethod
    def locate(cls, root: str | os.PathLike | None) -> Path:
        """The dataset folder (see ``root`` above).

        Raises:
            DataError: it does not exist or is not a folder (the message gives the layout).
        """
        path = resolve_root(root, cls.folder)
        if not path.exists():
            raise DataError(f"{cls.dataset_name} folder {path} does not exist (expected {cls.layout})")
        if not path.is_dir():
            raise DataError(f"{cls.dataset_name} folder {path} is not a folder (expected {cls.layout})")
        nested = path / cls.folder
        if cls.folder and nested.is_dir() and not cls.looks_like_root(path):
            return nested
        return path

    @classmethod
    def looks_like_root(cls, path: Path) -> bool:
        """True when ``path`` itself holds the layout (used to accept a parent folder as root)."""
        return True

    @classmethod
    def inventory(
        cls, root: str | os.PathLike | None = None, split_file: str | os.PathLike | None = None, **options: Any
    ) -> Inventory:
        """Walk the folder: records of every split plus pairing and split-integrity problems.

        Raises:
            ConfigError: unknown option. DataError: missing folder or unreadable split file.
        """
        opts = cls.parse_options(options)
        path = cls.locate(root)
        inv = cls.find(path, opts)
        if split_file is not None:
            inv = apply_split_file(inv, split_file)
        inv.problems.extend(split_integrity(inv.records))
        return inv

    @classmethod
    @abstractmethod
    def find(cls, root: Path, opts: dict[str, Any]) -> Inventory:
        """Records of all splits of the folder ``root``, decoding nothing; pairing problems go
        into ``Inventory.problems`` (each subclass walks its own layout)."""

    @classmethod
    @abstractmethod
    def read(cls, record: Record, opts: dict[str, Any]) -> list[Case]:
        """Decode one record into raw cases (stored values; one per image, or one per slice).

        Raises:
            DataError: naming the file and the problem (only DataError: the data check relies
                on it).
        """


def load_records(cls: type[FileDataset], records: list[Record], opts: dict[str, Any]) -> tuple[list[Case], list[str]]:
    """Read ``records`` with ``cls.read``, collecting DataErrors instead of stopping at the first.

    Returns:
        ``(cases, errors)``: raw cases of the records that read, and one message per failure.
    """
    cases: list[Case] = []
    errors: list[str] = []
    for r in records:
        try:
            cases.extend(cls.read(r, opts))
        except DataError as exc:
            errors.append(str(exc))
    return cases, errors


__all__ = ["FileDataset", "skeleton_centerline", "load_records", "problems_message"]
