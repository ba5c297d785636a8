"""Thread count and OpenMP waiting (medseg.threads, ``--threads``): the cores a process may use,
the user's settings kept, and the setting made before torch is loaded."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from medseg.cli import main
from medseg.errors import ConfigError
from medseg.threads import SPINCOUNT, choose_threads, prepare_openmp, usable_cores


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize(
    "cpu_max, cap",
    [
        ("150000 100000\n", 2),
        ("100000 100000\n", 1),
        ("max 100000\n", None),
        ("garbage\n", None),
        ("50000 100000\n", 1),
    ],
)
def test_usable_cores_is_the_affinity_capped_by_the_cgroup_quota(tmp_path, cpu_max, cap):
    f = tmp_path / "cpu.max"
    f.write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(f) == (affinity if cap is None else min(affinity, cap))
    assert usable_cores(tmp_path / "absent") == affinity


def test_prepare_openmp_sets_a_short_spin_and_keeps_what_the_user_set():
    env: dict = {}
    prepare_openmp(env)
    assert env == {"GOMP_SPINCOUNT": SPINCOUNT}
    for user in ({"GOMP_SPINCOUNT": "300000"}, {"OMP_WAIT_POLICY": "ACTIVE"}):
        env = dict(user)
        assert prepare_openmp(env) is False
        assert env == user


def test_the_medseg_command_sets_it_before_torch_is_loaded():
    """libgomp reads GOMP_SPINCOUNT once, when torch loads it: importing the CLI must not load torch."""
    code = (
        "import sys, os; import medseg.cli; loaded = 'torch' in sys.modules; "
        "from medseg.threads import prepare_openmp; env = {}; took = prepare_openmp(env); print(loaded, took)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["False", "True"]


def test_thread_choice_order_is_flag_then_omp_num_threads_then_usable_cores():
    assert choose_threads(3, environ={"OMP_NUM_THREADS": "1"}).threads == 3
    assert choose_threads(None, environ={"OMP_NUM_THREADS": "1"}).source == "OMP_NUM_THREADS"
    choice = choose_threads(None, environ={})
    assert (choice.threads, choice.source) == (usable_cores(), "usable cores")
    assert "this process may use" in choice.describe()


@pytest.mark.parametrize("bad", [0, -2, True])
def test_a_bad_thread_count_is_refused(bad):
    with pytest.raises(ConfigError, match="--threads: must be an integer >= 1"):
        choose_threads(bad, environ={})
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS"):
        choose_threads(None, environ={"OMP_NUM_THREADS": "two"})


def test_train_threads_flag_sets_torch_and_says_so(tmp_path, capsys):
    argv = [
        "train",
        "--out",
        str(tmp_path / "r"),
        "--threads",
        "1",
        "--max-steps",
        "1",
        "--no-eval",
        "--set",
        "train.progress_bar=false",
        "--set",
        "model.args={base_channels: 4, depth: 2}",
    ]
    assert main(argv) == 0
    assert torch.get_num_threads() == 1
    assert "threads: 1 (from --threads" in capsys.readouterr().out


def test_threads_zero_on_the_command_line_is_one_clear_error(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert "--threads: must be an integer >= 1 (got 0)" in err and not (tmp_path / "r").exists()
