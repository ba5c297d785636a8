"""``medseg predict -m CHECKPOINT -i INPUT_DIR -o OUTPUT_DIR``.

For every image ``<stem>.<ext>`` in INPUT_DIR (png, jpg, tif, gif, bmp; not recursive) writes
to OUTPUT_DIR:

- ``<stem>_prob.png``: 16-bit grey PNG, value / 65535 = vessel probability;
- ``<stem>_mask.png``: 8-bit binary PNG (0 or 255), probability >= the checkpoint's threshold.

Images are prepared as the network was trained: the checkpoint's channel choice, then a
per-image z-score over the field of view. A FOV mask is not available for arbitrary images, so it
is estimated (:func:`estimate_fov`). Outputs are written atomically; inputs are only read.
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
from medseg.inference.evaluate import infer_image


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


def prepare(raw: np.ndarray, cfg: Config, path: Path) -> np.ndarray:
    """uint8 image -> float32 (C, H, W) network input (channels, z-score inside the estimated FOV)."""
    image = select_channels(raw, channels_of(cfg), path)
    return zscore_in_fov(image, estimate_fov(raw))


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

    Returns:
        The written paths (two per image).

    Raises:
        medseg.errors.CheckpointError: bad checkpoint.
        DataError: missing/empty input folder, an unreadable image (named), or an output folder
            that is the input folder.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise DataError(f"input folder {input_dir} does not exist")
    if output_dir.resolve() == input_dir.resolve():
        raise DataError(f"output folder {output_dir} is the input folder; choose another so no input is overwritten")
    files = sorted(p for p in input_dir.iterdir() if p.is_file() and is_image_file(p))
    if not files:
        raise DataError(f"input folder {input_dir} holds no images (looked for png, jpg, tif, gif, bmp)")
    stems = [p.stem for p in files]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise DataError(f"input folder {input_dir} has several images with the stem(s) {', '.join(dupes)}; outputs would collide")
    model, cfg = load_model_from_checkpoint(checkpoint)
    t = cfg.eval.threshold if threshold is None else threshold
    if not 0.0 < t < 1.0:
        raise DataError(f"threshold must be in (0, 1), got {t}")
    raws = [(p, read_image(p)) for p in files]  # read (and check) every input before writing anything
    written: list[Path] = []
    for path, raw in raws:
        prob = infer_image(model, prepare(raw, cfg, path), cfg)
        written.append(write_probability_png(prob, output_dir / f"{path.stem}_prob.png"))
        written.append(write_mask_png(prob >= t, output_dir / f"{path.stem}_mask.png"))
    return written
