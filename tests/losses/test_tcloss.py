"""TCLoss (medseg.losses.tcloss) on hand-made 5x5 masks: values and gradients derived by hand.

Conventions used in every comment: f = 1 - p is the filtration (sublevel, pixels as top cells,
8-connected); a diagram point is (b, d); the label's points are all (0, 1); a prediction point
matched to (0, 1) costs max(b, 1 - d), sent to the diagonal (d - b) / 2, an unmatched label
point 1/2; the loss is the bottleneck (max) cost per dimension, summed over H0 and H1, averaged
over tiles. Probabilities 0 and 1 are written as logits -+30 (p within 1e-13 of 0 or 1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medseg.config import ConfigError, LossConfig, validate
from medseg.losses import build_loss, list_losses
from medseg.losses.tcloss import BCETCLoss, TCLoss, bottleneck_to_label, persistence_pairs

BIG = 30.0


def logits_of(p: torch.Tensor) -> torch.Tensor:
    """(H, W) probabilities -> (1, 1, H, W) float64 logits with grad; 0 and 1 map to -+30."""
    p = p.to(torch.float64)
    z = torch.log(p.clamp(1e-300) / (1 - p).clamp(1e-300)).clamp(-BIG, BIG)
    return z[None, None].clone().requires_grad_(True)


def line() -> torch.Tensor:
    """A horizontal vessel: row 2 of a 5x5 patch."""
    t = torch.zeros(5, 5, dtype=torch.float64)
    t[2, :] = 1.0
    return t


def loss_and_grad(p: torch.Tensor, t: torch.Tensor, **kw) -> tuple[float, torch.Tensor]:
    z = logits_of(p)
    value = TCLoss(**kw)(z, t[None, None].to(torch.float64))
    value.backward()
    return value.item(), z.grad[0, 0]


def nonzero(grad: torch.Tensor, tol: float = 1e-9) -> set[tuple[int, int]]:
    return {(int(r), int(c)) for r, c in torch.nonzero(grad.abs() > tol)}


# --------------------------------------------------------------------------------------------
# persistence pairs and the matching


def test_pairs_locate_birth_and_death_pixels():
    # f of a broken line: 0 on row 2, 0.7 at the gap (2, 2), 1 elsewhere. H0: the essential
    # component (0, inf -> 1) and the second piece (0, 0.7), dying at the gap pixel.
    f = 1.0 - line().numpy()
    f[2, 2] = 0.7
    pairs = persistence_pairs(f)
    assert sorted(zip(pairs.dim.tolist(), pairs.birth.tolist(), pairs.death.tolist())) == [(0, 0.0, 0.7), (0, 0.0, 1.0)]
    finite = int(np.flatnonzero(pairs.death < 1.0)[0])
    assert pairs.death_pixel[finite] == 2 * 5 + 2
    assert f.flat[pairs.birth_pixel[finite]] == 0.0
    assert pairs.death_pixel[pairs.death == 1.0].tolist() == [-1]  # capped essential class


def test_pairs_of_a_ring_and_of_a_diagonal():
    ring = np.ones((5, 5))
    ring[1:4, 1:4] = 0.0
    ring[2, 2] = 1.0  # the hole
    pairs = persistence_pairs(ring)
    h1 = pairs.select(1)
    assert h1.birth.tolist() == [0.0] and h1.death.tolist() == [1.0] and h1.death_pixel.tolist() == [12]
    # diagonal pixels touch at corners: one 8-connected component, as betti_numbers counts it
    assert persistence_pairs(1.0 - np.eye(4)).select(0).birth.size == 1
    with pytest.raises(ValueError, match="2-D"):
        persistence_pairs(np.zeros((2, 2, 2)))


def test_bottleneck_hand_cases():
    # one label point; prediction {(0, 0.7), (0, 1)}: send (0, 0.7) to the diagonal (0.35) and
    # match (0, 1) (0): 0.35; the other way round costs max(0.3, 0.5) = 0.5.
    m = bottleneck_to_label(np.array([0.0, 0.0]), np.array([0.7, 1.0]), 1)
    assert m.value == pytest.approx(0.35) and m.to_label.tolist() == [False, True]
    assert (m.critical, m.critical_term) == (0, "diagonal")
    # a weak point (0.4, 1) must take the label point: cost b = 0.4 < the 1/2 of leaving it
    m = bottleneck_to_label(np.array([0.4]), np.array([1.0]), 1)
    assert m.value == pytest.approx(0.4) and (m.critical, m.critical_term, m.unmatched_label) == (0, "birth", 0)
    # too weak (0.8, 1): the label point stays unmatched (1/2, no prediction pair attains it)
    m = bottleneck_to_label(np.array([0.8]), np.array([1.0]), 1)
    assert m.value == 0.5 and m.unmatched_label == 1 and m.critical == -1
    # matched by its death: (0, 0.6) against (0, 1) costs 1 - 0.6 = 0.4 < 1/2
    m = bottleneck_to_label(np.array([0.0]), np.array([0.6]), 1)
    assert m.value == pytest.approx(0.4) and m.critical_term == "death"
    assert bottleneck_to_label(np.zeros(0), np.zeros(0), 0).value == 0.0
    assert bottleneck_to_label(np.zeros(0), np.zeros(0), 2).value == 0.5
    with pytest.raises(ValueError, match=">= 0"):
        bottleneck_to_label(np.zeros(0), np.zeros(0), -1)


# --------------------------------------------------------------------------------------------
# values


def test_identical_topology_costs_zero_and_soft_values_cost_the_confidence_gap():
    t = line()
    value, _ = loss_and_grad(t.clone(), t)
    assert value == pytest.approx(0.0, abs=1e-9)
    # same topology, soft values (vessel 0.9, background 0.1): H0 point (0.1, 1) matched to
    # (0, 1) costs max(0.1, 0) = 0.1; H1 empty on both sides. Not zero by this definition.
    value, _ = loss_and_grad(0.8 * t + 0.1, t)
    assert value == pytest.approx(0.1, abs=1e-9)


def test_broken_vessel_costs_more_and_its_gap_gets_the_gradient():
    t = line()
    p = t.clone()
    p[2, 2] = 0.3
    # H0 of p: (0, 1) for the essential piece, (0, 0.7) for the piece cut off at the gap (2, 2).
    # Bottleneck 0.35 = (d - b) / 2 = (p[birth] - p[gap]) / 2, the birth pixel a vessel pixel at
    # p = 1 (saturated). d/dz at the gap = -1/2 * p (1 - p) = -0.5 * 0.3 * 0.7 = -0.105: the
    # descent raises the gap. Every other pixel: |grad| < 1e-9 (sigmoid saturated or not critical).
    value, grad = loss_and_grad(p, t)
    assert value == pytest.approx(0.35, abs=1e-9)
    assert nonzero(grad) == {(2, 2)}
    assert grad[2, 2].item() == pytest.approx(-0.105, abs=1e-9)
    # a hard gap (p = 0 there): the cut piece (0, 1) must go to the diagonal, cost 1/2; a plain
    # set Hausdorff distance would see {(0, 1), (0, 1)} against {(0, 1)} and give 0.
    p[2, 2] = 0.0
    assert loss_and_grad(p, t)[0] == pytest.approx(0.5, abs=1e-9)


def test_spurious_component_costs_more_with_gradient_at_its_birth_and_death():
    t = line()
    p = t * (1 - 0.01) + 0.01  # background 0.01, vessel 0.99 ...
    p[2, :] = 1.0  # ... vessel exactly 1
    p[0, 4] = 0.9  # a blob, not 8-adjacent to row 2
    p[1, 4] = 0.2  # the bridge through which it joins the vessel (f = 0.8)
    # H0: essential (0, 1) matched; blob (0.1, 0.8) sent to the diagonal: 0.35 (matching the blob
    # to (0, 1) instead would leave the essential point at 1/2). Cost (p[0,4] - p[1,4]) / 2:
    # d/dz[0,4] = +0.5 * 0.9 * 0.1 = 0.045 (blob fades), d/dz[1,4] = -0.5 * 0.2 * 0.8 = -0.08.
    value, grad = loss_and_grad(p, t)
    assert value == pytest.approx(0.35, abs=1e-9)
    assert nonzero(grad) == {(0, 4), (1, 4)}
    assert grad[0, 4].item() == pytest.approx(0.045, abs=1e-9)
    assert grad[1, 4].item() == pytest.approx(-0.08, abs=1e-9)


def test_spurious_loop_costs_more_with_gradient_at_its_weakest_pixel_and_hole():
    t = torch.zeros(5, 5, dtype=torch.float64)
    t[1:4, 1:4] = 1.0  # a solid block: no loop
    p = t.clone()
    p[2, 2] = 0.1  # a hole
    p[1, 2] = 0.7  # the ring's weakest pixel: the loop is born when it enters (f = 0.3)
    # H1 of p: (0.3, 0.9), label H1 empty: diagonal cost (0.9 - 0.3) / 2 = 0.3 =
    # (p[1,2] - p[2,2]) / 2: d/dz[1,2] = 0.5 * 0.7 * 0.3 = 0.105, d/dz[2,2] = -0.5 * 0.1 * 0.9 = -0.045.
    # H0: one component on both sides, born at f = 0: cost 0.
    value, grad = loss_and_grad(p, t)
    assert value == pytest.approx(0.3, abs=1e-9)
    assert nonzero(grad) == {(1, 2), (2, 2)}
    assert grad[1, 2].item() == pytest.approx(0.105, abs=1e-9)
    assert grad[2, 2].item() == pytest.approx(-0.045, abs=1e-9)


def test_gradient_matches_finite_differences_on_a_soft_map():
    # Soft random map (no ties): the loss is linear near this point, so central differences of
    # the float64 loss equal autograd.
    torch.manual_seed(3)
    t = line()
    z0 = (torch.randn(5, 5, dtype=torch.float64) + 2.0 * (2 * t - 1))[None, None]
    z = z0.clone().requires_grad_(True)
    loss = TCLoss()
    value = loss(z, t[None, None])
    value.backward()
    assert value.item() > 0.0
    eps = 1e-6
    fd = torch.zeros(5, 5, dtype=torch.float64)
    for r in range(5):
        for c in range(5):
            zp, zm = z0.clone(), z0.clone()
            zp[0, 0, r, c] += eps
            zm[0, 0, r, c] -= eps
            fd[r, c] = (loss(zp, t[None, None]) - loss(zm, t[None, None])) / (2 * eps)
    assert torch.allclose(z.grad[0, 0], fd, atol=1e-6)
    assert 1 <= len(nonzero(z.grad[0, 0], 1e-6)) <= 4  # two pixels per dimension at most


# --------------------------------------------------------------------------------------------
# batch, tiles, FOV, errors, registry


def test_batch_is_the_mean_of_its_images_and_tiles_are_averaged():
    t = line()
    broken = t.clone()
    broken[2, 2] = 0.3
    batch_z = torch.cat([logits_of(t), logits_of(broken)]).detach()
    batch_t = torch.stack([t, t])[:, None]
    assert TCLoss()(batch_z, batch_t).item() == pytest.approx((0.0 + 0.35) / 2, abs=1e-9)
    # 10 x 5 = two 5 x 5 tiles: the broken line in the top tile, the whole one below
    tall_t = torch.cat([t, t])[None, None]
    tall_z = torch.cat([logits_of(broken), logits_of(t)], dim=2).detach()
    assert TCLoss(patch_size=5)(tall_z, tall_t).item() == pytest.approx(0.35 / 2, abs=1e-9)


def test_fov_hides_what_lies_outside_and_drops_empty_tiles():
    t = line()
    p = t.clone()
    p[0, 4] = 0.9  # a spurious blob (cost 0.45 as a diagonal point (0.1, 1))
    z = logits_of(p).detach()
    assert TCLoss()(z, t[None, None]).item() == pytest.approx(0.45, abs=1e-9)
    fov = torch.ones(1, 1, 5, 5, dtype=torch.float64)
    fov[0, 0, 0, 4] = 0.0
    assert TCLoss()(z, t[None, None], fov).item() == pytest.approx(0.0, abs=1e-9)
    # a tile without FOV pixels is not counted: top tile broken but outside the FOV
    broken = t.clone()
    broken[2, 2] = 0.0
    tall_z = torch.cat([logits_of(broken), logits_of(t)], dim=2).detach()
    tall_fov = torch.cat([torch.zeros(5, 5), torch.ones(5, 5)]).to(torch.float64)[None, None]
    value = TCLoss(patch_size=5)(tall_z, torch.cat([t, t])[None, None], tall_fov)
    assert value.item() == pytest.approx(0.0, abs=1e-9)
    assert TCLoss(patch_size=5)(tall_z, torch.cat([t, t])[None, None], torch.zeros_like(tall_fov)).item() == 0.0


def test_bad_shapes_and_sizes_raise_clear_errors():
    loss = TCLoss()
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        loss(torch.zeros(1, 2, 5, 5), torch.zeros(1, 2, 5, 5))
    with pytest.raises(ValueError, match=r"target shape \(1, 1, 4, 5\) differs from logits shape \(1, 1, 5, 5\)"):
        loss(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="fov shape"):
        loss(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 5, 5), torch.ones(1, 1, 5, 4))
    with pytest.raises(ValueError, match="patch_size"):
        TCLoss(patch_size=1)


def test_registered_losses_add_the_term_to_bce_and_bce_dice():
    assert {"bce_tcloss", "bce_dice_tcloss"} <= set(list_losses())
    t = line()[None, None]
    p = line()
    p[2, 2] = 0.3
    z = logits_of(p).detach()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, t)
    cfg = LossConfig(name="bce_tcloss", topo_weight=2.0)
    assert build_loss(cfg)(z, t).item() == pytest.approx(bce.item() + 2.0 * 0.35, abs=1e-9)
    both = build_loss(LossConfig(name="bce_dice_tcloss", topo_weight=0.0))
    assert isinstance(both, BCETCLoss) and both.dice_weight == 1.0
    dice = 1 - (2 * (torch.sigmoid(z) * t).sum() + 1) / (torch.sigmoid(z).sum() + t.sum() + 1)
    assert both(z, t).item() == pytest.approx((bce + dice).item(), abs=1e-9)
    assert math.isclose(LossConfig().topo_weight, 1.0) and LossConfig().topo_patch == 0


@pytest.mark.parametrize("key,value", [("topo_weight", -1.0), ("topo_patch", 1), ("topo_patch", -4)])
def test_config_refuses_bad_topo_options(key, value):
    from medseg.config import Config

    cfg = Config()
    setattr(cfg.loss, key, value)
    with pytest.raises(ConfigError, match=f"loss.{key}"):
        validate(cfg)


def test_bottleneck_equals_brute_force_over_all_matchings():
    # every subset of at most m prediction points sent to the label point (0, 1), on random
    # small diagrams with values on a 0.1 grid (many ties)
    import itertools

    rng = np.random.default_rng(1)
    for _ in range(300):
        b = np.round(rng.random(rng.integers(0, 6)), 1)
        d = np.round(b + (1 - b) * rng.random(b.size), 1)
        b, d = b[d > b], d[d > b]
        m = int(rng.integers(0, 4))
        cg, cd = np.maximum(b, 1 - d), (d - b) / 2
        best = min(
            max([0.0, *cg[list(s)], *np.delete(cd, list(s)), *([0.5] if r < m else [])])
            for r in range(min(m, b.size) + 1)
            for s in itertools.combinations(range(b.size), r)
        )
        got = bottleneck_to_label(b, d, m)
        assert got.value == pytest.approx(best, abs=1e-12)
        s = got.to_label
        assert s.sum() <= m and max([0.0, *cg[s], *cd[~s], *([0.5] if s.sum() < m else [])]) == pytest.approx(best)
