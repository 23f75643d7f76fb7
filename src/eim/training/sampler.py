"""Which samples a training step sees (docs/design.md §9): deterministic from the step's position,
the same global batch whatever the process count, so resumed and multi-process runs match one
uninterrupted process exactly.
"""

import math

import torch

from eim.distributed import shard_range
from eim.model.splice import IGNORE


class EpochBatches(torch.utils.data.Sampler):
    """This rank's share of global index batches over many epochs, each epoch a permutation
    seeded by (seed, epoch).

    Global micro-batch i is ``perm[i·G : (i+1)·G]`` with ``G = batch_size × world``: the same
    samples whatever the process count. Rank r takes its contiguous share (sizes differ by at most
    one in an epoch's short last batch); a rank whose share is empty gets one padding index
    ``n + j`` (a copy of sample j that no loss counts, see :class:`Rows`). Deterministic from
    its position, so a resumed run sees exactly the batches it would have. ``start`` = number of
    micro-batches already consumed.
    """

    def __init__(self, n, batch_size, seed, total, start=0, world=1, rank=0):
        self.n, self.bs, self.seed, self.total, self.start = n, batch_size, seed, total, start
        self.world, self.rank = world, rank
        self.per_epoch = math.ceil(n / (batch_size * world))

    def __len__(self):
        return self.total - self.start

    def __iter__(self):
        G = self.bs * self.world
        for i in range(self.start, self.total):
            epoch, j = divmod(i, self.per_epoch)
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            batch = torch.randperm(self.n, generator=g)[j * G : (j + 1) * G]
            off, cnt = shard_range(len(batch), self.world, self.rank)
            yield batch[off : off + cnt].tolist() if cnt else [self.n + int(batch[0])]


class Rows(torch.utils.data.Dataset):
    """``dataset`` with padding rows: item i is ``(dataset[i mod n], i < n)``."""

    def __init__(self, dataset):
        self.dataset, self.n = dataset, len(dataset)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.dataset[i % self.n], i < self.n


class ValidCollate:
    """Collate ``(sample, real)`` pairs; ``batch["valid"]`` marks real rows, padding rows get no
    target token (and the InfoNCE losses skip them)."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, items):
        batch = self.collate([s for s, _ in items])
        batch["valid"] = torch.tensor([v for _, v in items], dtype=torch.bool)
        if not batch["valid"].all():
            batch["labels"][~batch["valid"]] = IGNORE
        return batch
