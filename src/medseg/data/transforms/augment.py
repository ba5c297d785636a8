"""Augmentation settings (:class:`AugmentConfig`) and the colour jitter MONAI lacks.

:class:`~medseg.data.transforms.patches.PatchDataset` applies them (the order and the
randomness are described there). :func:`color_jitter`: saturation and hue in YIQ space.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medseg.errors import ConfigError, did_you_mean

_KEYS = ("image", "mask", "fov")
_MODES = ("bilinear", "nearest", "nearest")
#: With centerline targets (OCTA-Net's thin branch) the centerline travels with the mask.
_KEYS_CL = _KEYS + ("centerline",)
_MODES_CL = _MODES + ("nearest",)


@dataclass
class AugmentConfig:
    """Augmentation probabilities and magnitudes (defaults suit 2-D fundus/OCTA patches).

    Attributes:
        flip_prob: probability of a flip, drawn separately for each axis.
        rot90_prob: probability of a rotation by k x 90 degrees, k uniform in 1..3.
        rotate_prob, rotate_degrees: probability and range (+-degrees, uniform) of a free rotation.
        elastic_prob: probability of an elastic deformation (MONAI ``Rand2DElasticd``).
        elastic_spacing: control-point spacing in px (the deformation's length scale).
        elastic_magnitude: (min, max) of the control-point displacement scale in px.
        brightness_contrast_prob: probability of a joint brightness shift and contrast scale.
        brightness: additive offset range +-brightness (z-score units).
        contrast: multiplicative range 1 +- contrast.
        gamma_prob, gamma: probability and (min, max) of a gamma curve (on the patch rescaled to
            [0, 1] and back, MONAI ``RandAdjustContrastd``).
        noise_prob, noise_std: probability and maximal std of additive Gaussian noise.
        color_jitter_prob: probability of a colour jitter (3-channel images only; default 0).
        saturation: chroma scale range 1 +- saturation.
        hue: hue rotation range +- hue turns (0.5 = 180 degrees), as in torchvision's ColorJitter.

    Raises (construction and :meth:`from_dict`):
        ConfigError: probability outside [0, 1], negative magnitude, or a bad range.
    """

    flip_prob: float = 0.5
    rot90_prob: float = 0.5
    rotate_prob: float = 0.3
    rotate_degrees: float = 15.0
    elastic_prob: float = 0.2
    elastic_spacing: float = 24.0
    elastic_magnitude: tuple[float, float] = (0.5, 1.5)
    brightness_contrast_prob: float = 0.3
    brightness: float = 0.1
    contrast: float = 0.2
    gamma_prob: float = 0.2
    gamma: tuple[float, float] = (0.7, 1.5)
    noise_prob: float = 0.2
    noise_std: float = 0.1
    color_jitter_prob: float = 0.0
    saturation: float = 0.2
    hue: float = 0.05

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("elastic_magnitude", "gamma"):
                if not (isinstance(value, (list, tuple)) and len(value) == 2):
                    raise ConfigError(f"augment.{f.name} must be a pair (min, max), got {value!r}")
                lo, hi = float(value[0]), float(value[1])
                if not (0 <= lo <= hi) or (f.name == "gamma" and lo <= 0):
                    raise ConfigError(
                        f"augment.{f.name} must satisfy 0 < min <= max (0 <= for magnitude), got {value!r}"
                    )
                setattr(self, f.name, (lo, hi))
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"augment.{f.name} must be a number, got {value!r}")
            value = float(value)
            if f.name.endswith("_prob") and not 0.0 <= value <= 1.0:
                raise ConfigError(f"augment.{f.name} must be a probability in [0, 1], got {value}")
            if value < 0:
                raise ConfigError(f"augment.{f.name} must be >= 0, got {value}")
            setattr(self, f.name, value)
        if self.elastic_spacing <= 0:
            raise ConfigError(f"augment.elastic_spacing must be > 0, got {self.elastic_spacing}")
        if self.hue > 0.5:
            raise ConfigError(f"augment.hue must be in [0, 0.5] turns, got {self.hue}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "AugmentConfig":
        """Defaults overridden by ``d`` (None or {} -> defaults); lists become tuples.

        Raises:
            ConfigError: an unknown key (the message names it and the closest valid keys) or an
                invalid value.
        """
        if d is None:
            return cls()
        if isinstance(d, AugmentConfig):
            return d
        if not isinstance(d, Mapping):
            raise ConfigError(f"augment must be a mapping of options, got {type(d).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in valid:
                hint = did_you_mean(str(key), valid, n=3)
                raise ConfigError(f"unknown augment option {key!r}{hint} Valid options: {', '.join(valid)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @classmethod
    def none(cls) -> "AugmentConfig":
        """No augmentation at all (every probability 0)."""
        return cls(**{f.name: 0.0 for f in dataclasses.fields(cls) if f.name.endswith("_prob")})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists) for saving in a run's config."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def geometric(self) -> bool:
        """True when any rotation or deformation can happen (needs a larger crop window)."""
        return self.rotate_prob > 0 or self.elastic_prob > 0


def _plain(x: Any) -> torch.Tensor:
    """MONAI output (MetaTensor, tensor or array) -> a plain contiguous float32 torch tensor."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    return x.float().contiguous()


#: RGB -> YIQ (NTSC, FCC 1953 coefficients); Y is BT.601 luminance, (I, Q) the chroma plane.
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def color_jitter(image: torch.Tensor, saturation: float, hue_turns: float) -> torch.Tensor:
    """Scale the chroma by ``saturation`` and rotate the hue by ``hue_turns`` full turns.

    Works in YIQ: luminance Y is kept; the chroma vector (I, Q) is multiplied by ``saturation``
    and rotated by ``2 pi hue_turns``; the result goes back to RGB. The map is linear, so it can
    act on normalised images too (it then jitters the normalised channels).

    Args:
        image: float ``(3, H, W)`` RGB.
        saturation: >= 0; 1 keeps the colours, 0 gives grey (R = G = B = Y).
        hue_turns: rotation in turns (0.5 = 180 degrees).

    Returns:
        float32 ``(3, H, W)``.

    Raises:
        ValueError: not a 3-channel image or negative saturation.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"color_jitter needs a (3, H, W) image, got {tuple(image.shape)}")
    if saturation < 0:
        raise ValueError(f"saturation must be >= 0, got {saturation}")
    a = 2 * math.pi * hue_turns
    c, s = math.cos(a) * saturation, math.sin(a) * saturation
    chroma = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    m = torch.linalg.inv(_RGB2YIQ) @ chroma @ _RGB2YIQ
    return torch.einsum("ij,jhw->ihw", m, image.float()).contiguous()


__all__ = ["AugmentConfig", "color_jitter"]
