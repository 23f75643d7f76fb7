"""Several datasets trained as one: LaVIN's mixture of text and image instructions (docs/design.md §5).

LaVIN trains its chatbot on Alpaca-52k (text only) and LLaVA-158k (images) at once, and LLaVA-1.5
mixes short-answer VQA into its conversations. :class:`Mixture` is that union as one map-style
dataset: ``eim train lavin --data llava_instruct_150k.json --data alpaca_data.json`` gives the
stage both files (a ``--data`` name given twice is a mixture of its paths).

- **Interleaved, not appended.** Sample ``i`` is taken from the parts in proportion to their sizes
  (each part's ``j``-th sample sits at its fractional position ``(j + 0.5) / len(part)``), so any
  prefix of the mixture (``train_samples``, a ``Head``) holds every part in its share.
- **Bank rows.** ``mixture[i].index == i``, so row ``i`` of every feature bank is sample ``i``
  (the parts' own indices are renumbered); ``.files`` is every part's index files, so the bank
  fingerprint changes when any part does.
- Text-only rows (Alpaca's) carry no image: loss_IE leaves them out, LaVIN routes them through its
  "no image" modality token, as for any text-only sample.

    from eim.data import load_dataset
    from eim.data.mixture import Mixture
    ds = Mixture([load_dataset("llava/instruct.json"), load_dataset("alpaca/alpaca_data.json")])
"""

from dataclasses import replace

from eim.data.base import check_index
from eim.errors import DataError


class Mixture:
    """The samples of ``parts`` interleaved in proportion to their sizes (see the module docstring)."""

    format = "mixture"

    def __init__(self, parts):
        self.parts = list(parts)
        if not self.parts:
            raise DataError("a mixture needs at least one dataset", remedy="pass --data PATH")
        modes = {getattr(p, "mode", None) for p in self.parts}
        if len(modes) > 1:
            raise DataError(f"a mixture's datasets are loaded in different modes ({', '.join(map(str, sorted(modes)))})",
                            remedy="load every part for training (mode='train') or every part for evaluation")
        self.mode = modes.pop()
        splits = {getattr(p, "split", None) for p in self.parts}
        self.split = splits.pop() if len(splits) == 1 else "+".join(str(getattr(p, "split", None)) for p in self.parts)
        self.formats = [getattr(p, "format", None) for p in self.parts]
        self.files = [f for p in self.parts for f in getattr(p, "files", [])]
        self.skipped = [s for p in self.parts for s in getattr(p, "skipped", [])]
        order = sorted(((j + 0.5) / len(p), k, j) for k, p in enumerate(self.parts) for j in range(len(p)))
        self._order = [(k, j) for _, k, j in order]

    def __len__(self):
        return len(self._order)

    def __getitem__(self, i):
        i = check_index(i, len(self._order), "a mixture")
        k, j = self._order[i]
        return replace(self.parts[k][j], index=i)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self):
        parts = ", ".join(f"{f}: {len(p)}" for f, p in zip(self.formats, self.parts))
        return f"Mixture({parts}; samples={len(self)})"
