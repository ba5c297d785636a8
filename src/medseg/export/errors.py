"""The error raised when a network cannot be exported or its export disagrees with PyTorch."""

from __future__ import annotations

from medseg.errors import MedsegError

__all__ = ["ExportError"]


class ExportError(MedsegError):
    """Export failed (the exporter raised, the file cannot be loaded or run) or the exported
    network's outputs differ from PyTorch's beyond the tolerance; the message names the file,
    the format and the numbers (maximum absolute and relative error, tolerance)."""
