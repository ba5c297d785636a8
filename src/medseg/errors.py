"""User-facing errors.

Every error a user can cause (a bad file, a bad config key, an unknown network name) is raised as
a :class:`MedsegError` subclass whose message names the file or key and what is wrong. The CLI
prints these messages without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class MedsegError(Exception):
    """Base class of errors caused by user input (files, configs, names)."""


class ConfigError(MedsegError):
    """A recipe or ``--set`` override names an unknown key or holds an invalid value."""


class DataError(MedsegError):
    """A dataset folder or file is missing, unreadable or inconsistent."""


class CheckpointError(MedsegError):
    """A checkpoint or weight file is missing, unreadable or does not fit the network."""


class TrainingError(MedsegError):
    """Training cannot go on (a NaN or infinite loss); the message names the step and what was kept."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` entries of ``choices`` closest to ``name`` (difflib ratio >= 0.5).

    Used to suggest valid names in error messages, e.g. ``unknown network 'dscent'; did you mean
    'dscnet'?``.
    """
    choices = list(choices)
    found = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not found:
        lowered = name.lower()
        found = [c for c in choices if lowered in c.lower() or c.lower() in lowered][:n]
    return found


def did_you_mean(name: str, choices: Iterable[str], n: int = 1) -> str:
    """``"; did you mean 'x'?"`` with the ``n`` closest of ``choices`` to ``name``, or ``""``."""
    near = closest(str(name), choices)[:n]
    return f"; did you mean {', '.join(repr(c) for c in near)}?" if near else ""


def unknown_name_message(kind: str, name: str, choices: Iterable[str]) -> str:
    """Format ``unknown <kind> 'name'; did you mean ...? Valid: ...`` for error messages."""
    choices = sorted(choices)
    near = closest(name, choices)
    hint = f"; did you mean {', '.join(repr(c) for c in near)}?" if near else ""
    return f"unknown {kind} {name!r}{hint} Valid {kind}s: {', '.join(choices)}"
