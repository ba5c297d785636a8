"""Lightning DataModule: training patches, a seeded validation split, full-image validation.

Every training sample is a pure function of (seed, epoch, index) (see
:class:`medseg.data.transforms.PatchDataset`); :class:`EpochIndexSampler` hands the dataset
``(epoch, index)`` keys and shards them over DDP ranks. A resumed run therefore sees exactly
the samples the uninterrupted run would have seen, in any number of worker processes.
"""

from __future__ import annotations

from typing import Iterator

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from medseg.config import Config
from medseg.data import AugmentConfig, CaseDataset, PatchDataset, VolumePatchDataset, create_dataset, full_image_sample
from medseg.errors import ConfigError, DataError


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochIndexSampler(Sampler):
    """Yield ``(epoch, i)`` for ``i`` in this rank's share of ``range(n)``.

    Lightning calls :meth:`set_epoch` before each epoch. Under DDP rank r of W takes
    ``i = r, r + W, ...``; the ranks together cover every index once per epoch.

    ``skip``: indices of this rank's share left out of the next iteration only: a run resumed
    from a checkpoint written mid-epoch (``train.max_steps`` reached, Ctrl-C) continues that
    epoch with the samples it had not yet seen. ``len()`` stays the full epoch's, since
    Lightning counts the batches already done itself.
    """

    def __init__(self, n: int, skip: int = 0) -> None:
        self.n = n
        self.epoch = 0
        self.skip = int(skip)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rank, world = _rank_world()
        skip, self.skip = self.skip, 0
        return ((self.epoch, i) for i in list(range(rank, self.n, world))[skip:])

    def __len__(self) -> int:
        rank, world = _rank_world()
        return len(range(rank, self.n, world))


class FullImages(Dataset):
    """Whole images of a :class:`CaseDataset` as dicts (image, mask, fov tensors and id)."""

    def __init__(self, cases: CaseDataset) -> None:
        self.cases = cases

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> dict:
        return full_image_sample(self.cases[i])


def split_train_val(
    ids: list[str], val_fraction: float, seed: int, groups: list[str] | None = None
) -> tuple[list[str], list[str]]:
    """Seeded split of training ids into (train, validation); at least one of each.

    Args:
        ids: case ids of the training split.
        val_fraction: fraction of the ids (of the patients, with ``groups``) for validation.
        seed: numpy seed.
        groups: the patient of each id (e.g. the volume of each slice); when given, whole
            patients go to validation, so no patient is in both. None: every id is its own.

    Raises:
        DataError: fewer than two training images (patients).
    """
    if groups is not None and len(set(groups)) != len(ids):
        if len(groups) != len(ids):
            raise DataError(f"{len(groups)} groups for {len(ids)} ids")
        distinct = list(dict.fromkeys(groups))
        g_train, g_val = split_train_val(distinct, val_fraction, seed)
        val_set = set(g_val)
        val = [i for i, g in zip(ids, groups) if g in val_set]
        train = [i for i, g in zip(ids, groups) if g not in val_set]
        return train, val
    if len(ids) < 2:
        raise DataError(f"need at least 2 training images to carve a validation split, found {len(ids)}")
    n_val = min(len(ids) - 1, max(1, int(round(val_fraction * len(ids)))))
    order = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(ids[i] for i in order[:n_val])
    train = [i for i in ids if i not in set(val)]
    return train, val


def load_split(cfg: Config, split: str) -> CaseDataset:
    """The dataset split named ``split`` of the recipe's dataset (files are checked on load)."""
    return create_dataset(cfg.data.dataset, root=cfg.data.root, split=split, **cfg.data.args)


class SegDataModule(L.LightningDataModule):
    """Training patches and validation images for a recipe.

    ``train_ids`` and ``val_ids`` are fixed at construction (so the run's config can record
    them); the test split is never touched here.
    """

    def __init__(self, cfg: Config, train_cases: CaseDataset | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        full = train_cases if train_cases is not None else load_split(cfg, "train")
        self.full_cases = full
        self.num_classes = int(full.num_classes)
        if cfg.data.val_split is not None:
            if cfg.data.val_split in ("train", "test"):
                raise ConfigError(f"data.val_split must be a validation split, not {cfg.data.val_split!r}")
            self.val_cases = load_split(cfg, cfg.data.val_split)
            self.train_cases = full
            self.train_ids, self.val_ids = list(full.ids), list(self.val_cases.ids)
            shared = sorted(set(full.groups) & set(self.val_cases.groups))
            if shared:
                raise DataError(
                    f"patients in both the train and {cfg.data.val_split!r} splits: {', '.join(shared[:10])}"
                )
        else:
            self.train_ids, self.val_ids = split_train_val(
                list(full.ids), cfg.data.val_fraction, cfg.seed, groups=full.groups
            )
            self.train_cases = full.subset(self.train_ids)
            self.val_cases = full.subset(self.val_ids)
        self.augment = AugmentConfig.from_dict(cfg.data.augment)
        self.patches = self.patch_dataset()

    @property
    def spatial_dims(self) -> int:
        """2 for images and slices, 3 for volume cases (``spatial_dims: 3`` datasets)."""
        return int(self.train_cases[0].spatial_dims)

    def patch_dataset(
        self, augment: dict | None = None, patch_size: int | None = None, samples_per_epoch: int | None = None
    ) -> PatchDataset:
        """Training patches with the recipe's settings, or the given overrides (a stage's):
        :class:`PatchDataset` for images, :class:`VolumePatchDataset` (3-D) for volume cases."""
        kind = VolumePatchDataset if self.spatial_dims == 3 else PatchDataset
        return kind(
            self.train_cases,
            patch_size=patch_size or self.cfg.data.patch_size,
            samples_per_epoch=samples_per_epoch or self.cfg.data.samples_per_epoch,
            augment=AugmentConfig.from_dict(self.cfg.data.augment if augment is None else augment),
            seed=self.cfg.seed,
            foreground_prob=self.cfg.data.foreground_prob,
        )

    @property
    def in_channels(self) -> int:
        """Channels of the training images (C of (C, H, W) or (C, D, H, W))."""
        return int(self.train_cases[0].image.shape[0])

    #: Training batches of the current epoch already done by the checkpoint a run resumes from
    #: (set by :meth:`SegmentationModule.on_load_checkpoint`, used once).
    resume_batches_done: int = 0

    def train_dataloader(self) -> DataLoader:
        workers = self.cfg.data.num_workers
        skip, self.resume_batches_done = self.resume_batches_done * self.cfg.train.batch_size, 0
        return DataLoader(
            self.patches,
            batch_size=self.cfg.train.batch_size,
            sampler=EpochIndexSampler(len(self.patches), skip=skip),
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,
        )

    def val_dataloader(self) -> DataLoader:
        # Every rank validates every image (a handful, full size): metrics need no de-duplication.
        return DataLoader(FullImages(self.val_cases), batch_size=1, num_workers=0)
