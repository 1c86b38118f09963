"""Data loaders: one DistributedSampler for 1..N workers, resumable mid-epoch."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from ..data.coco import collate


class ResumableSampler(Sampler):
    """A ``DistributedSampler`` that can start an epoch part-way (after ``skip`` samples).

    Used on resume so the run sees exactly the samples an uninterrupted run would.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int):
        self.inner = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank,
                                        shuffle=True, seed=seed, drop_last=False)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return iter(list(self.inner)[self.skip:])

    def __len__(self) -> int:
        return len(self.inner) - self.skip


def train_loader(dataset, batch_size: int, workers: int, rank: int, world_size: int, seed: int):
    sampler = ResumableSampler(dataset, world_size, rank, seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=collate, drop_last=True, persistent_workers=False,
                        worker_init_fn=_seed_worker)
    return loader, sampler


def eval_loader(dataset, batch_size: int, workers: int, rank: int, world_size: int):
    """Each rank takes every ``world_size``-th image; no padding, so no duplicates to merge."""
    indices = list(range(rank, len(dataset), world_size))
    subset = torch.utils.data.Subset(dataset, indices)
    return DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate)


def _seed_worker(worker_id: int) -> None:
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
