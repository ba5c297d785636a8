"""Learning-rate schedules against hand-computed multipliers."""

import pytest
import torch

from medseg.config import OptimConfig, ScheduleConfig
from medseg.engine.schedules import build_optimizer, build_scheduler, cosine_factor, poly_factor, warmup_factor


def test_warmup_then_cosine():
    assert warmup_factor(0, 4) == pytest.approx(0.25)
    assert warmup_factor(3, 4) == pytest.approx(1.0)
    assert cosine_factor(0, 104, 4) == pytest.approx(0.25)
    assert cosine_factor(4, 104, 4) == pytest.approx(1.0)
    assert cosine_factor(54, 104, 4) == pytest.approx(0.5)
    assert cosine_factor(104, 104, 4) == pytest.approx(0.0, abs=1e-12)
    assert cosine_factor(104, 104, 4, min_ratio=0.1) == pytest.approx(0.1)


def test_poly():
    assert poly_factor(50, 100, 0, 0.9) == pytest.approx(0.5**0.9)
    assert poly_factor(100, 100) == pytest.approx(0.0)


def _lrs(name, steps=10, **kw):
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = build_optimizer(params, OptimConfig(lr=0.1))
    sched = build_scheduler(opt, ScheduleConfig(name=name, **kw), total_steps=steps)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None and sched["interval"] == "step":
            sched["scheduler"].step()
    return out, sched


def test_schedules_step_per_iteration():
    lrs, _ = _lrs("cosine", warmup_steps=2)
    assert lrs[0] == pytest.approx(0.05) and lrs[2] == pytest.approx(0.1)
    assert lrs[-1] < 0.01
    lrs, _ = _lrs("onecycle")
    assert max(lrs) == pytest.approx(0.1, rel=0.05) and lrs[0] < 0.01
    lrs, sched = _lrs("constant")
    assert sched is None and lrs == [0.1] * 10
    lrs, sched = _lrs("poly", power=1.0)
    assert lrs[5] == pytest.approx(0.05)


def test_plateau_monitors_validation_dice():
    _, sched = _lrs("plateau", factor=0.5, patience=0)
    assert sched["monitor"] == "val/dice" and sched["interval"] == "epoch"
    s = sched["scheduler"]
    s.step(0.5)
    s.step(0.4)  # no improvement, patience 0 -> halve
    assert s.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
