"""The interface every dataset offers the trainer, the banks and the evaluations (docs/design.md §5).

The loaders of :mod:`eim.data.formats` (through :class:`eim.data.base.RecordDataset`) and
:class:`eim.data.mixture.Mixture` implement it; so can a user's own class, without subclassing.
"""

from typing import Optional, Protocol, runtime_checkable

from eim.data.sample import Sample


@runtime_checkable
class Dataset(Protocol):
    """A map-style dataset of :class:`Sample` with indices 0..N-1 and no holes (row i of every
    feature bank is sample i), and what identifies its rows (the bank and run fingerprints read
    ``format``, ``split`` and the digests of ``files``)."""

    format: Optional[str]  # "coco" | "scienceqa" | "llava" | "alpaca" | "mme" | "mixture" | a user's own
    split: Optional[str]
    files: list  # the index files that define the rows (not the images: too many to hash)

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Sample: ...
