"""medseg's messages to the person running it: the ``medseg`` logger.

Library code never prints: it logs to ``logging.getLogger("medseg.<module>")`` (use
:func:`get_logger`). Those records reach the ``medseg`` logger, which has one handler of its own
(installed on import, as Lightning does for its logger) that writes ``medseg: <message>``:
INFO records to standard output (progress of a run: "data check of drive (ran): 0 errors",
"stage 2/2 ..."), WARNING and above to standard error (a stale lock removed, a cache that
cannot be written, an interrupted run). The stream is looked up when a record is written, so
redirected or captured streams get the messages.

An application embedding medseg can silence or re-route them with the standard library:
``logging.getLogger("medseg").setLevel(logging.WARNING)``, or remove the handler
(``logging.getLogger("medseg").handlers.clear()``) and attach its own; ``propagate`` is False so
a root handler does not print them twice.
"""

from __future__ import annotations

import logging
import sys

ROOT = "medseg"


class _ConsoleHandler(logging.Handler):
    """``medseg: <message>`` on stdout (below WARNING) or stderr (WARNING and above)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def _install() -> logging.Logger:
    logger = logging.getLogger(ROOT)
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        handler = _ConsoleHandler()
        handler.setFormatter(logging.Formatter("medseg: %(message)s"))
        logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


_install()


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``"1 step"``, ``"4 steps"``, ``"0 errors"``: ``n`` and ``noun``, plural unless ``n`` is 1
    (``plural`` for irregular nouns, default ``noun + "s"``)."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"


def get_logger(name: str) -> logging.Logger:
    """The logger of module ``name`` (pass ``__name__``): a child of the ``medseg`` logger."""
    return logging.getLogger(name if name == ROOT or name.startswith(ROOT + ".") else f"{ROOT}.{name}")


__all__ = ["ROOT", "counted", "get_logger"]
