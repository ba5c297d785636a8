"""Atomic file writing: a crash never leaves a half-written file, and never destroys the old one.

Everything medseg writes that a user keeps (checkpoints, configs, metrics, predictions, figures)
goes through :func:`atomic_path`: the content is written to a temporary file in the destination
folder, flushed and fsync'ed, then renamed over the destination with :func:`os.replace` (atomic
on POSIX and Windows when source and destination are on the same file system).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from medseg.errors import MedsegError


class WriteError(MedsegError, OSError):
    """A file could not be written (disk full, permission denied, ...); the message names it and
    says that the previous file is kept. Also an ``OSError``, for callers that catch those."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed.

    The temporary file keeps ``path``'s extension (or ``suffix``) so writers that pick a format
    from the extension (Pillow, matplotlib) still work. Parent folders are created.

    Example::

        with atomic_path("runs/x/metrics.json") as tmp:
            tmp.write_text(json.dumps(result))

    Raises:
        WriteError: creating, writing or renaming failed (an ``OSError`` inside the block too);
            the destination is left as it was and the temporary file is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix or path.suffix, dir=path.parent)
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


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
