"""Deterministic preprocessing a recipe can name, applied once when a dataset is loaded.

A pipeline is a list of steps, each a name or a one-key mapping of a name to its options::

    data:
      args:
        preprocess: [green, {clahe: {clip_limit: 0.01}}, {denoise: {sigma: 0.8}}, zscore]

Every dataset has a default pipeline (its class attribute ``default_preprocess``); a recipe's
``preprocess`` replaces it. Steps act on a :class:`~medseg.data.base.Case` whose ``image`` holds
the stored values (0..255 for 8-bit images) and return a new Case; masks, FOV and centerline
change only under ``resize`` (nearest neighbour, so they keep their label values).

Steps (intensity steps are MONAI transforms where MONAI has one, so 2-D and 3-D data share them;
every step leaves its input case untouched and returns a new one):

========== ===================================================================================
green      keep the G channel of an RGB image (grey images pass unchanged): the fundus vessel
           channel (Staal et al. 2004; most DRIVE papers)
gray       BT.601 luminance 0.299 R + 0.587 G + 0.114 B (grey images pass unchanged)
rgb        keep three channels; a grey image is repeated into R, G and B (so mixed grey and
           colour folders load as colour)
clahe      contrast-limited adaptive histogram equalisation per channel (scikit-image
           ``equalize_adapthist``; options clip_limit=0.01, kernel_size=None, nbins=256); the
           channel is first min-max scaled to [0, 1]; output in [0, 1]
denoise    Gaussian smoothing, options sigma=1.0 (pixels), borders reflected (SciPy)
minmax     per-channel min-max scaling to [lower, upper] (default [0, 1]) (MONAI ``ScaleIntensity``)
zscore     per channel (x - mean) / std over region="fov" (default) or "image"; with region fov,
           pixels outside the FOV are set to ``outside`` (default 0)
percentile per-channel clip to the [lower, upper] percentiles (default 0.5, 99.5) scaled to
           [0, 1] (MONAI ``ScaleIntensityRangePercentiles``): MR-style normalisation
hu_window  CT window: level, width in HU (default 40, 400: soft tissue) -> clipped to [0, 1]
           (MONAI ``ScaleIntensityRange``)
resize     to size [H, W]: image bilinear with anti-aliasing (MONAI ``Resize``), mask, FOV and
           centerline nearest; ``display`` follows
imagenet   (x / max_value - mean) / std per channel with ImageNet's mean (0.485, 0.456, 0.406)
           and std (0.229, 0.224, 0.225), max_value=255; needs three channels
========== ===================================================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medseg.data.base import Case, zscore_in_fov
from medseg.data.io import LUMA_WEIGHTS
from medseg.errors import ConfigError, DataError, did_you_mean
from medseg.registry import Registry

#: Step name -> function(case, **options) -> case: the preprocessing plugin kind. A new step is one
#: function decorated with ``@register_step("name")``; :func:`parse_steps` checks names and options
#: against it.
STEPS = Registry("preprocess step")
register_step = STEPS.register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _replace(case: Case, **changes: Any) -> Case:
    return dataclasses.replace(case, **changes)


def _channels(case: Case, step: str, want: int | None = None) -> int:
    c = int(case.image.shape[0])
    if want is not None and c != want:
        where = case.path or case.id
        raise DataError(f"{where}: step {step!r} needs a {want}-channel image, this one has {c}")
    return c


@register_step("green")
def green(case: Case) -> Case:
    """(3, H, W) -> (1, H, W) green channel; (1, H, W) unchanged."""
    if _channels(case, "green") == 1:
        return case
    _channels(case, "green", 3)
    return _replace(case, image=np.ascontiguousarray(case.image[1:2]))


@register_step("gray")
def gray(case: Case) -> Case:
    """(3, H, W) -> (1, H, W) BT.601 luminance; (1, H, W) unchanged."""
    if _channels(case, "gray") == 1:
        return case
    _channels(case, "gray", 3)
    w = np.asarray(LUMA_WEIGHTS, dtype=np.float32)
    return _replace(case, image=np.tensordot(w, case.image, axes=1)[None].astype(np.float32))


@register_step("rgb")
def rgb(case: Case) -> Case:
    """(3, H, W) unchanged; (1, H, W) repeated to (3, H, W)."""
    c = _channels(case, "rgb")
    if c == 3:
        return case
    _channels(case, "rgb", 1)
    return _replace(case, image=np.repeat(case.image, 3, axis=0))


@register_step("clahe")
def clahe(case: Case, clip_limit: float = 0.01, kernel_size: int | None = None, nbins: int = 256) -> Case:
    """CLAHE per channel (scikit-image); each channel min-max scaled to [0, 1] first; output [0, 1]."""
    from skimage.exposure import equalize_adapthist

    if not 0 < clip_limit <= 1:
        raise ConfigError(f"clahe clip_limit must be in (0, 1], got {clip_limit}")
    out = np.empty_like(case.image, dtype=np.float32)
    for i, ch in enumerate(case.image):
        lo, hi = float(ch.min()), float(ch.max())
        scaled = (ch - lo) / (hi - lo) if hi > lo else np.zeros_like(ch)
        out[i] = equalize_adapthist(
            scaled.astype(np.float64), kernel_size=kernel_size, clip_limit=clip_limit, nbins=nbins
        )
    return _replace(case, image=out)


@register_step("denoise")
def denoise(case: Case, sigma: float = 1.0) -> Case:
    """Gaussian smoothing of each channel with std ``sigma`` pixels, borders reflected
    (``scipy.ndimage.gaussian_filter``, truncated at 4 sigma). MONAI's ``GaussianSmooth`` pads
    with zeros, which darkens a border band of every image, so it is not used here."""
    from scipy.ndimage import gaussian_filter

    if sigma <= 0:
        raise ConfigError(f"denoise sigma must be > 0 pixels, got {sigma}")
    out = np.stack([gaussian_filter(ch.astype(np.float32), float(sigma), mode="reflect") for ch in case.image])
    return _replace(case, image=out.astype(np.float32))


@register_step("minmax")
def minmax(case: Case, lower: float = 0.0, upper: float = 1.0) -> Case:
    """Per-channel min-max scaling to [lower, upper] (MONAI ``ScaleIntensity``)."""
    from monai.transforms import ScaleIntensity

    out = ScaleIntensity(minv=lower, maxv=upper, channel_wise=True)(case.image.copy())
    return _replace(case, image=np.asarray(out, dtype=np.float32))


@register_step("zscore")
def zscore(case: Case, region: str = "fov", outside: float | None = 0.0) -> Case:
    """Per-channel z-score over the FOV (``region="fov"``) or all pixels (``"image"``)."""
    if region not in ("fov", "image"):
        raise ConfigError(f"zscore region must be 'fov' or 'image', got {region!r}")
    if region == "image":
        return _replace(case, image=zscore_in_fov(case.image, np.ones(case.shape, bool), None))
    return _replace(case, image=zscore_in_fov(case.image, case.fov, outside))


@register_step("percentile")
def percentile(case: Case, lower: float = 0.5, upper: float = 99.5, clip: bool = True) -> Case:
    """Per-channel percentile window to [0, 1] (MONAI ``ScaleIntensityRangePercentiles``)."""
    from monai.transforms import ScaleIntensityRangePercentiles

    if not 0 <= lower < upper <= 100:
        raise ConfigError(f"percentile needs 0 <= lower < upper <= 100, got {lower}, {upper}")
    t = ScaleIntensityRangePercentiles(lower, upper, 0.0, 1.0, clip=clip, channel_wise=True)
    return _replace(case, image=np.asarray(t(case.image.copy()), dtype=np.float32))


@register_step("hu_window")
def hu_window(case: Case, level: float = 40.0, width: float = 400.0) -> Case:
    """CT window [level - width/2, level + width/2] HU -> [0, 1], clipped (MONAI ``ScaleIntensityRange``)."""
    from monai.transforms import ScaleIntensityRange

    if width <= 0:
        raise ConfigError(f"hu_window width must be > 0 HU, got {width}")
    t = ScaleIntensityRange(level - width / 2, level + width / 2, 0.0, 1.0, clip=True)
    return _replace(case, image=np.asarray(t(case.image.copy()), dtype=np.float32))


@register_step("resize")
def resize(case: Case, size: Sequence[int] = (352, 352)) -> Case:
    """Resize to ``size`` = (H, W): image bilinear + anti-aliasing; labels and FOV nearest."""
    from monai.transforms import Resize

    if len(size) != 2 or any(int(s) < 1 for s in size):
        raise ConfigError(f"resize size must be [H, W] with positive sizes, got {size}")
    hw = (int(size[0]), int(size[1]))
    if hw == case.shape:
        return case
    img = Resize(hw, mode="bilinear", anti_aliasing=True)(case.image.copy())
    near = Resize(hw, mode="nearest")

    def lab(a: np.ndarray) -> np.ndarray:
        return np.asarray(near(a[None].astype(np.float32)))[0]

    disp = case.display
    d = disp if disp.ndim == 3 else disp[..., None]
    d = np.asarray(Resize(hw, mode="bilinear", anti_aliasing=True)(np.moveaxis(d, -1, 0).astype(np.float32)))
    d = np.clip(np.rint(np.moveaxis(d, 0, -1)), 0, 255).astype(np.uint8)
    return _replace(
        case,
        image=np.asarray(img, dtype=np.float32),
        mask=lab(case.mask).astype(np.uint8),
        fov=lab(case.fov) > 0.5,
        centerline=None if case.centerline is None else lab(case.centerline).astype(np.uint8),
        display=d if disp.ndim == 3 else d[..., 0],
    )


@register_step("imagenet")
def imagenet(
    case: Case, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, max_value: float = 255.0
) -> Case:
    """ImageNet normalisation ``(x / max_value - mean) / std`` per channel (the statistics of
    torchvision's ImageNet-pretrained encoders; an affine map, so plain numpy)."""
    _channels(case, "imagenet", len(mean))
    m = np.asarray(mean, np.float32)[:, None, None] * max_value
    s = np.asarray(std, np.float32)[:, None, None] * max_value
    return _replace(case, image=((case.image - m) / s).astype(np.float32))


def parse_named(item: Any, what: str) -> tuple[str, Any]:
    """Split a named option spec into ``(name, options)``.

    Accepts ``"name"``, ``{"name": {options}}`` (None options mean none) and
    ``{"name": "name", **options}``.

    Raises:
        ConfigError: anything else (the message names ``what``).
    """
    if isinstance(item, str):
        return item, {}
    if isinstance(item, Mapping) and "name" in item:
        return str(item["name"]), {k: v for k, v in item.items() if k != "name"}
    if isinstance(item, Mapping) and len(item) == 1:
        name, opts = next(iter(item.items()))
        return str(name), ({} if opts is None else opts)
    raise ConfigError(f"{what} {item!r} must be a name or a one-key mapping name: {{options}}")


def parse_steps(spec: Sequence[Any] | None) -> list[tuple[str, dict]]:
    """Normalise a pipeline spec to ``[(name, options), ...]``.

    Accepts names (``"zscore"``), one-key mappings (``{"clahe": {"clip_limit": 0.02}}``) and
    mappings with a ``name`` key (``{"name": "clahe", "clip_limit": 0.02}``).

    Raises:
        ConfigError: not a list, an unknown step (closest names suggested), options that are not a
            mapping or that the step does not take.
    """
    if spec is None:
        return []
    if isinstance(spec, (str, Mapping)) or not isinstance(spec, Sequence):
        raise ConfigError(f"preprocess must be a list of steps, got {spec!r}")
    out: list[tuple[str, dict]] = []
    for item in spec:
        name, opts = parse_named(item, "preprocess step")
        if name not in STEPS:
            hint = did_you_mean(str(name), STEPS.in_order())
            raise ConfigError(f"unknown preprocess step {name!r}{hint} (steps: {', '.join(STEPS.in_order())})")
        if not isinstance(opts, Mapping):
            raise ConfigError(f"options of preprocess step {name!r} must be a mapping, got {opts!r}")
        import inspect

        params = list(inspect.signature(STEPS[name]).parameters)[1:]
        bad = [k for k in opts if k not in params]
        if bad:
            raise ConfigError(
                f"preprocess step {name!r} has no option {bad[0]!r}"
                + (f" (options: {', '.join(params)})" if params else " (it takes none)")
            )
        out.append((str(name), dict(opts)))
    return out


class Pipeline:
    """A parsed preprocessing pipeline; call it on a Case.

    Args:
        spec: see :func:`parse_steps`.

    Raises:
        ConfigError: as :func:`parse_steps`. Calling raises DataError for an image a step cannot
            take (e.g. ``imagenet`` on a grey image) and for non-finite results, naming the file.
    """

    def __init__(self, spec: Sequence[Any] | None) -> None:
        self.steps = parse_steps(spec)

    def __call__(self, case: Case) -> Case:
        for name, opts in self.steps:
            case = STEPS[name](case, **opts)
        if not np.isfinite(case.image).all():
            raise DataError(f"{case.path or case.id}: preprocessing produced NaN or infinite values")
        return case

    def describe(self) -> list:
        """The steps as a JSON-able list (names, or one-key mappings when options are set)."""
        return [n if not o else {n: o} for n, o in self.steps]

    def __repr__(self) -> str:
        return f"Pipeline({self.describe()})"


__all__ = ["STEPS", "IMAGENET_MEAN", "IMAGENET_STD", "parse_named", "parse_steps", "Pipeline"] + list(STEPS.in_order())
