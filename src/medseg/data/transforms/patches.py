"""Training patches with MONAI augmentation, reproducible from ``(seed, epoch, index)``.

:class:`PatchDataset` serves random crops of a :class:`~medseg.data.base.CaseDataset`. Every random
choice for sample ``(epoch, index)`` (the image, the crop, every augmentation) comes from
``np.random.default_rng([seed, epoch, index])``: the crop is drawn from it directly and the MONAI
transforms get a ``np.random.RandomState`` seeded from it for that call. The same key therefore
gives the same sample in any process (DataLoader workers, DDP ranks), and a resumed run replays
exactly.

Augmentation (:class:`AugmentConfig`) uses MONAI's dictionary transforms, applied in this order:

1. geometric, on a square window around the crop large enough that the rotated or deformed
   patch has no empty corners: ``RandRotate90d`` (k = 1..3), ``RandRotated`` (uniform angle in
   +-rotate_degrees), ``Rand2DElasticd`` (B-spline-like deformation: control points every
   ``elastic_spacing`` px displaced by N(0, 1) x U(elastic_magnitude) px); image bilinear, mask
   and fov nearest (they stay exactly {0, 1}); outside the image everything is 0;
2. centre crop to the patch size, then ``RandFlipd`` along each axis;
3. intensity, on the image only: brightness/contrast (``RandShiftIntensityd`` offset in
   +-brightness and ``RandScaleIntensityd`` factor 1 + U(+-contrast), applied together),
   gamma (``RandAdjustContrastd``), Gaussian noise (``RandGaussianNoised``, std U(0, noise_std)),
   and, for 3-channel images, colour jitter (:func:`color_jitter`: saturation and hue in YIQ
   space; MONAI has no hue/saturation transform). Images are normalised, so brightness and noise
   are in units of the image's std.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import (
    Rand2DElasticd,
    RandAdjustContrastd,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from torch.utils.data import Dataset

from medseg.data.base import Case, CaseDataset
from medseg.data.transforms.augment import _KEYS, _KEYS_CL, _MODES, _MODES_CL, AugmentConfig, _plain, color_jitter
from medseg.errors import ConfigError, DataError


def _pair(patch_size: int | Sequence[int]) -> tuple[int, int]:
    ps = (patch_size, patch_size) if isinstance(patch_size, (int, np.integer)) else tuple(patch_size)
    if len(ps) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in ps):
        raise ConfigError(f"patch_size must be a positive int or (H, W), got {patch_size!r}")
    return int(ps[0]), int(ps[1])


def _crop_padded(arr: np.ndarray, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """``arr[..., y0:y0+h, x0:x0+w]`` as float32, zero where the window leaves the array."""
    out = np.zeros(arr.shape[:-2] + (h, w), dtype=np.float32)
    H, W = arr.shape[-2:]
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + h, H), min(x0 + w, W)
    if ye > ys and xe > xs:
        out[..., ys - y0 : ye - y0, xs - x0 : xe - x0] = arr[..., ys:ye, xs:xe]
    return out


class PatchDataset(Dataset):
    """Random, augmented training patches; sample ``key`` is a pure function of (seed, key).

    Args:
        cases: a CaseDataset or any sequence of :class:`Case` (all with the same channel count).
        patch_size: int or (H, W) in px. Images smaller than the patch are padded with 0 (image,
            mask and fov) at a random offset.
        samples_per_epoch: ``len(self)``.
        augment: an :class:`AugmentConfig`; None means :meth:`AugmentConfig.none`.
        seed: base seed.
        foreground_prob: probability that the crop is centred (as far as the image allows) on a
            uniformly drawn foreground pixel instead of being placed uniformly.

    ``ds[key]``: ``key`` is an int ``index`` (epoch :attr:`epoch`, 0 unless :meth:`set_epoch`
    changed it) or a tuple ``(epoch, index)``; sample ``index`` uses case ``index % len(cases)``.
    Returns ``{"image": float32 (C, h, w), "mask": float32 (1, h, w) label map (values 0..K-1,
    0/1 for binary data), "fov": float32 (1, h, w) in {0, 1}}`` (torch tensors), plus
    "centerline" float32 (1, h, w) in {0, 1} when every case has one.

    Raises:
        DataError: no cases. ConfigError: bad patch_size, samples_per_epoch or foreground_prob.
        IndexError: index outside ``range(samples_per_epoch)``; ValueError: negative epoch.
    """

    def __init__(
        self,
        cases: CaseDataset | Sequence[Case],
        patch_size: int | tuple[int, int],
        samples_per_epoch: int,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        foreground_prob: float = 0.0,
    ) -> None:
        self.cases = list(cases)
        if not self.cases:
            raise DataError("PatchDataset needs at least one case, got none")
        if not all(isinstance(c, Case) for c in self.cases):
            raise DataError("PatchDataset cases must be medseg.data.Case objects")
        self.patch_size = self._patch_shape(patch_size)
        if (
            isinstance(samples_per_epoch, bool)
            or not isinstance(samples_per_epoch, (int, np.integer))
            or samples_per_epoch < 1
        ):
            raise ConfigError(f"samples_per_epoch must be a positive int, got {samples_per_epoch!r}")
        if not 0.0 <= float(foreground_prob) <= 1.0:
            raise ConfigError(f"foreground_prob must be in [0, 1], got {foreground_prob!r}")
        if int(seed) < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        self.samples_per_epoch = int(samples_per_epoch)
        self.augment = augment if augment is not None else AugmentConfig.none()
        self.seed = int(seed)
        self.foreground_prob = float(foreground_prob)
        with_cl = [c.centerline is not None for c in self.cases]
        if any(with_cl) and not all(with_cl):
            raise DataError("PatchDataset: some cases have a centerline and some do not")
        self.keys = _KEYS_CL if all(with_cl) else _KEYS
        self.modes = _MODES_CL if all(with_cl) else _MODES
        self.epoch = 0
        self._fg: dict[int, np.ndarray] = {}
        self._build_transforms()

    @staticmethod
    def _patch_shape(patch_size: Any) -> tuple[int, ...]:
        """``data.patch_size`` -> the patch's spatial shape ((H, W) here)."""
        return _pair(patch_size)

    def _build_transforms(self) -> None:
        a = self.augment
        ph, pw = self.patch_size
        side = max(ph, pw)
        if a.geometric:
            theta = math.radians(min(a.rotate_degrees, 45.0)) if a.rotate_prob > 0 else 0.0
            angles = np.linspace(0.0, theta, 16)
            bbox = max(
                float(np.max(ph * np.abs(np.cos(angles)) + pw * np.abs(np.sin(angles)))),
                float(np.max(ph * np.abs(np.sin(angles)) + pw * np.abs(np.cos(angles)))),
            )
            if a.rotate_prob > 0 and a.rotate_degrees > 45.0:
                bbox = math.hypot(ph, pw)
            margin = 2 + (math.ceil(4 * a.elastic_magnitude[1]) if a.elastic_prob > 0 else 0)
            side = math.ceil(bbox) + 2 * margin
        self.window = side
        self.geometric: list[Any] = []
        if a.rot90_prob > 0:
            self.geometric.append(RandRotate90d(self.keys, prob=a.rot90_prob, max_k=3, spatial_axes=(0, 1)))
        if a.rotate_prob > 0 and a.rotate_degrees > 0:
            rad = math.radians(a.rotate_degrees)
            self.geometric.append(
                RandRotated(
                    self.keys, range_x=rad, prob=a.rotate_prob, keep_size=True, mode=self.modes, padding_mode="zeros"
                )
            )
        # Rand2DElasticd draws a per-pixel noise field on every call even when its own coin says
        # "no", so the coin is tossed here (with the sample's generator) and MONAI gets prob=1.
        self.elastic = None
        if a.elastic_prob > 0:
            self.elastic = Rand2DElasticd(
                self.keys,
                spacing=(a.elastic_spacing, a.elastic_spacing),
                magnitude_range=a.elastic_magnitude,
                prob=1.0,
                mode=self.modes,
                padding_mode="zeros",
            )
        self.flips = (
            [RandFlipd(self.keys, prob=a.flip_prob, spatial_axis=ax) for ax in (0, 1)] if a.flip_prob > 0 else []
        )
        self._build_intensity()

    def _build_intensity(self) -> None:
        """The image-only transforms (any number of spatial dims): brightness/contrast, gamma, noise."""
        a = self.augment
        self.brightness_contrast = []
        if a.brightness_contrast_prob > 0:
            self.brightness_contrast = [
                RandShiftIntensityd("image", offsets=a.brightness, prob=1.0),
                RandScaleIntensityd("image", factors=a.contrast, prob=1.0),
            ]
        self.intensity: list[Any] = []
        if a.gamma_prob > 0:
            self.intensity.append(RandAdjustContrastd("image", gamma=a.gamma, prob=a.gamma_prob))
        if a.noise_prob > 0 and a.noise_std > 0:
            self.intensity.append(RandGaussianNoised("image", prob=a.noise_prob, mean=0.0, std=a.noise_std))

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for plain int keys (tuple keys carry their own)."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def _parse_key(self, key: Any) -> tuple[int, int]:
        if isinstance(key, (tuple, list)):
            if len(key) != 2:
                raise TypeError(f"PatchDataset key must be an int or (epoch, index), got {key!r}")
            epoch, index = int(key[0]), int(key[1])
        elif isinstance(key, (int, np.integer)) or (isinstance(key, torch.Tensor) and key.numel() == 1):
            epoch, index = self.epoch, int(key)
        else:
            raise TypeError(f"PatchDataset key must be an int or (epoch, index), got {key!r}")
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if not 0 <= index < self.samples_per_epoch:
            raise IndexError(f"index {index} outside range({self.samples_per_epoch})")
        return epoch, index

    def _foreground(self, ci: int) -> np.ndarray:
        if ci not in self._fg:
            self._fg[ci] = np.flatnonzero(self.cases[ci].mask)
        return self._fg[ci]

    def _crop_origin(self, rng: np.random.Generator, case_index: int) -> tuple[int, int]:
        case = self.cases[case_index]
        H, W = case.shape
        ph, pw = self.patch_size
        y_lo, y_hi = min(0, H - ph), max(0, H - ph)
        x_lo, x_hi = min(0, W - pw), max(0, W - pw)
        if self.foreground_prob > 0 and rng.random() < self.foreground_prob:
            fg = self._foreground(case_index)
            if len(fg):
                fy, fx = divmod(int(fg[rng.integers(len(fg))]), W)
                return (int(np.clip(fy - ph // 2, y_lo, y_hi)), int(np.clip(fx - pw // 2, x_lo, x_hi)))
        return int(rng.integers(y_lo, y_hi + 1)), int(rng.integers(x_lo, x_hi + 1))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = self._parse_key(key)
        # MONAI's metadata tracking (MetaTensor, transform stacks) costs more than the transforms
        # themselves on small patches and is not needed here: switch it off for this call only.
        previous = get_track_meta()
        set_track_meta(False)
        try:
            return self._sample(epoch, index)
        finally:
            set_track_meta(previous)

    def _sample(self, epoch: int, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, epoch, index])
        ci = index % len(self.cases)
        case = self.cases[ci]
        ph, pw = self.patch_size
        y0, x0 = self._crop_origin(rng, ci)
        q = self.window
        wy, wx = y0 - (q - ph) // 2, x0 - (q - pw) // 2
        data: dict[str, Any] = {
            "image": torch.from_numpy(_crop_padded(case.image, wy, wx, q, q)),
            "mask": torch.from_numpy(_crop_padded(case.mask[None], wy, wx, q, q)),
            "fov": torch.from_numpy(_crop_padded(case.fov[None], wy, wx, q, q)),
        }
        if case.centerline is not None:
            data["centerline"] = torch.from_numpy(_crop_padded(case.centerline[None], wy, wx, q, q))
        state = np.random.RandomState(int(rng.integers(0, 2**32 - 1, dtype=np.uint64)))
        for t in self.geometric:
            t.set_random_state(state=state)
            data = t(data)
        if self.elastic is not None and rng.random() < self.augment.elastic_prob:
            self.elastic.set_random_state(state=state)
            data = self.elastic(data)
        oy, ox = (q - ph) // 2, (q - pw) // 2
        data = {k: v[:, oy : oy + ph, ox : ox + pw] for k, v in data.items()}
        for t in self.flips:
            t.set_random_state(state=state)
            data = t(data)
        return self._augment_intensity(data, rng, state)

    def _augment_intensity(
        self, data: dict[str, Any], rng: np.random.Generator, state: np.random.RandomState
    ) -> dict[str, torch.Tensor]:
        """Step 3 of the module docstring (image only), then plain tensors of :attr:`keys`."""
        if self.brightness_contrast and rng.random() < self.augment.brightness_contrast_prob:
            for t in self.brightness_contrast:
                t.set_random_state(state=state)
                data = t(data)
        a = self.augment
        if a.color_jitter_prob > 0 and data["image"].shape[0] == 3 and rng.random() < a.color_jitter_prob:
            sat = 1.0 + rng.uniform(-a.saturation, a.saturation)
            turn = rng.uniform(-a.hue, a.hue)
            data["image"] = color_jitter(_plain(data["image"]), sat, turn)
        for t in self.intensity:
            t.set_random_state(state=state)
            data = t(data)
        return {k: _plain(data[k]) for k in self.keys}

    def __repr__(self) -> str:
        return (
            f"PatchDataset(cases={len(self.cases)}, patch_size={self.patch_size}, "
            f"samples_per_epoch={self.samples_per_epoch}, seed={self.seed}, "
            f"foreground_prob={self.foreground_prob}, window={self.window})"
        )


def full_image_sample(case: Case) -> dict[str, Any]:
    """A whole image as tensors, for validation and inference.

    Returns:
        ``{"image": float32 (C, H, W), "mask": float32 (1, H, W) label map (0/1 for binary
        data), "fov": float32 (1, H, W) in {0, 1}, "id": str}``, plus "centerline" float32
        (1, H, W) when the case has one; the tensors are copies (the case is not shared).
    """
    sample = {
        "image": torch.from_numpy(np.array(case.image, dtype=np.float32, copy=True)),
        "mask": torch.from_numpy(case.mask[None].astype(np.float32)),
        "fov": torch.from_numpy(case.fov[None].astype(np.float32)),
        "id": case.id,
    }
    if case.centerline is not None:
        sample["centerline"] = torch.from_numpy(case.centerline[None].astype(np.float32))
    return sample


__all__ = ["PatchDataset", "full_image_sample"]
