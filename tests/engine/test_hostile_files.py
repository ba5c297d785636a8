"""Hostile files: a checkpoint or weight file that would run code when loaded is refused unread.

Every file below holds an object whose unpickling calls ``exec`` to write a marker file (the
stand-in for "runs arbitrary code"). medseg must refuse each with a CheckpointError naming the
file (one ``medseg: error:`` line and exit status 2 through the CLI), and the marker must never
appear. A control test shows the files really are hostile (``weights_only=False`` runs them).
Real checkpoints of a tiny training must load with the same safe reader, and ``--resume`` work.
"""

from __future__ import annotations

import pickle
import pickletools
import shutil
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medseg.cli import main
from medseg.engine.checkpoint import AtomicCheckpointIO, check_plain, load_model_from_checkpoint, read_checkpoint
from medseg.errors import CheckpointError
from medseg.models.weights import CHECKPOINT_SAFE_GLOBALS, read_state_dict, safe_torch_load

# The built-in default, shrunk: 16 samples / batch 8 = 2 steps per epoch, a validation round
# every epoch (so ModelCheckpoint's scores are in the checkpoint), 4 steps in all.
QUICK = [
    "--set",
    "train.progress_bar=false",
    "--set",
    "data.samples_per_epoch=16",
    "--set",
    "train.val_every_n_epochs=1",
    "--no-eval",
]


class RunsCode:
    """Unpickling this writes ``marker``: what a malicious checkpoint would do with os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({self.marker!r}).write_text('pwned')",)


def hostile_checkpoint(path: Path, marker: Path, **save_kw) -> Path:
    """A file shaped like a medseg checkpoint, with a code-running object inside."""
    torch.save(
        {
            "state_dict": {"model.head.weight": torch.zeros(2, 4, 1, 1)},
            "hyper_parameters": {"config": {"model": {"name": "unet"}}, "in_channels": 1, "num_classes": 2},
            "evil": RunsCode(marker),
        },
        path,
        **save_kw,
    )
    return path


def hostile_state_dict(path: Path, marker: Path) -> Path:
    """A bare state dict (an encoder weight file) with a code-running object inside."""
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.bias": RunsCode(marker)}, path)
    return path


def one_line_error(capsys, path: Path) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("medseg: error: "), err
    assert str(path) in err and "will not unpickle" in err and "exec" in err, err
    assert "Traceback" not in err
    return err


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "pwned"
    yield m
    assert not m.exists(), "a hostile file ran code"


def test_the_hostile_files_do_run_code_when_unpickled_unsafely(tmp_path):
    control = tmp_path / "control-marker"
    path = hostile_checkpoint(tmp_path / "evil.ckpt", control)
    torch.load(path, map_location="cpu", weights_only=False)  # what medseg must never do
    assert control.read_text() == "pwned"


@pytest.mark.parametrize("form", ["zip", "legacy", "pickle2", "pickle4", "pickle5"])
def test_read_checkpoint_refuses_code(tmp_path, marker, form):
    path = tmp_path / f"{form}.ckpt"
    if form == "zip":
        hostile_checkpoint(path, marker)
    elif form == "legacy":
        hostile_checkpoint(path, marker, _use_new_zipfile_serialization=False)
    else:  # a plain pickle, as pickle.dump writes it
        with path.open("wb") as fh:
            pickle.dump(
                {"state_dict": {}, "hyper_parameters": {"config": {}}, "evil": RunsCode(marker)},
                fh,
                protocol=int(form[-1]),
            )
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    msg = str(info.value)
    assert f"checkpoint {path} holds objects medseg will not unpickle" in msg
    assert "exec" in msg and "\n" not in msg


def test_lightning_resume_reader_refuses_code(tmp_path, marker, monkeypatch):
    path = hostile_checkpoint(tmp_path / "last.ckpt", marker)
    io = AtomicCheckpointIO()
    with pytest.raises(CheckpointError, match=r"last\.ckpt holds objects medseg will not unpickle \(global exec\)"):
        io.load_checkpoint(path)
    # neither an explicit weights_only=False nor torch's environment override turn it off
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError, match="will not unpickle"):
        io.load_checkpoint(path, weights_only=False)
    with pytest.raises(CheckpointError, match="will not unpickle"):
        read_checkpoint(path)


def test_weight_file_loader_refuses_code(tmp_path, marker):
    from medseg.models.dscnet import load_original
    from medseg.models.encoders.resnet import resnet34_encoder

    path = hostile_state_dict(tmp_path / "resnet34.pth", marker)
    for load in (read_state_dict, resnet34_encoder().load_weights, load_original):
        with pytest.raises(CheckpointError, match=rf"weight file '{path}' holds objects medseg will not unpickle"):
            load(path)
    wrapped = tmp_path / "wrapped.pth"  # {"state_dict": {...}} as training scripts save it
    torch.save({"state_dict": {"w": torch.ones(1)}, "epoch": 3, "args": RunsCode(marker)}, wrapped)
    with pytest.raises(CheckpointError, match=r"wrapped\.pth' holds objects medseg will not unpickle \(global exec\)"):
        read_state_dict(wrapped)


def test_non_tensor_plain_data_is_refused_too(tmp_path):
    """A numpy array is harmless but not plain data: refused the same way, never unpickled."""
    path = tmp_path / "np.pth"
    torch.save({"w": np.zeros(3)}, path)
    with pytest.raises(CheckpointError, match=r"will not unpickle \(global numpy\..*_reconstruct\)"):
        read_state_dict(path)


def test_garbage_and_truncated_files_are_unreadable_not_refused(tmp_path):
    text = tmp_path / "text.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"text\.ckpt cannot be read"):
        safe_torch_load(text, f"checkpoint {text}")
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(100)}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"cut\.pt cannot be read \(RuntimeError"):
        safe_torch_load(cut, f"checkpoint {cut}")


def test_cli_evaluate_refuses_hostile_checkpoint(tmp_path, marker, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    path = hostile_checkpoint(run / "checkpoints" / "best.ckpt", marker)
    assert main(["evaluate", "--run", str(run)]) == 2
    one_line_error(capsys, path)


def test_cli_predict_refuses_hostile_checkpoint(tmp_path, marker, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(images / "a.png")
    for path in (hostile_checkpoint(tmp_path / "evil.ckpt", marker), hostile_state_dict(tmp_path / "sd.ckpt", marker)):
        assert main(["predict", "-m", str(path), "-i", str(images), "-o", str(tmp_path / "out")]) == 2
        one_line_error(capsys, path)
    assert not list(tmp_path.glob("out/*.png"))


def test_cli_train_refuses_hostile_encoder_weights(tmp_path, marker, capsys):
    path = hostile_state_dict(tmp_path / "resnet34.pth", marker)
    argv = [
        "train",
        "--out",
        str(tmp_path / "run"),
        "--max-steps",
        "1",
        *QUICK,
        "--set",
        "model.name=cpfnet",
        "--set",
        f"model.args={{encoder_weights: '{path}'}}",
    ]
    assert main(argv) == 2
    one_line_error(capsys, path)
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))


# -- real checkpoints ---------------------------------------------------------------------------


def pickle_globals(path: Path) -> set[str]:
    """The globals the pickle of a torch.save zip archive names (parsed, not executed)."""
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    return {str(arg) for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The built-in default trained 4 steps (2 epochs, 2 validation rounds) through the CLI."""
    run = tmp_path_factory.mktemp("hostile") / "run"
    assert main(["train", "--out", str(run), "--max-steps", "4", *QUICK]) == 0
    return run


def test_real_checkpoints_hold_only_plain_data(quick_run):
    assert CHECKPOINT_SAFE_GLOBALS == ()  # nothing beyond torch's weights-only defaults is needed
    for name in ("best", "last"):
        path = quick_run / "checkpoints" / f"{name}.ckpt"
        # only tensor storages and OrderedDict: the numpy RNG state is stored as a tensor
        assert pickle_globals(path) <= {
            "torch._utils _rebuild_tensor_v2",
            "collections OrderedDict",
            "torch FloatStorage",
            "torch LongStorage",
            "torch ByteStorage",
        }, pickle_globals(path)
        ckpt = read_checkpoint(path)
        check_plain(ckpt)
        assert torch.load(path, map_location="cpu", weights_only=True).keys() == ckpt.keys()
        assert {
            "state_dict",
            "optimizer_states",
            "lr_schedulers",
            "callbacks",
            "loops",
            "hyper_parameters",
            "medseg_rng",
        } <= ckpt.keys()
        cb = next(v for k, v in ckpt["callbacks"].items() if "'val/dice'" in k)
        assert isinstance(cb["best_model_score"], torch.Tensor)  # a validation round ran
        model, cfg = load_model_from_checkpoint(path)
        assert cfg.model.name == "unet" and not model.training


def test_resume_reads_through_the_safe_loader(quick_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(quick_run, run)
    calls = []
    real = AtomicCheckpointIO.load_checkpoint

    def spy(self, path, *a, **k):
        calls.append(Path(path))
        return real(self, path, *a, **k)

    monkeypatch.setattr(AtomicCheckpointIO, "load_checkpoint", spy)
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "8", *QUICK]) == 0
    assert calls == [run / "checkpoints" / "last.ckpt"]
    last = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 8 and last["epoch"] == 3
    assert "error" not in capsys.readouterr().err


def test_cli_resume_refuses_hostile_last_checkpoint(quick_run, tmp_path, marker, capsys):
    """A real checkpoint with a payload added: refused on --resume, nothing trained or written."""
    run = tmp_path / "run"
    shutil.copytree(quick_run, run)
    last = run / "checkpoints" / "last.ckpt"
    ckpt = read_checkpoint(last)
    ckpt["callbacks"]["evil"] = RunsCode(marker)
    torch.save(ckpt, last)
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "8", *QUICK]) == 2
    one_line_error(capsys, last)
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before


def test_checkpoints_that_could_not_be_read_back_are_never_written(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    with pytest.raises(TypeError, match=r"\['medseg_rng'\]\['numpy'\]\[1\] is a numpy\.ndarray"):
        io.save_checkpoint({"state_dict": {}, "medseg_rng": {"numpy": ["MT19937", np.zeros(3, np.uint32)]}}, path)
    assert not path.exists()
    plain = {
        "t": torch.ones(2),
        "p": torch.nn.Parameter(torch.ones(1)),
        "od": OrderedDict(a=1),
        "misc": [1, 2.5, "s", b"b", None, True, (1, 2), {3}, 1j, torch.Size([2]), torch.device("cpu"), torch.float16],
    }
    io.save_checkpoint(plain, path)  # everything check_plain lets through loads with weights_only=True
    back = safe_torch_load(path, "checkpoint")
    assert back["misc"] == plain["misc"] and torch.equal(back["t"], plain["t"])
