"""The built-in default job alone and beside one competing process on the same cores.

Usage::

    python benchmarks/contention.py [--steps 640] [--json benchmarks/results/contention-cpu-2core.json]

Runs ``medseg train --no-eval --max-steps STEPS`` (the built-in default: U-Net on synthetic
vessels; 640 steps is the whole job) as a subprocess, and reports its training seconds (as the
command prints them), wall seconds and CPU seconds in these cases:

* ``before``: libgomp's own default spin (``GOMP_SPINCOUNT=300000``, what medseg ran with before
  :mod:`medseg.threads`), alone, then beside a second ``medseg train`` with the same setting;
* ``after``: medseg's defaults (:func:`medseg.threads.prepare_openmp`), alone, then beside a
  second ``medseg train`` with its defaults;
* ``after``, beside a competitor that still spins (a ``medseg train`` with
  ``GOMP_SPINCOUNT=300000``: any other PyTorch program), and beside a one-core busy loop.

The competitor starts first and is given a few seconds to reach training. The slowdown of a case
is its training seconds over the same policy's alone time, measured in this run (goal: at most
2.5x on 2 cores, where a fair share of the cores gives 2x). Prints a table and writes JSON with
the machine's matmul rate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine  # noqa: E402 - benchmarks/ is on sys.path when run as a script

MEDSEG = [sys.executable, "-m", "medseg.cli", "train", "--no-eval", "--set", "train.progress_bar=false"]
BEFORE = {"GOMP_SPINCOUNT": "300000"}
POLICIES = {"before": BEFORE, "after": {}}
BUSY_LOOP = [sys.executable, "-c", "while True: pass"]


def _env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    return {**env, **extra}


def _job(out: Path, steps: int, extra_env: dict) -> dict:
    """Run the measured job; its training seconds, wall seconds and CPU seconds (user + system)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*MEDSEG, "--out", str(out), "--max-steps", str(steps)],
        env=_env(extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"medseg train failed (exit {proc.returncode}):\n{output[-2000:]}")
    match = re.search(r"trained (\d+) steps / \d+ epochs in ([\d.]+) s", output)
    return {"train_s": float(match.group(2)), "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime}


def _competitor(kind: str, out: Path) -> subprocess.Popen:
    if kind == "busy loop":
        cmd, env = BUSY_LOOP, _env({})
    else:
        cmd = [*MEDSEG, "--out", str(out), "--max-epochs", "100000"]
        env = _env(BEFORE if kind == "medseg train, spinning" else POLICIES[kind.split()[-1]])
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_case(policy: str, competitor: str | None, steps: int, scratch: Path, warmup_s: float) -> dict:
    for d in ("job", "competitor"):
        shutil.rmtree(scratch / d, ignore_errors=True)
    comp = None
    if competitor is not None:
        comp = _competitor(competitor, scratch / "competitor")
        time.sleep(warmup_s)
    try:
        result = _job(scratch / "job", steps, POLICIES[policy])
    finally:
        if comp is not None:
            comp.kill()
            comp.wait()
    return {"policy": policy, "competitor": competitor or "none", **result}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--steps", type=int, default=640, help="training steps of the measured job (640: the whole default job)"
    )
    ap.add_argument("--warmup", type=float, default=8.0, help="seconds the competitor runs before the job starts")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    info = machine()
    cases = [
        ("before", None),
        ("before", "medseg train, before"),
        ("after", None),
        ("after", "medseg train, after"),
        ("after", "medseg train, spinning"),
        ("after", "busy loop"),
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="medseg-contention-") as tmp:
        for policy, competitor in cases:
            row = run_case(policy, competitor, args.steps, Path(tmp), args.warmup)
            rows.append(row)
            print(
                f"  {policy:<7} beside {row['competitor']:<24} train {row['train_s']:7.1f} s  "
                f"cpu {row['cpu_s']:7.1f} s",
                flush=True,
            )
    alone = {r["policy"]: r for r in rows if r["competitor"] == "none"}
    for r in rows:
        r["slowdown"] = r["train_s"] / alone[r["policy"]]["train_s"]
        r["cpu_ratio"] = r["cpu_s"] / alone[r["policy"]]["cpu_s"]

    print(
        f"\nmachine: {info['processor']}, {info['usable_cores']} usable cores, "
        f"matmul {info['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s; job: medseg train (default), {args.steps} steps"
    )
    print(f"{'policy':<8}{'competitor':<26}{'train s':>9}{'cpu s':>9}{'slowdown':>10}{'cpu ratio':>11}")
    for r in rows:
        print(
            f"{r['policy']:<8}{r['competitor']:<26}{r['train_s']:>9.1f}{r['cpu_s']:>9.1f}"
            f"{r['slowdown']:>9.2f}x{r['cpu_ratio']:>10.2f}x"
        )
    worst = max(r["slowdown"] for r in rows if r["policy"] == "after")
    alone_ratio = alone["after"]["train_s"] / alone["before"]["train_s"]
    print(
        f"worst slowdown with medseg's defaults: {worst:.2f}x (goal <= 2.5x); alone, after / before: {alone_ratio:.2f}x"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "machine": info,
            "steps": args.steps,
            "warmup_s": args.warmup,
            "cases": rows,
            "worst_after_slowdown": worst,
            "goal_slowdown": 2.5,
            "alone_after_over_before": alone_ratio,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
