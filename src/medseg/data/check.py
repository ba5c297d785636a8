"""``medseg data check``: inspect a dataset folder before hours of training are spent on it.

:func:`check_dataset` inventories the folder with the dataset's own loader
(:meth:`~medseg.data.files.FileDataset.inventory`), decodes every record with the loader's
:meth:`~medseg.data.files.FileDataset.read` and gathers, per split: counts, image/mask pairing,
sizes, file modes and dtypes, label values, FOV presence, class balance and patients; and every
problem, one line each naming the file. Split integrity (no id and no patient in two splits) is
part of the inventory. Training runs the same check (:func:`check_cached`, cached on the files'
sizes and modification times) and refuses a dataset with errors.

Warnings (the dataset loads, but a person should look) besides empty and full masks:

- an image or mask whose **EXIF Orientation** is not 1: medseg reads pixels as stored and never
  applies it (:func:`medseg.data.io.read_image`), the warning says so;
- an image smaller than :data:`SMALL_SIDE` pixels on a side (a 1x1 placeholder): it loads and
  training pads it with zeros to the patch size, but it holds almost nothing to learn from;
- a dataset whose binary masks **mix encodings** (some 0/1, some 0/255): each mask is binarised
  on its own, so both load as {0, 1}; the warning lists how many of each;
- a **JPEG mask** (lossy): it was thresholded, the warning gives the fraction of pixels that lay
  between the two levels.

Nothing is written to the dataset folder (it may be on a read-only file system); the cache lives
in ``$MEDSEG_CACHE`` (default ``~/.cache/medseg``) and is skipped, with a message on stderr, when
it cannot be written.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import write_text_atomic
from medseg.data.base import DATASETS, _import_all
from medseg.data.files import FileDataset
from medseg.data.io import EXIF_ORIENTATIONS, exif_orientation, is_image_file, probe
from medseg.data.records import Inventory, Problem, Record, problems_message
from medseg.errors import ConfigError, DataError
from medseg.log import get_logger
from medseg.progress import progress

log = get_logger(__name__)

#: Bump when the report's content changes, so that old cache entries are not reused.
REPORT_VERSION = 2

#: Images with a side shorter than this (pixels) get a warning (they load; training pads them).
SMALL_SIDE = 8


@dataclass
class SplitSummary:
    """What one split holds (all counts over the split's records and cases).

    Attributes:
        split: split name.
        records: images (or volumes) listed; ``read_ok``: those that decoded.
        cases: 2-D cases they gave (slices for volumes).
        patients: distinct patients (split units).
        sizes: ``"WxH" -> count`` over cases (``"WxHxD"`` for volume cases).
        channels: ``C -> count`` over cases.
        image_modes, mask_modes: file mode/format strings (from the headers) -> count.
        label_values: sorted label values seen in the loaded masks.
        fov: "file" (a FOV mask per image), "computed", or "none" (all pixels) -> count.
        foreground: fraction of foreground (label > 0) pixels: mean, min, max over cases.
        class_fractions: label -> fraction of all pixels of the split.
        empty_masks, full_masks: cases whose mask has no foreground / only foreground.
        centerlines: cases with a centerline target.
    """

    split: str
    records: int = 0
    read_ok: int = 0
    cases: int = 0
    patients: int = 0
    sizes: dict[str, int] = field(default_factory=dict)
    channels: dict[str, int] = field(default_factory=dict)
    image_modes: dict[str, int] = field(default_factory=dict)
    mask_modes: dict[str, int] = field(default_factory=dict)
    label_values: list[int] = field(default_factory=list)
    fov: dict[str, int] = field(default_factory=dict)
    foreground: dict[str, float] = field(default_factory=dict)
    class_fractions: dict[str, float] = field(default_factory=dict)
    empty_masks: int = 0
    full_masks: int = 0
    centerlines: int = 0


@dataclass
class CheckReport:
    """The result of :func:`check_dataset`.

    Attributes:
        dataset: registry name; ``root``: the folder checked; ``options``: dataset options used.
        split_source: where the split came from (layout, shipped list, seeded, split file).
        splits: one :class:`SplitSummary` per split.
        problems: every problem found (errors and warnings), in the order found.
    """

    dataset: str
    root: str
    options: dict
    split_source: str
    splits: list[SplitSummary]
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != "error"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def to_dict(self) -> dict:
        """JSON-able form (paths as strings)."""
        return {
            "version": REPORT_VERSION,
            "dataset": self.dataset,
            "root": self.root,
            "options": _jsonable(self.options),
            "split_source": self.split_source,
            "ok": self.ok,
            "splits": [asdict(s) for s in self.splits],
            "problems": [
                {"path": str(p.path), "message": p.message, "severity": p.severity, "split": p.split}
                for p in self.problems
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "CheckReport":
        return cls(
            d["dataset"],
            d["root"],
            d["options"],
            d["split_source"],
            [SplitSummary(**s) for s in d["splits"]],
            [Problem(p["path"], p["message"], p["severity"], p.get("split")) for p in d["problems"]],
        )

    def table(self) -> str:
        """The summary table ``medseg data check`` prints (one row per split)."""
        head = (
            "split",
            "images",
            "cases",
            "patients",
            "size (WxH)",
            "C",
            "image file",
            "mask file",
            "labels",
            "foreground % mean [min-max]",
            "FOV",
            "empty",
        )
        rows = [head]
        for s in self.splits:
            fg = s.foreground
            fg_text = f"{100 * fg['mean']:.1f} [{100 * fg['min']:.1f}-{100 * fg['max']:.1f}]" if fg else "-"
            rows.append(
                (
                    s.split,
                    f"{s.read_ok}/{s.records}",
                    str(s.cases),
                    str(s.patients),
                    _top(s.sizes),
                    _top(s.channels),
                    _top(s.image_modes),
                    _top(s.mask_modes),
                    "{" + ",".join(map(str, s.label_values)) + "}",
                    fg_text,
                    _top(s.fov),
                    str(s.empty_masks),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def text(self) -> str:
        """Header, table, then one line per problem (``error: ...`` / ``warning: ...``)."""
        n_err, n_warn = len(self.errors), len(self.warnings)
        out = [f"dataset {self.dataset} at {self.root}", f"split: {self.split_source}", "", self.table(), ""]
        for p in self.errors + self.warnings:
            out.append(f"{p.severity}: {_one_line(p)}")
        verdict = "OK" if self.ok else "FAILED"
        out.append(f"{verdict}: {n_err} error{'s' if n_err != 1 else ''}, {n_warn} warning{'s' if n_warn != 1 else ''}")
        return "\n".join(out)


def _one_line(p: Problem) -> str:
    text = str(p) if str(p.path) and str(p.path) not in p.message else p.message
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def _top(counter: dict[str, int], n: int = 2) -> str:
    if not counter:
        return "-"
    items = sorted(counter.items(), key=lambda kv: -kv[1])
    text = ", ".join(k if len(counter) == 1 else f"{k} ({v})" for k, v in items[:n])
    return text + (f", +{len(items) - n} more" if len(items) > n else "")


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def dataset_class(name: str) -> type[FileDataset]:
    """The FileDataset subclass registered as ``name``.

    Raises:
        ConfigError: unknown name (closest suggested), or a dataset that is not read from files
            (e.g. the generated ``synthetic_vessels``).
    """
    _import_all()
    cls = DATASETS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, FileDataset)):
        raise ConfigError(f"dataset {name!r} is generated, not read from files: there is nothing to check")
    return cls


def _mode_text(path: Path | None) -> str | None:
    if path is None:
        return None
    if path.is_dir():
        return "folder"
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "NIfTI"
    info = probe(path)
    return f"{info['format']} {info['mode']}".strip()


def check_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    split_file: str | os.PathLike | None = None,
    **options: Any,
) -> CheckReport:
    """Check a dataset folder the way its loader reads it; never raises for bad files.

    Args:
        name: registered dataset name ("drive", "kvasir_seg", "msd", ...).
        root: the dataset folder (None: the default under ``$MEDSEG_DATA`` / ``../shared/data``).
        split_file: a split file replacing the dataset's own split.
        options: dataset options (as in a recipe's ``data.args``; ``preprocess`` and
            ``centerline`` are accepted and ignored: the check reads the stored data).

    Returns:
        A :class:`CheckReport`; ``report.ok`` is False when any error was found.

    Raises:
        ConfigError: unknown dataset or option. A missing root is reported as a problem.
    """
    cls = dataset_class(name)
    options = _stored_data_options(options)
    opts = cls.parse_options(options)
    try:
        inv = cls.inventory(root, split_file=split_file, **options)
    except DataError as exc:
        where = str(root) if root is not None else cls.folder
        return CheckReport(name, where, opts, "-", [], [Problem("", str(exc))])
    return _check_inventory(cls, name, inv, opts)


def _stored_data_options(options: dict) -> dict:
    """Dataset options minus those about loading, not about the stored files."""
    return {k: v for k, v in options.items() if k not in ("preprocess", "centerline")}


def _check_inventory(cls: type[FileDataset], name: str, inv: Inventory, opts: dict) -> CheckReport:
    """Decode every record of ``inv`` and build the report (see :func:`check_dataset`)."""
    problems = list(inv.problems)
    summaries = []
    seen: dict[str, list] = {}
    for split in inv.splits:
        summary, probs = _check_split(cls, inv.split(split), split, opts, seen)
        summaries.append(summary)
        problems += probs
    problems += _mask_warnings(seen, inv.root)
    if not inv.records:
        problems.append(Problem(inv.root, f"no {name} images found (expected {cls.layout})"))
    return CheckReport(name, str(inv.root), opts, inv.split_source, summaries, problems)


def _exif_problems(r: Record, split: str) -> list[Problem]:
    """A warning for each 2-D image/mask file of ``r`` whose EXIF Orientation is not 1."""
    out = []
    for what, path in (("image", r.image), ("mask", r.mask)):
        if path is None or not is_image_file(path) or not path.is_file():
            continue
        o = exif_orientation(path)
        if o != 1:
            match = "its mask must match the" if what == "image" else "it must match its image's"
            out.append(
                Problem(
                    path,
                    f"{what} has EXIF Orientation {o} ({EXIF_ORIENTATIONS[o]}); medseg reads its "
                    f"pixels as stored and does not apply the orientation, so {match} stored "
                    "pixel grid, not the rotated view a photo viewer shows",
                    "warning",
                    split,
                )
            )
    return out


def _note_mask(r: Record, c: Any, mask_mode: str | None, seen: dict[str, list]) -> None:
    """Record what the binary-mask reader saw (``case.meta["mask_*"]``, folder dataset) in
    ``seen``: ``"encoding <enc>"`` -> mask files, ``"jpeg"`` -> (mask file, fraction between)."""
    if r.mask is None or "mask_encoding" not in c.meta:
        return
    enc = c.meta.get("mask_encoding")
    if enc is not None:
        seen.setdefault(f"encoding {enc}", []).append(r.mask)
    if mask_mode is not None and mask_mode.startswith("JPEG"):
        seen.setdefault("jpeg", []).append((r.mask, float(c.meta.get("mask_intermediate") or 0.0)))


def _mask_warnings(seen: dict[str, list], root: Path) -> list[Problem]:
    """The dataset-wide warnings of :func:`_note_mask`'s findings (one line each)."""
    out = []
    encodings = {k.split(" ", 1)[1]: v for k, v in seen.items() if k.startswith("encoding ")}
    if len(encodings) > 1:
        detail = "; ".join(f"{len(v)} {k} (e.g. {v[0].name})" for k, v in sorted(encodings.items()))
        out.append(
            Problem(
                root,
                f"binary masks mix value encodings: {detail}. Each mask is binarised on its own "
                "(0/1 masks: value > 0; others: value > max/2), so all load as {0, 1}; check that "
                "none is a different kind of label",
                "warning",
            )
        )
    jpeg = seen.get("jpeg", [])
    if jpeg:
        worst = max(jpeg, key=lambda t: t[1])
        where = worst[0] if len(jpeg) == 1 else f"{len(jpeg)} masks (e.g. {worst[0]})"
        out.append(
            Problem(
                where,
                f"mask{'s are JPEG files' if len(jpeg) > 1 else ' is a JPEG file'} (lossy "
                f"compression): up to {worst[1]:.1%} of the pixels lay between the two levels and "
                "were thresholded at half the maximum; PNG keeps masks exact",
                "warning",
            )
        )
    return out


def _check_split(
    cls: type[FileDataset], records: list[Record], split: str, opts: dict, seen: dict[str, list] | None = None
) -> tuple[SplitSummary, list[Problem]]:
    s = SplitSummary(split=split, records=len(records))
    problems: list[Problem] = []
    sizes: Counter = Counter()
    channels: Counter = Counter()
    image_modes: Counter = Counter()
    mask_modes: Counter = Counter()
    fov_kind: Counter = Counter()
    labels: set[int] = set()
    class_pixels: Counter = Counter()
    total_pixels = 0
    fg: list[float] = []
    patients: set[str] = set()
    channel_example: dict[int, str] = {}
    seen = {} if seen is None else seen
    for r in progress(records, len(records), f"data check: {split}", "file", enabled=None):
        image_modes[_mode_text(r.image) or "-"] += 1
        mask_mode = _mode_text(r.mask)
        if r.mask is not None:
            mask_modes[mask_mode or "-"] += 1
        problems += _exif_problems(r, split)
        try:
            cases = cls.read(r, opts)
        except DataError as exc:
            problems.append(Problem("", str(exc), split=split))
            continue
        except Exception as exc:  # a loader bug must not hide the other files' problems
            problems.append(Problem(r.image, f"unexpected {type(exc).__name__} while reading: {exc}", split=split))
            continue
        s.read_ok += 1
        volumetric = any("volume" in c.meta for c in cases)
        for c in cases:
            s.cases += 1
            patients.add(c.group)
            h, w = c.shape[-2:]
            sizes["x".join(str(n) for n in reversed(c.shape))] += 1  # WxH (WxHxD for a volume case)
            if not volumetric and min(h, w) < SMALL_SIDE:
                problems.append(
                    Problem(
                        r.image,
                        f"image is only {w}x{h} pixels (under {SMALL_SIDE} on a side): it "
                        "loads, and training pads it with zeros to the patch size, but it "
                        "holds almost nothing to learn from; a placeholder, thumbnail or "
                        "failed export?",
                        "warning",
                        split,
                    )
                )
            _note_mask(r, c, mask_mode, seen)
            ch = int(c.image.shape[0])
            channels[str(ch)] += 1
            channel_example.setdefault(ch, c.path or c.id)
            fov_kind[c.meta.get("fov", "file" if r.fov is not None else "none")] += 1
            values, counts = np.unique(c.mask, return_counts=True)
            labels.update(int(v) for v in values)
            for v, n in zip(values, counts):
                class_pixels[int(v)] += int(n)
            total_pixels += c.mask.size
            frac = float((c.mask > 0).mean())
            fg.append(frac)
            if c.centerline is not None:
                s.centerlines += 1
            if frac == 0.0:
                s.empty_masks += 1
                if not volumetric:
                    problems.append(Problem(r.mask or r.image, "mask is empty (no foreground pixel)", "warning", split))
            elif frac == 1.0:
                s.full_masks += 1
                problems.append(Problem(r.mask or r.image, "mask is all foreground", "warning", split))
    if len(channel_example) > 1:
        detail = "; ".join(
            f"{channels[str(k)]} with {k} channel{'s' if k > 1 else ''} (e.g. {v})"
            for k, v in sorted(channel_example.items())
        )
        problems.append(
            Problem(
                "",
                f"split {split!r} mixes grey and colour images: {detail}; convert them to "
                "one kind or add a channel step (gray or rgb) to the preprocessing",
                split=split,
            )
        )
    s.patients = len(patients)
    s.sizes, s.channels = dict(sizes), dict(channels)
    s.image_modes, s.mask_modes, s.fov = dict(image_modes), dict(mask_modes), dict(fov_kind)
    s.label_values = sorted(labels)
    if fg:
        s.foreground = {"mean": float(np.mean(fg)), "min": float(np.min(fg)), "max": float(np.max(fg))}
    if total_pixels:
        s.class_fractions = {str(k): class_pixels[k] / total_pixels for k in sorted(class_pixels)}
    return s, problems


# --------------------------------------------------------------------------- cache for training


def cache_dir() -> Path:
    """``$MEDSEG_CACHE`` or ``~/.cache/medseg``."""
    env = os.environ.get("MEDSEG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medseg"


def fingerprint(name: str, inv: Inventory, split_file: str | os.PathLike | None, options: dict) -> str:
    """A hash of everything the check depends on: dataset, folder, options, split file content,
    and the path, size and modification time of every file the inventory ``inv`` lists.
    """
    cls = dataset_class(name)
    h = hashlib.sha256()
    h.update(
        json.dumps(
            [REPORT_VERSION, name, str(inv.root.resolve()), _jsonable(cls.parse_options(options))], sort_keys=True
        ).encode()
    )
    if split_file is not None:
        h.update(Path(split_file).read_bytes())
    for r in inv.records:
        h.update(f"{r.id}|{r.split}|{r.patient}".encode())
        for p in r.files():
            paths = sorted(p.iterdir()) if p.is_dir() else [p]
            for q in paths:
                try:
                    st = q.stat()
                    h.update(f"{q}|{st.st_size}|{st.st_mtime_ns}".encode())
                except OSError:
                    h.update(f"{q}|missing".encode())
    return h.hexdigest()


def check_cached(
    name: str, root: str | os.PathLike | None = None, split_file: str | os.PathLike | None = None, **options: Any
) -> tuple[CheckReport, bool]:
    """:func:`check_dataset`, reusing a stored report when no listed file changed.

    Returns:
        ``(report, from_cache)``. Reports are stored atomically under ``cache_dir()/data-check``;
        a cache that cannot be written is skipped with a note on stderr (the check is only
        repeated next time).
    """
    cls = dataset_class(name)
    options = _stored_data_options(options)
    try:
        inv = cls.inventory(root, split_file=split_file, **options)
    except DataError:
        return check_dataset(name, root, split_file, **options), False
    key = fingerprint(name, inv, split_file, options)
    path = cache_dir() / "data-check" / f"{name}-{key[:32]}.json"
    if path.is_file():
        try:
            return CheckReport.from_dict(json.loads(path.read_text())), True
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged cache entry is recomputed
    report = _check_inventory(cls, name, inv, cls.parse_options(options))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(report.to_dict(), indent=1))
    except OSError as exc:
        log.warning(
            f"note: data-check cache {path.parent} cannot be written ({exc.strerror or exc}); "
            "the check is not cached and will run again next time (set MEDSEG_CACHE to a writable folder)"
        )
    return report, False


def require_clean(report: CheckReport) -> None:
    """Raise when the report has errors.

    Raises:
        DataError: listing every error (first :data:`~medseg.data.records.MAX_LISTED`) and
            naming ``medseg data check`` for the full report.
    """
    if not report.ok:
        msg = problems_message(f"dataset {report.dataset} at {report.root}", report.errors)
        raise DataError(
            msg + f"\nrun `medseg data check --dataset {report.dataset} --data-root {report.root}` for the full report"
        )


__all__ = [
    "SMALL_SIDE",
    "SplitSummary",
    "CheckReport",
    "check_dataset",
    "check_cached",
    "require_clean",
    "dataset_class",
    "fingerprint",
    "cache_dir",
]
