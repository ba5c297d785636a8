"""``medseg reproduce`` end to end on the built-in synthetic data: a tiny recipe list trained and
evaluated, an absent dataset skipped, a half-finished list resumed (finished runs kept, the
unfinished one continued), the results file against its schema, and every shipped recipe with a
``paper:`` block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg.cli import main
from medseg.config import load_config
from medseg.errors import ConfigError
from medseg.workflows.reproduce import SCHEMA, list_recipes, markdown_table, recipes_dir, validate

RECIPE = """
seed: 0
model: {{name: unet, args: {{base_channels: 4, depth: 2}}}}
data: {{dataset: synthetic_vessels, args: {{n_images: 6, size: 32, seed: {seed}}}, patch_size: 32, samples_per_epoch: 8}}
train: {{max_epochs: 2, batch_size: 4, progress_bar: false, val_every_n_epochs: 1}}
eval: {{figures: false}}
paper: {{source: "a test", table: "none", protocol: "vessel", values: {{dice: 0.8}}, selected_on_test: true}}
"""


@pytest.fixture
def configs(tmp_path) -> Path:
    c = tmp_path / "configs"
    (c / "synthetic").mkdir(parents=True)
    (c / "kvasir").mkdir()
    (c / "synthetic" / "a_cpu.yaml").write_text(RECIPE.format(seed=1))
    (c / "synthetic" / "b_cpu.yaml").write_text(RECIPE.format(seed=2))
    (c / "kvasir" / "x.yaml").write_text(RECIPE.format(seed=3).replace("dataset: synthetic_vessels,", "dataset: kvasir_seg,")
                                        .replace("args: {n_images: 6, size: 32, seed: 3}, ", ""))
    return c


def _run(configs: Path, out: Path, recipes: str, *extra: str) -> int:
    empty = out.parent / "data"
    empty.mkdir(exist_ok=True)
    return main(["reproduce", "--configs", str(configs), "--recipes", recipes, "--data-root", str(empty),
                 "--out", str(out), "--threads", "1", *extra])


@pytest.mark.slow
def test_a_list_trains_evaluates_and_skips_an_absent_dataset(configs, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(configs, out, "synthetic/a_cpu,kvasir/x") == 0
    text = capsys.readouterr().out
    assert "kvasir/x: skipped (dataset kvasir_seg absent: no folder" in text
    doc = json.loads((out / "reproduction.json").read_text())
    validate(doc)
    a, x = doc["recipes"]
    assert (a["status"], x["status"]) == ("trained", "skipped")
    assert a["steps"] == 4 and a["parameters"] > 0 and a["protocol"] == "vessel" and a["paper"]["values"] == {"dice": 0.8}
    assert set(a["ours"]) >= {"dice", "auc_roc", "cldice"} and 0 <= a["ours"]["dice"] <= 1
    assert doc["hardware"]["matmul_flops_per_s"] > 0 and doc["hardware"]["threads"] == 1
    md = (out / "reproduction.md").read_text()
    assert f"| synthetic/a_cpu | unet | {a['parameters']:,} |" in md and "dice 0.8000 *" in md
    assert (out / "reproduction.html").is_file() and (out / "reproduction.csv").read_text().startswith("run,")


@pytest.mark.slow
def test_a_half_finished_list_resumes_keeping_finished_runs(configs, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(configs, out, "synthetic/a_cpu") == 0
    a_ckpt = out / "synthetic-a_cpu" / "checkpoints" / "best.ckpt"
    stamp = a_ckpt.stat().st_mtime_ns
    # b was interrupted: two of its four steps trained, never evaluated
    assert main(["train", "--config", str(configs / "synthetic" / "b_cpu.yaml"), "--out", str(out / "synthetic-b_cpu"),
                 "--max-steps", "2", "--no-eval"]) == 0
    capsys.readouterr()
    assert _run(configs, out, "synthetic/a_cpu,synthetic/b_cpu") == 2
    assert "unfinished run of synthetic/b_cpu; pass --resume" in capsys.readouterr().err
    assert _run(configs, out, "synthetic/a_cpu,synthetic/b_cpu", "--resume") == 0
    doc = json.loads((out / "reproduction.json").read_text())
    assert [(r["recipe"], r["status"]) for r in doc["recipes"]] == [("synthetic/a_cpu", "kept"), ("synthetic/b_cpu", "trained")]
    assert doc["recipes"][1]["steps"] == 4
    assert a_ckpt.stat().st_mtime_ns == stamp, "a finished run is not retrained"


def test_the_schema_refuses_a_broken_results_file():
    doc = {"medseg_version": "0", "hardware": {"processor": "x", "usable_cores": 2, "threads": 2,
                                                "matmul_flops_per_s": 1e9, "torch": "2", "device": "cpu"},
           "recipes": [{"recipe": "r", "status": "skipped", "reason": "absent"}]}
    validate(doc)
    assert "skipped: absent" in markdown_table(doc)
    doc["recipes"].append({"recipe": "q", "status": "trained"})
    with pytest.raises(ConfigError, match="reproduction.json at recipes/1: 'network' is a required property"):
        validate(doc)
    assert SCHEMA["properties"]["recipes"]["items"]["properties"]["status"]["enum"][0] == "trained"


def test_recipe_selection(configs):
    assert list_recipes(configs, all_cpu=True) == ["synthetic/a_cpu", "synthetic/b_cpu"]
    assert list_recipes(configs, all_recipes=True) == ["kvasir/x", "synthetic/a_cpu", "synthetic/b_cpu"]
    assert list_recipes(configs, "synthetic/b_cpu.yaml") == ["synthetic/b_cpu"]
    with pytest.raises(ConfigError, match="no recipe 'synthetic/a_cp'.*did you mean 'synthetic/a_cpu'"):
        list_recipes(configs, "synthetic/a_cp")
    with pytest.raises(ConfigError, match="--all-cpu"):
        list_recipes(configs)


def test_every_shipped_recipe_has_a_paper_block():
    configs = recipes_dir()
    names = list_recipes(configs, all_recipes=True)
    assert len(names) >= 15
    for name in names:
        paper = load_config(configs / f"{name}.yaml").paper
        assert paper.get("source") and "selected_on_test" in paper, name
        assert paper.get("values") or paper.get("notes"), f"{name}: no values and no reason why"
