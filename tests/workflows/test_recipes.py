"""Every recipe's network produces the outputs its loss names, in every stage, and takes the
recipe's patch and window sizes; no data or weight file is read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medseg.config import load_config
from medseg.engine.module import build_network, check_classes
from medseg.engine.train import stage_config
from medseg.inference import check_roi
from medseg.losses.more import MultiOutputLoss

CONFIGS = sorted(Path(__file__).resolve().parents[2].glob("configs/*/*.yaml"))
#: Input channels and classes of each recipe's dataset (as the dataset loads them).
DATA = {"drive": (3, 2), "rossa": (1, 2), "octa500": (1, 2), "kvasir_seg": (3, 2), "msd": (3, 3)}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_network_fits_its_loss_and_sizes(path):
    cfg = load_config(path)
    if cfg.data.dataset not in DATA:
        pytest.skip(f"{cfg.data.dataset} recipes are checked elsewhere")
    in_ch, classes = DATA[cfg.data.dataset]
    if cfg.data.args.get("channels") == "green":
        in_ch = 1
    spatial = (64, 64)
    if cfg.data.args.get("spatial_dims") == 3:  # whole volumes, one channel, for a 3-D network
        in_ch, spatial = 1, (32, 32, 32)
    cfg.model.args.pop("encoder_weights", None)
    torch.manual_seed(0)
    net = build_network(cfg, in_ch, classes).eval()
    check_roi(net, cfg.eval.roi_size or cfg.data.patch_size)
    check_roi(net, cfg.data.patch_size)
    stages = [stage_config(cfg, i) for i in range(len(cfg.train.stages))] or [cfg]
    x = torch.rand(1, in_ch, *spatial)
    with torch.no_grad():
        out = net(x)
        outputs = net.forward_outputs(x) if hasattr(net, "forward_outputs") else {"out": out}
    check_classes(cfg.model.name, out.shape[1], classes)
    for scfg in stages:
        loss = MultiOutputLoss(scfg.loss, getattr(net, "output_activation", "auto"))
        missing = set(scfg.loss.outputs) - set(outputs)
        assert not missing, f"{path.name}: loss names outputs {missing} the network lacks ({sorted(outputs)})"
        batch = {"mask": (torch.rand(1, 1, *spatial) > 0.5).float(), "fov": torch.ones(1, 1, *spatial)}
        if classes > 2:
            batch["mask"] = torch.randint(0, classes, (1, 1, *spatial)).float()
        batch["centerline"] = batch["mask"].clone()
        total, _ = loss(outputs, batch)
        assert torch.isfinite(total)
