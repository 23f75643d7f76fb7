"""One entry point for every dataset: ``load_dataset(path)`` and the shared CLI flags.

Every command that reads data calls :func:`add_data_args` on its parser and
:func:`dataset_from_args` after parsing, so ``--data/--data-format/--image-root/--skip-bad/
--split`` mean the same thing everywhere. The format is detected from what the path holds
(docs/design.md §5):

==========================================================  =========
path                                                        format
==========================================================  =========
``dataset_coco.json``, or a folder containing it            coco
``problems.json`` / ``pid_splits.json``, or their folder    scienceqa
JSON or JSON Lines records with ``conversations``          llava
JSON or JSON Lines records with ``messages``                messages (TRL, LLaMA-Factory)
JSON or JSON Lines records with ``instruction``/``output``  alpaca
a folder of subtask folders holding ``<image>.txt`` files   mme
a folder holding exactly one JSON file of the above         (that file's)
==========================================================  =========
"""

import argparse
import json
import os
from typing import Optional, Union

from eim.config import DATA_NAME, MAIN
from eim.data.base import RecordDataset
from eim.data.dataset import Dataset
from eim.data.formats import FORMATS
from eim.data.formats.conversation import is_jsonl
from eim.data.formats.mme import is_mme_root
from eim.data.mixture import Mixture
from eim.errors import DataError


_HINT = "pass --data-format with one of: " + ", ".join(FORMATS)


def _record_kind(has):
    """The conversation or instruction format whose keys ``has(key)`` finds, tried in this order
    (None: none of them): the keys of one record, or the quoted keys in the text of the first ones."""
    if has("conversations"):
        return "llava"
    if has("messages"):
        return "messages"
    if has("instruction") and has("output"):
        return "alpaca"
    return None


def _first_record_kind(record):
    """:func:`_record_kind` of one parsed record (None: not a JSON object)."""
    return _record_kind(record.__contains__) if isinstance(record, dict) else None


def _json_list_kind(path):
    """'llava' / 'messages' / 'alpaca' / None from the first records of a JSON list or a JSON Lines
    file (reads 64 KiB first)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        head = f.read(65536)
    if is_jsonl(path) or head.lstrip().startswith("{"):  # JSON Lines: the first record decides
        try:
            return _first_record_kind(json.loads(head.lstrip().split("\n", 1)[0]))
        except json.JSONDecodeError:
            return None
    if not head.lstrip().startswith("["):
        return None
    kind = _record_kind(lambda key: f'"{key}"' in head)
    if kind:
        return kind
    try:  # records larger than the peek: parse the whole thing once
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return _first_record_kind(data[0]) if isinstance(data, list) and data else None


def _detect_file(path):
    name = os.path.basename(path)
    if name == "dataset_coco.json" or name.startswith("dataset_flickr"):
        return "coco"
    if name in ("problems.json", "pid_splits.json"):
        return "scienceqa"
    if name.endswith((".json", ".jsonl")):
        kind = _json_list_kind(path)
        if kind:
            return kind
        with open(path, encoding="utf-8", errors="replace") as f:
            if '"images"' in f.read(65536):  # a renamed Karpathy file
                return "coco"
    return None


def _detect_dir(path):
    names = set(os.listdir(path))
    if "dataset_coco.json" in names:
        return "coco"
    if "problems.json" in names:
        return "scienceqa"
    jsons = sorted(n for n in names if n.endswith((".json", ".jsonl")))
    if len(jsons) == 1:
        return _detect_file(os.path.join(path, jsons[0]))
    if is_mme_root(path):
        return "mme"
    return None


def detect_format(path: Union[str, os.PathLike]) -> str:
    """The format name of what `path` holds; DataError naming the path when it is unclear."""
    if not os.path.exists(path):
        raise DataError("no such file or folder", file=path, remedy="check the --data path")
    kind = _detect_file(path) if os.path.isfile(path) else _detect_dir(path)
    if kind:
        return kind
    found = []
    if os.path.isdir(path):  # e.g. the root written by `eim data shapes`
        for n in sorted(os.listdir(path)):
            sub = os.path.join(path, n)
            if os.path.isdir(sub) and _detect_dir(sub):
                found.append(f"{n}/ ({_detect_dir(sub)})")
    if found:
        raise DataError(f"this folder holds several datasets: {', '.join(found)}", file=path,
                        remedy="point --data at one of them")
    raise DataError(
        "cannot tell the data format (expected dataset_coco.json, a ScienceQA folder with "
        "problems.json, LLaVA, messages or Alpaca records (JSON or JSON Lines), or an MME folder)",
        file=path, remedy=_HINT)


def dataset_path(path, data_format):
    """The path a loader takes: a folder holding one JSON (Lines) file becomes that file for the
    record formats."""
    if data_format in ("llava", "messages", "alpaca") and os.path.isdir(path):
        jsons = sorted(n for n in os.listdir(path) if n.endswith((".json", ".jsonl")))
        if len(jsons) != 1:
            raise DataError(f"expected one JSON file in the folder, found {len(jsons)}",
                            file=path, remedy="point --data at the JSON file itself")
        return os.path.join(path, jsons[0])
    return path


def load_dataset(path: Union[str, os.PathLike], data_format: Optional[str] = None, split: str = "train",
                 mode: str = "train", image_root: Optional[str] = None, skip_bad: bool = False,
                 check_images: Union[bool, str] = True) -> RecordDataset:
    """Open the dataset at `path` (format detected unless given) as a map-style dataset.

    split: train/val/test for COCO (restval joins train); a pid_splits.json key for ScienceQA;
        a label only for LLaVA, Alpaca and MME (the file or folder is the split).
    mode: "train" (COCO: one sample per caption) or "eval" (COCO: one per image, with
        meta["references"]); the other formats yield the same samples in both modes.
    image_root: where relative image paths resolve (default: next to the index file; for
        ScienceQA, its images/ folder). MME ignores it (images sit with their questions).
    skip_bad: drop invalid records (listed in .skipped) instead of raising DataError; images
        are then decoded, so every record ``eim data check`` flags is skipped.
    check_images: "header" (True, the default: open every image header at construction, a
        few hundred bytes each), "decode" (decode every image as training will, on all CPUs
        with a progress bar: what ``eim data check`` does), or False (no check; only for a
        dataset already checked). eim.data.images says what each costs.
    """
    path = os.fspath(path)
    if data_format is None:
        data_format = detect_format(path)
    elif data_format not in FORMATS:
        raise DataError(f"unknown data format {data_format!r}", remedy=_HINT)
    elif not os.path.exists(path):
        raise DataError("no such file or folder", file=path, remedy="check the --data path")
    cls = FORMATS[data_format]
    return cls(dataset_path(path, data_format), split=split, mode=mode, image_root=image_root,
               skip_bad=skip_bad, check_images=check_images)


def add_data_args(parser, required=True, split="train", named=False):
    """Add the data flags every command shares (--data, --data-format, --image-root, ...).

    ``named``: ``--data`` may be repeated as ``NAME=PATH``, one dataset per name a recipe's stages
    read (``stages.<k>.data``; :func:`datasets_from_args`)."""
    g = parser.add_argument_group("data")
    if named:
        g.add_argument("--data", required=required, metavar="[NAME=]PATH", action="append",
                       help="dataset file or folder (COCO Karpathy JSON, ScienceQA folder, LLaVA, messages or "
                       "Alpaca JSON / JSON Lines, MME folder); NAME=PATH (repeatable) gives the dataset of the stages whose "
                       "data is NAME, e.g. --data captions=D/coco --data instruct=D/llava/instruct.json; "
                       "a name (or plain PATH) given twice trains on the mixture of both files, e.g. "
                       "--data llava_instruct_150k.json --data alpaca_data.json (LaVIN's chatbot)")
    else:
        g.add_argument("--data", required=required, metavar="PATH",
                       help="dataset file or folder (COCO Karpathy JSON, ScienceQA folder, LLaVA, messages or "
                       "Alpaca JSON / JSON Lines, MME folder)")
    g.add_argument("--data-format", choices=sorted(FORMATS), default=None,
                   help="format of --data (default: detected from the path)")
    g.add_argument("--image-root", metavar="DIR", default=None,
                   help="folder relative image paths resolve against")
    g.add_argument("--skip-bad", action="store_true",
                   help="skip invalid records (and list them) instead of stopping; decodes every "
                   "image first, so it skips every record 'eim data check' flags")
    g.add_argument("--split", default=split,
                   help=f"dataset split (default {split}; COCO restval joins train)")
    return parser


def split_named(value):
    """``"captions=D/coco"`` -> ``("captions", "D/coco")``; a plain path (or one that exists as
    written, ``=`` and all) -> ``(None, path)``."""
    name, sep, path = value.partition("=")
    if sep and DATA_NAME.match(name) and not os.path.exists(value):
        return name, path
    return None, value


def datasets_from_args(args: argparse.Namespace, mode: str = "train", flag: str = "data",
                       split: Optional[str] = None) -> dict[str, Dataset]:
    """``{name: dataset}`` of a ``named`` ``--data`` (:func:`add_data_args`): a plain ``--data PATH``
    is :data:`eim.config.MAIN`, the dataset of stages that name none. A name given more than once
    (plain paths too) is the :class:`eim.data.mixture.Mixture` of its paths, in the order given
    (LaVIN's LLaVA + Alpaca). ``flag``: another repeatable ``[NAME=]PATH`` flag read the same way
    (``eim train --val-data``), with its own ``split``."""
    values = getattr(args, flag.replace("-", "_"), None)
    values = values if isinstance(values, list) else [values]
    pairs = [split_named(v) for v in values if v]
    if not pairs:
        if flag != "data":
            return {}
        raise DataError("no dataset given", remedy="pass --data PATH (or --data NAME=PATH per stage dataset)")
    paths = {}
    for name, path in pairs:
        paths.setdefault(name or MAIN, []).append(path)
    load = lambda path: load_dataset(path, data_format=args.data_format, split=split or args.split, mode=mode,  # noqa: E731
                                     image_root=args.image_root, skip_bad=args.skip_bad)
    return {n: load(ps[0]) if len(ps) == 1 else Mixture([load(x) for x in ps]) for n, ps in paths.items()}


def dataset_from_args(args, mode="train", split=None, skip_bad=None, check_images=True):
    """`load_dataset` from the flags of :func:`add_data_args` (`split` overrides --split,
    `skip_bad` overrides --skip-bad)."""
    if not getattr(args, "data", None):
        raise DataError("no dataset given", remedy="pass --data PATH")
    return load_dataset(args.data, data_format=args.data_format, split=split or args.split,
                        mode=mode, image_root=args.image_root,
                        skip_bad=args.skip_bad if skip_bad is None else skip_bad,
                        check_images=check_images)
