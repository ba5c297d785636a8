"""Conformance tests every registered dataset passes (the contract of :mod:`medseg.data`).

A dataset's conformance class subclasses :class:`DatasetConformance` once, as
``Test<Name>Conformance`` in ``tests/data/test_dataset_conformance.py`` (pytest collects the subclass;
the base class has no ``Test`` prefix and is not collected on its own), and sets the class
attributes below. ``test_every_registered_dataset_has_a_conformance_class`` in that file fails
for a registered name without one, so a new dataset plugin cannot skip these checks. Example::

    from dataset_conformance import DatasetConformance

    class TestDriveConformance(DatasetConformance):
        name = "drive"
        options = {}                                  # dataset kwargs for create_dataset / check
        counts = {"train": 3, "test": 2}              # cases per split (slices for volumes)
        image_shape = (1, 32, 40)                     # (C, H, W) of every case after the pipeline

        def make_layout(self, tmp_path):
            ...write a tiny synthetic DRIVE/ under tmp_path in the released layout...
            return tmp_path / "DRIVE"

(``tests/`` is on ``sys.path`` when pytest runs: pytest's default "prepend" import mode puts the
test file's folder there, so ``from dataset_conformance import DatasetConformance`` works.)

Class attributes:

- ``name``: the registered name (``medseg.data.create_dataset(name, ...)``).
- ``options``: dataset keyword arguments, passed to ``create_dataset`` and to
  ``medseg.data.check.check_dataset`` alike (keep them light: e.g. a small ``size``).
- ``counts``: split name -> number of cases. It must be exactly the splits the dataset finds in
  the layout (the inventory's splits); for generated datasets, the splits to build.
- ``image_shape``: ``(C, H, W)`` of every case's ``image``; ``mask`` and ``fov`` are ``(H, W)``.
- ``num_classes``: classes of the label maps, background included (2 for binary masks). Every
  case has it; mask values lie in ``0..num_classes-1`` and, over all splits, every class occurs.
- ``marks_root``: True (default) when ``looks_like_root`` tells the layout from an empty folder;
  False for a dataset without layout markers (``folder``, whose ``looks_like_root`` accepts any
  folder).

``make_layout(tmp_path) -> Path | None`` writes a SMALL SYNTHETIC copy of the dataset in its
released layout under ``tmp_path`` (a few tiny images; never real dataset files: DRIVE's terms,
for one, forbid redistribution) and returns the folder to pass as ``root``. A generated dataset
(nothing read from files, e.g. ``synthetic_vessels``) returns None; the file-specific tests then
skip (layout found, folder untouched) or check the documented refusal (``data check``).

The tests (each class builds its layout once, class-scoped, and loads it once):

1. ``test_layout_found``: ``locate`` accepts the root (and its parent, when the root carries the
   dataset's default folder name), ``looks_like_root`` accepts it, refuses an empty folder; an
   empty folder and a missing one are refused with a ``DataError`` naming them.
2. ``test_read``: every split of ``counts`` loads through ``create_dataset`` with the expected
   count; every case passes ``Case.validate()`` and has the expected shapes, dtypes, class count
   and label values; no id and no patient is in two splits.
3. ``test_data_check``: ``check_dataset`` (the ``medseg data check`` entry point) on the root
   reports no problem at all (no error, no warning), and per split the case counts agree with
   the loader.
4. ``test_folder_untouched``: a snapshot of every file and folder under ``tmp_path`` (path, size,
   ``st_mtime_ns``, sha256 of the bytes) taken right after ``make_layout`` equals the one taken
   after loading every split, inventorying and checking (the class-scoped ``loaded`` and
   ``report`` fixtures): nothing modified, nothing created, nothing removed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from medseg.data import create_dataset, list_datasets
from medseg.data.base import CaseDataset
from medseg.data.check import CheckReport, check_dataset, dataset_class
from medseg.data.files import FileDataset
from medseg.errors import ConfigError, DataError

__all__ = ["DatasetConformance", "tree_snapshot", "snapshot_diff", "conformance_classes", "registered_names"]


# --------------------------------------------------------------------------- helpers


def tree_snapshot(base: Path) -> dict[str, tuple]:
    """Everything under ``base``: relative path -> ``("dir",)`` for a folder, or
    ``("file", size, st_mtime_ns, sha256 hex)`` for a file (``("link", target)`` for a symbolic
    link, not followed). Hidden names included."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        here = Path(dirpath)
        for d in dirnames:
            p = here / d
            rel = str(p.relative_to(base))
            out[rel] = ("link", os.readlink(p)) if p.is_symlink() else ("dir",)
        for f in filenames:
            p = here / f
            rel = str(p.relative_to(base))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
                continue
            st = p.stat()
            out[rel] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def snapshot_diff(before: dict[str, tuple], after: dict[str, tuple], limit: int = 10) -> str:
    """What changed between two :func:`tree_snapshot` results, one line each ("" when equal)."""
    lines = [f"created: {p}" for p in sorted(set(after) - set(before))]
    lines += [f"removed: {p}" for p in sorted(set(before) - set(after))]
    lines += [
        f"modified: {p}: {before[p]} -> {after[p]}" for p in sorted(set(before) & set(after)) if before[p] != after[p]
    ]
    more = [f"... and {len(lines) - limit} more"] if len(lines) > limit else []
    return "\n".join(lines[:limit] + more)


def conformance_classes() -> list[type]:
    """Every subclass of :class:`DatasetConformance` (at any depth) that pytest collects (its
    name starts with ``Test``), among the modules imported so far."""
    out, todo = [], list(DatasetConformance.__subclasses__())
    while todo:
        c = todo.pop()
        todo += c.__subclasses__()
        if c.__name__.startswith("Test"):
            out.append(c)
    return sorted(out, key=lambda c: (c.__module__, c.__name__))


def _problems_text(report: CheckReport) -> str:
    return "\n".join(f"{p.severity}: {p}" for p in report.problems)


# --------------------------------------------------------------------------- the conformance class


class DatasetConformance:
    """Base class of the dataset conformance tests (see the module docstring)."""

    name: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    counts: ClassVar[dict[str, int]] = {}
    image_shape: ClassVar[tuple[int, int, int]] = (1, 32, 40)
    num_classes: ClassVar[int] = 2
    marks_root: ClassVar[bool] = True

    def make_layout(self, tmp_path: Path) -> Path | None:
        """Write the synthetic layout under ``tmp_path``; return the root (None: generated)."""
        raise NotImplementedError(f"{type(self).__name__} must define make_layout(tmp_path)")

    # -- class-scoped fixtures: build the layout once, load it once, check it once -----------

    @pytest.fixture(scope="class")
    def layout(self, tmp_path_factory) -> tuple[Path, Path | None, dict[str, tuple]]:
        """``(base folder, root or None, snapshot of base right after make_layout)``."""
        assert self.name, f"{type(self).__name__} sets no dataset name"
        assert self.counts, f"{type(self).__name__} sets no expected counts"
        base = tmp_path_factory.mktemp(f"conformance-{self.name}")
        root = self.make_layout(base)
        if root is not None:
            root = Path(root)
            assert root.is_dir(), f"make_layout returned {root}, which is not a folder"
            assert base == root or base in root.parents, f"make_layout wrote outside {base}: {root}"
        return base, root, tree_snapshot(base)

    @pytest.fixture(scope="class")
    def loaded(self, layout) -> dict[str, CaseDataset]:
        """Split -> the dataset loaded with ``create_dataset`` (every split of ``counts``)."""
        _, root, _ = layout
        return {split: create_dataset(self.name, root=root, split=split, **self.options) for split in self.counts}

    @pytest.fixture(scope="class")
    def report(self, layout) -> CheckReport | None:
        """``check_dataset`` on the root (None for a generated dataset)."""
        _, root, _ = layout
        if root is None:
            return None
        return check_dataset(self.name, root, **self.options)

    def _file_class(self, root: Path | None) -> type[FileDataset]:
        if root is None:
            pytest.skip(f"{self.name} is generated: no folder layout (file-specific check)")
        cls = dataset_class(self.name)  # ConfigError unless a FileDataset is registered
        assert issubclass(cls, FileDataset)
        return cls

    # -- 1. layout found --------------------------------------------------------------------

    def test_layout_found(self, layout, tmp_path):
        _, root, _ = layout
        cls = self._file_class(root)
        assert cls.locate(root) == root, f"{self.name}: locate({root}) -> {cls.locate(root)}"
        assert cls.looks_like_root(root), f"{self.name}: looks_like_root refuses its own layout at {root}"
        if cls.folder and root.name == cls.folder:
            # a folder holding <folder>/ is accepted as root too
            assert cls.locate(root.parent) == root
        empty = tmp_path / "empty"
        empty.mkdir()
        if self.marks_root:
            assert not cls.looks_like_root(empty), f"{self.name}: looks_like_root accepts an empty folder"
        split = next(iter(self.counts))
        with pytest.raises(DataError) as err:
            create_dataset(self.name, root=empty, split=split, **self.options)
        assert str(empty) in str(err.value), f"{self.name}: the error does not name {empty}: {err.value}"
        bad = check_dataset(self.name, empty, **self.options)
        assert not bad.ok and bad.errors, f"{self.name}: data check passes an empty folder"
        missing = tmp_path / "missing"
        with pytest.raises(DataError) as err:
            create_dataset(self.name, root=missing, split=split, **self.options)
        assert str(missing) in str(err.value), f"{self.name}: the error does not name {missing}: {err.value}"
        assert list(empty.iterdir()) == [] and not missing.exists()

    # -- 2. read ----------------------------------------------------------------------------

    def test_read(self, layout, loaded):
        _, root, _ = layout
        if root is not None:
            cls = dataset_class(self.name)
            inv = cls.inventory(root, **self.options)
            assert sorted(inv.splits) == sorted(self.counts), (
                f"{self.name}: the layout has splits {inv.splits}, expected {sorted(self.counts)}"
            )
            assert inv.errors() == []
        c_, h, w = self.image_shape
        assert {s: len(ds) for s, ds in loaded.items()} == self.counts
        seen_labels: set[int] = set()
        ids: dict[str, str] = {}
        groups: dict[str, str] = {}
        for split, ds in loaded.items():
            assert isinstance(ds, CaseDataset) and ds.split == split and ds.name == self.name
            assert ds.num_classes == self.num_classes and ds.in_channels == c_
            for case in ds:
                case.validate()
                where = f"{self.name} {split} {case.id}"
                assert case.image.dtype == np.float32 and case.image.shape == (c_, h, w), (where, case.image.shape)
                assert case.mask.dtype == np.uint8 and case.mask.shape == (h, w), (where, case.mask.shape)
                assert case.fov.dtype == np.bool_ and case.fov.shape == (h, w), (where, case.fov.shape)
                assert case.display.dtype == np.uint8 and case.display.shape[:2] == (h, w), where
                assert case.num_classes == self.num_classes, where
                assert np.isfinite(case.image).all(), where
                values = {int(v) for v in np.unique(case.mask)}
                assert values <= set(range(self.num_classes)), (where, sorted(values))
                seen_labels |= values
                if case.centerline is not None:
                    assert case.centerline.dtype == np.uint8 and case.centerline.shape == (h, w), where
                    assert set(np.unique(case.centerline).tolist()) <= {0, 1}, where
                if root is not None:
                    assert case.path is not None and Path(case.path).exists(), (where, case.path)
                assert ids.setdefault(case.id, split) == split, f"{where}: id also in split {ids[case.id]}"
                assert groups.setdefault(case.group, split) == split, (
                    f"{where}: patient {case.group!r} also in split {groups[case.group]}"
                )
        assert seen_labels == set(range(self.num_classes)), (
            f"{self.name}: label values over all splits {sorted(seen_labels)}, expected 0..{self.num_classes - 1}"
        )

    # -- 3. data check ----------------------------------------------------------------------

    def test_data_check(self, layout, report):
        _, root, _ = layout
        if root is None:
            # `medseg data check` refuses a generated dataset with a one-line ConfigError
            with pytest.raises(ConfigError, match="generated"):
                check_dataset(self.name, None, **self.options)
            return
        assert report.problems == [], f"{self.name}: data check found problems:\n{_problems_text(report)}"
        assert report.ok
        got = {s.split: s.cases for s in report.splits}
        assert got == self.counts, f"{self.name}: data check counts {got}, the loader {self.counts}"
        for s in report.splits:
            assert s.read_ok == s.records > 0, (s.split, s.read_ok, s.records)
            assert set(s.label_values) <= set(range(self.num_classes)), (s.split, s.label_values)

    # -- 4. folder untouched ----------------------------------------------------------------

    def test_folder_untouched(self, layout, loaded, report):
        base, root, before = layout
        cls = self._file_class(root)
        # `before` was taken right after make_layout; the fixtures `loaded` (every split read
        # with create_dataset) and `report` (check_dataset) have run on the folder since
        cls.inventory(root, **self.options)
        after = tree_snapshot(base)
        diff = snapshot_diff(before, after)
        assert after == before, f"{self.name} changed its folder {base}:\n{diff}"


def registered_names() -> list[str]:
    """Every registered dataset name (``medseg.data.list_datasets``: all dataset modules imported)."""
    return list_datasets()
