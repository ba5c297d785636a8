"""Inference as pure model-and-array functions: sliding window, whole image, TTA, ensembles.

Nothing here reads files or knows about runs, datasets or protocols: the evaluation and
prediction workflows (:mod:`medseg.workflows`) and the engine's validation both call these.

* :func:`predict_probabilities`: MONAI's ``sliding_window_inference`` (Gaussian or constant
  blending). DSCNet's released code blends 224x224 windows (stride 112) with a weight
  1/(dx^4+dy^4) that is infinite at the window centre, so one pixel per window becomes NaN
  (github.com/YaoleiQi/DSCNet, ``DSCNet_2D_opensource/Code/DRIVE/DSCNet/S3_Train_Process.py``,
  ``predict``); medseg does not reproduce that.
* :func:`whole_image_probabilities`: one forward pass of the whole image, zero-padded at the
  bottom and right to the network's ``size_divisor`` and cropped back. For a fully
  convolutional network whose normalisation does not depend on the input's extent (BatchNorm in
  eval mode, or none) this equals sliding windows up to the windows' border effects, at a
  fraction of the cost (no overlap).
* :func:`inference_method`: "whole" for such networks, "sliding" for networks with GroupNorm,
  InstanceNorm or LayerNorm (DSCNet), whose statistics change with the window.
* :class:`Predictor`: one or several networks (an ensemble: probabilities averaged), a method,
  test-time augmentation (:data:`TTA_TRANSFORMS`: flips and 90-degree rotations, probabilities
  averaged after undoing each transform), device and batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from medseg.errors import ConfigError, did_you_mean


def activation(logits: torch.Tensor, kind: str = "auto") -> torch.Tensor:
    """Network outputs (N, C, H, W) -> probabilities in [0, 1].

    ``kind`` is the network's ``output_activation``: "auto" (logits: sigmoid for C == 1,
    softmax over C otherwise) or "none" (already probabilities, e.g. OCTA-Net: returned as
    they are, clamped to [0, 1] against blending round-off).
    """
    if kind == "none":
        return logits.clamp(0.0, 1.0)
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def check_roi(model: nn.Module, roi_size: int) -> None:
    """Raise ValueError if ``roi_size`` does not suit ``model`` (``model.size_divisor``, e.g. 8 for DSCNet)."""
    divisor = int(getattr(model, "size_divisor", 1))
    if roi_size <= 0 or roi_size % divisor:
        lower = max(divisor, roi_size // divisor * divisor)
        raise ValueError(
            f"window size {roi_size} does not suit {type(model).__name__}: it must be a positive multiple "
            f"of {divisor}, e.g. {lower} or {lower + divisor}"
        )


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    image: torch.Tensor,
    roi_size: int,
    overlap: float = 0.5,
    mode: str = "gaussian",
    sw_batch_size: int = 4,
) -> torch.Tensor:
    """Probabilities for whole images by sliding ``roi_size`` windows over them.

    Args:
        model: a medseg network returning logits; put it in eval mode first.
        image: (N, C, H, W) float32, preprocessed like the training data; any H, W (images
            smaller than the window are padded by MONAI and cropped back); or a batch of volumes
            (N, C, D, H, W) for a 3-D network (cubic windows).
        roi_size: window side in pixels (voxels), the same along every spatial axis.
        overlap: fraction of overlap between neighbouring windows, in [0, 1).
        mode: "gaussian" or "constant" blending.
        sw_batch_size: windows per forward pass.

    Returns:
        (N, C_out, H, W) (or (N, C_out, D, H, W)) float32 probabilities in [0, 1] (sigmoid for one output channel,
        softmax otherwise). Blending happens on logits, then the activation is applied
        (networks whose ``output_activation`` is "none" blend probabilities directly).

    Raises:
        ValueError: a window size the network cannot take (see :func:`check_roi`).
    """
    check_roi(model, roi_size)
    logits = sliding_window_inference(
        image,
        roi_size=(roi_size,) * (image.dim() - 2),
        sw_batch_size=sw_batch_size,
        predictor=model,
        overlap=overlap,
        mode=mode,
        padding_mode="constant",
        cval=0.0,
    )
    return activation(logits.float(), getattr(model, "output_activation", "auto"))


#: Images with a side shorter than this are zero-padded to it for a whole-image forward pass (and
#: the output cropped back); images this large or larger are run at their own size.
MIN_FORWARD_SIDE = 32


@torch.no_grad()
def whole_image_probabilities(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Probabilities from one forward pass of the whole image.

    Args:
        model: a medseg network in eval mode; ``model.size_divisor`` (default 1) is the multiple
            H and W must have.
        image: (N, C, H, W) float32, preprocessed like the training data, any H, W; or
            (N, C, D, H, W) volumes for a 3-D network.

    Returns:
        (N, C_out, H, W) (or (N, C_out, D, H, W)) float32 probabilities in [0, 1]: the image is
        zero-padded at the end of every spatial axis to the next multiple of the divisor, and to
        at least :data:`MIN_FORWARD_SIDE` pixels (a U-Net of depth d cannot pool below 2**d; down
        to a 1x1 image), with zero = the value of the z-scored surround, as the sliding window's
        constant padding; run once, cropped back, then :func:`activation` applied.
    """
    divisor = int(getattr(model, "size_divisor", 1))
    sizes = image.shape[2:]
    least = -(-MIN_FORWARD_SIDE // divisor) * divisor
    pads = [max(-n % divisor, least - n) for n in sizes]
    x = F.pad(image, [v for p in reversed(pads) for v in (0, p)]) if any(pads) else image
    logits = model(x)[(Ellipsis, *(slice(0, n) for n in sizes))]
    return activation(logits.float(), getattr(model, "output_activation", "auto")).contiguous()


#: Pixels per forward pass when the batch size is automatic (0): a 2-core CPU gains nothing
#: from batching large images, while small slices (hippocampus: 35x50) run 64 at a time.
AUTO_BATCH_PIXELS = 2**18

#: Normalisation layers whose statistics depend on the input's spatial extent.
EXTENT_DEPENDENT_NORMS = (nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm)

METHODS = ("auto", "whole", "sliding")


def inference_method(model: nn.Module, requested: str = "auto") -> str:
    """ "whole" or "sliding" for ``model``.

    Args:
        requested: "whole", "sliding", or "auto": "sliding" when the network has a normalisation
            whose statistics depend on the input's extent (:data:`EXTENT_DEPENDENT_NORMS`, e.g.
            DSCNet's GroupNorm: its trained windows are the only faithful context), "whole"
            otherwise.

    Raises:
        ConfigError: ``requested`` is not one of :data:`METHODS`.
    """
    if requested not in METHODS:
        raise ConfigError(f"inference method must be one of {', '.join(METHODS)}, got {requested!r}")
    if requested != "auto":
        return requested
    return "sliding" if any(isinstance(m, EXTENT_DEPENDENT_NORMS) for m in model.modules()) else "whole"


# ---------------------------------------------------------------------------------------------
# test-time augmentation: each transform acts on the last two axes and has an exact inverse

_T = Callable[[torch.Tensor], torch.Tensor]

#: name -> (forward, inverse) on (..., H, W) tensors: the dihedral group of the square.
TTA_TRANSFORMS: dict[str, tuple[_T, _T]] = {
    "identity": (lambda x: x, lambda y: y),
    "hflip": (lambda x: x.flip(-1), lambda y: y.flip(-1)),
    "vflip": (lambda x: x.flip(-2), lambda y: y.flip(-2)),
    "rot90": (lambda x: x.rot90(1, (-2, -1)), lambda y: y.rot90(-1, (-2, -1))),
    "rot180": (lambda x: x.rot90(2, (-2, -1)), lambda y: y.rot90(-2, (-2, -1))),
    "rot270": (lambda x: x.rot90(3, (-2, -1)), lambda y: y.rot90(-3, (-2, -1))),
    "transpose": (lambda x: x.transpose(-2, -1), lambda y: y.transpose(-2, -1)),
    "antitranspose": (
        lambda x: x.rot90(2, (-2, -1)).transpose(-2, -1),
        lambda y: y.rot90(2, (-2, -1)).transpose(-2, -1),
    ),
}

#: Named sets for ``--tta``: "flips" (identity, hflip, vflip), "rotations" (the four rotations),
#: "default" (flips and rotations: 6 passes) and "d4" (all 8 symmetries of the square).
TTA_SETS: dict[str, tuple[str, ...]] = {
    "flips": ("identity", "hflip", "vflip"),
    "rotations": ("identity", "rot90", "rot180", "rot270"),
    "default": ("identity", "hflip", "vflip", "rot90", "rot180", "rot270"),
    "d4": tuple(TTA_TRANSFORMS),
}


def parse_tta(spec: str | Sequence[str] | None | bool) -> tuple[str, ...]:
    """A TTA spec -> transform names (always starting with "identity", no repeats).

    Args:
        spec: None/False/"" or "none" (no TTA: ``("identity",)``), True or "default", a set name
            of :data:`TTA_SETS`, a comma-separated string or a list of names of
            :data:`TTA_TRANSFORMS` (sets may be mixed in).

    Raises:
        ConfigError: an unknown name (the message lists the valid ones).
    """
    if spec is None or spec is False or spec == "" or spec == "none":
        return ("identity",)
    if spec is True:
        spec = "default"
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    names: list[str] = ["identity"]
    for item in items:
        if not item:
            continue
        expanded = TTA_SETS.get(item, (item,))
        for name in expanded:
            if name not in TTA_TRANSFORMS:
                valid = list(TTA_SETS) + list(TTA_TRANSFORMS)
                raise ConfigError(
                    f"unknown test-time augmentation {name!r}{did_you_mean(name, valid)} (valid: {', '.join(valid)})"
                )
            if name not in names:
                names.append(name)
    return tuple(names)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """ "auto"/None -> CUDA when available, else CPU; "cpu", "cuda", "cuda:1" as given.

    Raises:
        ConfigError: "cuda" asked for on a machine without a usable GPU, or an unknown name.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r} (use cpu, cuda, cuda:N or auto)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU on this machine (use --device cpu)")
    return dev


class Predictor:
    """Probabilities of one network or an ensemble, with optional test-time augmentation.

    Args:
        models: one network or several (an ensemble: their probabilities are averaged with
            equal weights). All must take the same input channels and give the same output
            channels; each is put in eval mode and moved to ``device``.
        method: "auto", "whole" or "sliding" (see :func:`inference_method`; "auto" is decided
            per network).
        roi_size: sliding-window side (pixels); used by "sliding".
        overlap: sliding-window overlap in [0, 1).
        mode: "gaussian" or "constant" blending.
        sw_batch_size: windows per forward pass.
        tta: transform names (see :func:`parse_tta`); probabilities are averaged over the
            transforms after each prediction is mapped back (flip/rotate inverted).
        device: see :func:`resolve_device`.
        batch_size: images per forward pass in :meth:`predict_many` (images of one size); 0
            (auto) stacks images up to :data:`AUTO_BATCH_PIXELS` pixels per pass (1 for a DRIVE
            image, 64 for a hippocampus slice).

    Calling it on a (N, C, H, W) float32 tensor returns (N, C_out, H, W) float32 probabilities
    in [0, 1] on the CPU; a 3-D network (``spatial_dims`` 3) takes (N, C, D, H, W) volumes and
    returns (N, C_out, D, H, W) (cubic windows; TTA acts on the last two axes, the (H, W) plane).

    Raises:
        ConfigError: bad method, TTA name or device; ensemble members that disagree on output
            channels (raised at the first call).
    """

    def __init__(
        self,
        models: nn.Module | Sequence[nn.Module],
        method: str = "auto",
        roi_size: int = 128,
        overlap: float = 0.5,
        mode: str = "gaussian",
        sw_batch_size: int = 4,
        tta: str | Sequence[str] | None = None,
        device: str | torch.device | None = "cpu",
        batch_size: int = 1,
    ) -> None:
        self.models = [models] if isinstance(models, nn.Module) else list(models)
        if not self.models:
            raise ConfigError("a Predictor needs at least one network")
        self.device = resolve_device(device)
        self.methods = [inference_method(m, method) for m in self.models]
        for m, meth in zip(self.models, self.methods):
            m.eval().to(self.device)
            if meth == "sliding":
                check_roi(m, roi_size)
            elif getattr(m, "spatial_dims", 2) == 2:
                # NHWC convolutions: 1.45x faster for a DRIVE U-Net on 2 CPU cores, same outputs to 1e-6
                m.to(memory_format=torch.channels_last)
        self.roi_size, self.overlap, self.mode, self.sw_batch_size = (
            int(roi_size),
            float(overlap),
            mode,
            int(sw_batch_size),
        )
        self.tta = parse_tta(tta)
        if int(batch_size) < 0:
            raise ConfigError(f"batch size must be >= 1 (or 0: auto), got {batch_size}")
        self.batch_size = int(batch_size)

    def batch_for(self, shape: Sequence[int]) -> int:
        """Images of ``shape`` (C, H, W) (volumes (C, D, H, W)) per forward pass: ``batch_size``, or
        when it is 0 as many as fit :data:`AUTO_BATCH_PIXELS` pixels (voxels; at least 1, at most 64)."""
        if self.batch_size:
            return self.batch_size
        pixels = int(np.prod([int(n) for n in shape[1:]]))
        return max(1, min(64, AUTO_BATCH_PIXELS // max(1, pixels)))

    def _one(self, model: nn.Module, method: str, x: torch.Tensor) -> torch.Tensor:
        if method == "whole":
            return whole_image_probabilities(
                model, x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
            )
        return predict_probabilities(model, x, self.roi_size, self.overlap, self.mode, self.sw_batch_size)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(self.device, torch.float32)
        total: torch.Tensor | None = None
        count = 0
        for model, method in zip(self.models, self.methods):
            for name in self.tta:
                forward, inverse = TTA_TRANSFORMS[name]
                prob = inverse(self._one(model, method, forward(x)))
                if total is not None and prob.shape != total.shape:
                    raise ConfigError(
                        f"ensemble members disagree: {type(model).__name__} gives {tuple(prob.shape[1:])} "
                        f"outputs, the first gives {tuple(total.shape[1:])}"
                    )
                total = prob if total is None else total + prob
                count += 1
        assert total is not None
        return (total / count).cpu()

    def predict_many(self, images: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Probabilities (C_out, H, W) float32 for each image (C, H, W), in order.

        Consecutive images of one size are stacked ``batch_size`` at a time.
        """
        pending: list[np.ndarray] = []

        def flush() -> Iterator[np.ndarray]:
            batch = torch.from_numpy(np.stack([np.ascontiguousarray(a, dtype=np.float32) for a in pending]))
            pending.clear()
            yield from self(batch).numpy()

        for img in images:
            if pending and (img.shape != pending[0].shape or len(pending) >= self.batch_for(pending[0].shape)):
                yield from flush()
            pending.append(img)
        if pending:
            yield from flush()

    def describe(self) -> dict[str, Any]:
        """What was run, for metrics.json: method(s), window, blending, TTA, ensemble size, device."""
        methods = sorted(set(self.methods))
        info: dict[str, Any] = {
            "method": "+".join(methods),
            "ensemble": len(self.models),
            "tta": list(self.tta),
            "device": str(self.device),
            "batch_size": self.batch_size,
        }
        if "whole" in methods:
            info["whole_image"] = "one forward pass, zero-padded to the size divisor and cropped"
        if "sliding" in methods:
            info.update(
                {
                    "sliding_window": "MONAI sliding_window_inference",
                    "roi_size": self.roi_size,
                    "overlap": self.overlap,
                    "blend": self.mode,
                }
            )
        return info


__all__ = [
    "AUTO_BATCH_PIXELS",
    "METHODS",
    "Predictor",
    "TTA_SETS",
    "TTA_TRANSFORMS",
    "activation",
    "check_roi",
    "inference_method",
    "parse_tta",
    "predict_probabilities",
    "resolve_device",
    "whole_image_probabilities",
]
