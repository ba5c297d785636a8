"""The bad-config corpus: every bad recipe, override, file or checkpoint ends in one clear line.

Each case runs the CLI (``medseg train`` / ``evaluate`` / ``predict``) on one bad input and
checks what a user sees: exit status 2 and exactly one line on stderr, ``medseg: error: ...``,
that names the key (``optim.lr``, ``model.args.base_channel``, ``train.stages[1].lr``, ...) or
the file, and the problem (the allowed range, the closest valid name); never a traceback. A
refused training must be refused up front: ``Trainer.fit`` is replaced by a tripwire, so a case
that reaches the first training step fails at once (instead of training for minutes), and no run
directory may be left behind.

Most training cases use the built-in synthetic dataset (no ``--config``: the default recipe),
shrunk to four 32 px images. A case may be marked xfail (strict) with a reason naming the file
and function to change; none is today.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from medseg.cli import main
from medseg.config import load_config
from medseg.errors import ConfigError
from medseg.models import MODELS, create_model

#: The default recipe on four 32 px synthetic images (generated in memory, milliseconds).
SMALL = ["--set", "data.args={n_images: 4, size: 32}", "--set", "train.progress_bar=false"]

#: A one-line error is at most this long: a message listing hundreds of keys is not "clear".
MAX_LINE = 1000


class TrainingStarted(AssertionError):
    """Raised by the tripwire on ``Trainer.fit``: the bad input was not refused up front."""


@pytest.fixture(autouse=True)
def _no_training(monkeypatch):
    def tripwire(self, *args, **kwargs):
        raise TrainingStarted("Trainer.fit was called: the bad input was not refused before training")

    monkeypatch.setattr(pl.Trainer, "fit", tripwire)


# --------------------------------------------------------------------------- files the cases use


def folder_dataset(root: Path) -> Path:
    """A tiny ``folder`` dataset: four 40x40 grey images with square masks."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(root / "images" / f"c{i}.png")
        mask = np.zeros((40, 40), np.uint8)
        mask[8:24, 10:30] = 255
        Image.fromarray(mask).save(root / "masks" / f"c{i}.png")
    return root


def tiny_unet_state() -> dict[str, torch.Tensor]:
    """The weights of a U-Net (base 4, depth 2): "another network" for every case below."""
    torch.manual_seed(0)
    return create_model("unet", in_channels=1, base_channels=4, depth=2).state_dict()


def medseg_checkpoint(path: Path, config: dict, state: dict[str, torch.Tensor]) -> Path:
    """A checkpoint laid out as ``medseg train`` writes one (``state_dict`` with ``model.``
    keys, ``hyper_parameters`` with the run's config), holding ``state`` as the weights."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in state.items()},
            "hyper_parameters": {"config": config, "in_channels": 1, "num_classes": 2},
        },
        path,
    )
    return path


def small_config(**model) -> dict:
    cfg = load_config(None, ["data.args={n_images: 4, size: 32}"]).to_dict()
    if model:
        cfg["model"] = model
    return cfg


def images(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "a.png")
    return root


# --------------------------------------------------------------------------- the corpus


@dataclass
class Case:
    """One bad input: the arguments after the verb, the words the error line must hold (a tuple
    among them: any one of its words)."""

    argv: Callable[[Path], list[str]]
    words: tuple[str | tuple[str, ...], ...]
    verb: str = "train"
    xfail: str | None = None
    #: ``before``: words of a stdout line that must not appear (a step the refusal must precede)
    extra: dict = field(default_factory=dict)


def train(*args: str) -> Callable[[Path], list[str]]:
    return lambda tmp: [*SMALL, *args]


def _yaml(text: str, name: str = "recipe.yaml") -> Callable[[Path], list[str]]:
    def argv(tmp: Path) -> list[str]:
        (tmp / name).write_text(text)
        return ["--config", str(tmp / name)]

    return argv


def _preprocess(tmp: Path) -> list[str]:
    root = folder_dataset(tmp / "folder")
    return [
        "--set",
        "data.dataset=folder",
        "--data-root",
        str(root),
        "--set",
        "train.progress_bar=false",
        "--set",
        "data.args={test_fraction: 0.5, preprocess: [minmax, clahee]}",
    ]


def _root_is_a_file(tmp: Path) -> list[str]:
    (tmp / "DRIVE.zip").write_bytes(b"PK\x03\x04 not a folder")
    return ["--set", "data.dataset=drive", "--data-root", str(tmp / "DRIVE.zip")]


def _network_before_data(tmp: Path) -> list[str]:
    return ["--set", "model.name=unett", "--set", "data.dataset=drive", "--data-root", str(tmp / "no-such-folder")]


def _encoder_missing(tmp: Path) -> list[str]:
    return [*SMALL, "--set", "model.name=cpfnet", "--set", f"model.args={{encoder_weights: '{tmp / 'resnet34.pth'}'}}"]


def _encoder_of_another_network(tmp: Path) -> list[str]:
    torch.save(tiny_unet_state(), tmp / "resnet34.pth")
    return [*SMALL, "--set", "model.name=cpfnet", "--set", f"model.args={{encoder_weights: '{tmp / 'resnet34.pth'}'}}"]


def _evaluate_other_network(tmp: Path) -> list[str]:
    # the run's config is the default U-Net (base 16, depth 3); its best.ckpt holds another U-Net
    medseg_checkpoint(tmp / "run" / "checkpoints" / "best.ckpt", small_config(), tiny_unet_state())
    return ["--run", str(tmp / "run"), "--no-progress"]


def _evaluate_plain_state_dict(tmp: Path) -> list[str]:
    (tmp / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": tiny_unet_state()}, tmp / "run" / "checkpoints" / "best.ckpt")
    return ["--run", str(tmp / "run"), "--no-progress"]


def _evaluate_untrained_run(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()
    return ["--run", str(tmp / "run"), "--no-progress"]


def _predict_other_network(tmp: Path) -> list[str]:
    # the config says DSCNet, the weights are a U-Net's
    ckpt = medseg_checkpoint(tmp / "dscnet.ckpt", small_config(name="dscnet", args={}), tiny_unet_state())
    return ["-m", str(ckpt), "-i", str(images(tmp / "in")), "-o", str(tmp / "out"), "--no-progress"]


def _predict_plain_state_dict(tmp: Path) -> list[str]:
    torch.save({"state_dict": tiny_unet_state()}, tmp / "unet.ckpt")
    return ["-m", str(tmp / "unet.ckpt"), "-i", str(images(tmp / "in")), "-o", str(tmp / "out"), "--no-progress"]


CASES: dict[str, Case] = {
    # wrong types
    "lr-not-a-number": Case(train("--set", "optim.lr=fast"), ("optim.lr", "must be a number", "'fast'")),
    "batch-size-float": Case(train("--set", "train.batch_size=2.5"), ("train.batch_size", "must be an integer")),
    "betas-scalar": Case(train("--set", "optim.betas=0.9"), ("optim.betas", "list of 2 numbers")),
    "flag-not-bool": Case(train("--set", "loss.fov_only=3"), ("loss.fov_only", "true or false")),
    "precision-number": Case(train("--set", "train.precision=17"), ("train.precision", "must be a string")),
    "multiscale-not-a-list": Case(train("--set", "train.multiscale=2"), ("train.multiscale", "list", "got 2")),
    "trainable-not-a-list": Case(train("--set", "train.trainable=encoder"), ("train.trainable", "list", "'encoder'")),
    "free-form-not-a-mapping": Case(train("--set", "data.args=5"), ("data.args", "must be a mapping")),
    # ranges
    "lr-zero": Case(train("--set", "optim.lr=0"), ("optim.lr", "> 0", "got 0")),
    "lr-negative": Case(train("--set", "optim.lr=-1e-3"), ("optim.lr", "> 0", "-0.001")),
    "batch-size-zero": Case(train("--set", "train.batch_size=0"), ("train.batch_size", "> 0", "got 0")),
    "weight-decay-negative": Case(train("--set", "optim.weight_decay=-0.01"), ("optim.weight_decay", ">= 0")),
    "max-steps-zero": Case(train("--max-steps", "0"), ("train.max_steps", ">= 1", "got 0")),
    "max-epochs-zero": Case(train("--max-epochs", "0"), ("train.max_epochs", ">= 1", "got 0")),
    "val-fraction-one": Case(train("--set", "data.val_fraction=1"), ("data.val_fraction", "(0, 1)")),
    "threshold-above-one": Case(train("--set", "eval.threshold=1.5"), ("eval.threshold", "(0, 1)", "1.5")),
    "num-workers-negative": Case(train("--set", "data.num_workers=-1"), ("data.num_workers", ">= 0")),
    "devices-zero": Case(train("--set", "train.devices=0"), ("train.devices", "got 0")),
    "warmup-negative": Case(train("--set", "schedule.warmup_steps=-5"), ("schedule.warmup_steps", ">= 0")),
    # unknown names
    "unknown-loss": Case(train("--set", "loss.name=bce_dic"), ("loss.name", "'bce_dic'", "did you mean 'bce_dice'")),
    "unknown-optimiser": Case(train("--set", "optim.name=adamx"), ("optim.name", "'adamx'", "adamw, adam, sgd")),
    "unknown-schedule": Case(train("--set", "schedule.name=cosin"), ("schedule.name", "did you mean 'cosine'")),
    "unknown-protocol": Case(train("--set", "eval.protocol=vesel"), ("eval.protocol", "did you mean 'vessel'")),
    "unknown-tta": Case(train("--set", "eval.tta=[hflip, vflipp]"), ("eval.tta", "'vflipp'", "did you mean 'vflip'")),
    "unknown-accelerator": Case(train("--set", "train.accelerator=gpux"), ("train.accelerator", "did you mean 'gpu'")),
    "unknown-precision": Case(train("--set", "train.precision=bf16-mix"), ("train.precision", "'bf16-mixed'")),
    "unknown-preprocess-step": Case(
        _preprocess, ("data.args.preprocess", "'clahee'", "did you mean 'clahe'"), extra={"before": "data check"}
    ),
    "unknown-network": Case(train("--set", "model.name=unett"), ("network 'unett'", "did you mean 'unet'")),
    "unknown-network-before-data-check": Case(
        _network_before_data,
        ("network 'unett'", "did you mean 'unet'"),
    ),
    "unknown-dataset": Case(train("--set", "data.dataset=drivee"), ("dataset 'drivee'", "did you mean 'drive'")),
    "unknown-augment-option": Case(
        train("--set", "data.augment={flipp: 0.5}"), ("data.augment", "'flipp'", "did you mean 'flip_prob'")
    ),
    # network and dataset arguments
    "network-argument-typo": Case(
        train("--set", "model.args.base_channel=8"),
        (
            "network 'unet' has no argument 'base_channel'",
            "did you mean 'base_channels'?",
            "(arguments: in_channels, out_channels, base_channels, depth, upsample, norm)",
        ),
    ),
    "arguments-of-another-network": Case(
        train("--set", "model.name=cpfnet"),  # keeps the default recipe's U-Net arguments
        ("network 'cpfnet' has no argument 'base_channels'", "did you mean 'base_channel'?"),
    ),
    "network-argument-out-of-range": Case(train("--set", "model.args.depth=0"), ("network 'unet'", "depth", ">= 1")),
    "dataset-argument-typo": Case(
        train("--set", "data.args.n_image=4"),
        ("dataset 'synthetic_vessels' has no argument 'n_image'", "'n_images'"),
    ),
    "classes-do-not-fit-the-network": Case(
        train("--set", "model.args.out_channels=3"), ("model.args.out_channels", "3 channel(s)", "2 classes")
    ),
    "loss-names-an-output-the-network-lacks": Case(
        train("--set", "loss.outputs={out: 1.0, aux: 0.5}"), ("loss.outputs", "'aux'", "one output")
    ),
    # --set and recipe files
    "set-unknown-key": Case(train("--set", "optim.lrate=1"), ("optim.lrate", "did you mean optim.lr")),
    "set-unknown-section": Case(train("--set", "trian.max_epochs=1"), ("'trian'", "did you mean train")),
    "set-without-value": Case(train("--set", "optim.lr"), ("optim.lr", "expected key=value")),
    "set-section-to-a-scalar": Case(train("--set", "optim=3"), ("section optim must be a mapping",)),
    "recipe-not-a-mapping": Case(_yaml("- model\n- data\n"), ("recipe.yaml", "must hold a mapping", "list")),
    "recipe-a-scalar": Case(_yaml("just some words\n"), ("recipe.yaml", "must hold a mapping", "str")),
    "recipe-not-valid-yaml": Case(
        _yaml("model:\n  name: unet\n   args: {\n"),
        ("recipe.yaml", "not valid YAML", "line 3"),
    ),
    "recipe-missing": Case(lambda tmp: ["--config", str(tmp / "missing.yaml")], ("missing.yaml", "does not exist")),
    "recipe-unknown-key": Case(_yaml("model:\n  nmae: unet\n"), ("recipe.yaml", "'model.nmae'", "model.name")),
    # stages
    "stage-not-a-mapping": Case(train("--set", "train.stages=[3]"), ("train.stages[0]", "mapping")),
    "stage-unknown-key": Case(
        train("--set", "train.stages=[{name: a, lrr: 0.1}]"), ("train.stages[0]", "'lrr'", "did you mean 'lr'")
    ),
    "stage-bad-value": Case(
        train("--set", "train.stages=[{name: a}, {name: b, lr: 0}]"), ("train.stages[1].lr", "> 0", "got 0")
    ),
    "stage-unknown-augment-option": Case(
        train("--set", "train.stages=[{name: a}, {name: b, augment: {rotat_prob: 1}}]"),
        ("train.stages[1].augment", "'rotat_prob'", "'rotate_prob'"),
    ),
    "stage-unknown-loss": Case(
        train("--set", "train.stages=[{name: a, loss: {name: bce_dic}}]"),
        ("train.stages[0].loss.name", "did you mean 'bce_dice'"),
    ),
    "stages-do-not-chain": Case(
        train("--set", "train.stages=[{name: a}, {name: b, trainable: [decoderr]}]"),
        ("train.trainable", "'decoderr'", "decoder"),
    ),
    # data
    "data-root-is-a-file": Case(
        _root_is_a_file,
        ("data.root", "DRIVE.zip", "not a dataset folder"),
    ),
    "patch-larger-than-every-image": Case(
        lambda tmp: ["--set", "data.args={n_images: 6, size: 48}", "--set", "data.patch_size=256"],
        ("data.patch_size", "256", "48"),
    ),
    # weight files and checkpoints
    "encoder-weights-missing": Case(
        _encoder_missing, ("encoder_weights", "resnet34.pth", ("not found", "does not exist", "no such file"))
    ),
    "encoder-weights-of-another-network": Case(
        _encoder_of_another_network,
        ("encoder_weights", "resnet34.pth", "does not fit", "ResNet-34"),
    ),
    "evaluate-checkpoint-of-another-network": Case(
        _evaluate_other_network,
        ("best.ckpt", "does not fit", "unet"),
        verb="evaluate",
    ),
    "evaluate-plain-state-dict": Case(
        _evaluate_plain_state_dict, ("best.ckpt", "not a medseg training checkpoint"), verb="evaluate"
    ),
    "evaluate-untrained-run": Case(
        _evaluate_untrained_run, ("best checkpoint", "has it been trained"), verb="evaluate"
    ),
    "predict-checkpoint-of-another-network": Case(
        _predict_other_network,
        ("dscnet.ckpt", "does not fit", "dscnet"),
        verb="predict",
    ),
    "predict-plain-state-dict": Case(
        _predict_plain_state_dict, ("unet.ckpt", "not a medseg training checkpoint"), verb="predict"
    ),
}


def _params():
    for name, case in CASES.items():
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        yield pytest.param(name, id=name, marks=marks)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``main(argv)`` -> (exit status, stdout, stderr); training reaching ``Trainer.fit`` fails the test."""
    capsys.readouterr()
    try:
        status = main(argv)
    except TrainingStarted as exc:
        pytest.fail(f"{exc}: {' '.join(argv)}")
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(status: int, err: str, words: tuple) -> str:
    """Exit status 2, one non-empty stderr line ``medseg: error: ...`` holding every word."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert status == 2, err
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err[:3000]}"
    line = lines[0]
    assert line.startswith("medseg: error: "), line
    assert len(line) <= MAX_LINE, f"{len(line)} characters: {line[:500]}..."
    missing = [w for w in words if not any(alt in line for alt in ((w,) if isinstance(w, str) else w))]
    assert not missing, f"{missing} not in: {line}"
    return line


@pytest.mark.parametrize("name", _params())
def test_bad_input_ends_in_one_line_naming_key_and_problem(name, tmp_path, capsys):
    case = CASES[name]
    out = tmp_path / "run-out"
    argv = case.argv(tmp_path)
    if case.verb == "train":
        argv = ["train", "--out", str(out), "--no-eval", *argv]
    else:
        argv = [case.verb, *argv]
    status, stdout, err = run_cli(argv, capsys)
    assert_one_line_error(status, err, case.words)
    if "before" in case.extra:
        assert case.extra["before"] not in stdout, f"refused only after the {case.extra['before']}:\n{stdout}"
    if case.verb == "train":
        assert not list(out.glob("**/*.ckpt")), "a refused training left a checkpoint"
        assert not out.exists(), f"a refused training left a run directory: {sorted(out.rglob('*'))}"
    if case.verb == "predict":
        assert not list((tmp_path / "out").glob("*.png")), "a refused prediction wrote files"


def test_the_corpus_is_large_and_each_case_refuses_one_thing():
    assert len(CASES) >= 25
    assert sum(case.xfail is None for case in CASES.values()) >= 25


def test_network_argument_typo_names_the_recipe_key(tmp_path, capsys):
    status, _, err = run_cli(
        ["train", "--out", str(tmp_path / "run"), *SMALL, "--set", "model.args.base_channel=8"], capsys
    )
    assert_one_line_error(status, err, ("model.args.base_channel", "did you mean 'base_channels'?"))


# --------------------------------------------------------------------------- the registry's messages


def test_registry_names_the_argument_the_recipe_key_and_the_closest_valid_one():
    with pytest.raises(ConfigError) as info:
        MODELS.create("unet", what="model.args", base_channel=8)
    assert str(info.value) == (
        "model.args.base_channel: network 'unet' has no argument 'base_channel'; did you mean 'base_channels'? "
        "(arguments: in_channels, out_channels, base_channels, depth, upsample, norm)"
    )
    with pytest.raises(ConfigError, match=r"^network 'unet' has no argument 'kernal'"):
        create_model("unet", kernal=3)  # nothing close: no suggestion, the list still given
    with pytest.raises(ConfigError, match=r"\(arguments: in_channels, "):
        create_model("unet", kernal=3)


def test_registry_turns_the_builders_own_value_checks_into_config_errors():
    with pytest.raises(ConfigError, match=r"^model\.args: network 'unet': depth must be >= 1, got 0$") as info:
        MODELS.create("unet", what="model.args", depth=0)
    assert isinstance(info.value, ValueError)  # callers catching the builder's ValueError still do


def test_registry_names_the_argument_of_a_missing_weight_file(tmp_path):
    from medseg.errors import CheckpointError

    path = tmp_path / "resnet34.pth"
    with pytest.raises(CheckpointError, match=r"^network 'cpfnet', argument encoder_weights: .*resnet34\.pth"):
        create_model("cpfnet", encoder_weights=str(path))
    with pytest.raises(CheckpointError, match=r"^model\.args\.encoder_weights: "):
        MODELS.create("cpfnet", what="model.args", encoder_weights=str(path))


def test_patch_limit_allows_the_padding_recipes_ask_for_and_no_more():
    """Hippocampus: 36x50 slices, DenseNet divisor 32 -> a 64 px image-covering patch; twice that
    is still accepted, one pixel more is refused, naming the covering size."""
    from types import SimpleNamespace

    from medseg.engine.train import check_patch

    cases = [SimpleNamespace(shape=(36, 50)), SimpleNamespace(shape=(30, 44))]
    net = SimpleNamespace(size_divisor=32)
    for p in (32, 64, 128):
        check_patch(p, net, cases)
    with pytest.raises(ConfigError, match=r"data.patch_size: 129 .*largest 36x50 px.*<= 64"):
        check_patch(129, net, cases)
    with pytest.raises(ConfigError, match=r"<= 50"):
        check_patch(101, SimpleNamespace(), cases)
