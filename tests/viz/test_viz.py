"""Tests of medseg.viz: every figure is a readable PNG, written atomically."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from medseg.viz import plot_training_curves, save_kernel_positions, save_panel


def _vessel_image(h=64, w=80, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    target = (np.abs(yy - (0.3 * xx + 10)) < 1.5) | (np.abs(xx - 50 - 5 * np.sin(yy / 9)) < 1.2)
    image = 0.6 - 0.4 * target + 0.1 * rng.random((h, w))  # dark vessels, float range
    prob = np.clip(0.8 * target + 0.3 * rng.random((h, w)), 0, 1)
    fov = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.47 * w) ** 2
    return image, target, prob, fov


def _open_png(path):
    assert path.exists() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.size  # (width, height)


def _only(directory, names):
    assert sorted(p.name for p in directory.iterdir()) == sorted(names)


def test_save_panel_grey_and_rgb(tmp_path):
    image, target, prob, fov = _vessel_image()
    out = save_panel(tmp_path / "sub" / "panel.png", image, target, prob, fov=fov, title="case 01")
    assert out == tmp_path / "sub" / "panel.png"
    w, h = _open_png(out)
    assert w > 2 * h  # 1x4 panel
    rgb = (np.stack([image, image * 0.5, image * 0.2], -1) * 255).astype(np.uint8)
    out2 = save_panel(tmp_path / "sub" / "panel_rgb.png", rgb, target.astype(np.uint8), prob)
    w2, h2 = _open_png(out2)
    assert w2 > 2 * h2
    _only(tmp_path / "sub", ["panel.png", "panel_rgb.png"])


def test_save_panel_shape_mismatch(tmp_path):
    image, target, prob, _ = _vessel_image()
    with pytest.raises(ValueError, match=r"\(64, 80\)"):
        save_panel(tmp_path / "p.png", image, target[:, :10], prob)
    assert not any(tmp_path.iterdir())


def test_panel_does_not_touch_pyplot(tmp_path):
    image, target, prob, _ = _vessel_image()
    before = "matplotlib.pyplot" in sys.modules
    save_panel(tmp_path / "p.png", image, target, prob)
    assert ("matplotlib.pyplot" in sys.modules) == before


METRICS_CSV = """epoch,lr-AdamW,step,train/loss_epoch,train/loss_step,val/dice,val/loss
,0.001,0,,,,
0,,9,,0.9,,
0,,19,,0.8,,
0,,19,,,0.41,0.75
0,,19,0.85,,,
,0.0005,20,,,,
1,,29,,0.6,,
1,,39,,0.5,,
1,,39,,,0.62,0.55
1,,39,0.55,,,
"""


def test_training_curves_sparse_csv(tmp_path):
    csv_path = tmp_path / "logs" / "metrics.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(METRICS_CSV)
    out = plot_training_curves(csv_path, tmp_path / "figs" / "curves.png")
    w, h = _open_png(out)
    assert w > h
    _only(tmp_path / "figs", ["curves.png"])


def test_training_curves_partial_columns(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("epoch,step,train/loss\n0,0,1.0\n0,1,0.7\n0,2,\n")
    out = plot_training_curves(csv_path, tmp_path / "c.png")
    _open_png(out)


@pytest.mark.parametrize("content", ["", "epoch,step\n0,1\n1,2\n", "epoch,step,val/dice\n0,1,\n"])
def test_training_curves_nothing_to_plot(tmp_path, content):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(content)
    with pytest.raises(ValueError, match="metrics.csv"):
        plot_training_curves(csv_path, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()
    _only(tmp_path, ["metrics.csv"])


def test_training_curves_missing_or_binary_file(tmp_path):
    with pytest.raises(ValueError, match="nope.csv"):
        plot_training_curves(tmp_path / "nope.csv", tmp_path / "c.png")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ValueError, match="bad.csv"):
        plot_training_curves(bad, tmp_path / "c.png")


def _snake_coords(h, w, k=9, amp=1.5):
    """(K, H, W, 2) positions of a horizontal snake kernel with a wavy vertical offset."""
    rows = np.arange(h, dtype=np.float32)[None, :, None] + np.zeros((k, 1, w), np.float32)
    offs = np.arange(k) - k // 2
    cols = np.arange(w, dtype=np.float32)[None, None, :] + offs[:, None, None]
    rows = rows + amp * np.sin(offs / 2.0)[:, None, None]
    return np.stack(np.broadcast_arrays(rows, cols), axis=-1).astype(np.float32)


def test_kernel_positions_half_resolution(tmp_path):
    image, target, _, _ = _vessel_image()
    coords = _snake_coords(32, 40)  # half of the 64x80 image
    out = save_kernel_positions(tmp_path / "k" / "kernels.png", image, coords, target=target, title="DSConv layer 3")
    w, h = _open_png(out)
    assert w > 0 and h > 0
    out2 = save_kernel_positions(tmp_path / "k" / "grid.png", image, _snake_coords(64, 80), n_centers=10)
    _open_png(out2)
    out3 = save_kernel_positions(tmp_path / "k" / "chosen.png", image, coords, centers=[(5, 5), (20, 30)])
    _open_png(out3)
    _only(tmp_path / "k", ["kernels.png", "grid.png", "chosen.png"])


def test_kernel_positions_errors(tmp_path):
    image, _, _, _ = _vessel_image()
    coords = _snake_coords(32, 40)
    with pytest.raises(ValueError, match=r"coords\[0\]"):
        save_kernel_positions(tmp_path / "k.png", image, coords[None])
    with pytest.raises(ValueError, match="outside"):
        save_kernel_positions(tmp_path / "k.png", image, coords, centers=[(40, 1)])
    with pytest.raises(ValueError, match=r"\(K, H, W, 2\)"):
        save_kernel_positions(tmp_path / "k.png", image, coords[..., 0])
    assert not any(tmp_path.iterdir())
