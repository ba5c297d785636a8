"""``medseg export`` and exported files in ``medseg predict``: a tiny U-Net trained on the
built-in synthetic data, exported to ONNX (fp32, fp16, int8) and TorchScript, checked against
PyTorch, carrying its metadata, and predicting what the checkpoint predicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.cli import main
from medseg.export import ExportError
from medseg.export.deploy import export_checkpoint, load_exported, needed_divisor, read_metadata

RECIPE = """
seed: 0
model: {name: unet, args: {base_channels: 4, depth: 2}}
data: {dataset: synthetic_vessels, args: {n_images: 6, size: 48, seed: 1}, patch_size: 32, samples_per_epoch: 8}
train: {max_epochs: 2, batch_size: 4, progress_bar: false, val_every_n_epochs: 1}
eval: {figures: false}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, a folder of three 48x48 grey PNG images)."""
    root = tmp_path_factory.mktemp("deploy")
    (root / "r.yaml").write_text(RECIPE)
    assert main(["train", "--config", str(root / "r.yaml"), "--out", str(root / "run"), "--no-eval",
                 "--threads", "1"]) == 0
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(images / f"im{i}.png")
    return root / "run" / "checkpoints" / "best.ckpt", images


def _maps(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p), dtype=np.float64) for p in sorted(folder.glob("*_prob.png"))}


def test_onnx_export_carries_its_metadata_and_predicts_like_the_checkpoint(trained, tmp_path, capsys):
    ckpt, images = trained
    out = tmp_path / "unet.onnx"
    assert main(["export", "-m", str(ckpt), "--format", "onnx", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "multiples of 4 (dynamic; checked at 32x32)" in text and "relative error against PyTorch" in text
    meta = read_metadata(out)
    assert meta["medseg.network"] == "unet" and meta["medseg.in_channels"] == "1"
    assert meta["medseg.spatial"] == "dynamic" and meta["medseg.precision"] == "fp32"
    assert float(meta["medseg.threshold"]) == 0.5 and json.loads(meta["medseg.class_names"])[0] == "background"
    assert json.loads(meta["medseg.config"])["model"]["name"] == "unet"
    assert "zscore_in_fov" in json.dumps(json.loads(meta["medseg.normalisation"]))
    net, cfg = load_exported(out)
    assert net.size_divisor == 4 and cfg.model.name == "unet"
    assert main(["predict", "-m", str(ckpt), "-i", str(images), "-o", str(tmp_path / "ckpt"), "--no-progress"]) == 0
    assert main(["predict", "-m", str(out), "-i", str(images), "-o", str(tmp_path / "onnx"), "--no-progress"]) == 0
    a, b = _maps(tmp_path / "ckpt"), _maps(tmp_path / "onnx")
    assert a.keys() == b.keys() and len(a) == 3
    for name in a:  # 16-bit probability maps: at most one grey level apart
        assert np.abs(a[name] - b[name]).max() <= 1.0, name
    masks = sorted((tmp_path / "onnx").glob("*_mask.png"))
    assert [p.read_bytes() for p in masks] == [p.read_bytes() for p in sorted((tmp_path / "ckpt").glob("*_mask.png"))]


def test_torchscript_export_reloads_with_its_metadata(trained, tmp_path):
    ckpt, images = trained
    report = export_checkpoint(ckpt, tmp_path / "unet.pt", fmt="torchscript", log=lambda s: None)
    assert report["rel_error"] <= 1e-5 and report["bytes"] > 0
    net, cfg = load_exported(tmp_path / "unet.pt")
    assert net.in_channels == 1 and cfg.data.dataset == "synthetic_vessels"
    assert main(["predict", "-m", str(tmp_path / "unet.pt"), "-i", str(images), "-o", str(tmp_path / "p"),
                 "--no-progress"]) == 0
    assert len(list((tmp_path / "p").glob("*_prob.png"))) == 3


def test_fp16_and_int8_exports_are_smaller_or_close(trained, tmp_path):
    ckpt, images = trained
    fp32 = export_checkpoint(ckpt, tmp_path / "a.onnx", log=lambda s: None)
    fp16 = export_checkpoint(ckpt, tmp_path / "h.onnx", fp16=True, log=lambda s: None)
    int8 = export_checkpoint(ckpt, tmp_path / "q.onnx", int8=True, calibration=images, log=lambda s: None)
    assert fp32["rel_error"] <= 1e-4
    assert fp16["precision"] == "fp16" and fp16["rel_error"] < 1e-2
    assert int8["precision"] == "int8" and int8["rel_error"] < 0.2
    assert read_metadata(tmp_path / "q.onnx")["medseg.precision"] == "int8"
    import onnx

    types = {i.data_type for i in onnx.load(str(tmp_path / "h.onnx")).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types, "the fp16 file stores float16 weights"
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_an_export_that_disagrees_with_pytorch_is_not_written(trained, tmp_path, monkeypatch):
    ckpt, _ = trained
    import medseg.export.deploy as deploy

    out = tmp_path / "bad.onnx"
    out.write_bytes(b"the earlier file")
    monkeypatch.setattr(deploy, "RTOL", -1.0)  # no export can pass
    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        export_checkpoint(ckpt, out, log=lambda s: None)
    assert out.read_bytes() == b"the earlier file", "the earlier file is kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"], "no temporary is left"


def test_bad_requests_are_refused(trained, tmp_path):
    ckpt, _ = trained
    with pytest.raises(ExportError, match="choose one of --fp16 and --int8"):
        export_checkpoint(ckpt, tmp_path / "x.onnx", fp16=True, int8=True)
    with pytest.raises(ExportError, match="apply to ONNX exports"):
        export_checkpoint(ckpt, tmp_path / "x.pt", fmt="torchscript", int8=True)
    with pytest.raises(ExportError, match="needs calibration images"):
        export_checkpoint(ckpt, tmp_path / "x.onnx", int8=True, log=lambda s: None)
    assert not (tmp_path / "x.onnx").exists()
    plain = tmp_path / "plain.onnx"
    import torch

    from medseg.models import create_model

    torch.onnx.export(create_model("unet", in_channels=1, out_channels=1, base_channels=4, depth=2).eval(),
                      (torch.zeros(1, 1, 32, 32),), str(plain), dynamo=False)
    with pytest.raises(ExportError, match="carries no medseg metadata"):
        load_exported(plain)


def test_the_divisor_an_exported_graph_needs():
    from medseg.models import create_model

    assert needed_divisor(create_model("unet", in_channels=1, out_channels=1, base_channels=4, depth=3)) == 8
    assert needed_divisor(create_model("dscnet", in_channels=1, out_channels=1)) == 8
