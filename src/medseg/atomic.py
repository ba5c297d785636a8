"""Atomic file writing: a crash never leaves a half-written file, and never destroys the old one.

Everything medseg writes that a user keeps (checkpoints, configs, metrics, predictions, figures)
goes through :func:`atomic_path`: the content is written to a temporary file in the destination
folder, flushed and fsync'ed, then renamed over the destination with :func:`os.replace` (atomic
on POSIX and Windows when source and destination are on the same file system).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from medseg.errors import MedsegError


class WriteError(MedsegError, OSError):
    """A file could not be written (disk full, permission denied, ...); the message names it and
    says that the previous file is kept. Also an ``OSError``, for callers that catch those."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", replace_stale: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed.

    The temporary file is ``.<stem>.<pid>.<8 random characters><suffix>`` next to ``path``: hidden,
    named by the writing process (so :func:`remove_stale_temporaries` can tell a killed writer's
    leftover from a live one's), and keeping ``path``'s extension (or ``suffix``) so writers that
    pick a format from the extension (Pillow, matplotlib) still work. Parent folders are created.

    Example::

        with atomic_path("runs/x/metrics.json") as tmp:
            tmp.write_text(json.dumps(result))

    With ``replace_stale``, temporaries of ``path`` that killed writers left (same stem and
    suffix, writer dead: :func:`remove_stale_temporaries`) are removed first: for single files a
    rerun rewrites (exports); a workflow that writes a whole folder cleans it once at its start.

    Raises:
        WriteError: creating, writing or renaming failed (an ``OSError`` inside the block too);
            the destination is left as it was and the temporary file is removed.
    """
    path = Path(path)
    if replace_stale:
        remove_stale_temporaries(path.parent, suffix or path.suffix, stem=path.stem)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            prefix=f".{path.stem}.{os.getpid()}.", suffix=suffix or path.suffix, dir=path.parent
        )
    except OSError as exc:
        raise WriteError(f"{path} could not be written ({exc.strerror or exc}); nothing was changed") from exc
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp creates mode 0600; give the result the mode a plain open() would (0666 & ~umask).
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, WriteError):
            raise
        kept = "the previous file is kept" if path.exists() else "no partial file was left"
        raise WriteError(f"{path} could not be written ({exc.strerror or exc}); {kept}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Names :func:`atomic_path` gives its temporary files: ``.<stem>.<pid>.<8 random characters><suffix>``.
_TEMPORARY = re.compile(r"^\.(?P<stem>.+)\.(?P<pid>\d+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]+)?$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(
    folder: str | os.PathLike, suffix: str | None = None, stem: str | None = None
) -> list[Path]:
    """Remove the temporary files killed writers left in ``folder`` (a ``kill -9`` during
    :func:`atomic_path` never touches the finished file; its temporary stays behind).

    Only names of :func:`atomic_path`'s pattern are touched, ending in ``suffix`` if given (e.g.
    ``".ckpt"``) and of ``stem`` if given, and only those whose writing process is no longer alive, so a rerun may call it
    while another process writes into the same folder. Not recursive. Returns the removed paths.
    """
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _TEMPORARY.match(path.name)
        if (
            not match
            or (suffix is not None and match.group("suffix") != suffix)
            or (stem is not None and match.group("stem") != stem)
            or not path.is_file()
        ):
            continue
        pid = int(match.group("pid"))
        if pid != os.getpid() and not _alive(pid):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
