"""One process per run directory: a lock file with its owner's pid, stale locks detected.

``medseg train --out X`` (and ``--resume``) holds ``X/.medseg.lock`` while it trains. A second
process on the same directory is refused with a message naming the owner; a lock left by a
process that no longer runs (killed with SIGKILL, a crashed machine) is taken over, with a note.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medseg.errors import ConfigError
from medseg.log import get_logger

log = get_logger(__name__)

LOCK_NAME = ".medseg.lock"


def _alive(pid: int) -> bool:
    """True when a process ``pid`` runs on this machine (signal 0 probes without signalling)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold ``<run_dir>/.medseg.lock`` for the duration of the block.

    The lock is created with ``O_CREAT | O_EXCL`` (atomic) and holds ``{"pid", "host",
    "started", "command"}``; it is removed on exit, and so is the run directory when this call
    created it and nothing else was written into it. Processes of a distributed run other than local rank 0 (Lightning
    starts them with ``LOCAL_RANK`` > 0) share rank 0's lock and take none.

    Raises:
        ConfigError: another live process on this host holds the lock, or a process on another
            host does (the message names pid, host, start time and the lock file to delete if
            that process is known to be gone).
    """
    run_dir = Path(run_dir)
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        yield run_dir / LOCK_NAME
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv[:6]),
    }
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read(path)
            pid, host = int(owner.get("pid", -1)), owner.get("host")
            if host not in (None, me["host"]):
                raise ConfigError(
                    f"run directory {run_dir} is in use by process {pid} on host {host} (since "
                    f"{owner.get('started', '?')}); if that run is gone, delete {path}"
                ) from None
            if _alive(pid) and pid != os.getpid():
                raise ConfigError(
                    f"run directory {run_dir} is in use by process {pid} ({owner.get('command', 'medseg')}, since "
                    f"{owner.get('started', '?')}); wait for it to finish or stop it, or choose another --out"
                ) from None
            log.warning(f"note: removed the stale lock of process {pid} (no longer running) in {run_dir}")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(me, fh)
        break
    try:
        yield path
    finally:
        if _read(path).get("pid") == os.getpid():
            path.unlink(missing_ok=True)
        if created and not any(run_dir.iterdir()):
            run_dir.rmdir()  # refused before anything was written: leave no empty run directory


__all__ = ["LOCK_NAME", "run_lock"]
