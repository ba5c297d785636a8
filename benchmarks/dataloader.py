"""Is the data loader the bottleneck? Samples per second of the training loader against the
training step time of the recipe's network, on this machine.

For each recipe (DRIVE: configs/drive/dscnet.yaml and unet.yaml; Kvasir-SEG: the polyp
augmentation below, 352x352 whole images, as PraNet/BCNet train), the script

1. loads the training split once (decoding + preprocessing time, reported separately),
2. iterates the recipe's DataLoader (PatchDataset with its augmentation) at 0, 1 and 2 worker
   processes and reports samples/s (after one warm-up batch),
3. times forward + backward + AdamW step of the recipe's network on one batch of the same size,
   and reports the ratio loader throughput / training throughput: above 1 the loader keeps up.

Prints a table and writes JSON (default benchmarks/results/dataloader.json). Needs the real
datasets (``$MEDSEG_DATA`` or ../shared/data); a recipe whose data is absent is skipped.

    python benchmarks/dataloader.py [--batches 20] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from medseg.config import load_config
from medseg.data import AugmentConfig, PatchDataset, create_dataset
from medseg.engine.datamodule import EpochIndexSampler
from medseg.engine.module import build_network
from medseg.errors import MedsegError

REPO = Path(__file__).resolve().parents[1]

#: Kvasir-SEG training augmentation in the spirit of PraNet/Polyp-PVT (flips, rotations) plus
#: colour jitter as polyp recipes use it; whole 352x352 images.
KVASIR_AUGMENT = {
    "flip_prob": 0.5,
    "rot90_prob": 0.5,
    "rotate_prob": 0.3,
    "rotate_degrees": 15.0,
    "elastic_prob": 0.0,
    "brightness_contrast_prob": 0.3,
    "gamma_prob": 0.0,
    "noise_prob": 0.0,
    "color_jitter_prob": 0.3,
}


def recipes() -> list[tuple[str, object]]:
    out = []
    for name in ("dscnet", "unet"):
        out.append((f"drive/{name}", load_config(REPO / "configs" / "drive" / f"{name}.yaml")))
    cfg = load_config(
        None,
        [
            "data.dataset=kvasir_seg",
            "data.args={}",
            "data.patch_size=352",
            "train.batch_size=16",
            "model.name=unet",
            "model.args={base_channels: 32, depth: 4, in_channels: 3}",
        ],
    )
    cfg.data.augment = dict(KVASIR_AUGMENT)
    out.append(("kvasir_seg/unet (352, batch 16)", cfg))
    return out


def loader_rate(ds: PatchDataset, batch: int, workers: int, batches: int) -> float:
    loader = DataLoader(
        ds, batch_size=batch, sampler=EpochIndexSampler(len(ds)), num_workers=workers, persistent_workers=False
    )
    it = iter(loader)
    next(it)  # warm-up: worker start, first MONAI calls
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        try:
            b = next(it)
        except StopIteration:
            break
        n += b["image"].shape[0]
    return n / (time.perf_counter() - start)


def step_rate(cfg, in_channels: int, batch: int, patch: int, steps: int = 3) -> float:
    torch.manual_seed(0)
    model = build_network(cfg, in_channels)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, in_channels, patch, patch)
    y = (torch.rand(batch, 1, patch, patch) > 0.9).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step() -> None:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20, help="batches timed per loader setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "dataloader.json")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    results = []
    for name, cfg in recipes():
        try:
            t0 = time.perf_counter()
            cases = create_dataset(cfg.data.dataset, root=cfg.data.root, split="train", **cfg.data.args)
            load_s = time.perf_counter() - t0
        except MedsegError as exc:
            print(f"skip {name}: {exc}".splitlines()[0])
            continue
        batch = cfg.train.batch_size
        patch = cfg.data.patch_size if isinstance(cfg.data.patch_size, int) else cfg.data.patch_size[0]
        ds = PatchDataset(
            cases,
            cfg.data.patch_size,
            samples_per_epoch=max(batch * (args.batches + 1), 64),
            augment=AugmentConfig.from_dict(cfg.data.augment),
            seed=0,
            foreground_prob=cfg.data.foreground_prob,
        )
        rates = {w: loader_rate(ds, batch, w, args.batches) for w in args.workers}
        train_rate = step_rate(cfg, cases.in_channels, batch, patch)
        row = {
            "recipe": name,
            "images": len(cases),
            "load_seconds": round(load_s, 2),
            "batch": batch,
            "patch": patch,
            "loader_samples_per_s": {str(w): round(r, 1) for w, r in rates.items()},
            "train_samples_per_s": round(train_rate, 2),
            "loader_over_train": {str(w): round(r / train_rate, 1) for w, r in rates.items()},
        }
        results.append(row)
        print(json.dumps(row))
    print()
    head = f"{'recipe':<34}{'images':>7}{'load s':>8}  " + "".join(f"{f'{w} workers/s':>13}" for w in args.workers)
    print(head + f"{'train/s':>10}{'ratio@0':>9}")
    for r in results:
        rates = "".join(f"{r['loader_samples_per_s'][str(w)]:>13}" for w in args.workers)
        print(
            f"{r['recipe']:<34}{r['images']:>7}{r['load_seconds']:>8}  {rates}{r['train_samples_per_s']:>10}"
            f"{r['loader_over_train'][str(args.workers[0])]:>9}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}", "results": results}, indent=2)
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
