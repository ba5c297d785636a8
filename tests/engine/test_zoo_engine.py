"""Training features of the zoo's recipes: losses (structure, CE + Dice, MSE), named outputs,
boundary targets, multi-class training and evaluation, multi-scale batches, encoder freezing,
trainable parts and staged training. Hand-computed cases and tiny CPU runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from medseg.config import build_config, load_config
from medseg.engine.module import SegmentationModule
from medseg.engine.train import stage_config
from medseg.errors import ConfigError
from medseg.losses.more import CEDiceLoss, MultiOutputLoss, boundary_target, structure_loss
from medseg.metrics.multiclass import class_counts, evaluate_multiclass
from medseg.models import MODELS
from medseg.workflows.train import train


# -- losses -------------------------------------------------------------------------------------
def test_structure_loss_hand_computed_on_empty_target():
    # target 0 everywhere: weight 1, BCE(0 logit) = log 2, p = 0.5, inter 0, union 0.5 * H * W.
    logits, target = torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    expected = math.log(2.0) + 1.0 - 1.0 / (0.5 * 64 + 1.0)
    assert structure_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_structure_loss_weights_edges():
    # Edge pixels weigh 1 + 5 * |local mean - mask|: an error on an edge costs more than inside.
    target = torch.zeros(1, 1, 40, 40)
    target[..., 10:30, 10:30] = 1.0
    good = (target * 2 - 1) * 10.0
    edge_err, core_err = good.clone(), good.clone()
    edge_err[..., 10, 20] = -10.0
    core_err[..., 20, 20] = -10.0
    assert structure_loss(edge_err, target) > structure_loss(core_err, target) > structure_loss(good, target)


def test_boundary_target_band():
    mask = torch.zeros(1, 1, 10, 10)
    mask[..., 3:7, 3:7] = 1.0
    band = boundary_target(mask, width=1)[0, 0]
    expected = torch.zeros(10, 10)
    expected[2:8, 2:8] = 1.0
    expected[4:6, 4:6] = 0.0  # the interior 2x2 is more than 1 px from the edge
    assert torch.equal(band, expected)
    assert boundary_target(torch.ones(1, 1, 5, 5)).sum() == 0  # image borders are not edges
    with pytest.raises(ValueError, match="width"):
        boundary_target(mask, width=0)


def test_ce_dice_matches_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, 6)
    labels = torch.randint(0, 3, (2, 1, 6, 6)).float()
    got = CEDiceLoss(dice_weight=1.0)(logits, labels)
    ce = F.cross_entropy(logits, labels[:, 0].long())
    prob = torch.softmax(logits, 1)
    onehot = F.one_hot(labels[:, 0].long(), 3).permute(0, 3, 1, 2).float()
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    dice = (2 * inter + 1e-5) / (prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3)) + 1e-5)
    assert got.item() == pytest.approx((ce + (1 - dice).mean()).item(), rel=1e-5)
    with pytest.raises(ValueError, match="outside"):
        CEDiceLoss()(logits, labels + 1)


def _loss_cfg(**kw):
    return build_config({"loss": kw}).loss


def test_multi_output_loss_weights_targets_and_errors():
    cfg = _loss_cfg(
        name="mse", outputs={"out": 1.0, "pixel": 2.0, "centerline": 0.5}, targets={"centerline": "centerline"}
    )
    loss = MultiOutputLoss(cfg, output_activation="none")
    mask, cl = torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    outs = {
        "out": torch.full((1, 1, 4, 4), 0.5),
        "pixel": torch.zeros(1, 1, 4, 4),
        "centerline": torch.full((1, 1, 4, 4), 0.2),
    }
    total, parts = loss(outs, {"mask": mask, "centerline": cl, "fov": torch.ones_like(mask)})
    assert parts["out"].item() == pytest.approx(0.25) and parts["pixel"].item() == pytest.approx(1.0)
    assert parts["centerline"].item() == pytest.approx(0.04)
    assert total.item() == pytest.approx(0.25 + 2.0 + 0.5 * 0.04)
    with pytest.raises(ConfigError, match="centerline"):
        loss(outs, {"mask": mask, "fov": mask})
    with pytest.raises(ConfigError, match="network's outputs are out"):
        loss({"out": outs["out"]}, {"mask": mask, "centerline": cl})
    with pytest.raises(ConfigError, match="probabilities"):
        MultiOutputLoss(_loss_cfg(name="bce"), output_activation="none")
    with pytest.raises(ConfigError, match="loss.targets.boundary"):
        _loss_cfg(targets={"boundary": "edges"})


def test_probability_losses_get_sigmoid_of_logits():
    loss = MultiOutputLoss(_loss_cfg(name="mse"), output_activation="auto")
    total, _ = loss({"out": torch.zeros(1, 1, 2, 2)}, {"mask": torch.ones(1, 1, 2, 2)})
    assert total.item() == pytest.approx(0.25)  # sigmoid(0) = 0.5


# -- multi-class metrics --------------------------------------------------------------------------
def test_class_counts_and_per_volume_pooling():
    pred = np.array([[0, 1], [2, 2]])
    ref = np.array([[0, 1], [1, 2]])
    c = class_counts(pred, ref, 3)
    assert c.tolist() == [[1, 0, 0], [1, 0, 1], [1, 1, 0]]
    # Two slices of one volume: per-volume pools the counts; class 2 absent from slice b.
    items = [("a", "vol", pred, ref), ("b", "vol", np.zeros((2, 2)), np.zeros((2, 2)))]
    summary, rows = evaluate_multiclass(items, 3)
    assert summary["per_image"]["2"]["dice"] == pytest.approx(2 / 3) and summary["per_image"]["2"]["n_cases"] == 1
    assert summary["per_volume"]["1"]["dice"] == pytest.approx(2 / 3)
    assert summary["per_volume"]["mean"]["dice"] == pytest.approx(2 / 3)
    assert rows[1]["dice_2"] is None
    with pytest.raises(ValueError, match="outside"):
        class_counts(pred, ref + 1, 3)


# -- configs ---------------------------------------------------------------------------------------
def test_stage_config_overrides_and_replaces_loss():
    cfg = build_config(
        {
            "loss": {"name": "bce_dice", "outputs": {"out": 1.0, "aux": 1.0}},
            "train": {
                "stages": [
                    {
                        "name": "coarse",
                        "max_epochs": 3,
                        "lr": 0.1,
                        "trainable": ["coarse"],
                        "augment": {"flip_prob": 0.5},
                    },
                    {"name": "fine", "loss": {"name": "mse"}},
                ]
            },
        }
    )
    s0, s1 = stage_config(cfg, 0), stage_config(cfg, 1)
    assert (s0.train.max_epochs, s0.optim.lr, s0.train.trainable, s0.data.augment) == (
        3,
        0.1,
        ["coarse"],
        {"flip_prob": 0.5},
    )
    assert s0.loss.outputs == {"out": 1.0, "aux": 1.0} and s0.train.stages == []
    assert s1.loss.name == "mse" and s1.loss.outputs == {"out": 1.0}  # replaced, not merged
    with pytest.raises(ConfigError, match="did you mean 'max_epochs'"):
        build_config({"train": {"stages": [{"max_epoch": 3}]}})


# -- tiny runs --------------------------------------------------------------------------------------
class TwoPart(nn.Module):
    """A test network: an "encoder", a coarse head and a fine head refining the coarse map."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.encoder.gradient_checkpointing = False
        self.coarse = nn.Conv2d(4, out_channels, 3, padding=1)
        self.fine = nn.Conv2d(in_channels + out_channels, out_channels, 3, padding=1)

    def forward_outputs(self, x):
        if self.encoder.gradient_checkpointing and self.training:
            from torch.utils.checkpoint import checkpoint

            feat = checkpoint(self.encoder, x, use_reentrant=False)
        else:
            feat = self.encoder(x)
        coarse = self.coarse(feat)
        return {"out": self.fine(torch.cat([x, torch.sigmoid(coarse)], 1)), "coarse": coarse}

    def forward(self, x):
        return self.forward_outputs(x)["out"]


@pytest.fixture
def two_part():
    MODELS.register("_test_two_part")(TwoPart)
    yield "_test_two_part"
    MODELS._entries.pop("_test_two_part", None)


TINY = [
    "data.args={n_images: 6, size: 48}",
    "data.patch_size=32",
    "data.samples_per_epoch=8",
    "train.batch_size=4",
    "train.max_epochs=2",
    "train.progress_bar=false",
    "eval.roi_size=32",
    "eval.figures=false",
]


def test_multiclass_training_and_evaluation(tmp_path, capsys):
    cfg = load_config(
        None,
        TINY
        + [
            "data.args={n_images: 6, size: 48, classes: 3}",
            "model.args={base_channels: 4, depth: 2}",
            "loss.name=ce_dice",
        ],
    )
    summary = train(cfg, tmp_path / "run")
    m = json.loads((tmp_path / "run" / "eval" / "test" / "metrics.json").read_text())
    assert m["classes"] == ["0", "1", "2"] and m["n_images"] == 6
    assert set(m["per_volume"]) == {"0", "1", "2", "mean"}
    assert summary["parameters"] > 0 and 0.0 <= summary["best_val_dice"] <= 1.0
    from medseg.cli import print_metrics

    print_metrics(m)
    printed = capsys.readouterr().out
    assert "per-volume mean: 1 " in printed and f"mean {m['per_volume']['mean']['dice']:.4f}" in printed
    # The data's 3 classes set the U-Net's out_channels; a 1-channel network is refused.
    bad = load_config(
        None,
        TINY
        + ["data.args={n_images: 6, size: 48, classes: 3}", "model.args={base_channels: 4, depth: 2, out_channels: 1}"],
    )
    with pytest.raises(ConfigError, match="outputs 1 channel"):
        train(bad, tmp_path / "bad")


class RecordEncoder(Callback):
    def __init__(self):
        self.snapshots = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.snapshots.append(
            (pl_module.model.encoder[0].weight.detach().clone(), pl_module.model.fine.weight.detach().clone())
        )


def test_named_outputs_multiscale_and_encoder_freezing(tmp_path, two_part):
    rec = RecordEncoder()
    cfg = load_config(
        None,
        TINY
        + [
            f"model.name={two_part}",
            "model.args={}",
            "data.args={n_images: 6, size: 48, centerline: true}",
            "loss.name=bce_dice",
            "loss.outputs={out: 1.0, coarse: 0.5}",
            "loss.targets={coarse: centerline}",
            "train.multiscale=[0.75, 1.0, 1.25]",
            "train.multiscale_divisor=8",
            "train.freeze_encoder_steps=2",
            "train.gradient_clip_val=0.5",
            "train.gradient_clip_algorithm=value",
            "train.gradient_checkpointing=true",
            "optim.name=adam",
        ],
    )
    summary = train(cfg, tmp_path / "run", callbacks=[rec], evaluate_after=False)
    assert summary["steps"] == 4
    enc = [s[0] for s in rec.snapshots]
    fine = [s[1] for s in rec.snapshots]
    assert torch.equal(enc[0], enc[1])  # frozen for the first two steps
    assert not torch.equal(enc[1], enc[2])  # then trains
    assert not torch.equal(fine[0], fine[1])  # the rest trains from the start
    metrics = (tmp_path / "run" / "logs" / "csv" / "metrics.csv").read_text()
    assert "train/loss_coarse" in metrics and "train/loss_out" in metrics


def test_multiscale_rescales_batches():
    cfg = load_config(None, TINY + ["train.multiscale=[0.75, 1.25]", "train.multiscale_divisor=32"])
    module = SegmentationModule(cfg.to_dict(), in_channels=1)
    batch = {
        "image": torch.rand(2, 1, 352, 352),
        "mask": (torch.rand(2, 1, 352, 352) > 0.5).float(),
        "fov": torch.ones(2, 1, 352, 352),
    }
    assert module._rescaled(batch, 0.75)["image"].shape[-2:] == (256, 256)  # PraNet: 264 -> 256
    big = module._rescaled(batch, 1.25)
    assert big["image"].shape[-2:] == (448, 448) and big["mask"].shape[-2:] == (448, 448)
    assert big["fov"].unique().tolist() == [1.0]


def test_staged_training_freezes_the_other_part(tmp_path, two_part):
    cfg = load_config(
        None,
        TINY
        + [
            f"model.name={two_part}",
            "model.args={}",
            "loss.outputs={out: 1.0, coarse: 1.0}",
            "train.stages=[{name: coarse, trainable: [encoder, coarse], loss: {name: bce_dice, outputs: {coarse: 1.0}}},"
            " {name: fine, trainable: [fine], lr: 0.01, max_epochs: 1}]",
        ],
    )
    summary = train(cfg, tmp_path / "run", evaluate_after=False)
    run = tmp_path / "run"
    assert [s["stage_name"] for s in summary["stages"]] == ["coarse", "fine"]
    from medseg.engine.checkpoint import read_checkpoint

    s1 = read_checkpoint(run / "stage1-coarse" / "checkpoints" / "last.ckpt")["state_dict"]
    s2 = read_checkpoint(run / "stage2-fine" / "checkpoints" / "last.ckpt")["state_dict"]
    final = read_checkpoint(run / "checkpoints" / "best.ckpt")["state_dict"]
    # Stage 2 starts from stage 1's best and changes only the fine head (BN statistics of the
    # frozen encoder stay, since frozen parts run in eval mode).
    best1 = read_checkpoint(run / "stage1-coarse" / "checkpoints" / "best.ckpt")["state_dict"]
    for key in best1:
        if key.startswith("model.fine"):
            assert not torch.equal(best1[key], s2[key]), key
        else:
            assert torch.equal(best1[key], s2[key]), key
    assert summary["stages"][1]["trainable_parameters"] == sum(
        v.numel() for k, v in s2.items() if k.startswith("model.fine")
    )
    assert set(final) == set(s1)
    with pytest.raises(ConfigError, match="match no parameter"):
        bad = load_config(None, TINY + [f"model.name={two_part}", "model.args={}", "train.trainable=[decoder]"])
        SegmentationModule(bad.to_dict(), in_channels=1)


def test_module_takes_the_fit_config_as_it_is():
    """A fit hands its Config to the module (no rebuild from the dict); the checkpoint's
    hyper_parameters stay the plain dict, and a module built from that dict alone (as Lightning
    does when it loads a checkpoint) has an equal config."""
    cfg = load_config(None, TINY)
    given = SegmentationModule(cfg.to_dict(), in_channels=1, cfg=cfg)
    assert given.cfg is cfg
    assert set(given.hparams) == {"config", "in_channels", "num_classes"}
    assert given.hparams["config"] == cfg.to_dict()
    rebuilt = SegmentationModule(cfg.to_dict(), in_channels=1)
    assert rebuilt.cfg is not cfg and rebuilt.cfg.to_dict() == cfg.to_dict()
