"""Test metrics of the default recipe's network before any training step (same seed, same init).

The reference point for "the main job shows real learning": prints and writes JSON
(default benchmarks/results/untrained_baseline.json) with the untrained network's FOV Dice,
AUC-ROC and clDice on the synthetic test split, to set beside `medseg train`'s numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L

from medseg.config import load_config
from medseg.data import create_dataset
from medseg.engine.module import build_network
from medseg.metrics.vessel import evaluate_vessels
from medseg.workflows.evaluate import infer_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/untrained_baseline.json"))
    args = parser.parse_args()
    cfg = load_config()
    L.seed_everything(cfg.seed, verbose=False)
    cases = create_dataset(cfg.data.dataset, split="test", **cfg.data.args)
    model = build_network(cfg, int(cases[0].image.shape[0])).eval()
    summary, _ = evaluate_vessels(
        ((c.id, infer_image(model, c.image, cfg), c.mask, c.fov) for c in cases), cfg.eval.threshold
    )
    result = {k: summary["fov"]["per_image_mean"][k] for k in ("dice", "auc_roc", "cldice")}
    print("untrained default network, synthetic test split, FOV per-image mean:", result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
