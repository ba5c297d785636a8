"""``kill -9`` of ``medseg train`` at random points, each run resumed to its end and compared
bit for bit with an uninterrupted run.

Usage::

    python benchmarks/faults.py [--kills 5] [--checkpoint-kills 2] [--steps 160] [--seed 0]
                                [--json benchmarks/results/faults-cpu-2core.json]

The job is the built-in default (``medseg train --no-eval --max-steps STEPS``, one thread, so
every run sums in the same order). First one uninterrupted reference run. Then:

* ``--kills`` runs, each killed with SIGKILL at a time drawn uniformly over the reference's
  training time, counted from the moment training begins (so kills land mid-step,
  mid-validation and mid-checkpoint write as often as those take time), then resumed with
  ``--resume`` to the end;
* ``--checkpoint-kills`` runs, each killed the moment a checkpoint's temporary file appears
  (mid-checkpoint write, on purpose), then resumed.

After every kill each finished checkpoint (``checkpoints/*.ckpt``) must still be readable
(:func:`medseg.engine.checkpoint.read_checkpoint`); a run is lost when the resume fails or its
final checkpoint differs from the reference in any weight, optimiser state, schedule, step or
best score (:func:`medseg.engine.checkpoint.checkpoint_differences`). Prints the fault table
(fault, runs tried, runs lost, checkpoints corrupted) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine  # noqa: E402 - benchmarks/ is on sys.path when run as a script
from medseg.engine.checkpoint import checkpoint_differences, read_checkpoint
from medseg.rundir import RunDir


def _cmd(out: Path, steps: int, resume: bool) -> list[str]:
    return [
        sys.executable,
        "-m",
        "medseg.cli",
        "train",
        "--out",
        str(out),
        "--no-eval",
        "--threads",
        "1",
        "--max-steps",
        str(steps),
        "--set",
        "train.progress_bar=false",
    ] + (["--resume"] if resume else [])


def _start(out: Path, steps: int, resume: bool) -> subprocess.Popen:
    return subprocess.Popen(_cmd(out, steps, resume), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(out: Path, steps: int) -> tuple[bool, str]:
    proc = subprocess.run(_cmd(out, steps, resume=True), capture_output=True, text=True)
    return proc.returncode == 0, proc.stderr[-500:]


def _corrupted(out: Path) -> list[str]:
    bad = []
    for path in sorted(RunDir(out).checkpoints.glob("*.ckpt")):
        if path.name.startswith("."):
            continue  # a temporary of the killed writer: never under a final name
        try:
            read_checkpoint(path)
        except Exception as exc:  # noqa: BLE001 - any failure to read is a corrupted checkpoint
            bad.append(f"{path.name}: {exc}")
    return bad


def _kill_at_time(out: Path, steps: int, delay: float) -> dict:
    """Kill ``delay`` seconds after training began (``config.yaml`` is written just before the first step)."""
    proc = _start(out, steps, resume=False)
    while proc.poll() is None and not RunDir(out).config.is_file():
        time.sleep(0.005)
    time.sleep(delay)
    alive = proc.poll() is None
    temporaries = [p.name for p in RunDir(out).checkpoints.glob(".*.ckpt")] if RunDir(out).checkpoints.is_dir() else []
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {
        "delay_s": round(delay, 2),
        "killed_while_running": alive,
        "checkpoint_write_in_progress": bool(temporaries),
    }


def _kill_at_checkpoint_write(out: Path, steps: int, nth: int, timeout: float) -> dict:
    """Kill the moment the ``nth`` checkpoint temporary file is seen (polled every millisecond)."""
    proc = _start(out, steps, resume=False)
    seen: set[str] = set()
    t0 = time.perf_counter()
    hit = False
    while proc.poll() is None and time.perf_counter() - t0 < timeout:
        folder = RunDir(out).checkpoints
        names = {p.name for p in folder.glob(".*.ckpt")} if folder.is_dir() else set()
        if names - seen:
            seen |= names
            if len(seen) >= nth:
                proc.send_signal(signal.SIGKILL)
                hit = True
                break
        time.sleep(0.001)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {
        "delay_s": round(time.perf_counter() - t0, 2),
        "killed_while_running": hit,
        "checkpoint_write_in_progress": hit,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=5, help="runs killed at a random time")
    ap.add_argument("--checkpoint-kills", type=int, default=2, help="runs killed during a checkpoint write")
    ap.add_argument("--steps", type=int, default=160, help="steps of the job (16 an epoch; validation every 2 epochs)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    info = machine()

    with tempfile.TemporaryDirectory(prefix="medseg-faults-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        ref = subprocess.run(_cmd(tmp / "reference", args.steps, False), capture_output=True, text=True)
        duration = time.perf_counter() - t0
        if ref.returncode != 0:
            raise SystemExit(f"the uninterrupted reference run failed:\n{ref.stderr[-2000:]}")
        train_s = float(re.search(r"trained \d+ steps / \d+ epochs in ([\d.]+) s", ref.stdout).group(1))
        reference = RunDir(tmp / "reference").last
        print(f"reference: {args.steps} steps, training {train_s:.1f} s ({duration:.1f} s with start-up)", flush=True)

        trials = []
        plan = [("kill -9 at a random time", i) for i in range(args.kills)]
        plan += [("kill -9 during a checkpoint write", i) for i in range(args.checkpoint_kills)]
        for fault, i in plan:
            out = tmp / f"run{len(trials)}"
            if fault.startswith("kill -9 at"):
                kill = _kill_at_time(out, args.steps, rng.uniform(0.0, train_s))
            else:
                kill = _kill_at_checkpoint_write(out, args.steps, nth=1 + 2 * i, timeout=duration * 2)
            step_at_kill = None
            if RunDir(out).last.is_file():
                try:
                    step_at_kill = int(read_checkpoint(RunDir(out).last)["global_step"])
                except Exception:  # noqa: BLE001 - counted as corrupted below
                    pass
            corrupted = _corrupted(out)
            resumed, stderr = _finish(out, args.steps)
            diffs = checkpoint_differences(reference, RunDir(out).last) if resumed else ["resume failed"]
            leftovers = [p.name for p in RunDir(out).checkpoints.glob(".*.ckpt")]
            trial = {
                "fault": fault,
                **kill,
                "last_checkpoint_step_at_kill": step_at_kill,
                "corrupted": corrupted,
                "resumed": resumed,
                "differences": diffs[:10],
                "lost": bool(diffs),
                "temporaries_left_after_resume": leftovers,
                "resume_stderr": "" if resumed else stderr,
            }
            trials.append(trial)
            print(
                f"  {fault:<36} kill at {kill['delay_s']:6.2f} s (checkpoint step {step_at_kill}, "
                f"write in progress: {kill['checkpoint_write_in_progress']}): "
                f"{'lost' if trial['lost'] else 'exact'}, {len(corrupted)} corrupted",
                flush=True,
            )
            shutil.rmtree(out, ignore_errors=True)

    table = []
    for fault in dict.fromkeys(t["fault"] for t in trials):
        rows = [t for t in trials if t["fault"] == fault]
        table.append(
            {
                "fault": fault,
                "runs_tried": len(rows),
                "runs_lost": sum(t["lost"] for t in rows),
                "checkpoints_corrupted": sum(len(t["corrupted"]) for t in rows),
            }
        )
    print(
        f"\nmachine: {info['processor']}, {info['usable_cores']} usable cores, "
        f"matmul {info['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s; job: medseg train (default), {args.steps} steps, 1 thread"
    )
    print(f"{'fault':<38}{'runs tried':>11}{'runs lost':>11}{'ckpts corrupted':>17}")
    for row in table:
        print(f"{row['fault']:<38}{row['runs_tried']:>11}{row['runs_lost']:>11}{row['checkpoints_corrupted']:>17}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "steps": args.steps,
                    "seed": args.seed,
                    "reference_s": duration,
                    "reference_train_s": train_s,
                    "table": table,
                    "trials": trials,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
