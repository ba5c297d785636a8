"""Inference on volumes (N, C, D, H, W): sliding windows, whole-volume passes, the Predictor."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from medseg.inference import Predictor, predict_probabilities, whole_image_probabilities


class _Voxelwise(nn.Module):
    """A 1x1x1 conv (no context): every inference method must give the same probabilities."""

    spatial_dims = 3
    size_divisor = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 3, 1)
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 5
        assert all(s % self.size_divisor == 0 for s in x.shape[2:]), x.shape
        self.seen.append(tuple(x.shape[2:]))
        return self.conv(x)


def test_sliding_window_on_volumes_matches_a_voxelwise_network():
    torch.manual_seed(0)
    model = _Voxelwise().eval()
    x = torch.randn(2, 1, 10, 13, 7)
    expected = torch.softmax(model.conv(x), 1)
    prob = predict_probabilities(model, x, roi_size=8, overlap=0.5)
    assert prob.shape == (2, 3, 10, 13, 7)
    assert torch.allclose(prob, expected, atol=1e-5)
    assert set(model.seen) == {(8, 8, 8)}  # cubic windows


def test_whole_volume_pads_every_axis_and_crops_back():
    torch.manual_seed(0)
    model = _Voxelwise().eval()
    x = torch.randn(1, 1, 10, 13, 7)
    prob = whole_image_probabilities(model, x)
    assert prob.shape == (1, 3, 10, 13, 7)
    assert torch.allclose(prob, torch.softmax(model.conv(x), 1), atol=1e-6)
    d, h, w = model.seen[-1]
    assert d >= 32 and h >= 32 and w >= 32  # MIN_FORWARD_SIDE on every axis, multiples of 4


def test_predictor_takes_volumes_with_tta():
    torch.manual_seed(0)
    model = _Voxelwise()
    vols = [np.random.default_rng(i).normal(size=(1, 9, 10, 11)).astype(np.float32) for i in range(3)]
    for method in ("whole", "sliding"):
        pred = Predictor(model, method=method, roi_size=8, tta="flips", batch_size=0)
        outs = list(pred.predict_many(vols))
        assert [o.shape for o in outs] == [(3, 9, 10, 11)] * 3
        ref = torch.softmax(model.conv(torch.from_numpy(vols[1])[None]), 1)[0].detach().numpy()
        np.testing.assert_allclose(outs[1], ref, atol=1e-5)
