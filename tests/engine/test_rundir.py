"""``RunDir`` names the run-directory layout users' runs already have, and a training writes
exactly the files it names.

The expected names are written out by hand: a change to one is a change of the layout, which
orphans the files of existing runs, and has to be made here on purpose.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medseg.config import load_config
from medseg.rundir import EvalDir, RunDir

TINY = [
    "data.args={n_images: 6, size: 48}",
    "data.patch_size=32",
    "data.samples_per_epoch=8",
    "train.batch_size=4",
    "train.max_epochs=2",
    "train.progress_bar=false",
    "model.args={base_channels: 4, depth: 2}",
    "eval.roi_size=32",
]

ROOT = Path("/runs/x")

#: (what RunDir gives, the path relative to the run) for every path it names.
LAYOUT = [
    (lambda r: r.config, "config.yaml"),
    (lambda r: r.splits, "splits.json"),
    (lambda r: r.data_check, "data_check.json"),
    (lambda r: r.summary, "train_summary.json"),
    (lambda r: r.checkpoints, "checkpoints"),
    (lambda r: r.best, "checkpoints/best.ckpt"),
    (lambda r: r.last, "checkpoints/last.ckpt"),
    (lambda r: r.checkpoint("best"), "checkpoints/best.ckpt"),
    (lambda r: r.checkpoint("last"), "checkpoints/last.ckpt"),
    (lambda r: r.logs, "logs"),
    (lambda r: r.csv_log_dir, "logs/csv"),
    (lambda r: r.metrics_csv, "logs/csv/metrics.csv"),
    (lambda r: r.csv_hparams, "logs/csv/hparams.yaml"),
    (lambda r: r.tensorboard_dir, "logs/tensorboard"),
    (lambda r: r.tensorboard_hparams, "logs/tensorboard/hparams.yaml"),
    (lambda r: r.figures, "figures"),
    (lambda r: r.curves, "figures/curves.png"),
    (lambda r: r.eval_root, "eval"),
    (lambda r: r.evaluation("test").root, "eval/test"),
    (lambda r: r.evaluation("test-tta-ensemble").root, "eval/test-tta-ensemble"),
    (lambda r: r.evaluation("test").metrics, "eval/test/metrics.json"),
    (lambda r: r.evaluation("test").per_case("per_image.csv"), "eval/test/per_image.csv"),
    (lambda r: r.evaluation("val").per_case("per_case.csv"), "eval/val/per_case.csv"),
    (lambda r: r.evaluation("test").figures, "eval/test/figures"),
    (lambda r: r.evaluation("test").panel("01_test"), "eval/test/figures/01_test_panel.png"),
    (lambda r: r.evaluation("test").curves, "eval/test/figures/curves.png"),
    (lambda r: r.evaluation("test").kernel_positions("01_test"), "eval/test/figures/01_test_dsconv_kernels.png"),
    (
        lambda r: r.evaluation("test").kernel_positions("01_test", zoom=True),
        "eval/test/figures/01_test_dsconv_kernels_zoom.png",
    ),
    (lambda r: r.report(), "report.html"),
    (lambda r: r.report("test-tta"), "report-test-tta.html"),
    (lambda r: r.reproduce_record, "reproduce.json"),
    (lambda r: r.lock, ".medseg.lock"),
    (lambda r: r.stage(1, "coarse").root, "stage1-coarse"),
    (lambda r: r.stage(2, "fine").best, "stage2-fine/checkpoints/best.ckpt"),
]


@pytest.mark.parametrize("get, rel", LAYOUT, ids=[rel for _, rel in LAYOUT])
def test_rundir_names_the_existing_layout(get, rel):
    assert get(RunDir(ROOT)) == ROOT / rel


def test_rundir_takes_a_string_and_is_frozen():
    rd = RunDir("runs/x")
    assert rd.root == Path("runs/x") and rd == RunDir(Path("runs/x"))
    assert isinstance(rd.stage(1, "a"), RunDir) and isinstance(rd.evaluation("test"), EvalDir)
    with pytest.raises(AttributeError):
        rd.root = Path("elsewhere")  # type: ignore[misc]


def test_an_unknown_checkpoint_name_is_refused():
    with pytest.raises(ValueError, match="'middle'"):
        RunDir(ROOT).checkpoint("middle")


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _tensorboard_events(rd: RunDir) -> set[Path]:
    events = {p for p in rd.tensorboard_dir.iterdir() if p.name.startswith("events.out.tfevents.")}
    assert events, "TensorBoard wrote no event file"
    return events


def _training_files(rd: RunDir) -> set[Path]:
    """What one (unstaged) fit writes, by RunDir's names (synthetic data: no data_check.json)."""
    return {
        rd.config,
        rd.splits,
        rd.summary,
        rd.best,
        rd.last,
        rd.metrics_csv,
        rd.csv_hparams,
        rd.tensorboard_hparams,
        rd.curves,
        *_tensorboard_events(rd),
    }


def test_a_short_training_and_evaluation_write_exactly_the_files_rundir_names(tmp_path):
    from medseg.workflows.train import train

    rd = RunDir(tmp_path / "run")
    summary = train(load_config(None, TINY), rd.root, show_progress=False)
    assert summary["best_checkpoint"] == str(rd.best)
    ev = rd.evaluation("test")
    ids = [row["id"] for row in csv.DictReader(ev.per_case("per_image.csv").open())]
    assert ids
    expected = _training_files(rd) | {
        ev.metrics,
        ev.per_case("per_image.csv"),
        ev.curves,
        rd.report(),
        *(ev.panel(i) for i in ids),
    }
    assert _files(rd.root) == expected  # nothing unnamed, nothing named missing; no lock or temporaries left


def test_a_staged_training_writes_exactly_the_files_rundir_names(tmp_path):
    from medseg.engine.train import train

    rd = RunDir(tmp_path / "staged")
    cfg = load_config(None, [*TINY, "train.stages=[{name: a, max_epochs: 1}, {name: b, max_epochs: 1}]"])
    summary = train(cfg, rd.root)
    stages = [rd.stage(1, "a"), rd.stage(2, "b")]
    assert [s["stage_name"] for s in summary["stages"]] == ["a", "b"]
    expected = {rd.config, rd.summary, rd.best, rd.last}.union(*(_training_files(s) for s in stages))
    assert _files(rd.root) == expected
    assert rd.best.read_bytes() == stages[-1].best.read_bytes()


def test_the_checks_probe_the_network_that_trains_and_a_seed_keeps_its_weights(tmp_path, monkeypatch):
    """The output-channel probe runs on the network that then trains (not on a copy of its own),
    and that network starts, for a given seed, from the weights it always did: the second
    initialisation after seeding (earlier versions built a throwaway probe network first)."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Callback

    import medseg.engine.train as engine_train
    from medseg.engine.datamodule import SegDataModule
    from medseg.engine.module import build_network

    cfg = load_config(None, [*TINY, "train.max_epochs=1"])
    probed = []
    real_probe = engine_train.output_channels
    monkeypatch.setattr(
        engine_train, "output_channels", lambda model, *a: probed.append(model) or real_probe(model, *a)
    )

    class FirstWeights(Callback):
        def on_fit_start(self, trainer, pl_module):
            self.model = pl_module.model
            self.state = {k: v.clone() for k, v in pl_module.model.state_dict().items()}

    first = FirstWeights()
    engine_train.train(cfg, tmp_path / "run", callbacks=[first])
    assert len(probed) == 1 and probed[0] is first.model

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = SegDataModule(cfg)
    build_network(cfg, dm.in_channels, dm.num_classes)  # the throwaway probe network of before
    expected = build_network(cfg, dm.in_channels, dm.num_classes).state_dict()
    assert expected.keys() == first.state.keys()
    assert all(torch.equal(expected[k], first.state[k]) for k in expected)
