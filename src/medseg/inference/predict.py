"""``medseg predict -m CHECKPOINT -i INPUT -o OUTPUT_DIR``.

For every image ``<stem>.<ext>`` in INPUT (a folder: png, jpg, tif, gif, bmp; not recursive)
writes to OUTPUT_DIR:

- ``<stem>_prob.png``: 16-bit grey PNG, value / 65535 = foreground probability;
- ``<stem>_mask.png``: 8-bit binary PNG (0 or 255), probability >= the checkpoint's threshold.

Images are prepared as the network was trained: the checkpoint's dataset preprocessing
(the recipe's ``data.args.preprocess`` or the dataset's default pipeline, e.g. green channel and
z-score in the FOV for DRIVE; RGB, 352x352 and ImageNet normalisation for Kvasir-SEG). A FOV
mask is not available for arbitrary images, so it is estimated (:func:`estimate_fov`); outputs
are resized back to the input's size.

Volumes: for every NIfTI file (``.nii``, ``.nii.gz``) and every DICOM series folder in INPUT (or
INPUT itself when it is one of those) writes ``<stem>_seg.nii.gz``, the label map predicted slice
by slice with the recipe's slicing options, with the source's affine and header (DICOM input
gives NIfTI output; :func:`medseg.inference.volume.predict_volume`).

Outputs are written atomically; inputs are only read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from medseg.atomic import atomic_path
from medseg.config import Config
from medseg.data.io import is_image_file, read_image, select_channels
from medseg.data.base import zscore_in_fov
from medseg.engine.checkpoint import load_model_from_checkpoint
from medseg.errors import DataError
from medseg.inference.evaluate import infer_image, infer_probabilities


def estimate_fov(raw: np.ndarray, level: float = 0.04) -> np.ndarray:
    """Estimate the field of view of a fundus-like image: bool (H, W).

    Pixels whose luminance exceeds ``level`` times the image's 99th percentile, after a 5x5
    median filter, then the largest connected region with its holes filled. Fundus photographs
    and OCTA scans have a dark surround (DRIVE's masks agree with this estimate on > 99 % of
    pixels); for images without a dark surround the whole image is kept.

    Args:
        raw: uint8 (H, W) or (H, W, 3).
    """
    grey = raw.astype(np.float32) if raw.ndim == 2 else raw.astype(np.float32).mean(axis=-1)
    grey = ndimage.median_filter(grey, size=5)
    high = float(np.percentile(grey, 99))
    if high <= 0:
        return np.ones(grey.shape, dtype=bool)
    fov = grey > level * high
    labels, n = ndimage.label(fov)
    if n == 0:
        return np.ones(grey.shape, dtype=bool)
    sizes = ndimage.sum(fov, labels, index=np.arange(1, n + 1))
    fov = ndimage.binary_fill_holes(labels == (int(np.argmax(sizes)) + 1))
    return fov if fov.mean() > 0.2 else np.ones(grey.shape, dtype=bool)


def channels_of(cfg: Config) -> str:
    """The checkpoint's input channel choice: "green", "rgb" or "gray"."""
    value = cfg.data.args.get("channels", "green" if cfg.data.dataset == "drive" else "gray")
    return value if isinstance(value, str) else "gray"


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


def prepare(raw: np.ndarray, cfg: Config, path: Path) -> np.ndarray:
    """Image as stored (H, W[, 3]) -> float32 (C, H', W') network input, preprocessed as the
    checkpoint's dataset was (see the module docstring); (H', W') differs from (H, W) only when
    the pipeline resizes."""
    from medseg.data.base import Case
    from medseg.data.io import to_display
    from medseg.data.preprocess import Pipeline

    cls, opts = _file_dataset(cfg)
    fov = estimate_fov(to_display(raw))
    if cls is None:  # generated training data (synthetic_vessels): channels + z-score in the FOV
        image = select_channels(to_display(raw), channels_of(cfg), path)
        return zscore_in_fov(image, fov)
    spec = cfg.data.args.get("preprocess")
    pipeline = Pipeline(cls.default_pipeline(opts) if spec is None else spec)
    stored = (raw[None] if raw.ndim == 2 else np.moveaxis(raw, -1, 0)).astype(np.float32)
    h, w = raw.shape[:2]
    case = Case(path.stem, stored, np.zeros((h, w), np.uint8), fov, to_display(raw), str(path))
    return pipeline(case).image


def _resize_prob(prob: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a probability map (H', W') back to ``hw``."""
    if prob.shape == hw:
        return prob
    import torch

    t = torch.from_numpy(np.ascontiguousarray(prob, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=hw, mode="bilinear", align_corners=False)[0, 0].numpy()


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


def predict_volumes(model, cfg: Config, sources: list[Path], output_dir: Path, threshold: float) -> list[Path]:
    """Predict each volume (NIfTI file or DICOM folder) into ``<stem>_seg.nii.gz``.

    The slicing and intensity options come from the recipe's ``data.args`` (slice_axis, context,
    intensity, modality); slices go through the network whole (sliding window as in evaluation).
    """
    import torch

    from medseg.inference.volume import predict_volume

    args = cfg.data.args

    def predict_fn(x: torch.Tensor) -> np.ndarray:
        return np.stack([infer_probabilities(model, x[i].numpy(), cfg) for i in range(x.shape[0])])

    written = []
    for src in sources:
        out = output_dir / f"{_volume_stem(src)}_seg.nii.gz"
        predict_volume(
            predict_fn, src, out, slice_axis=int(args.get("slice_axis", 2)), context=int(args.get("context", 0)),
            intensity=args.get("intensity", "auto"), modality=args.get("modality"), threshold=threshold,
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
    checkpoint: str | os.PathLike, input_dir: str | os.PathLike, output_dir: str | os.PathLike, threshold: float | None = None
) -> list[Path]:
    """Predict every image of ``input_dir`` with a medseg checkpoint.

    Args:
        checkpoint: a ``.ckpt`` written by ``medseg train``.
        input_dir: a folder of images and/or volumes, a NIfTI file, or a DICOM series folder.
        output_dir: where outputs go (created; must not be the input).
        threshold: foreground threshold in (0, 1) (default: the checkpoint's).

    Returns:
        The written paths (two per image, one per volume).

    Raises:
        medseg.errors.CheckpointError: bad checkpoint.
        DataError: missing/empty input, an unreadable image or volume (named), or an output
            folder that is the input folder.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.exists():
        raise DataError(f"input {input_dir} does not exist")
    if output_dir.resolve() == input_dir.resolve():
        raise DataError(f"output folder {output_dir} is the input folder; choose another so no input is overwritten")
    if is_volume_path(input_dir):
        volumes = [input_dir]
    elif input_dir.is_dir():
        volumes = [p for p in sorted(input_dir.iterdir()) if not p.name.startswith(".") and is_volume_path(p)]
    else:
        raise DataError(f"input {input_dir} is neither a folder of images, a NIfTI file nor a DICOM series folder")
    files = sorted(p for p in input_dir.iterdir() if p.is_file() and is_image_file(p)) if input_dir.is_dir() else []
    if not files and not volumes:
        raise DataError(
            f"input folder {input_dir} holds no images (looked for png, jpg, tif, gif, bmp) and no volumes "
            "(.nii, .nii.gz, DICOM series folders)"
        )
    stems = [p.stem for p in files] + [_volume_stem(p) for p in volumes]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise DataError(f"input folder {input_dir} has several inputs with the stem(s) {', '.join(dupes)}; outputs would collide")
    model, cfg = load_model_from_checkpoint(checkpoint)
    t = cfg.eval.threshold if threshold is None else threshold
    if not 0.0 < t < 1.0:
        raise DataError(f"threshold must be in (0, 1), got {t}")
    raws = [(p, read_image(p)) for p in files]  # read (and check) every input before writing anything
    written: list[Path] = []
    for path, raw in raws:
        prob = _resize_prob(infer_image(model, prepare(raw, cfg, path), cfg), raw.shape[:2])
        written.append(write_probability_png(prob, output_dir / f"{path.stem}_prob.png"))
        written.append(write_mask_png(prob >= t, output_dir / f"{path.stem}_mask.png"))
    written += predict_volumes(model, cfg, volumes, output_dir, t)
    return written
