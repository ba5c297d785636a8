"""3-D training patches of volume cases, reproducible from ``(seed, epoch, index)``.

:class:`VolumePatchDataset` is :class:`~medseg.data.transforms.patches.PatchDataset` for volume
cases (:class:`~medseg.data.base.Case` with a ``(D, H, W)`` mask, read with ``spatial_dims: 3``):
the same key contract (every random choice of sample ``(epoch, index)`` comes from
``np.random.default_rng([seed, epoch, index])``, so workers, DDP ranks and resumed runs see the
same samples), the same :class:`~medseg.data.transforms.augment.AugmentConfig` options, with
MONAI's 3-D dictionary transforms:

1. the crop: a ``(d, h, w)`` box, with probability ``foreground_prob`` centred (as far as the
   volume allows) on a uniformly drawn foreground voxel, else placed uniformly (the
   foreground-biased sampling of nnU-Net, Isensee et al., Nature Methods 18:203, 2021, and of
   MONAI's ``RandCropByPosNegLabeld``); a volume smaller than the box is zero-padded;
2. geometric, on a cube around the crop large enough that the rotated patch has no empty
   corners: ``RandRotate90d`` in the (H, W) plane (k = 1..3) and ``RandRotated`` (uniform angle in
   +-rotate_degrees about each of the three axes); image trilinear, mask and fov nearest;
3. centre crop to the patch, ``RandFlipd`` along each of the three axes;
4. intensity (image only), as in 2-D: brightness/contrast, gamma, Gaussian noise.

Elastic deformation is 2-D only here (``elastic_prob`` must be 0 for volumes): MONAI's
``Rand3DElasticd`` costs seconds per patch on a CPU, more than a training step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import RandFlipd, RandRotate90d, RandRotated

from medseg.data.base import Case, CaseDataset
from medseg.data.transforms.augment import AugmentConfig
from medseg.data.transforms.patches import PatchDataset
from medseg.errors import ConfigError, DataError


def _triple(patch_size: Any) -> tuple[int, int, int]:
    ps = (patch_size,) * 3 if isinstance(patch_size, (int, np.integer)) else tuple(patch_size)
    if len(ps) != 3 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in ps):
        raise ConfigError(f"patch_size of a volume dataset must be a positive int or (D, H, W), got {patch_size!r}")
    return int(ps[0]), int(ps[1]), int(ps[2])


def crop_padded(arr: np.ndarray, origin: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """``arr[..., o0:o0+s0, o1:o1+s1, ...]`` over the last ``len(size)`` axes as float32, zero where
    the box leaves the array (origins may be negative).

    Args:
        arr: ``(..., D, H, W)`` (or any number of trailing spatial axes) numeric array.
        origin: the box's first voxel per spatial axis (voxels).
        size: the box's extent per spatial axis (voxels, > 0).

    Returns:
        float32 ``(..., *size)``, a new array.
    """
    k = len(size)
    out = np.zeros(arr.shape[:-k] + tuple(size), dtype=np.float32)
    src, dst = [], []
    for o, s, n in zip(origin, size, arr.shape[-k:]):
        lo, hi = max(o, 0), min(o + s, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - o, hi - o))
    out[(Ellipsis, *dst)] = arr[(Ellipsis, *src)]
    return out


class VolumePatchDataset(PatchDataset):
    """Random, augmented 3-D training patches of volume cases (see the module docstring).

    Args:
        cases: volume cases (``spatial_dims == 3``), all with the same channel count.
        patch_size: int (a cube) or (D, H, W) in voxels.
        samples_per_epoch, augment, seed, foreground_prob: as :class:`PatchDataset`.

    ``ds[key]`` (``key`` an int or ``(epoch, index)``; sample ``index`` uses case
    ``index % len(cases)``) returns ``{"image": float32 (C, d, h, w), "mask": float32
    (1, d, h, w) label map (values 0..K-1), "fov": float32 (1, d, h, w) in {0, 1}}``.

    Raises:
        DataError: no cases, or cases that are not volume cases.
        ConfigError: bad patch_size, samples_per_epoch or foreground_prob, or ``elastic_prob``
            > 0 (2-D only).
    """

    def __init__(
        self,
        cases: CaseDataset | Sequence[Case],
        patch_size: int | tuple[int, int, int],
        samples_per_epoch: int,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        foreground_prob: float = 0.0,
    ) -> None:
        flat = list(cases)
        if flat and not all(isinstance(c, Case) and c.spatial_dims == 3 for c in flat):
            raise DataError(
                "VolumePatchDataset needs volume cases (a (D, H, W) mask; read the dataset with spatial_dims: 3)"
            )
        if augment is not None and augment.elastic_prob > 0:
            raise ConfigError(
                f"data.augment.elastic_prob={augment.elastic_prob} is 2-D only; set it to 0 for a volume dataset "
                "(3-D patches are rotated, flipped and intensity-augmented)"
            )
        super().__init__(flat, patch_size, samples_per_epoch, augment, seed, foreground_prob)

    @staticmethod
    def _patch_shape(patch_size: Any) -> tuple[int, ...]:
        return _triple(patch_size)

    def _build_transforms(self) -> None:
        a = self.augment
        side = max(self.patch_size)
        if a.rotate_prob > 0 and a.rotate_degrees > 0:
            # a cube of side s turned by any angle fits in a cube of side s * sqrt(3)
            side = math.ceil(math.sqrt(3) * side) + 4
        self.window = side
        self.geometric: list[Any] = []
        if a.rot90_prob > 0:
            self.geometric.append(RandRotate90d(self.keys, prob=a.rot90_prob, max_k=3, spatial_axes=(1, 2)))
        if a.rotate_prob > 0 and a.rotate_degrees > 0:
            rad = math.radians(a.rotate_degrees)
            self.geometric.append(
                RandRotated(
                    self.keys,
                    range_x=rad,
                    range_y=rad,
                    range_z=rad,
                    prob=a.rotate_prob,
                    keep_size=True,
                    mode=("bilinear", "nearest", "nearest"),
                    padding_mode="zeros",
                )
            )
        self.elastic = None
        self.flips = (
            [RandFlipd(self.keys, prob=a.flip_prob, spatial_axis=ax) for ax in (0, 1, 2)] if a.flip_prob > 0 else []
        )
        self._build_intensity()

    def _crop_origin(self, rng: np.random.Generator, case_index: int) -> tuple[int, ...]:
        shape = self.cases[case_index].shape
        lo = [min(0, n - p) for n, p in zip(shape, self.patch_size)]
        hi = [max(0, n - p) for n, p in zip(shape, self.patch_size)]
        if self.foreground_prob > 0 and rng.random() < self.foreground_prob:
            fg = self._foreground(case_index)
            if len(fg):
                centre = np.unravel_index(int(fg[rng.integers(len(fg))]), shape)
                return tuple(int(np.clip(c - p // 2, a, b)) for c, p, a, b in zip(centre, self.patch_size, lo, hi))
        return tuple(int(rng.integers(a, b + 1)) for a, b in zip(lo, hi))

    def _sample(self, epoch: int, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, epoch, index])
        ci = index % len(self.cases)
        case = self.cases[ci]
        origin = self._crop_origin(rng, ci)
        q = self.window
        box = [o - (q - p) // 2 for o, p in zip(origin, self.patch_size)]
        data: dict[str, Any] = {
            "image": torch.from_numpy(crop_padded(case.image, box, (q, q, q))),
            "mask": torch.from_numpy(crop_padded(case.mask[None], box, (q, q, q))),
            "fov": torch.from_numpy(crop_padded(case.fov[None], box, (q, q, q))),
        }
        state = np.random.RandomState(int(rng.integers(0, 2**32 - 1, dtype=np.uint64)))
        for t in self.geometric:
            t.set_random_state(state=state)
            data = t(data)
        inner = tuple(slice((q - p) // 2, (q - p) // 2 + p) for p in self.patch_size)
        data = {k: v[(slice(None), *inner)] for k, v in data.items()}
        for t in self.flips:
            t.set_random_state(state=state)
            data = t(data)
        return self._augment_intensity(data, rng, state)

    def __repr__(self) -> str:
        return super().__repr__().replace("PatchDataset(", "VolumePatchDataset(", 1)


__all__ = ["VolumePatchDataset", "crop_padded"]
