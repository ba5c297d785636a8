"""Deployment exports of medseg networks: ONNX (checked with onnxruntime), TorchScript and
``torch.export`` programs.

Every exporter runs the network in eval mode on its main output (``forward``, not
``forward_outputs``), writes its file atomically (:func:`medseg.atomic.atomic_path`: a temporary
file in the destination folder renamed into place; no partial file survives a failure), and checks
the export against the eager network, raising :class:`ExportError` (a
:class:`medseg.errors.MedsegError`) with the numbers when they disagree.

- :func:`export_onnx` / :func:`check_onnx` (:mod:`medseg.export.onnx_export`): opset 17,
  symbolic batch axis, TorchScript-based exporter (why: see that module).
- :func:`export_torchscript` (:mod:`medseg.export.torchscript`): ``torch.jit.script``, else
  ``torch.jit.trace``; returns which was used.
- :func:`export_program`: ``torch.export.export`` with a symbolic batch axis, optionally saved
  as ``.pt2``.

Example::

    from medseg.models import create_model
    from medseg.export import export_onnx, check_onnx

    net = create_model("unet", in_channels=1, out_channels=1)
    path = export_onnx(net, "unet.onnx", input_shape=(1, 1, 512, 512))
    report = check_onnx(net, path)   # {"rel_error": 3e-7, "batches": [1, 2], ...}
"""

from __future__ import annotations

from medseg.export.errors import ExportError
from medseg.export.onnx_export import check_onnx, export_onnx
from medseg.export.torchscript import TorchScriptResult, export_program, export_torchscript

__all__ = [
    "ExportError",
    "export_onnx",
    "check_onnx",
    "export_torchscript",
    "export_program",
    "TorchScriptResult",
]
