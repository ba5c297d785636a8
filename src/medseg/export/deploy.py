"""``medseg export``: a trained checkpoint as a self-describing ONNX or TorchScript file, checked
against PyTorch before it is written, and the runtime that lets ``medseg predict`` and
``medseg evaluate`` run such a file like a checkpoint.

What the file carries (ONNX ``metadata_props``; TorchScript ``_extra_files["medseg.json"]``), all
under keys named ``medseg.*``:

- ``medseg.config``: the run's whole recipe (JSON), so preprocessing (channels, normalisation,
  resizing), the inference settings and the protocol are those of training;
- ``medseg.in_channels``, ``medseg.size_divisor`` (H and W of an input must be multiples of it),
  ``medseg.input_size`` (the H, W it was exported and checked at), ``medseg.spatial``
  ("dynamic": any multiple of the divisor; "fixed": only ``input_size``),
  ``medseg.output_activation`` ("auto": logits, sigmoid for one channel and softmax otherwise;
  "none": probabilities), ``medseg.threshold``, ``medseg.class_names`` (JSON list),
  ``medseg.normalisation`` (the preprocessing steps, JSON), ``medseg.precision`` ("fp32",
  "fp16", "int8"), ``medseg.inference`` ("whole" or "sliding": the network's own inference
  method, which ``eval.inference: auto`` resolves from its modules, e.g. sliding windows for
  DSCNet's GroupNorms; a file has no modules to resolve it from), ``medseg.network``,
  ``medseg.version``.

The checks (the file is written only when they pass; fp32 bound: relative error
``max|a - b| / max|b|`` at most ``1e-4``, :func:`medseg.export.check_onnx`):

- ONNX fp32: onnxruntime against PyTorch at the export size (batch 1 and 2) and, for a dynamic
  file, at a second size (H + d, W + 2d, d the divisor); a network whose graph does not hold at
  the second size is exported with a fixed size instead, and the file says so;
- TorchScript: reloaded and run against the eager network (:func:`export_torchscript`);
- fp16 and int8 files are compared with the fp32 network too, and their error is reported, not
  bounded (quantisation changes outputs by design); ``--data-root`` adds the Dice change on the
  test split.

Sources: onnxruntime quantisation (``quantize_static``, QDQ format, per-channel int8 weights,
``CalibrationDataReader``; https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html),
onnxconverter-common's ``float16.convert_float_to_float16`` (``keep_io_types``: float32 input
and output around a float16 graph).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

from medseg.export._common import errors, eval_mode, example_input
from medseg.export.errors import ExportError

#: File suffixes :func:`load_exported` reads.
ONNX_SUFFIX = ".onnx"
TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".torchscript")

#: The fp32 bound on the relative error of an export (``medseg export`` refuses to write above it).
RTOL = 1e-4

#: Calibration images used for int8 when the folder or split holds more.
CALIBRATION_IMAGES = 32


def is_exported(path: str | os.PathLike) -> bool:
    """True for a file :func:`load_exported` reads (``.onnx``, ``.pt``, ``.ts``, ``.torchscript``)."""
    suffix = Path(path).suffix.lower()
    return suffix == ONNX_SUFFIX or suffix in TORCHSCRIPT_SUFFIXES


def needed_divisor(model: nn.Module) -> int:
    """The multiple H and W of an exported graph's input must have: the network's
    ``size_divisor`` when it declares one above 1, else ``2 ** depth`` for a network with a
    ``depth`` (U-Net: its odd-size padding is frozen out of a traced graph, so only sizes its
    poolings divide exactly hold), else 32 (five stride-2 stages, the deepest in the zoo)."""
    d = int(getattr(model, "size_divisor", 1) or 1)
    if d > 1:
        return d
    depth = getattr(model, "depth", None)
    return 2 ** int(depth) if isinstance(depth, int) and depth > 0 else 32


def export_side(cfg, divisor: int, size: int | None = None) -> int:
    """The side of the export's example input: ``size``, else the recipe's inference window
    (``eval.roi_size``, else the training patch), rounded up to ``divisor``."""
    side = size or cfg.eval.roi_size or cfg.data.patch_size or 64
    return int(math.ceil(side / divisor) * divisor)


def normalisation(cfg) -> list:
    """The recipe's preprocessing steps as a JSON-able list (what an input must go through)."""
    from medseg.workflows.predict import _file_dataset, channels_of

    cls, opts = _file_dataset(cfg)
    if cls is None:
        return [{"channels": channels_of(cfg)}, "zscore_in_fov"]
    return cls.pipeline_for(opts, cfg.data.args.get("preprocess")).describe()


def metadata(model: nn.Module, cfg, side: int, spatial: str, precision: str) -> dict[str, str]:
    """The ``medseg.*`` metadata of an export (strings; see the module docstring)."""
    from medseg import __version__
    from medseg.export._common import input_channels
    from medseg.inference import inference_method

    names = list(cfg.eval.class_names) or ["background", "foreground"]
    return {
        "medseg.version": __version__,
        "medseg.network": cfg.model.name,
        "medseg.config": json.dumps(cfg.to_dict()),
        "medseg.in_channels": str(input_channels(model)),
        "medseg.size_divisor": str(needed_divisor(model)),
        "medseg.input_size": f"{side}x{side}",
        "medseg.spatial": spatial,
        "medseg.output_activation": str(getattr(model, "output_activation", "auto")),
        "medseg.threshold": repr(float(cfg.eval.threshold)),
        "medseg.class_names": json.dumps([str(c) for c in names]),
        "medseg.normalisation": json.dumps(normalisation(cfg)),
        "medseg.precision": precision,
        "medseg.inference": inference_method(model, cfg.eval.inference),
    }


def _write_onnx_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(proto, str(path))


def _session(path: Path):
    from medseg.export.onnx_export import _session as session

    return session(path)


def _run_onnx(session, x: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _compare(session, model: nn.Module, x: torch.Tensor) -> float:
    """Relative error of the ONNX session against ``model`` on ``x``."""
    with eval_mode(model), torch.no_grad():
        ref = model(x).float()
    got = torch.from_numpy(_run_onnx(session, x.numpy())).float()
    if tuple(got.shape) != tuple(ref.shape):
        raise ExportError(f"onnxruntime output {tuple(got.shape)} but PyTorch {tuple(ref.shape)} for {tuple(x.shape)}")
    return errors(got, ref)[1]


def latency_ms(run, x: np.ndarray | torch.Tensor, warmup: int = 2, repeats: int = 10) -> float:
    """Median milliseconds of ``run(x)`` over ``repeats`` calls after ``warmup`` calls
    (:func:`medseg.machine.median_ms`)."""
    from medseg.machine import median_ms

    return median_ms(lambda: run(x), warmup, repeats)


def calibration_images(
    cfg,
    side: int,
    folder: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    count: int = CALIBRATION_IMAGES,
) -> list[np.ndarray]:
    """Up to ``count`` prepared (1, C, side, side) float32 inputs for int8 calibration: the images
    of ``folder`` (any the dataset's preprocessing takes, prepared as ``medseg predict`` does),
    else the recipe's training split under ``data_root``; each centre-cropped or zero-padded to
    ``side``.

    Raises:
        ExportError: neither source given, or no usable image in it (named).
    """
    from medseg.data.io import is_image_file, read_image
    from medseg.errors import MedsegError
    from medseg.workflows.predict import field_of_view, prepare

    arrays: list[np.ndarray] = []
    if folder is not None:
        folder = Path(folder)
        files = sorted(p for p in folder.iterdir() if is_image_file(p))[:count] if folder.is_dir() else []
        for p in files:
            try:
                raw = read_image(p)
                arrays.append(prepare(raw, cfg, p, field_of_view(raw, cfg, p)))
            except MedsegError:
                continue
        where = f"calibration folder {folder}"
    elif data_root is not None:
        from medseg.config import build_config
        from medseg.engine.datamodule import load_split

        cases = load_split(build_config(cfg.to_dict(), [f"data.root={data_root}"]), "train")
        arrays = [np.asarray(cases[i].image, np.float32) for i in range(min(count, len(cases)))]
        where = f"training split of {cfg.data.dataset} under {data_root}"
    else:
        raise ExportError("--int8 needs calibration images: give --calibration DIR or --data-root")
    if not arrays:
        raise ExportError(f"{where}: no image could be read and prepared for calibration")
    return [_fit_side(a, side)[None] for a in arrays]


def _fit_side(image: np.ndarray, side: int) -> np.ndarray:
    """(C, H, W) centre-cropped and zero-padded to (C, side, side)."""
    c, h, w = image.shape
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    crop = image[:, top : top + side, left : left + side]
    out = np.zeros((c, side, side), np.float32)
    out[:, : crop.shape[1], : crop.shape[2]] = crop
    return out


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of inputs."""

    def __init__(self, name: str, arrays: list[np.ndarray]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter([{name: a} for a in arrays])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


#: Where a walk up from a GridSample's grid stops: the convolution that predicts the offsets (its
#: int8 weights are kept) and the ops that read only a tensor's shape.
_GRID_WALK_STOPS = ("Conv", "Shape")


def grid_path_nodes(model) -> list[str]:
    """Names of the nodes of an ONNX model that compute the sampling grid of a ``GridSample``
    (DSConv's kernel coordinates: offsets after the offset conv, tanh, cumulative sums, pixel
    positions, normalisation): every node upstream of a GridSample's ``grid`` input, up to and
    excluding the first ``Conv`` (the offset conv) or ``Shape`` on each path.

    Quantising these to int8 moves a sampled point by up to half a pixel at a 128-pixel input (an
    int8 step of the normalised coordinate range [-1, 1] is 2/255 of the image), which broke a
    trained DSCNet's int8 export (test Dice 0.045); :func:`quantise_int8` keeps them float.

    Args:
        model: an ``onnx.ModelProto`` (its external data need not be loaded).

    Returns:
        Node names in walk order, each once; empty for a graph without GridSample. Names are what
        onnxruntime's ``quantize_static(nodes_to_exclude=...)`` takes.

    Source: ONNX operator GridSample (opset 16), input 1 ``grid`` (N, H_out, W_out, 2) in [-1, 1].
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    names: list[str] = []
    seen: set[str] = set()
    stack = [node.input[1] for node in model.graph.node if node.op_type == "GridSample" and len(node.input) > 1]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen or node.op_type in _GRID_WALK_STOPS:
            continue
        seen.add(node.name)
        names.append(node.name)
        stack.extend(node.input)
    return names


def quantise_int8(src: Path, dst: Path, arrays: list[np.ndarray]) -> None:
    """Write ``dst``, the fp32 ONNX file ``src`` statically quantised to int8 by onnxruntime (QDQ
    format, per-channel int8 weights, int8 activations, min-max calibration on ``arrays``, each a
    (1, C, H, W) float32 input the file takes), the nodes that compute a GridSample's sampling
    grid kept float (:func:`grid_path_nodes`). The shape pre-processing step is skipped where it
    fails (it is an optimisation).

    Raises:
        Exception: onnxruntime's own, for a file it cannot quantise or inputs it cannot run.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_name(dst.stem + ".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantise the file as it is
        shutil.copyfile(src, pre)
    import onnx

    name = _session(src).get_inputs()[0].name
    quantize_static(
        str(pre),
        str(dst),
        _Reader(name, arrays),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=grid_path_nodes(onnx.load(str(pre), load_external_data=False)),
    )
    pre.unlink(missing_ok=True)


def _convert_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxconverter_common import float16

    proto = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save_model(proto, str(dst))


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    fmt: str = "onnx",
    fp16: bool = False,
    int8: bool = False,
    calibration: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    size: int | None = None,
    log=print,
) -> dict[str, Any]:
    """Export a medseg checkpoint to ``out`` (ONNX or TorchScript), checked, with its metadata.

    Args:
        checkpoint: a ``.ckpt`` written by ``medseg train``.
        out: the file to write (parent folders created); written only after every check passed,
            by an atomic rename, so a failed export leaves no file and an earlier one untouched.
        fmt: "onnx" or "torchscript".
        fp16: ONNX only: a float16 graph with float32 input and output.
        int8: ONNX only: static int8 quantisation (QDQ, per-channel weights, min-max calibration).
        calibration: folder of images for int8 calibration (default: the training split under
            ``data_root``).
        data_root: the recipe's dataset folder: calibration images, and the Dice change of the
            export against the checkpoint on the test split (``medseg evaluate`` of both).
        size: side of the example input (default: the recipe's inference window or patch),
            rounded up to the network's divisor.
        log: where progress lines go.

    Returns:
        ``{"path", "format", "precision", "spatial", "size_divisor", "input_size",
        "rel_error" (fp32 graph, or the converted one against PyTorch), "bytes",
        "latency_ms" (median of 10 runs of batch 1 at the export size, this file's runtime),
        "pytorch_latency_ms", "dice" and "dice_change" when ``data_root`` is given}``.

    Raises:
        ExportError: a bad format or flag combination, an export that fails or disagrees with
            PyTorch beyond :data:`RTOL` (fp32; nothing is written), no calibration images.
        medseg.errors.CheckpointError: an unreadable checkpoint.
    """
    from medseg.atomic import atomic_path
    from medseg.engine.checkpoint import load_model_from_checkpoint
    from medseg.export.onnx_export import export_onnx

    if fmt not in ("onnx", "torchscript"):
        raise ExportError(f"--format must be onnx or torchscript, got {fmt!r}")
    if fp16 and int8:
        raise ExportError("choose one of --fp16 and --int8")
    if (fp16 or int8) and fmt != "onnx":
        raise ExportError("--fp16 and --int8 apply to ONNX exports (--format onnx)")
    out = Path(out)
    model, cfg = load_model_from_checkpoint(checkpoint)
    divisor = needed_divisor(model)
    side = export_side(cfg, divisor, size)
    from medseg.export._common import input_channels

    channels = input_channels(model)
    x = example_input((1, channels, side, side))
    with eval_mode(model), torch.no_grad():
        pt_ms = latency_ms(model, x)
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    report: dict[str, Any] = {
        "path": str(out),
        "format": fmt,
        "precision": precision,
        "size_divisor": divisor,
        "input_size": [side, side],
        "pytorch_latency_ms": round(pt_ms, 3),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.stem}.export-", dir=out.parent))
    try:
        if fmt == "torchscript":
            from medseg.export.torchscript import export_torchscript

            staged = work / out.name
            result = export_torchscript(model, staged, example=x)
            meta = metadata(model, cfg, side, "fixed" if result.method == "trace" else "dynamic", "fp32")
            scripted = torch.jit.load(str(staged), map_location="cpu")
            torch.jit.save(scripted, str(staged), _extra_files={"medseg.json": json.dumps(meta)})
            loaded = torch.jit.load(str(staged), map_location="cpu")
            with torch.no_grad():
                rel = errors(loaded(x), model(x))[1]
                ms = latency_ms(loaded, x)
            report.update(spatial=meta["medseg.spatial"], rel_error=rel, latency_ms=round(ms, 3), method=result.method)
        else:
            fp32 = work / f"fp32{ONNX_SUFFIX}"
            spatial = "dynamic"
            try:
                export_onnx(model, fp32, input_shape=(1, channels, side, side), dynamic_size=True)
                session = _session(fp32)
                second = example_input((1, channels, side + divisor, side + 2 * divisor), seed=2)
                ok = _compare(session, model, second) <= RTOL
            except ExportError:
                ok = False
            if not ok:
                spatial = "fixed"
                export_onnx(model, fp32, input_shape=(1, channels, side, side), dynamic_size=False)
            from medseg.export.onnx_export import check_onnx

            rel = check_onnx(model, fp32, x, rtol=RTOL)["rel_error"]  # raises above RTOL: nothing written
            staged = fp32
            if fp16:
                staged = work / f"fp16{ONNX_SUFFIX}"
                _convert_fp16(fp32, staged)
            elif int8:
                staged = work / f"int8{ONNX_SUFFIX}"
                arrays = calibration_images(cfg, side, calibration, data_root)
                log(f"medseg export: calibrating int8 on {len(arrays)} images")
                quantise_int8(fp32, staged, arrays)
            _write_onnx_metadata(staged, metadata(model, cfg, side, spatial, precision))
            session = _session(staged)
            if staged is not fp32:
                rel = _compare(session, model, x)
            ms = latency_ms(lambda a: _run_onnx(session, a), x.numpy())
            report.update(spatial=spatial, rel_error=rel, latency_ms=round(ms, 3))
        with atomic_path(out, replace_stale=True) as tmp:
            shutil.copyfile(staged, tmp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["bytes"] = out.stat().st_size
    if data_root is not None:
        report.update(_dice_change(checkpoint, out, data_root))
    return report


def _dice_change(checkpoint, exported: Path, data_root) -> dict[str, float | None]:
    """Headline Dice (vessel / OCTA / volume "dice", polyp "mdice") of the checkpoint and of its
    export on the recipe's test split under ``data_root``."""
    from medseg.config import build_config
    from medseg.workflows.evaluate import load_models, metrics_of

    scores = []
    for path in (checkpoint, exported):
        models, cfg = load_models([path])
        scores.append(metrics_of(models, build_config(cfg.to_dict(), [f"data.root={data_root}"])))
    ref, got = scores
    key = next((k for k in ("dice", "mdice") if ref.get(k) is not None), None)
    if key is None:
        return {}
    return {"dice": got[key], "checkpoint_dice": ref[key], "dice_change": got[key] - ref[key]}


class ExportedNetwork(nn.Module):
    """An exported file run as a network: ``forward(x)`` (N, C, H, W) float32 -> the file's main
    output (N, C_out, H, W) float32, on the CPU, with the attributes the inference code reads
    (``in_channels``, ``size_divisor``, ``output_activation``).

    ONNX files run in onnxruntime (CPUExecutionProvider); TorchScript files with ``torch.jit``.
    A "fixed" file takes only its export size: its ``fixed_size`` is (H, W) and :func:`load_exported`
    turns the recipe's inference into a sliding window of that size.

    Raises (forward):
        ExportError: an input the file cannot take (names the file, the shape, the divisor).
    """

    def __init__(self, path: Path, meta: dict[str, str], runner) -> None:
        super().__init__()
        self.path = path
        self.meta = meta
        self._runner = runner
        self.in_channels = int(meta["medseg.in_channels"])
        self.size_divisor = int(meta["medseg.size_divisor"])
        self.output_activation = meta.get("medseg.output_activation", "auto")
        h, w = (int(v) for v in meta["medseg.input_size"].split("x"))
        self.fixed_size = (h, w) if meta.get("medseg.spatial") == "fixed" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_size is not None and tuple(x.shape[-2:]) != self.fixed_size:
            raise ExportError(
                f"{self.path} takes only {self.fixed_size[0]}x{self.fixed_size[1]} inputs "
                f"(exported with a fixed size), got {tuple(x.shape)}"
            )
        try:
            return self._runner(x.detach().to("cpu", torch.float32).contiguous())
        except ExportError:
            raise
        except Exception as exc:  # noqa: BLE001 - the runtime's own error
            raise ExportError(
                f"{self.path} cannot run input {tuple(x.shape)} (H and W must be multiples of "
                f"{self.size_divisor}): {type(exc).__name__}: {exc}"
            ) from exc


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``medseg.*`` metadata of an exported file.

    Raises:
        ExportError: the file is missing, unreadable, or was not written by ``medseg export``.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"exported model {path} not found")
    if path.suffix.lower() == ONNX_SUFFIX:
        meta = dict(_session(path).get_modelmeta().custom_metadata_map)
    else:
        files = {"medseg.json": ""}
        try:
            torch.jit.load(str(path), map_location="cpu", _extra_files=files)
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"{path}: not a TorchScript file: {type(exc).__name__}: {exc}") from exc
        meta = json.loads(files["medseg.json"]) if files["medseg.json"] else {}
    if "medseg.config" not in meta:
        raise ExportError(f"{path} carries no medseg metadata (medseg.config); export it with medseg export")
    return meta


def load_exported(path: str | os.PathLike):
    """An exported file as ``(ExportedNetwork, Config)``, the Config the run's own (from
    ``medseg.config``) with ``eval.inference: auto`` replaced by the method it gave the network
    (``medseg.inference``), and, for a fixed-size file, sliding-window inference at its size.

    Raises:
        ExportError: as :func:`read_metadata`.
    """
    from medseg.config import build_config

    path = Path(path)
    meta = read_metadata(path)
    cfg_dict = json.loads(meta["medseg.config"])
    if path.suffix.lower() == ONNX_SUFFIX:
        session = _session(path)
        name = session.get_inputs()[0].name

        def runner(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(session.run(None, {name: x.numpy()})[0])).float()
    else:
        module = torch.jit.load(str(path), map_location="cpu").eval()

        def runner(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return module(x).float()

    net = ExportedNetwork(path, meta, runner).eval()
    if net.fixed_size is not None:
        overrides = ["eval.inference=sliding", f"eval.roi_size={net.fixed_size[0]}"]
    elif cfg_dict.get("eval", {}).get("inference", "auto") == "auto" and "medseg.inference" in meta:
        overrides = [f"eval.inference={meta['medseg.inference']}"]  # what "auto" gave the network
    else:
        overrides = []
    return net, build_config(cfg_dict, overrides, source=f"medseg.config in {path}")


__all__ = [
    "ExportedNetwork",
    "RTOL",
    "calibration_images",
    "export_checkpoint",
    "grid_path_nodes",
    "is_exported",
    "latency_ms",
    "load_exported",
    "metadata",
    "needed_divisor",
    "quantise_int8",
    "read_metadata",
]
