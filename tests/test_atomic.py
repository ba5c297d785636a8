"""A crash while writing never leaves a half-written file nor destroys the previous one."""

import os

import pytest
import torch

from medseg.atomic import atomic_path, write_text_atomic
from medseg.engine.checkpoint import AtomicCheckpointIO, read_checkpoint
from medseg.errors import CheckpointError


def test_write_text_atomic_replaces(tmp_path):
    path = tmp_path / "a" / "metrics.json"
    write_text_atomic(path, "one")
    write_text_atomic(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_crash_mid_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "best.ckpt"
    path.write_bytes(b"old checkpoint")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("power cut")
    assert path.read_bytes() == b"old checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]


def test_checkpoint_io_is_atomic(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    assert torch.equal(torch.load(path)["state_dict"]["w"], torch.ones(3))

    real_save = torch.save

    def crashing_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 truncated")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.equal(torch.load(path)["state_dict"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_read_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="missing.ckpt does not exist"):
        read_checkpoint(tmp_path / "missing.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.ckpt cannot be read"):
        read_checkpoint(bad)
    other = tmp_path / "other.ckpt"
    torch.save({"weights": 1}, other)
    with pytest.raises(CheckpointError, match="not a medseg training checkpoint"):
        read_checkpoint(other)


def test_written_files_get_the_umask_mode_not_0600(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "report.json", "{}")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644


def test_a_failing_checkpoint_write_is_one_clear_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    """Disk full while writing a checkpoint: `medseg train` stops with one line naming the file;
    the checkpoint written before is intact and resumable."""
    import errno

    import torch

    import medseg.engine.checkpoint as ckpt_module
    from medseg.cli import main

    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 3:  # last.ckpt at step 16 and best.ckpt at step 32 go through; last at 32 fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt_module.torch, "save", save)
    run = tmp_path / "r"
    status = main(
        [
            "train",
            "--out",
            str(run),
            "--max-steps",
            "40",
            "--no-eval",
            "--set",
            "train.progress_bar=false",
            "--set",
            "model.args={base_channels: 4, depth: 2}",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("medseg: error:")]
    assert len(lines) == 1 and "could not be written (No space left on device)" in lines[0], err
    assert "checkpoints" in lines[0] and "the previous file is kept" in lines[0]
    monkeypatch.setattr(ckpt_module.torch, "save", real_save)
    kept = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert kept["global_step"] == 16
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_folder_that_cannot_be_written_is_a_clear_error(tmp_path, monkeypatch):
    import tempfile

    from medseg.atomic import WriteError, write_text_atomic

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", deny)
    with pytest.raises(
        WriteError, match=r"metrics.json could not be written \(Permission denied\); nothing was changed"
    ):
        write_text_atomic(tmp_path / "metrics.json", "{}")
    with pytest.raises(OSError):  # still an OSError for callers that catch those
        write_text_atomic(tmp_path / "metrics.json", "{}")


def test_stale_temporaries_of_a_killed_writer_are_removed_and_nothing_else(tmp_path):
    import subprocess
    import sys

    from medseg.atomic import remove_stale_temporaries

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    live = str(os.getpid())
    keep = [
        "last.ckpt",
        ".hidden",
        ".last.ckpt",
        "notes.txt",
        f".best.{dead}.abcd1234.json",
        f".last.{live}.abcd1234.ckpt",
        ".last.abcd1234.ckpt",
    ]
    stale = [f".last.{dead}.abcd1234.ckpt", f".best.{dead}.k_9xz0qq.ckpt"]
    for name in keep + stale:
        (tmp_path / name).write_text("x")
    removed = remove_stale_temporaries(tmp_path, ".ckpt")
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [f".best.{dead}.abcd1234.json"]
    assert remove_stale_temporaries(tmp_path / "absent", ".ckpt") == []


def test_the_temporary_name_pattern_matches_what_atomic_path_writes(tmp_path):
    from medseg.atomic import _TEMPORARY

    names = []
    for _ in range(20):
        with atomic_path(tmp_path / "last.ckpt") as tmp:
            names.append(tmp.name)
            tmp.write_text("x")
    matches = [_TEMPORARY.match(n) for n in names]
    assert all(m and m.group("suffix") == ".ckpt" and m.group("pid") == str(os.getpid()) for m in matches)
