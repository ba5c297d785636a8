"""``medseg predict -m CHECKPOINT -i INPUT -o OUTPUT_DIR``.

For every image ``<stem>.<ext>`` in INPUT (a folder: png, jpg, tif, gif, bmp; not recursive)
writes to OUTPUT_DIR:

- ``<stem>_prob.png``: 16-bit grey PNG, value / 65535 = foreground probability;
- ``<stem>_mask.png``: 8-bit binary PNG (0 or 255), probability >= the checkpoint's threshold.

Images are prepared as the network was trained, by the same preprocessing pipeline the dataset
uses when it loads (``FileDataset.pipeline_for``: the recipe's ``data.args.preprocess`` or the
dataset's default, e.g. green channel and z-score in the FOV for DRIVE; RGB, 352x352 and
ImageNet normalisation for Kvasir-SEG), and predicted with the recipe's inference (whole image
or sliding window, TTA; :class:`medseg.inference.Predictor`). Outputs are resized back to the
input's size, as ``medseg evaluate`` resizes its probabilities to the ground truth's.

The field of view, for datasets whose preprocessing uses one (DRIVE's z-score inside the FOV):
``fov_dir`` (``--fov DIR``) gives FOV masks matched by stem (``<stem>.<ext>`` or
``<stem>_mask.<ext>``, e.g. DRIVE's ``01_test_mask.gif`` for ``01_test.tif``); without it the
FOV is computed from the image by the one estimator medseg has,
:func:`medseg.data.transforms.fov.fov_from_image` (on DRIVE's 40 images it agrees with the shipped masks on
98.4-99.9 % of pixels, 99.6 % on average). Datasets without a FOV use every pixel.

Volumes: for every NIfTI file (``.nii``, ``.nii.gz``) and every DICOM series folder in INPUT (or
INPUT itself when it is one of those) writes ``<stem>_seg.nii.gz``, the label map predicted slice
by slice with the recipe's slicing options (whole, by 3-D sliding windows, for a 3-D network), with the source's affine and header (DICOM input
gives NIfTI output; :func:`medseg.inference.volume.predict_volume`).

Image sizes: an image above :func:`medseg.data.io.max_image_pixels` (Pillow's decompression-bomb
limit, 89 Mpx by default; ``$MEDSEG_MAX_IMAGE_PIXELS`` raises it) is refused from its header and
listed as unreadable, so no whole-image forward pass of a huge image is attempted. A tiny image,
down to 1x1, is predicted at its own size: prepared images with a side under
:data:`medseg.inference.MIN_FORWARD_SIDE` are zero-padded to it for the forward pass and cropped
back, as in ``medseg evaluate`` (a 1x1 image gives 1x1 maps); when its FOV must be computed and cannot be (a 1x1 image has no contrast), it is
listed as unreadable with a hint to give ``--fov``.

Outputs are written atomically; inputs are only read. Rerun after a kill, the same command
rewrites every output and removes the killed run's hidden temporaries.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medseg.atomic import atomic_path
from medseg.config import Config
from medseg.data.io import is_image_file, read_image, read_mask, select_channels, to_display
from medseg.errors import DataError
from medseg.inference import Predictor
from medseg.log import counted
from medseg.progress import progress
from medseg.workflows.evaluate import foreground, load_models, predictor_for, resize_probability


def _file_dataset(cfg: Config):
    """The recipe's FileDataset class and its options, or (None, {}) for generated data."""
    from medseg.data.base import DATASETS, _import_all
    from medseg.data.files import FileDataset

    _import_all()
    cls = DATASETS.get(cfg.data.dataset) if cfg.data.dataset in DATASETS else None
    if not (isinstance(cls, type) and issubclass(cls, FileDataset)):
        return None, {}
    skip = ("preprocess", "split_file", "centerline")
    return cls, cls.parse_options({k: v for k, v in cfg.data.args.items() if k not in skip})


def fov_mode(cfg: Config) -> str:
    """How the checkpoint's dataset gets its FOV: "none", "shipped" or "computed" (generated
    data: "computed", its discs have a dark surround like a fundus photograph)."""
    cls, opts = _file_dataset(cfg)
    return "computed" if cls is None else cls.fov_mode(opts)


def find_fov(fov_dir: Path, stem: str) -> Path:
    """The FOV mask of image ``stem`` in ``fov_dir``: ``<stem>.<ext>`` or ``<stem>_mask.<ext>``.

    Raises:
        DataError: none or several such files (named).
    """
    hits = sorted(p for p in fov_dir.iterdir() if p.is_file() and is_image_file(p) and p.stem in (stem, f"{stem}_mask"))
    if not hits:
        raise DataError(
            f"FOV folder {fov_dir} has no mask for image {stem} (looked for {stem}.<ext> and {stem}_mask.<ext>)"
        )
    if len(hits) > 1:
        raise DataError(f"FOV folder {fov_dir} has several masks for image {stem}: {', '.join(p.name for p in hits)}")
    return hits[0]


def field_of_view(raw: np.ndarray, cfg: Config, path: Path, fov_dir: Path | None = None) -> np.ndarray:
    """The FOV (bool (H, W)) of an input image as the checkpoint's dataset would have it:
    the mask from ``fov_dir`` when given, all True for datasets without a FOV, else computed
    with :func:`medseg.data.transforms.fov.fov_from_image`.

    Raises:
        DataError: a missing or mis-sized FOV mask, or an image with no computable FOV (named).
    """
    from medseg.data.transforms.fov import fov_from_image

    h, w = raw.shape[:2]
    if fov_dir is not None:
        fov_path = find_fov(fov_dir, path.stem)
        fov = read_mask(fov_path).astype(bool)
        if fov.shape != (h, w):
            raise DataError(f"FOV mask {fov_path} is {fov.shape[0]}x{fov.shape[1]} but image {path} is {h}x{w}")
        if not fov.any():
            raise DataError(f"FOV mask {fov_path} is empty")
        return fov
    if fov_mode(cfg) == "none":
        return np.ones((h, w), dtype=bool)
    return fov_from_image(to_display(raw), path=str(path))


def channels_of(cfg: Config) -> str:
    """The input channel choice of generated training data (synthetic_vessels): "gray" or "rgb"."""
    value = cfg.data.args.get("channels", "gray")
    return value if isinstance(value, str) else "gray"


def prepare(raw: np.ndarray, cfg: Config, path: Path, fov: np.ndarray | None = None) -> np.ndarray:
    """Image as stored (H, W[, 3]) -> float32 (C, H', W') network input, through the dataset's
    own preprocessing pipeline (see the module docstring); (H', W') differs from (H, W) only
    when the pipeline resizes. ``fov``: bool (H, W), default :func:`field_of_view`."""
    from medseg.data.base import Case, zscore_in_fov

    cls, opts = _file_dataset(cfg)
    if fov is None:
        fov = field_of_view(raw, cfg, path)
    if cls is None:  # generated training data (synthetic_vessels): channels + z-score in the FOV
        image = select_channels(to_display(raw), channels_of(cfg), path)
        return zscore_in_fov(image, fov)
    pipeline = cls.pipeline_for(opts, cfg.data.args.get("preprocess"))
    stored = (raw[None] if raw.ndim == 2 else np.moveaxis(raw, -1, 0)).astype(np.float32)
    h, w = raw.shape[:2]
    case = Case(path.stem, stored, np.zeros((h, w), np.uint8), fov, to_display(raw), str(path))
    return pipeline(case).image


def is_volume_path(path: Path) -> bool:
    """A NIfTI file, or a folder holding DICOM files (checked by the 128-byte preamble + 'DICM')."""
    name = path.name.lower()
    if path.is_file():
        return name.endswith((".nii", ".nii.gz"))
    if path.is_dir():
        for p in sorted(path.iterdir())[:20]:
            try:
                if p.is_file():
                    with open(p, "rb") as fh:
                        fh.seek(128)
                        if fh.read(4) == b"DICM":
                            return True
            except OSError:
                continue
    return False


def _volume_stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def predict_volumes(
    predictor: Predictor, cfg: Config, sources: list[Path], output_dir: Path, threshold: float
) -> list[Path]:
    """Predict each volume (NIfTI file or DICOM folder) into ``<stem>_seg.nii.gz``.

    The slicing and intensity options come from the recipe's ``data.args`` (slice_axis, context,
    intensity, modality; ``spatial_dims: 3``: the whole volume at once, for a 3-D network); slices
    (volumes) go through ``predictor`` (the recipe's inference, TTA, ensemble).
    """
    from medseg.inference.volume import predict_volume

    args = cfg.data.args
    written = []
    for src in sources:
        out = output_dir / f"{_volume_stem(src)}_seg.nii.gz"
        predict_volume(
            predictor,
            src,
            out,
            slice_axis=int(args.get("slice_axis", 2)),
            context=int(args.get("context", 0)),
            intensity=args.get("intensity", "auto"),
            modality=args.get("modality"),
            threshold=threshold,
            batch_size=predictor.batch_size or 32,
            spatial_dims=int(args.get("spatial_dims", 2)),
        )
        written.append(out)
    return written


def write_probability_png(prob: np.ndarray, path: str | os.PathLike) -> Path:
    """Write probabilities (H, W) in [0, 1] as a 16-bit PNG (value / 65535 = probability), atomically."""
    q = np.rint(np.clip(prob, 0.0, 1.0) * 65535.0).astype(np.uint16)
    with atomic_path(path) as tmp:
        Image.fromarray(q).save(tmp, format="PNG")
    return Path(path)


def write_mask_png(mask: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a binary mask (H, W) as an 8-bit PNG with values 0 and 255, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(tmp, format="PNG")
    return Path(path)


def predict_folder(
    checkpoint: str | os.PathLike | Sequence[str | os.PathLike],
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    threshold: float | None = None,
    fov_dir: str | os.PathLike | None = None,
    tta: Any = None,
    batch_size: int | None = None,
    device: str | None = None,
    inference: str | None = None,
    show_progress: bool = True,
) -> list[Path]:
    """Predict every image of ``input_dir`` with a medseg checkpoint (or an ensemble).

    Args:
        checkpoint: a ``.ckpt`` written by ``medseg train``, or several (their probabilities
            are averaged; the first one's recipe prepares the images).
        input_dir: a folder of images and/or volumes, a NIfTI file, or a DICOM series folder.
        output_dir: where outputs go (created; must not be the input).
        threshold: foreground threshold in (0, 1) (default: the checkpoint's).
        fov_dir: FOV masks by stem (see the module docstring); default: computed when the
            dataset has a FOV.
        tta, batch_size, device, inference: as :func:`medseg.workflows.evaluate.evaluate`.
        show_progress: a progress bar on stderr.

    Returns:
        The written paths (two per image, one per volume).

    Raises:
        medseg.errors.CheckpointError: bad checkpoint.
        DataError: missing/empty input, an output folder that is the input folder, an unreadable
            volume; unreadable images or FOV masks are listed (named) after every readable image
            has been predicted and written. "Unreadable" includes images larger than
            :func:`medseg.data.io.max_image_pixels` (refused from the header, so no whole-image
            forward pass of a huge image is tried) and images whose FOV must be computed but
            cannot be (a 1x1 image: give ``fov_dir``). Any other size is predicted at its own
            size, however small (inputs with a side under :data:`medseg.inference.MIN_FORWARD_SIDE` are
            zero-padded for the forward pass and cropped back: a 1x1 image gives 1x1 maps).
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.exists():
        raise DataError(f"input {input_dir} does not exist")
    if output_dir.resolve() == input_dir.resolve():
        raise DataError(f"output folder {output_dir} is the input folder; choose another so no input is overwritten")
    from medseg.atomic import remove_stale_temporaries

    remove_stale_temporaries(output_dir)  # what a killed earlier predict left half-written; finished files are whole
    fov_path = None if fov_dir is None else Path(fov_dir)
    if fov_path is not None and not fov_path.is_dir():
        raise DataError(f"FOV folder {fov_path} does not exist")
    if is_volume_path(input_dir):
        volumes = [input_dir]
    elif input_dir.is_dir():
        volumes = [p for p in sorted(input_dir.iterdir()) if not p.name.startswith(".") and is_volume_path(p)]
    else:
        raise DataError(f"input {input_dir} is neither a folder of images, a NIfTI file nor a DICOM series folder")
    # broken links with an image name are kept: read_image reports them (named) as unreadable
    files = (
        sorted(
            p for p in input_dir.iterdir() if (p.is_file() or p.is_symlink()) and not p.is_dir() and is_image_file(p)
        )
        if input_dir.is_dir()
        else []
    )
    if not files and not volumes:
        raise DataError(
            f"input folder {input_dir} holds no images (looked for png, jpg, tif, gif, bmp) and no volumes "
            "(.nii, .nii.gz, DICOM series folders)"
        )
    stems = [p.stem for p in files] + [_volume_stem(p) for p in volumes]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise DataError(
            f"input folder {input_dir} has several inputs with the stem(s) {', '.join(dupes)}; outputs would collide"
        )
    checkpoints = [checkpoint] if isinstance(checkpoint, (str, os.PathLike)) else list(checkpoint)
    models, cfg = load_models(checkpoints)
    t = cfg.eval.threshold if threshold is None else threshold
    if not 0.0 < t < 1.0:
        raise DataError(f"threshold must be in (0, 1), got {t}")
    # read every input (and its FOV); an unreadable one is listed at the end, the others predicted
    inputs, unreadable = [], []
    for p in files:
        try:
            raw = read_image(p)  # refuses images above medseg.data.io.max_image_pixels() from the header
        except DataError as exc:
            unreadable.append(str(exc))
            continue
        try:
            inputs.append((p, raw, field_of_view(raw, cfg, p, fov_path)))
        except DataError as exc:
            h, w = raw.shape[:2]
            tiny = (
                ""
                if fov_path is not None or min(h, w) >= 8
                else (
                    f" (the image is only {w}x{h} pixels, too small to compute a field of view from; give its FOV "
                    "mask with --fov DIR)"
                )
            )
            unreadable.append(f"{exc}{tiny}")
    predictor = predictor_for(models, cfg, tta=tta, batch_size=batch_size, device=device, method=inference)
    written: list[Path] = []
    prepared = (prepare(raw, cfg, path, fov) for path, raw, fov in inputs)
    probs = predictor.predict_many(prepared)
    for (path, raw, _), prob in progress(zip(inputs, probs), len(inputs), "predict", "image", show_progress):
        fg = resize_probability(foreground(prob), raw.shape[:2])
        written.append(write_probability_png(fg, output_dir / f"{path.stem}_prob.png"))
        written.append(write_mask_png(fg >= t, output_dir / f"{path.stem}_mask.png"))
    written += predict_volumes(predictor, cfg, volumes, output_dir, t)
    if unreadable:
        raise DataError(
            f"predicted {len(inputs)} of {counted(len(files), 'image')} into {output_dir}; {len(unreadable)} could "
            "not be read: " + "; ".join(unreadable)
        )
    return written
