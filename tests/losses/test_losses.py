"""Losses against hand-computed values, FOV restriction and gradients."""

import math

import pytest
import torch

from medseg.config import LossConfig
from medseg.losses import (
    BCEDiceLoss,
    ClDiceLoss,
    ContinuityLoss,
    build_loss,
    masked_bce,
    sobel_gradients,
    soft_dice_loss,
)


def test_bce_hand_computed_and_fov():
    logits = torch.tensor([0.0, 2.0, -1.0, 3.0]).view(1, 1, 2, 2)
    target = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 2, 2)
    per = [math.log(2), math.log(1 + math.exp(-2)), math.log(1 + math.exp(-1)), math.log(1 + math.exp(3))]
    assert masked_bce(logits, target).item() == pytest.approx(sum(per) / 4, rel=1e-6)
    fov = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 2)
    assert masked_bce(logits, target, fov).item() == pytest.approx((per[0] + per[2]) / 2, rel=1e-6)


def test_soft_dice_hand_computed():
    prob = torch.tensor([0.5, 1.0, 0.0, 0.25]).view(1, 1, 2, 2)
    target = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 2, 2)
    # inter = 1.5, sums = 1.75 + 2 -> 1 - (3 + 1) / (3.75 + 1)
    assert soft_dice_loss(prob, target).item() == pytest.approx(1 - 4 / 4.75, rel=1e-6)
    assert soft_dice_loss(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3)).item() == pytest.approx(0.0)


def test_bce_dice_is_the_sum():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.7).float()
    expected = masked_bce(logits, target) + 0.7 * soft_dice_loss(torch.sigmoid(logits), target)
    assert BCEDiceLoss(0.7)(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_sobel_of_a_ramp():
    ramp = torch.arange(5.0).repeat(5, 1).view(1, 1, 5, 5)  # increases by 1 per column
    g = sobel_gradients(ramp)
    assert torch.allclose(g[0, 0, 1:-1, 1:-1], torch.full((3, 3), 8.0))  # Sobel x gain = 8 for unit slope
    assert torch.allclose(g[0, 1], torch.zeros(5, 5))


def test_continuity_term_vanishes_for_a_perfect_prediction_and_penalises_breaks():
    target = torch.zeros(1, 1, 16, 16)
    target[..., 8, :] = 1.0
    perfect = (target * 2 - 1) * 30.0  # sigmoid ~ target exactly
    loss = ContinuityLoss(alpha=1.0)
    assert loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    broken = perfect.clone()
    broken[..., 8, 6:10] = -30.0  # a gap in the vessel
    gap_loss = loss(broken, target) - masked_bce(broken, target)
    assert gap_loss.item() > 0.01


def test_cldice_loss_is_finite_and_has_gradients():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 32, 32, requires_grad=True)
    target = torch.zeros(2, 1, 32, 32)
    target[:, :, 10:13, :] = 1
    value = ClDiceLoss(alpha=0.5, iters=3)(logits, target)
    value.backward()
    assert torch.isfinite(value) and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["bce", "bce_dice", "continuity", "cldice"])
def test_build_loss_every_name_trains_towards_the_target(name):
    torch.manual_seed(0)
    target = torch.zeros(1, 1, 16, 16)
    target[..., 6:9, :] = 1
    logits = torch.zeros(1, 1, 16, 16, requires_grad=True)
    loss_fn = build_loss(LossConfig(name=name))
    opt = torch.optim.SGD([logits], lr=5.0)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(logits, target)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert loss.item() < first
    assert ((torch.sigmoid(logits) > 0.5).float() == target).float().mean() > 0.95
