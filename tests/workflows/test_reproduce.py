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
from medseg.engine.checkpoint import read_checkpoint
from medseg.engine.train import TrainClock
from medseg.errors import ConfigError
from medseg.workflows.reproduce import (
    README_BEGIN,
    README_COMMAND,
    README_END,
    SCHEMA,
    comparison_tables,
    list_recipes,
    markdown_table,
    readme_section,
    recipes_dir,
    update_readme,
    validate,
)

ROOT = Path(__file__).resolve().parents[2]

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
    (c / "kvasir" / "x.yaml").write_text(
        RECIPE.format(seed=3)
        .replace("dataset: synthetic_vessels,", "dataset: kvasir_seg,")
        .replace("args: {n_images: 6, size: 32, seed: 3}, ", "")
    )
    return c


def _run(configs: Path, out: Path, recipes: str, *extra: str) -> int:
    empty = out.parent / "data"
    empty.mkdir(exist_ok=True)
    return main(
        [
            "reproduce",
            "--configs",
            str(configs),
            "--recipes",
            recipes,
            "--data-root",
            str(empty),
            "--out",
            str(out),
            "--threads",
            "1",
            *extra,
        ]
    )


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
    assert (
        a["steps"] == 4 and a["parameters"] > 0 and a["protocol"] == "vessel" and a["paper"]["values"] == {"dice": 0.8}
    )
    assert set(a["ours"]) >= {"dice", "auc_roc", "cldice"} and 0 <= a["ours"]["dice"] <= 1
    assert doc["hardware"]["matmul_flops_per_s"] > 0 and doc["hardware"]["threads"] == 1
    md = (out / "reproduction.md").read_text()
    assert f"| synthetic/a_cpu | unet | {a['parameters']:,} |" in md and "dice 0.8000 *" in md
    assert (out / "reproduction.html").is_file() and (out / "reproduction.csv").read_text().startswith("run,")
    # a new paper block is read from the recipe, the run is kept ...
    recipe = configs / "synthetic" / "a_cpu.yaml"
    recipe.write_text(recipe.read_text().replace("values: {dice: 0.8}", "values: {dice: 0.7}"))
    assert _run(configs, out, "synthetic/a_cpu") == 0
    kept = json.loads((out / "reproduction.json").read_text())["recipes"][0]
    assert kept["status"] == "kept" and kept["paper"]["values"] == {"dice": 0.7} and kept["ours"] == a["ours"]
    # ... but a changed recipe never passes off the old run's numbers as its own
    recipe.write_text(recipe.read_text().replace("max_epochs: 2,", "max_epochs: 3,"))
    capsys.readouterr()
    assert _run(configs, out, "synthetic/a_cpu") == 2
    assert (
        "was trained with another version of synthetic/a_cpu (differs in train.max_epochs)" in capsys.readouterr().err
    )


@pytest.mark.slow
def test_a_half_finished_list_resumes_keeping_finished_runs(configs, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(configs, out, "synthetic/a_cpu") == 0
    a_ckpt = out / "synthetic-a_cpu" / "checkpoints" / "best.ckpt"
    stamp = a_ckpt.stat().st_mtime_ns
    # b was interrupted: two of its four steps trained, never evaluated
    assert (
        main(
            [
                "train",
                "--config",
                str(configs / "synthetic" / "b_cpu.yaml"),
                "--out",
                str(out / "synthetic-b_cpu"),
                "--max-steps",
                "2",
                "--no-eval",
            ]
        )
        == 0
    )
    capsys.readouterr()
    clock = read_checkpoint(out / "synthetic-b_cpu" / "checkpoints" / "last.ckpt")["callbacks"]["TrainClock"]
    assert clock["seconds"] > 0, "the checkpoint carries the training time so far"
    assert _run(configs, out, "synthetic/a_cpu,synthetic/b_cpu") == 2
    assert "unfinished run of synthetic/b_cpu; pass --resume" in capsys.readouterr().err
    assert _run(configs, out, "synthetic/a_cpu,synthetic/b_cpu", "--resume") == 0
    doc = json.loads((out / "reproduction.json").read_text())
    assert [(r["recipe"], r["status"]) for r in doc["recipes"]] == [
        ("synthetic/a_cpu", "kept"),
        ("synthetic/b_cpu", "trained"),
    ]
    kept, resumed = doc["recipes"]
    assert resumed["train_seconds"] > clock["seconds"], "the time before the interruption is counted"
    assert resumed["steps"] == 4 and resumed["resumed"] is True and kept["resumed"] is False
    assert a_ckpt.stat().st_mtime_ns == stamp, "a finished run is not retrained"
    # the kept run still states the wall time and machine of the invocation that finished it
    assert kept["wall_seconds"] > 0 and kept["hardware"]["threads"] == 1
    assert "| synthetic/a_cpu | unet |" in (out / "reproduction.md").read_text()
    assert json.loads((out / "synthetic-b_cpu" / "reproduce.json").read_text())["resumed"] is True


def test_the_schema_refuses_a_broken_results_file():
    doc = {
        "medseg_version": "0",
        "hardware": {
            "processor": "x",
            "usable_cores": 2,
            "threads": 2,
            "matmul_flops_per_s": 1e9,
            "torch": "2",
            "device": "cpu",
        },
        "recipes": [{"recipe": "r", "status": "skipped", "reason": "absent"}],
    }
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


def test_the_train_clock_adds_the_seconds_restored_from_a_checkpoint():
    clock = TrainClock()
    clock.load_state_dict({"seconds": 100.0})
    clock.on_fit_start(None, None)
    assert 100.0 <= clock.seconds < 101.0 and clock.state_dict()["seconds"] >= 100.0
    clock.on_fit_end(None, None)
    stopped = clock.seconds
    assert stopped >= 100.0 and clock.seconds == stopped, "the clock stops with the fit"


def _doc(*rows: dict) -> dict:
    hw = {"processor": "x", "usable_cores": 2, "threads": 2, "matmul_flops_per_s": 2e11, "torch": "2", "device": "cpu"}
    base = {"status": "trained", "run": "r", "split": "test", "paper": {}, "steps": 10, "train_seconds": 120.0}
    return {"medseg_version": "0", "hardware": hw, "recipes": [{**base, **r} for r in rows]}


def test_comparison_tables_put_networks_of_one_dataset_side_by_side():
    doc = _doc(
        {
            "recipe": "kvasir/unet_cpu",
            "network": "unet",
            "parameters": 100,
            "dataset": "kvasir_seg",
            "protocol": "polyp",
            "ours": {"mdice": 0.5, "miou": 0.4},
        },
        {
            "recipe": "kvasir/pranet_cpu",
            "network": "pranet",
            "parameters": 2000,
            "dataset": "kvasir_seg",
            "protocol": "polyp",
            "ours": {"mdice": 0.7, "miou": 0.6},
            "train_seconds": 1500.0,
        },
        {
            "recipe": "hippocampus/unet_cpu",
            "network": "unet",
            "parameters": 30,
            "dataset": "msd",
            "protocol": "volume",
            "ours": {"dice": 0.8, "hd95": 2.0},
        },
        {"recipe": "rossa/x", "status": "skipped", "reason": "absent"},
    )
    validate(doc)
    text = comparison_tables(doc)
    pranet, unet = (
        text.index("| pranet | kvasir/pranet_cpu | 0.7000 | 0.6000 | 2,000 | 25.0 |"),
        text.index("| unet | kvasir/unet_cpu | 0.5000 | 0.4000 | 100 | 2.0 |"),
    )
    assert pranet < unet, "best Dice first"
    assert "| unet | hippocampus/unet_cpu | 0.8000 | - | 30 | 2.0 |" in text, "the volume protocol has no IoU"
    assert "rossa" not in text
    md = markdown_table(doc)
    assert "| 120 | - | 200 |" in md, "train s, eval s (none recorded), the run's GFLOP/s"


def test_update_readme_rewrites_only_its_section(tmp_path):
    doc = _doc(
        {"recipe": "a", "network": "unet", "parameters": 1, "dataset": "d", "protocol": "vessel", "ours": {"dice": 0.5}}
    )
    results = tmp_path / "cpu.json"
    results.write_text(json.dumps(doc))
    readme = tmp_path / "README.md"
    readme.write_text("# title\n")
    with pytest.raises(ConfigError, match=r"README.md: no section for cpu.json; add the lines"):
        update_readme(readme, results)
    begin, end = (m.format(name="cpu.json", command=README_COMMAND) for m in (README_BEGIN, README_END))
    readme.write_text(f"before\n{begin}\nstale\n{end}\nafter\n")
    assert update_readme(readme, results) is True
    assert readme.read_text() == f"before\n{begin}\n{readme_section(doc)}{end}\nafter\n"
    assert update_readme(readme, results) is False
    assert main(["reproduce", "--readme", str(readme), "--results", str(results)]) == 0


def test_the_readme_results_section_is_generated_from_the_committed_file():
    results = ROOT / "benchmarks" / "results" / "cpu-2core.json"
    doc = json.loads(results.read_text())
    validate(doc)
    text = (ROOT / "README.md").read_text()
    begin, end = (m.format(name=results.name, command=README_COMMAND) for m in (README_BEGIN, README_END))
    assert begin in text and end in text, "README.md has no section generated from cpu-2core.json"
    assert text.split(begin, 1)[1].split(end, 1)[0] == "\n" + readme_section(doc), (
        "README.md is out of date: run medseg reproduce --readme README.md --results benchmarks/results/cpu-2core.json"
    )
