"""Exact resume through the CLI: a run stopped (``--max-steps``), or killed with SIGKILL after a
checkpoint, and resumed with ``--resume`` ends with the weights, optimiser state and
validation Dice of the uninterrupted run, bit for bit.

Lightning 2.6 wrote its epoch-end checkpoint half-way through counting the epoch; resumed with
``max_steps`` it trained one extra batch and shifted the data of every later epoch
(:func:`medseg.engine.module.normalise_loop_state`). ``train.max_steps`` is now a stop of
medseg's own (:class:`medseg.engine.train.StopAtStep`), not the schedule's length.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medseg.cli import main
from medseg.engine.checkpoint import checkpoint_differences

TINY = ["--set", "train.progress_bar=false", "--set", "model.args={base_channels: 4, depth: 2}", "--no-eval"]


def _train(out: Path, steps: int, resume: bool = False) -> None:
    argv = ["train", "--out", str(out), "--max-steps", str(steps), *TINY] + (["--resume"] if resume else [])
    assert main(argv) == 0


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _assert_same_run(a: Path, b: Path) -> None:
    assert checkpoint_differences(a / "checkpoints" / "last.ckpt", b / "checkpoints" / "last.ckpt") == []


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("resume") / "a"
    _train(run, 56)  # 16 batches an epoch: ends mid-epoch 3, after validation rounds at epochs 1 and 3
    return run


@pytest.mark.parametrize("stop", [16, 20, 40], ids=["epoch-end", "mid-epoch", "mid-epoch-after-validation"])
def test_stopped_and_resumed_equals_uninterrupted(uninterrupted, tmp_path, stop):
    run = tmp_path / "b"
    _train(run, stop)
    assert _state(run)["global_step"] == stop
    _train(run, 56, resume=True)
    _assert_same_run(uninterrupted, run)


def test_resume_of_a_finished_run_trains_nothing_more(uninterrupted, tmp_path):
    import shutil

    run = tmp_path / "done"
    shutil.copytree(uninterrupted, run)
    _train(run, 56, resume=True)
    _assert_same_run(uninterrupted, run)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_sigkill_mid_checkpoint_write_and_at_a_seeded_time_then_resume_equals_uninterrupted(tmp_path):
    """A real ``kill -9`` of ``medseg train`` at two points: the moment the first checkpoint's
    temporary file appears (mid-checkpoint write), then, on the resumed run, a seeded random time
    (mid-step or mid-validation, wherever it lands). After each kill every finished checkpoint
    reads; the last resume ends equal to the uninterrupted run and removes the killed writer's
    temporary. Every run is a subprocess with one thread, so the reference sums in the same order."""
    import random

    run = tmp_path / "k"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "medseg.cli", "train", "--out", str(run), "--max-steps", "56", *TINY]
    reference = tmp_path / "ref"
    t0 = time.perf_counter()
    subprocess.run(
        [*cmd[:5], str(reference), *cmd[6:]],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=300,
    )
    duration = time.perf_counter() - t0
    ckpts = run / "checkpoints"

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, lambda: ckpts.is_dir() and any(ckpts.glob(".*.ckpt")))
    for path in ckpts.glob("[!.]*.ckpt"):
        torch.load(path, map_location="cpu", weights_only=True)  # never unreadable

    proc = subprocess.Popen(cmd + ["--resume"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(10).uniform(0.5 * duration, 0.9 * duration))
    _kill_when(proc, lambda: True)
    for path in ckpts.glob("[!.]*.ckpt"):
        torch.load(path, map_location="cpu", weights_only=True)

    subprocess.run(
        cmd + ["--resume"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300
    )
    _assert_same_run(reference, run)
    assert not list(ckpts.glob(".*")), "the killed writer's temporary is removed on resume"


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(uninterrupted, tmp_path, capsys):
    run = tmp_path / "early"
    run.mkdir()
    (run / "config.yaml").write_text((uninterrupted / "config.yaml").read_text())
    (run / "checkpoints").mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (run / "checkpoints" / f".last.{dead}.abcd1234.ckpt").write_bytes(b"half a checkpoint of a killed run")
    _train(run, 56, resume=True)
    out = capsys.readouterr().out
    assert "interrupted before its first checkpoint; training it from step 0" in out
    assert "removed 1 unfinished checkpoint write" in out
    _assert_same_run(uninterrupted, run)


def test_checkpoint_differences_names_what_differs(uninterrupted, tmp_path):
    last = uninterrupted / "checkpoints" / "last.ckpt"
    state = _state(uninterrupted)
    key = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][key] = state["state_dict"][key] + 1e-7
    state["global_step"] += 1
    torch.save(state, tmp_path / "changed.ckpt")
    assert checkpoint_differences(last, tmp_path / "changed.ckpt") == ["global_step", f"state_dict/{key}"]
    assert checkpoint_differences(last, last) == []


def test_a_second_process_on_a_live_run_directory_is_refused_and_stale_locks_are_taken_over(tmp_path, capsys):
    import json

    from medseg.errors import ConfigError
    from medseg.runlock import LOCK_NAME, run_lock

    run = tmp_path / "r"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.mkdir()
        (run / LOCK_NAME).write_text(
            json.dumps(
                {
                    "pid": sleeper.pid,
                    "host": __import__("socket").gethostname(),
                    "started": "now",
                    "command": "medseg train",
                }
            )
        )
        assert main(["train", "--out", str(run), "--max-steps", "2", *TINY]) == 2
        err = capsys.readouterr().err
        assert f"is in use by process {sleeper.pid}" in err and "Traceback" not in err
        assert not (run / "checkpoints").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    # the owner is gone: its lock is stale and the next run takes it over
    with run_lock(run):
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "stale lock" in capsys.readouterr().err
    assert not (run / LOCK_NAME).exists()
    # nested use by the same process (a staged run) and a refused fresh directory leave nothing behind
    with pytest.raises(ConfigError):
        with run_lock(tmp_path / "fresh"):
            raise ConfigError("refused")
    assert not (tmp_path / "fresh").exists()


@pytest.mark.slow
def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path):
    run = tmp_path / "c"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "medseg.cli", "train", "--out", str(run), "--max-steps", "400", *TINY],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a suite started in the background (`cmd &`) ignores SIGINT, and a child
        # inherits that: give the run the disposition a terminal's Ctrl-C meets
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "last.ckpt").is_file() and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "training ended before the signal: " + proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err[-2000:]
    import re

    kept = re.search(r"medseg: interrupted at step \d+; kept .*last\.ckpt \(step (\d+)\)", err)
    assert kept, err[-2000:]
    assert f"medseg train --out {run} --resume" in err
    target = int(kept.group(1)) + 8
    assert main(["train", "--out", str(run), "--max-steps", str(target), "--resume", *TINY]) == 0
    assert _state(run)["global_step"] == target


class _PoisonBatch:
    """A Lightning callback that turns one training batch's images into NaN (a bad batch)."""

    def __new__(cls, at_step: int):
        import lightning as L

        class Poison(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step == at_step:
                    batch["image"].fill_(float("nan"))

        return Poison()


def _tiny_cfg(*extra: str):
    from medseg.config import load_config

    return load_config(
        None,
        [
            "train.progress_bar=false",
            "model.args={base_channels: 4, depth: 2}",
            "train.max_steps=40",
            "eval.after_train=false",
            *extra,
        ],
    )


def test_a_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    from medseg.engine.train import train as fit
    from medseg.errors import TrainingError

    run = tmp_path / "nan"
    with pytest.raises(
        TrainingError, match=r"loss is nan at step 20 \(epoch 1, batch 4\).*last good checkpoint is .*last\.ckpt"
    ):
        fit(_tiny_cfg(), run, callbacks=[_PoisonBatch(20)])
    kept = _state(run)
    assert kept["global_step"] == 16  # the epoch-end checkpoint before the bad batch, untouched
    assert all(torch.isfinite(v).all() for v in kept["state_dict"].values() if v.is_floating_point())


def test_a_nan_loss_can_be_skipped_when_the_recipe_asks(tmp_path, capsys):
    from medseg.engine.train import train as fit

    run = tmp_path / "skip"
    summary = fit(_tiny_cfg("train.nonfinite_loss=skip"), run, callbacks=[_PoisonBatch(20)])
    assert summary["steps"] == 40 and "batch skipped" in capsys.readouterr().out
    assert all(torch.isfinite(v).all() for v in _state(run)["state_dict"].values() if v.is_floating_point())


def test_nan_weights_are_never_written_over_a_good_checkpoint(tmp_path):
    from medseg.engine.checkpoint import AtomicCheckpointIO
    from medseg.errors import CheckpointError

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "global_step": 1}, path)
    with pytest.raises(CheckpointError, match="NaN or infinite.*previous file is kept"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("nan")])}, "global_step": 2}, path)
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(2))
