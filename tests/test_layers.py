"""The layers import downwards only: cli -> workflows -> engine -> models / data / losses ->
inference / metrics / ops. The engine must not reach the evaluation workflow (it used to)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "medseg"

#: package -> medseg packages it must never import (at module level or inside functions)
FORBIDDEN = {
    "engine": ("medseg.workflows", "medseg.cli"),
    "inference": ("medseg.workflows", "medseg.cli", "medseg.engine", "lightning"),
    "metrics": ("medseg.workflows", "medseg.cli", "medseg.engine", "medseg.inference", "lightning"),
    "data": ("medseg.workflows", "medseg.cli", "medseg.engine"),
    "models": ("medseg.workflows", "medseg.cli", "medseg.engine"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downwards(package):
    bad = []
    for path in sorted((SRC / package).rglob("*.py")):
        for line, module in _imports(path):
            if any(module == f or module.startswith(f + ".") for f in FORBIDDEN[package]):
                bad.append(f"{path.relative_to(SRC)}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def test_metrics_import_without_torch():
    """The metric functions are numpy code: importing them loads no torch (MONAI's surface
    distances import it inside the volume functions only)."""
    import subprocess
    import sys

    code = (
        "import sys, medseg.metrics; print(sorted(m for m in ('torch', 'cv2', 'sklearn', 'monai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_protocol_lines_print_only_the_protocols_numbers():
    from medseg.workflows.protocols import summary_lines

    polyp = {
        "protocol": "polyp",
        "network": "pranet",
        "dataset": "kvasir_seg",
        "split": "test",
        "n_images": 3,
        "mean": {
            "mdice": 0.81234,
            "miou": 0.7,
            "wfbeta": 0.6,
            "s_alpha": 0.8,
            "e_phi_mean": 0.85,
            "e_phi_max": 0.9,
            "mae": 0.05,
            "max_dice": 0.83,
            "e_phi_adaptive": 0.88,
            "dice_at_05": 0.82,
            "iou_at_05": 0.72,
        },
    }
    text = "\n".join(summary_lines(polyp))
    assert "mdice 0.8123" in text and "dice_at_05 0.8200" in text
    for vessel_word in ("FOV", "cldice", "betti"):
        assert vessel_word not in text
    octa = {
        "protocol": "octa",
        "network": "unet",
        "dataset": "rossa",
        "split": "test",
        "n_images": 2,
        "tolerance": 3,
        "mean": dict.fromkeys(
            ("auc_roc", "accuracy", "gmean", "kappa", "fdr", "dice", "iou", "sensitivity", "specificity"), 0.5
        ),
        "std": dict.fromkeys(
            ("auc_roc", "accuracy", "gmean", "kappa", "fdr", "dice", "iou", "sensitivity", "specificity"), 0.1
        ),
    }
    text = "\n".join(summary_lines(octa))
    assert "Otsu, tolerance 3x3" in text and "kappa 0.5000 +- 0.1000" in text and "FOV" not in text
