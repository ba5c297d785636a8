"""Predict a whole 3-D volume with a 2-D (or 2.5-D) network, slice by slice, or with a 3-D network
in one pass over the volume, and write NIfTI.

:func:`predict_volume` reads a NIfTI file or a DICOM series folder, normalises its intensities
over the whole volume exactly as the ``msd`` / ``dicom`` datasets do, cuts it into slice stacks
along ``slice_axis`` (2 * context + 1 adjacent slices as channels, border slices repeated), runs
a prediction callable on batches of slices, puts the label map back into the volume's array order
and writes it as NIfTI in the source's geometry (a DICOM series gets a header built from its
geometry). It depends only on numpy and torch (no Lightning): the caller supplies
``predict_fn``, e.g. a model in eval mode wrapped with its sliding-window inference.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.datasets.volumes import slice_stacks
from medseg.data.io.nifti import canonical_modality
from medseg.data.io.volume import read_volume
from medseg.data.io.writeback import write_nifti_like
from medseg.data.transforms.intensity import normalize_intensity, resolve_intensity
from medseg.errors import ConfigError


@dataclass
class VolumePrediction:
    """What :func:`predict_volume` produced.

    Attributes:
        labels: uint8 ``(I, J, K)`` label map in the source's array order (0 = background).
        affine: (4, 4) voxel -> world (RAS+ mm) of the source, also stored in the file.
        spacing: mm per voxel along I, J, K.
        path: the NIfTI file written.
        source: the NIfTI file or DICOM folder read.
        slices: number of slices predicted (size of ``slice_axis``); 1 for a 3-D network (the
            volume is one input).
        modality: "CT", "MR" or None (unknown).
        intensity: the intensity method used, ``(name, options)``.
    """

    labels: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    path: Path
    source: Path
    slices: int
    modality: str | None
    intensity: tuple[str | None, dict]


def _to_numpy(out: Any) -> np.ndarray:
    try:
        import torch

        if isinstance(out, torch.Tensor):
            return out.detach().float().cpu().numpy() if out.is_floating_point() else out.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(out)


def _labels_from_output(out: np.ndarray, n: int, hw: tuple[int, int], threshold: float, size_used: bool) -> np.ndarray:
    """(n, H, W) uint8 labels from a predict_fn output (see predict_volume)."""
    import torch
    import torch.nn.functional as F

    if out.ndim == 3:
        if out.dtype.kind not in "biu":
            raise ValueError(
                f"predict_fn returned a {out.dtype} array of shape {out.shape}; a (N, H, W) output must "
                "be an integer label map (return (N, K, H, W) probabilities otherwise)"
            )
        labels = out.astype(np.int64)
        if labels.shape[0] != n:
            raise ValueError(f"predict_fn returned {labels.shape[0]} label maps for {n} slices")
        if size_used and labels.shape[1:] != hw:
            t = torch.from_numpy(labels[:, None].astype(np.float32))
            labels = F.interpolate(t, size=hw, mode="nearest")[:, 0].numpy().astype(np.int64)
    elif out.ndim == 4:
        if out.shape[0] != n:
            raise ValueError(f"predict_fn returned {out.shape[0]} outputs for {n} slices")
        prob = out.astype(np.float32)
        if size_used and prob.shape[2:] != hw:
            prob = F.interpolate(torch.from_numpy(prob), size=hw, mode="bilinear", align_corners=False).numpy()
        if prob.shape[1] == 1:
            labels = (prob[:, 0] >= threshold).astype(np.int64)
        else:
            labels = prob.argmax(axis=1)
    else:
        raise ValueError(
            f"predict_fn returned shape {out.shape}; expected (N, K, H, W) class scores or (N, H, W) labels"
        )
    if labels.shape[1:] != hw:
        raise ValueError(f"predict_fn returned maps of size {labels.shape[1:]} for slices of size {hw}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"predict_fn returned labels {labels.min()}..{labels.max()}; expected 0..255")
    return labels.astype(np.uint8)


def predict_volume(
    predict_fn: Callable[[Any], Any],
    source: str | os.PathLike,
    out_path: str | os.PathLike,
    slice_axis: int = 2,
    context: int = 0,
    intensity: Any = "auto",
    modality: str | None = None,
    batch_size: int = 32,
    size: tuple[int, int] | None = None,
    threshold: float = 0.5,
    spatial_dims: int = 2,
) -> VolumePrediction:
    """Segment a volume slice by slice (or whole, for a 3-D network) and write the label map as NIfTI.

    Args:
        predict_fn: called as ``predict_fn(x)`` on batches, under ``torch.no_grad()``, with ``x``
            a float32 CPU tensor ``(N, C, H, W)``: N <= batch_size slices, C = 2 * context + 1
            adjacent slices (the middle one is the slice predicted), ``(H, W)`` the two array axes
            other than ``slice_axis`` in order (or ``size`` when given). Values are the normalised
            intensities (e.g. [0, 1] after the percentile or HU window). It moves ``x`` to its
            device itself and must accept any H, W (pad inside, or pass ``size``). It returns a
            torch tensor or numpy array, either

            - ``(N, K, H, W)`` with K >= 2: class probabilities or logits; the label is the arg-max
              over K;
            - ``(N, 1, H, W)``: foreground **probability** (apply the sigmoid first); label 1
              where it is >= ``threshold``;
            - ``(N, H, W)`` integer: the label map itself.
        source: a NIfTI file (``.nii`` / ``.nii.gz``) or a DICOM series folder.
        out_path: the ``.nii.gz`` / ``.nii`` file to write (not the source itself).
        slice_axis, context: as the datasets' options (the values the network was trained with).
        intensity, modality: as the datasets' options; "auto" uses the HU window for CT (DICOM
            Modality tag, or ``modality="CT"``) and the 0.5-99.5 percentile window otherwise.
        batch_size: slices per ``predict_fn`` call.
        size: ``(H, W)`` to resize each slice stack to before ``predict_fn`` (MONAI ``Resize``,
            bilinear with anti-aliasing, as the ``resize`` preprocessing step); the output is
            resized back (scores bilinear, label maps nearest). None keeps the slice size.
        threshold: foreground probability threshold for one-channel outputs.
        spatial_dims: 2 (the slices above) or 3: ``predict_fn`` gets the whole normalised volume
            once, ``(1, 1, I, J, K)`` in its array order (a 3-D network with its sliding windows;
            the ``volume`` datasets' ``spatial_dims: 3``), and returns ``(1, K, I, J, K)`` scores
            or ``(1, I, J, K)`` labels, read as above; ``slice_axis``, ``context`` (must be 0),
            ``batch_size`` and ``size`` do not apply.

    Returns:
        :class:`VolumePrediction`; the file holds uint8 labels ``(I, J, K)`` with the source's
        affine and header (qform/sform codes, pixdim, units; see
        :func:`medseg.data.io.writeback.write_nifti_like`).

    Raises:
        DataError: unreadable source (see :func:`medseg.data.io.volume.read_volume`).
        ConfigError: invalid slice_axis, context, batch_size, size, intensity, or an output path
            that is the source, inside a DICOM series folder, or not ``.nii``/``.nii.gz``.
        ValueError: ``predict_fn`` returned an output of the wrong shape or type.
    """
    import torch

    if slice_axis not in (0, 1, 2, -1, -2, -3) or isinstance(slice_axis, bool):
        raise ConfigError(f"slice_axis must be 0, 1 or 2, got {slice_axis!r}")
    if not isinstance(context, int) or context < 0:
        raise ConfigError(f"context must be an integer >= 0, got {context!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if size is not None and (len(size) != 2 or any(int(s) < 1 for s in size)):
        raise ConfigError(f"size must be [H, W] with positive sizes, got {size!r}")
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 (slices) or 3 (whole volumes), got {spatial_dims!r}")
    if spatial_dims == 3 and (context or size is not None):
        raise ConfigError("context and size apply to slices; a 3-D network takes the whole volume (spatial_dims 3)")
    axis = int(slice_axis) % 3
    out = Path(out_path)
    vol = read_volume(source)
    mod = canonical_modality(modality) or vol.modality
    method = resolve_intensity(intensity, mod)
    norm = normalize_intensity(vol.array, intensity, mod)
    if spatial_dims == 3:
        with torch.no_grad():
            res = _to_numpy(predict_fn(torch.from_numpy(np.ascontiguousarray(norm[None, None], dtype=np.float32))))
        if res.ndim not in (4, 5) or res.shape[0] != 1:
            raise ValueError(
                f"predict_fn returned shape {res.shape} for one volume; expected (1, K, I, J, K) scores or (1, I, J, K) labels"
            )
        # the volume's first axis as the "slices" of the 2-D reading: (I, K, J, K) scores or (I, J, K) labels
        per_slice = np.moveaxis(res[0], 0, 1) if res.ndim == 5 else res[0]
        label_volume = _labels_from_output(per_slice, norm.shape[0], tuple(norm.shape[1:]), threshold, False)
        written = write_nifti_like(label_volume, vol, out)
        return VolumePrediction(label_volume, vol.affine, vol.spacing, written, Path(source), 1, mod, method)
    stacks = slice_stacks(norm, axis, context)  # (N, C, H, W)
    n, hw = stacks.shape[0], tuple(int(s) for s in stacks.shape[2:])
    resize = None
    if size is not None and tuple(int(s) for s in size) != hw:
        from monai.transforms import Resize

        resize = Resize((int(size[0]), int(size[1])), mode="bilinear", anti_aliasing=True)
    labels = np.empty((n,) + hw, dtype=np.uint8)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            batch = stacks[start : start + batch_size]
            if resize is not None:
                batch = np.stack([np.asarray(resize(s), dtype=np.float32) for s in batch])
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            res = _to_numpy(predict_fn(x))
            labels[start : start + len(batch)] = _labels_from_output(res, len(batch), hw, threshold, resize is not None)
    label_volume = np.ascontiguousarray(np.moveaxis(labels, 0, axis))
    written = write_nifti_like(label_volume, vol, out)
    return VolumePrediction(label_volume, vol.affine, vol.spacing, written, Path(source), n, mod, method)


__all__ = ["VolumePrediction", "predict_volume"]
