"""Which samples a training step sees (docs/design.md §9): deterministic from the step's position,
the same global batch whatever the process count, so resumed and multi-process runs match one
uninterrupted process exactly.
"""

import math

import torch

from eim.distributed import shard_range
from eim.model.splice import IGNORE


class EpochBatches(torch.utils.data.Sampler):
    """This rank's share of global index batches over many epochs, each epoch an order of the
    indices seeded by (seed, epoch): a random permutation, or with ``lengths`` LLaVA's modality-length
    grouping (:func:`modality_length_order`).

    Global micro-batch i is ``order[i·G : (i+1)·G]`` with ``G = batch_size × world``: the same
    samples whatever the process count. Rank r takes its contiguous share (sizes differ by at most
    one in an epoch's short last batch); a rank whose share is empty gets one padding index
    ``n + j`` (a copy of sample j that no loss counts, see :class:`Rows`). Deterministic from
    its position, so a resumed run sees exactly the batches it would have. ``start`` = number of
    micro-batches already consumed.
    """

    def __init__(self, n, batch_size, seed, total, start=0, world=1, rank=0, lengths=None):
        self.n, self.bs, self.seed, self.total, self.start = n, batch_size, seed, total, start
        self.world, self.rank, self.lengths = world, rank, lengths
        self.per_epoch = math.ceil(n / (batch_size * world))
        self._order = (None, None)  # (epoch, its order)

    def __len__(self):
        return self.total - self.start

    def order(self, epoch):
        """The epoch's order of the indices (computed once per epoch)."""
        if self._order[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            if self.lengths is None:
                order = torch.randperm(self.n, generator=g)
            else:
                order = torch.tensor(modality_length_order(self.lengths, self.bs * self.world, g), dtype=torch.long)
            self._order = (epoch, order)
        return self._order[1]

    def __iter__(self):
        G = self.bs * self.world
        for i in range(self.start, self.total):
            epoch, j = divmod(i, self.per_epoch)
            batch = self.order(epoch)[j * G : (j + 1) * G]
            off, cnt = shard_range(len(batch), self.world, self.rank)
            yield batch[off : off + cnt].tolist() if cnt else [self.n + int(batch[0])]


def modality_length_order(lengths, G, g):
    """LLaVA's ``group_by_modality_length`` order of one epoch (its ``LengthGroupedSampler``), with the
    global batch ``G`` as the mega-batch, so the batches are the same for every process count.

    ``lengths``: per sample, > 0 with an image and < 0 text only (LLaVA's convention). Each modality
    is permuted (generator ``g``) and cut into global batches, each sorted longest first; the
    batches of both modalities, but the last of each, are shuffled together, and the two last ones,
    joined and in index order, close the epoch. One modality alone: its sorted batches in order.
    """
    def grouped(idx):
        idx = [idx[k] for k in torch.randperm(len(idx), generator=g).tolist()]
        return [sorted(idx[k : k + G], key=lambda i: -abs(lengths[i])) for k in range(0, len(idx), G)]

    image = [i for i, n in enumerate(lengths) if n > 0]
    text = [i for i, n in enumerate(lengths) if n <= 0]
    if not image or not text:
        return [i for batch in grouped(image or text) for i in batch]
    a, b = grouped(image), grouped(text)
    batches = a[:-1] + b[:-1]
    batches = [batches[k] for k in torch.randperm(len(batches), generator=g).tolist()] + [sorted(a[-1] + b[-1])]
    return [i for batch in batches for i in batch]


def modality_lengths(dataset):
    """LLaVA's ``modality_lengths``: each sample's word count (every turn's question and answer), plus
    one, positive with an image and negative text only."""
    out = []
    for i in range(len(dataset)):
        s = dataset[i]
        words = 1 + sum(len(q.split()) + len(a.split()) for q, a in s.conversation)
        out.append(words if s.image is not None else -words)
    return out


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
