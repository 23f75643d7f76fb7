"""``eim data shapes --out DIR``: write the shapes world (:mod:`eim_harness.shapes`) in the real formats.

    eim data shapes --out data/shapes                 # 2000/200/200 images at 64 px, seed 0
    eim data shapes --out /tmp/s --train 50 --val 10 --test 10 --size 32 --seed 1
"""

import argparse
import time

from eim.cli_help import verb_help
from eim_harness.shapes.writer import write_shapes


def add_action(sub: argparse._SubParsersAction) -> None:
    """Register ``shapes`` on the ``eim data`` action parsers."""
    s = sub.add_parser("shapes", help="write the synthetic shapes world in the real formats", **verb_help(
        "Write the synthetic shapes world, images of coloured shapes with captions, questions and "
        "conversations about them, in the real formats under one folder: coco (Karpathy captions), "
        "scienceqa, llava (instructions), mme and mme_val, vqa, alpaca (text only). eim train, eim eval "
        "and eim data read it as they read the real data sets. The same seed writes byte-identical files.",
        "eim data shapes --out data/shapes                     # 2000/200/200 images at 64 px, seed 0",
        "eim data shapes --out /tmp/s --train 50 --val 10 --test 10 --size 32 --seed 1"))
    s.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    s.add_argument("--train", type=int, default=2000, help="train images (default 2000)")
    s.add_argument("--val", type=int, default=200, help="val images (default 200)")
    s.add_argument("--test", type=int, default=200,
                   help="test images (default 200); MME gets test/4 images per subtask")
    s.add_argument("--seed", type=int, default=0, help="same seed -> byte-identical files")
    s.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    s.add_argument("--web", type=int, default=0,
                   help="images of a web corpus in its own caption style (web/), for pretraining the "
                        "encoders in the transfer condition (default 0: none)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace a tree written before (only its own sub-folders)")
    s.set_defaults(func=_shapes)


def _shapes(args: argparse.Namespace) -> int:
    t = time.perf_counter()
    counts = write_shapes(args.out, train=args.train, val=args.val, test=args.test,
                          seed=args.seed, size=args.size, overwrite=args.overwrite, web=args.web)
    took = time.perf_counter() - t
    print(f"wrote {args.out} in {took:.1f}s: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0
