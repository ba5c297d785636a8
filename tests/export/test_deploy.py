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
    assert (
        main(["train", "--config", str(root / "r.yaml"), "--out", str(root / "run"), "--no-eval", "--threads", "1"])
        == 0
    )
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
    assert (
        main(
            ["predict", "-m", str(tmp_path / "unet.pt"), "-i", str(images), "-o", str(tmp_path / "p"), "--no-progress"]
        )
        == 0
    )
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

    torch.onnx.export(
        create_model("unet", in_channels=1, out_channels=1, base_channels=4, depth=2).eval(),
        (torch.zeros(1, 1, 32, 32),),
        str(plain),
        dynamo=False,
    )
    with pytest.raises(ExportError, match="carries no medseg metadata"):
        load_exported(plain)


def test_the_divisor_an_exported_graph_needs():
    from medseg.models import create_model

    assert needed_divisor(create_model("unet", in_channels=1, out_channels=1, base_channels=4, depth=3)) == 8
    assert needed_divisor(create_model("dscnet", in_channels=1, out_channels=1)) == 8


def test_int8_keeps_the_sampling_grid_of_dsconv_float(tmp_path):
    """grid_path_nodes walks up from GridSample's grid to the offset conv: tanh, the cumulative
    sums and the coordinate arithmetic are on it, the offset conv, the axis MatMul and the
    GridSample are not; quantise_int8 then leaves no QuantizeLinear on that path, and the int8
    layer stays close to the float one (a quantised grid moves points by up to half a pixel)."""
    import onnx
    import torch

    from medseg.export.deploy import grid_path_nodes, quantise_int8
    from medseg.export.onnx_export import export_onnx
    from medseg.ops import DSConv2d

    torch.manual_seed(0)
    layer = DSConv2d(3, 8, 9, extend_scope=1.0).eval()
    src, dst = tmp_path / "ds.onnx", tmp_path / "ds8.onnx"
    export_onnx(layer, src, input_shape=(1, 3, 32, 32))
    model = onnx.load(str(src))
    kinds = {n.name: n.op_type for n in model.graph.node}
    path = grid_path_nodes(model)
    on_path = {kinds[name] for name in path}
    assert {"Tanh", "CumSum", "Div"} <= on_path
    assert not on_path & {"Conv", "MatMul", "GridSample", "Shape"}
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(4)]
    quantise_int8(src, dst, arrays)
    quantised = onnx.load(str(dst))
    producer = {o: n for n in quantised.graph.node for o in n.output}
    grid = next(n.input[1] for n in quantised.graph.node if n.op_type == "GridSample")
    assert producer[grid].op_type != "DequantizeLinear", "the grid reaches GridSample in float"
    assert any(n.op_type == "QuantizeLinear" for n in quantised.graph.node), "the rest is int8"
    import onnxruntime as ort

    x = arrays[0]
    ref = layer(torch.from_numpy(x)).detach().numpy()
    session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert np.abs(got - ref).max() <= 0.1 * np.abs(ref).max()


def test_an_export_keeps_the_inference_method_auto_gave_its_network(trained, tmp_path):
    """``eval.inference: auto`` resolves from the network's modules (sliding windows for DSCNet's
    GroupNorms, whole images otherwise), which an exported file has not: the export records the
    method (``medseg.inference``) and ``load_exported`` restores it. Without it, a DSCNet export
    ran whole images where its checkpoint ran 128-pixel windows (test Dice 0.0037 apart)."""
    from medseg.config import Config
    from medseg.export.deploy import _write_onnx_metadata, metadata
    from medseg.models import create_model

    ckpt, _ = trained
    out = tmp_path / "u.onnx"
    export_checkpoint(ckpt, out, log=lambda s: None)
    meta = read_metadata(out)
    assert meta["medseg.inference"] == "whole"
    assert load_exported(out)[1].eval.inference == "whole"
    _write_onnx_metadata(out, {**meta, "medseg.inference": "sliding"})
    assert load_exported(out)[1].eval.inference == "sliding"

    cfg = Config()
    cfg.model.name = "dscnet"
    dscnet = create_model("dscnet", in_channels=1, out_channels=1, n_basic_layer=4, kernel_size=3)
    assert cfg.eval.inference == "auto"
    assert metadata(dscnet, cfg, 32, "dynamic", "fp32")["medseg.inference"] == "sliding"
