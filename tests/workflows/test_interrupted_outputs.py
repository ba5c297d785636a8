"""``kill -9`` of ``medseg predict`` and ``medseg evaluate`` half-way: every file under its final
name is whole (it decodes), and rerunning the same command finishes the job with the outputs of an
uninterrupted run and removes the killed writer's hidden temporaries.

(``medseg export`` and ``medseg reproduce`` do not exist yet; their tests come with them.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.cli import main

TINY = ["--set", "train.progress_bar=false", "--set", "model.args={base_channels: 4, depth: 2}"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny trained run of the built-in default (8 test images), evaluated once."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    assert main(["train", "--out", str(out), "--max-steps", "8", "--threads", "1", *TINY]) == 0
    return out


def _kill_on_first(proc: subprocess.Popen, folder: Path, pattern: str, timeout: float = 120) -> bool:
    """SIGKILL ``proc`` as soon as a file matching ``pattern`` appears in ``folder``; True if it did
    before the process ended."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if folder.is_dir() and any(folder.glob(pattern)):
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return True
        time.sleep(0.001)
    proc.kill()
    proc.wait(timeout=30)
    return False


def _whole(folder: Path) -> None:
    """Every non-hidden file decodes as what its extension says."""
    for path in folder.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix == ".png":
            with Image.open(path) as im:
                im.load()
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            assert path.read_text().endswith("\n"), path


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


@pytest.mark.slow
def test_predict_killed_mid_folder_then_rerun_equals_an_uninterrupted_predict(run, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (96, 96), dtype=np.uint8)).save(images / f"img{i:02d}.png")
    ckpt = run / "checkpoints" / "best.ckpt"
    ref, out = tmp_path / "ref", tmp_path / "out"
    args = ["predict", "-m", str(ckpt), "-i", str(images), "--threads", "1", "--no-progress"]
    assert main([*args, "-o", str(ref)]) == 0

    proc = subprocess.Popen(
        [sys.executable, "-m", "medseg.cli", *args, "-o", str(out)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert _kill_on_first(proc, out, ".*.png"), "predict finished before a write was seen: make the folder larger"
    _whole(out)
    assert len(list(out.glob("[!.]*"))) < len(list(ref.iterdir())), "killed half-way"

    assert main([*args, "-o", str(out)]) == 0
    assert _hidden(out) == []
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ref.iterdir())
    for p in ref.iterdir():
        assert (out / p.name).read_bytes() == p.read_bytes(), p.name


@pytest.mark.slow
def test_evaluate_killed_mid_figures_then_rerun_equals_an_uninterrupted_evaluate(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "eval")
    (copy / "report.html").unlink(missing_ok=True)

    proc = subprocess.Popen(
        [sys.executable, "-m", "medseg.cli", "evaluate", "--run", str(copy), "--threads", "1", "--no-progress"],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert _kill_on_first(proc, copy / "eval" / "test" / "figures", ".*.png"), "evaluate ended before its figures"
    _whole(copy)
    assert not (copy / "eval" / "test" / "metrics.json").exists(), "metrics are written last"

    assert main(["evaluate", "--run", str(copy), "--threads", "1", "--no-progress"]) == 0
    assert _hidden(copy / "eval") == [] and not list(copy.glob(".report*"))
    a = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    b = json.loads((copy / "eval" / "test" / "metrics.json").read_text())
    for doc in (a, b):
        doc.pop("timing_s"), doc.pop("output"), doc.pop("checkpoint")
    assert a == b
    assert (run / "eval" / "test" / "per_image.csv").read_text() == (
        copy / "eval" / "test" / "per_image.csv"
    ).read_text()
    assert sorted(p.name for p in (copy / "eval" / "test" / "figures").iterdir()) == sorted(
        p.name for p in (run / "eval" / "test" / "figures").iterdir()
    )
