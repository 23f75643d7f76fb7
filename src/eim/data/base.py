"""What every dataset shares: validation at construction, skip bookkeeping, map-style access.

docs/design.md §5 formats are read by one class each (``eim.data.formats``); all of them subclass
:class:`RecordDataset`, which gives

- ``len(ds)`` / ``ds[i] -> Sample`` with contiguous indices 0..N-1 *after* bad records are
  dropped (row i of every feature bank is dataset index i, so there must be no holes);
- ``.files`` (the index files that define the dataset, for fingerprinting), ``.format``,
  ``.split`` and ``.skipped`` (a list of ``(record id, reason)``);
- one policy for bad records: without ``skip_bad`` the first one raises :class:`DataError`
  naming file, record and remedy; with it the record is dropped and one summary line is logged;
- images checked at the depth the caller asks (``check_images``: ``header`` or ``decode``,
  :mod:`eim.data.images`); ``skip_bad`` always decodes, so it skips every record
  ``eim data check`` flags.

The classes are torch ``Dataset``-compatible (``__len__``/``__getitem__``) without importing
torch, so ``eim data ...`` commands stay fast.
"""

import json
import logging
import os

from eim.data.images import ImageChecker
from eim.errors import DataError

log = logging.getLogger("eim.data")

# The remedy every bad-record error ends with.
REMEDY = "fix or remove the record, or pass --skip-bad to skip such records"
MODES = ("train", "eval")


def check_index(i, n, what):
    """``i`` as an index into ``n`` samples (negative counts from the end, as for a list), or an
    IndexError naming ``what`` holds them."""
    j = i + n if i < 0 else i
    if not 0 <= j < n:
        raise IndexError(f"index {i} out of range for {what} of {n} samples")
    return j


class BadRecord(Exception):
    """Raised inside a loader's per-record validation; the message is the reason."""


class RecordDataset:
    """Base class: subclasses fill ``self._rows`` and implement ``_sample(i, row)``."""

    format = None  # "coco" | "scienceqa" | "llava" | "alpaca" | "mme"

    def __init__(self, split, mode, skip_bad):
        if mode not in MODES:
            raise DataError(f"unknown mode {mode!r}", remedy=f"use one of {', '.join(MODES)}")
        self.split, self.mode, self.skip_bad = split, mode, skip_bad
        self.files = []  # index files defining the dataset (not the images: too many to hash)
        self.skipped = []  # (record id, reason) of every dropped record, in file order
        self._rows = []  # compact per-sample rows; Samples are built on access to save memory

    def __len__(self):
        return len(self._rows)

    def __getitem__(self, i):
        i = check_index(i, len(self._rows), "a dataset")
        return self._sample(i, self._rows[i])

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self):
        return (
            f"{type(self).__name__}(format={self.format!r}, split={self.split!r}, "
            f"mode={self.mode!r}, samples={len(self)}, skipped={len(self.skipped)})"
        )

    def _sample(self, i, row):
        raise NotImplementedError

    def _checker(self, check_images):
        """The image checker for this dataset: ``skip_bad`` decodes (it must skip every record
        ``eim data check`` flags), otherwise the depth asked for (``header`` by default)."""
        on = check_images not in (False, None)
        return ImageChecker("decode" if self.skip_bad and on else check_images)

    def _reject(self, record, reason, file):
        """One bad record: raise (default) or remember it (skip_bad)."""
        if not self.skip_bad:
            raise DataError(reason, file=file, record=record, remedy=REMEDY)
        self.skipped.append((str(record), reason))

    def _finish(self, checker=None):
        """End of construction: decode the images (``check_images="decode"``), then log the
        skipped records once (never per record)."""
        if checker is not None:
            self._drop_undecodable(checker)
        if not self.skipped:
            return
        shown = ", ".join(f"{rid} ({why})" for rid, why in self.skipped[:20])
        more = f", ... and {len(self.skipped) - 20} more" if len(self.skipped) > 20 else ""
        log.warning("skipped %s: %s%s", plural(len(self.skipped), "bad record"), shown, more)

    def _drop_undecodable(self, checker):
        """Reject the records whose image passed the header check but does not decode, and drop
        their rows (indices stay contiguous). Without ``skip_bad`` the first one, in file order,
        raises."""
        bad = checker.decode_all()
        if not bad:
            return
        rejected = set()
        for path, owners in checker.owners.items():
            if path in bad:
                for rid, file in owners:
                    if (rid, file) not in rejected:
                        rejected.add((rid, file))
                        self._reject(rid, bad[path], file)
        self._rows = [row for i, row in enumerate(self._rows) if self._sample(i, row).image not in bad]


def plural(n, noun):
    """``1 bad record``, ``2 bad records``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def read_data_json(path, duplicates=None):
    """Parse a dataset's JSON file: errors are :class:`DataError` naming the file and the line/column
    where parsing failed, with a remedy (:func:`eim.io.read_json` reads eim's own files).

    If `duplicates` is a list, keys repeated in the *top-level* object are appended to it
    (``json`` silently keeps the last copy, which would hide a duplicated ScienceQA qid).
    """
    hook = None
    if duplicates is not None:
        last = []

        def hook(pairs):  # called innermost-first, so the final call is the top-level object
            seen, dups = set(), []
            for k, _ in pairs:
                if k in seen:
                    dups.append(k)
                seen.add(k)
            last[:] = dups
            return dict(pairs)

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f, object_pairs_hook=hook)
    except FileNotFoundError:
        raise DataError("file not found", file=path, remedy="check the --data path") from None
    except json.JSONDecodeError as e:
        raise DataError(
            f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}",
            file=path,
            remedy="fix the JSON syntax (a truncated download or copy often causes this)",
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read file ({e})", file=path, remedy="check the file") from None
    if duplicates is not None:
        duplicates.extend(last)
    return data


def require(record, *keys):
    """Raise BadRecord unless `record` is a dict holding every key."""
    if not isinstance(record, dict):
        raise BadRecord(f"expected a JSON object, found {type(record).__name__}")
    for k in keys:
        if k not in record:
            raise BadRecord(f"lacks the field {k!r}")


def text_field(record, key, what=None):
    """The stripped string at `key`; BadRecord when it is missing, not a string, or empty."""
    value = record.get(key)
    if not isinstance(value, str):
        raise BadRecord(f"{what or key} is not a string ({type(value).__name__})")
    value = value.strip()
    if not value:
        raise BadRecord(f"empty {what or key}")
    return value


def abspath(*parts):
    return os.path.abspath(os.path.join(*parts))
