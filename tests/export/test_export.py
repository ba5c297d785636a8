"""Tests of medseg.export: ONNX export (dynamic batch, atomic writes, external data) checked with
onnxruntime, TorchScript (script and trace fallback) and torch.export programs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn

from medseg.errors import MedsegError
from medseg.export import (
    ExportError,
    check_onnx,
    export_onnx,
    export_program,
    export_torchscript,
)
from medseg.models import create_model


def small_unet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("unet", in_channels=1, out_channels=2, base_channels=4, depth=2)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_export_error_is_a_medseg_error():
    assert issubclass(ExportError, MedsegError)


def test_onnx_dynamic_batch_runs_batch_3_in_onnxruntime(tmp_path):
    model = small_unet().train()
    path = export_onnx(model, tmp_path / "sub" / "unet.onnx", input_shape=(1, 1, 32, 48))
    assert path == tmp_path / "sub" / "unet.onnx"
    assert model.training, "export_onnx must restore the training flag"
    # complete file, nothing else left in the folder (no temporary file or folder)
    assert sorted(p.name for p in path.parent.iterdir()) == ["unet.onnx"]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 32, 48]

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = rand(3, 1, 32, 48, seed=5)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    model.eval()
    with torch.no_grad():
        ref = model(x).numpy()
    assert got.shape == (3, 2, 32, 48)
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-5


def test_check_onnx_report(tmp_path):
    model = small_unet()
    path = export_onnx(model, tmp_path / "unet.onnx", input_shape=(1, 1, 32, 32))
    report = check_onnx(model, path)  # default input: the file's shape with batch 1
    assert report["batches"] == [1, 2]
    assert report["output_shape"] == (1, 2, 32, 32)
    assert 0 <= report["rel_error"] < 1e-5 and 0 <= report["max_abs_error"] < 1e-5
    assert report["rel_error"] == max(v["rel_error"] for v in report["per_batch"].values())
    report3 = check_onnx(model, path, x=rand(3, 1, 32, 32))
    assert report3["batches"] == [3, 2]


def test_check_onnx_wrong_weights_raises_naming_the_relative_error(tmp_path):
    exported, other = small_unet(seed=0), small_unet(seed=1)
    path = export_onnx(exported, tmp_path / "unet.onnx", input_shape=(1, 1, 32, 32))
    x = rand(1, 1, 32, 32, seed=2)
    with pytest.raises(ExportError) as info:
        check_onnx(other, path, x=x)
    # the relative error, as the docstring defines it: max|ort - torch| / max|torch| at batch 1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    a = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0].astype(np.float64)
    with torch.no_grad():
        b = other.eval()(x).double().numpy()
    rel = np.abs(a - b).max() / np.abs(b).max()
    assert rel > 1e-4
    msg = str(info.value)
    assert "relative error" in msg and f"{rel:.3e}" in msg and "rtol 1.0e-04" in msg, msg
    assert f"{np.abs(a - b).max():.3e}" in msg and "batch 1" in msg and "unet.onnx" in msg, msg
    # a loose enough tolerance accepts the same pair
    assert check_onnx(other, path, x=x, rtol=10 * rel)["rel_error"] == pytest.approx(rel, rel=1e-6)


def test_static_batch_fails_the_dynamic_batch_check(tmp_path):
    model = small_unet()
    path = export_onnx(model, tmp_path / "static.onnx", (1, 1, 32, 32), dynamic_batch=False)
    with pytest.raises(ExportError, match=r"batch 2"):
        check_onnx(model, path)
    assert check_onnx(model, path, dynamic_batch=False)["batches"] == [1]


def test_failed_export_leaves_no_file_and_names_the_shape(tmp_path):
    torch.manual_seed(0)
    model = create_model("dscnet", n_basic_layer=4, kernel_size=3)
    target = tmp_path / "dscnet.onnx"
    with pytest.raises(ExportError, match=r"\(1, 1, 70, 64\)") as info:
        export_onnx(model, target, input_shape=(1, 1, 70, 64))
    assert "H=70" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_export_replaces_an_existing_file(tmp_path):
    target = tmp_path / "unet.onnx"
    target.write_bytes(b"old")
    model = small_unet()
    export_onnx(model, target, input_shape=(1, 1, 32, 32))
    assert target.read_bytes()[:3] != b"old"
    assert check_onnx(model, target)["rel_error"] < 1e-5
    assert [p.name for p in tmp_path.iterdir()] == ["unet.onnx"]


def test_external_data_is_one_side_file(tmp_path):
    model = small_unet()
    path = export_onnx(model, tmp_path / "unet.onnx", (1, 1, 32, 32), external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet.onnx", "unet.onnx.data"]
    assert (tmp_path / "unet.onnx.data").stat().st_size > path.stat().st_size
    assert check_onnx(model, path)["rel_error"] < 1e-5


def test_forward_must_return_a_tensor(tmp_path):
    class Dict(nn.Module):
        in_channels = 1

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)

        def forward(self, x):
            return {"out": self.conv(x)}

    with pytest.raises(ExportError, match="one tensor"):
        export_onnx(Dict(), tmp_path / "d.onnx")
    assert list(tmp_path.iterdir()) == []


def test_check_onnx_missing_or_broken_file(tmp_path):
    with pytest.raises(ExportError, match="not found"):
        check_onnx(small_unet(), tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ExportError, match="onnxruntime cannot load"):
        check_onnx(small_unet(), bad)


def test_torchscript_script_reload(tmp_path):
    model = small_unet()
    result = export_torchscript(model, tmp_path / "unet.pt", example=rand(1, 1, 32, 32))
    assert result.method == "script" and result.script_error is None
    assert result.batches == (1, 2) and result.max_abs_error <= 1e-6
    assert [p.name for p in tmp_path.iterdir()] == ["unet.pt"]
    loaded = torch.jit.load(str(result.path))
    x = rand(2, 1, 40, 24, seed=3)  # scripted: other sizes work too
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x), atol=1e-6)


class NotScriptable(nn.Module):
    """Computed attribute names (getattr with an f-string) cannot be scripted."""

    in_channels = 2

    def __init__(self) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(2, 3, 3, padding=1)
        self.c1 = nn.Conv2d(3, 1, 1)

    def forward(self, x):
        for i in range(2):
            x = getattr(self, f"c{i}")(x)
        return x


def test_torchscript_falls_back_to_trace(tmp_path):
    model = NotScriptable()
    result = export_torchscript(model, tmp_path / "m.pt")  # default example (1, 2, 64, 64)
    assert result.method == "trace" and result.script_error
    loaded = torch.jit.load(str(result.path))
    x = rand(3, 2, 64, 64, seed=4)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)


def test_export_program_round_trip(tmp_path):
    model = small_unet()
    program = export_program(model, rand(1, 1, 32, 32), path=tmp_path / "unet.pt2")
    loaded = torch.export.load(str(tmp_path / "unet.pt2"))
    x = rand(3, 1, 32, 32, seed=6)
    with torch.no_grad():
        ref = model.eval()(x)
        assert torch.allclose(program.module()(x), ref, atol=1e-6)
        assert torch.allclose(loaded.module()(x), ref, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["unet.pt2"]


def test_export_program_failure_is_an_export_error():
    class DataDependent(nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # Python branch on a tensor value: torch.export cannot guard on it
                return x
            return -x

    with pytest.raises(ExportError, match="torch.export of DataDependent failed"):
        export_program(DataDependent(), rand(1, 1, 4, 4), dynamic_batch=False)


def test_an_export_killed_mid_write_keeps_the_previous_file_and_a_rerun_replaces_it(tmp_path):
    """``kill -9`` of a process while it writes the TorchScript file (it blocks inside
    ``torch.jit.save``, after writing half the bytes): the earlier export under the final name is
    untouched and loads; the rerun writes the new one and removes the dead writer's temporary."""
    import os
    import signal
    import subprocess
    import sys

    path = tmp_path / "unet.pt"
    export_torchscript(small_unet(0), path, example=rand(1, 1, 32, 32))
    before = path.read_bytes()
    script = f"""
import time, torch
import medseg.export.torchscript as ts
from medseg.models import create_model
def stuck(obj, f):
    open(f, "wb").write(b"half a TorchScript archive")
    print("writing", flush=True)
    time.sleep(60)
torch.jit.save = stuck
torch.manual_seed(1)
ts.export_torchscript(create_model("unet", in_channels=1, out_channels=2, base_channels=4, depth=2),
                      {str(path)!r}, example=torch.randn(1, 1, 32, 32))
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert path.read_bytes() == before
    torch.jit.load(str(path))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".unet.")]
    assert len(leftovers) == 1, "the killed writer's temporary, hidden beside the file"
    export_torchscript(small_unet(1), path, example=rand(1, 1, 32, 32))
    assert path.read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["unet.pt"], "the rerun removed the dead writer's temporary"
