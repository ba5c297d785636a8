"""Numbers a recipe's header states are the measured ones (issue 13: headers, README and
``medseg models`` disagreed). A ``_cpu`` recipe's header says "Measured (cpu-2core.json): Dice
0.720 ..."; the first metric after that phrase must equal the run recorded in
``benchmarks/results/cpu-2core.json`` (the file the README's reproduction table is generated
from), to the digits written."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = json.loads((ROOT / "benchmarks" / "results" / "cpu-2core.json").read_text())
#: Header word -> key of the run's ``ours`` block.
METRIC_KEYS = {"Dice": "dice", "mDice": "mdice", "AUC": "auc_roc"}
CLAIM = re.compile(r"Measured \(cpu-2core\.json\):\s*(Dice|mDice|AUC)\s+(\d\.\d+)")


def _header(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# "))
    return " ".join(lines)


def _claims():
    out = []
    for run in RESULTS["recipes"]:
        path = ROOT / "configs" / f"{run['recipe']}.yaml"
        found = CLAIM.search(_header(path)) if path.is_file() else None
        if found and run.get("ours"):
            out.append(pytest.param(run, found.group(1), found.group(2), id=run["recipe"]))
    return out


def test_some_headers_state_measured_numbers():
    assert len(_claims()) >= 4


@pytest.mark.parametrize("run,word,text", _claims())
def test_header_number_is_the_recorded_one(run, word, text):
    digits = len(text.split(".")[1])
    recorded = run["ours"][METRIC_KEYS[word]]
    assert f"{recorded:.{digits}f}" == text, (
        f"configs/{run['recipe']}.yaml says {word} {text}; cpu-2core.json records {recorded:.4f}"
    )
