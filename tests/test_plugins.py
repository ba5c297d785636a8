"""One plugin mechanism: a new loss, optimiser, schedule or preprocessing step is one decorated
function, and the config accepts its name with no other edit (issue 13)."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from medseg.config import build_config
from medseg.data.base import Case
from medseg.data.transforms.preprocess import STEPS, Pipeline, parse_steps, register_step
from medseg.engine.schedules import (
    OPTIMIZERS,
    SCHEDULES,
    build_optimizer,
    build_scheduler,
    register_optimizer,
    register_schedule,
)
from medseg.errors import ConfigError
from medseg.losses import LOSSES, build_loss, list_losses, register_loss
from medseg.registry import Registry


@pytest.fixture
def scratch(monkeypatch):
    """Each registry gets a copy of its entries, so what a test registers is gone after it."""
    for reg in (LOSSES, OPTIMIZERS, SCHEDULES, STEPS):
        monkeypatch.setattr(reg, "_entries", dict(reg._entries))


def test_registries_list_names_in_registration_order():
    # the package's own losses first, in order; then each loss module's, in the order the modules were imported
    names = list_losses()
    assert names[:4] == ("bce", "bce_dice", "continuity", "cldice")
    more, tc = names.index("structure"), names.index("bce_tcloss")
    assert names[more : more + 4] == ("structure", "ce_dice", "mse", "mse_dice")
    assert names[tc : tc + 2] == ("bce_tcloss", "bce_dice_tcloss") and len(names) == 10
    assert OPTIMIZERS.in_order() == ("adamw", "adam", "sgd")
    assert SCHEDULES.in_order() == ("cosine", "onecycle", "poly", "plateau", "constant")
    assert STEPS.in_order()[:3] == ("green", "gray", "rgb") and "imagenet" in STEPS


def test_a_new_loss_is_one_decorated_function(scratch):
    class L1(nn.Module):
        input_kind = "logits"

        def forward(self, logits, target, fov=None):
            return (torch.sigmoid(logits) - target).abs().mean()

    with pytest.raises(ConfigError, match="loss.name 'l1' is not one of bce, bce_dice"):
        build_config({}, ["loss.name=l1"])

    @register_loss("l1")
    def _l1(cfg):
        return L1()

    cfg = build_config({}, ["loss.name=l1"])
    loss = build_loss(cfg.loss)
    assert isinstance(loss, L1)
    logits = torch.zeros(1, 1, 2, 2)  # sigmoid 0.5 everywhere
    target = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    assert loss(logits, target).item() == pytest.approx(0.5)
    # stages and per-output losses are checked against the same registry
    build_config({}, ["loss.output_losses={out: l1}"])


def test_a_new_optimiser_and_schedule_are_one_decorated_function_each(scratch):
    with pytest.raises(ConfigError, match="optim.name 'rmsprop' is not one of adamw, adam, sgd"):
        build_config({}, ["optim.name=rmsprop"])

    @register_optimizer("rmsprop")
    def _rmsprop(params, cfg):
        return torch.optim.RMSprop(params, lr=cfg.lr)

    @register_schedule("halving")
    def _halving(optimizer, cfg, total_steps, val_every_n_epochs):
        return {"scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5), "interval": "step"}

    cfg = build_config({}, ["optim.name=rmsprop", "optim.lr=0.1", "schedule.name=halving"])
    w = nn.Parameter(torch.ones(2))
    opt = build_optimizer([w], cfg.optim)
    assert isinstance(opt, torch.optim.RMSprop)
    sched = build_scheduler(opt, cfg.schedule, total_steps=10)["scheduler"]
    opt.step()
    sched.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.25)


def test_a_new_preprocess_step_is_one_decorated_function(scratch):
    with pytest.raises(ConfigError, match="unknown preprocess step 'invert'"):
        parse_steps(["invert"])

    @register_step("invert")
    def invert(case: Case, top: float = 255.0) -> Case:
        case.image = (top - case.image).astype(np.float32)
        return case

    steps = parse_steps([{"invert": {"top": 10.0}}])
    assert steps == [("invert", {"top": 10.0})]
    with pytest.raises(ConfigError, match="top"):
        parse_steps([{"invert": {"bottom": 1.0}}])
    image = np.full((1, 2, 3), 4.0, np.float32)
    case = Case("a", image, np.zeros((2, 3), np.uint8), np.ones((2, 3), bool), np.zeros((2, 3), np.uint8))
    assert np.array_equal(Pipeline([{"invert": {"top": 10.0}}])(case).image, np.full((1, 2, 3), 6.0, np.float32))


def test_registry_refuses_a_name_twice_and_unknown_names():
    reg = Registry("widget")
    reg.register("a")(int)
    reg.register("a")(int)  # the same builder again (a module imported twice) is fine
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.register("a")(float)
    with pytest.raises(ConfigError, match="unknown widget 'b'"):
        reg["b"]
    assert reg["a"] is int and len(reg) == 1 and reg.in_order() == ("a",)
