"""``eim data``: generate the shapes world, summarise or validate a dataset.

    eim data shapes --out data/shapes                 # 2000/200/200 images at 64 px, seed 0
    eim data shapes --out /tmp/s --train 50 --val 10 --test 10 --size 32 --seed 1
    eim data stats data/shapes                        # every dataset in the folder
    eim data stats data/shapes/coco --json
    eim data check --data data/shapes/scienceqa --split test

``check`` decodes every image (on all CPUs, with a progress bar) and lists every bad record with
its reason, whether or not --skip-bad is given; it exits 1 when it found one, 0 when the data is
clean. ``--skip-bad`` in ``eim train`` / ``eim eval`` skips exactly the records it lists.
"""

import argparse
import importlib
import json

from eim.commands import plugin_table
from eim.data.base import plural
from eim.data.formats import FORMATS
from eim.data.loader import add_data_args, dataset_from_args
from eim.data.stats import dataset_stats, format_stats


def add_parser(subparsers):
    p = subparsers.add_parser("data", help="generate, inspect and validate datasets", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    for name, (module, _) in plugin_table("DATA_ACTIONS").items():  # eim data shapes (the harness)
        importlib.import_module(module).add_action(sub)

    st = sub.add_parser("stats", help="images, captions and caption diversity of a dataset")
    st.add_argument("path", help="a dataset path, or a folder of datasets (eim data shapes)")
    st.add_argument("--data-format", choices=sorted(FORMATS), default=None,
                    help="format of path (default: detected)")
    st.add_argument("--max-images", type=int, default=500,
                    help="images per split used for the BLEU diversity numbers")
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    st.set_defaults(func=_stats)

    c = sub.add_parser("check", help="validate a dataset (decoding every image) and list every bad "
                       "record; exit 1 when there is one")
    add_data_args(c)
    c.add_argument("--mode", choices=("train", "eval"), default="train")
    c.set_defaults(func=_check)
    return p


def _stats(args):
    stats = dataset_stats(args.path, args.data_format, args.max_images)
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    return 0


def _check(args):
    """Decode every image and list every bad record; exit 1 when there is one."""
    ds = dataset_from_args(args, mode=args.mode, skip_bad=True, check_images="decode")
    n = len(ds.skipped)
    print(f"{ds.format} {ds.split}: {plural(len(ds), 'sample')}, {plural(n, 'bad record')}"
          + (" (pass --skip-bad to train or evaluate without them)" if n else ""))
    for rid, why in ds.skipped:
        print(f"  {rid}: {why}")
    return 1 if n else 0
