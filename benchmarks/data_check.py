"""Time `eim data check` (every image decoded, eim.data.images) on COCO-sized JPEGs, on the CPU.

    .venv/bin/python benchmarks/data_check.py [--images 1000] [--workers 1 2 0] [--dir /tmp/eim-check]

Writes ``--images`` textured 640×480 JPEGs (quality 90, ~165 KB each: the size of a COCO image)
in the Karpathy layout once (kept in ``--dir`` for re-runs), then times, on the same files:

- ``header``: what ``eim train`` / ``eim eval`` do by default (open every header);
- ``decode``: what ``eim data check`` and ``--skip-bad`` do, with each ``--workers`` count
  (0 = one thread per CPU, the default of the command).

Prints seconds per 1,000 images. Run twice to measure with the files in the page cache.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from eim.data import load_dataset
from eim.data import images as images_mod


def write_world(root, n, seed=0):
    root = Path(root)
    path = root / "dataset_coco.json"
    if path.exists() and len(json.loads(path.read_text())["images"]) == n:
        return path
    rng = np.random.default_rng(seed)
    (root / "val2014").mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n):
        base = Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).resize((640, 480), Image.BICUBIC)
        arr = np.clip(np.asarray(base).astype(np.int16) + rng.integers(-25, 25, (480, 640, 3)), 0, 255)
        name = f"COCO_val2014_{i:012d}.jpg"
        Image.fromarray(arr.astype(np.uint8)).save(root / "val2014" / name, quality=90)
        recs.append({"filepath": "val2014", "filename": name, "imgid": i, "cocoid": i, "split": "test",
                     "sentences": [{"raw": "a picture.", "tokens": ["a", "picture"], "sentid": i}]})
    path.write_text(json.dumps({"images": recs, "dataset": "coco"}))
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 0])
    ap.add_argument("--dir", default="/tmp/eim-data-check")
    args = ap.parse_args()
    path = write_world(args.dir, args.images)
    mb = sum(f.stat().st_size for f in (Path(args.dir) / "val2014").iterdir()) / 2**20
    print(f"{args.images} JPEGs, {mb:.0f} MB, {os.cpu_count()} CPUs")
    t = time.perf_counter()
    ds = load_dataset(path, split="test", mode="eval")
    header = time.perf_counter() - t
    print(f"header check: {1000 * header / args.images:.3f} s per 1,000 images ({len(ds)} images)")
    real = images_mod.ImageChecker.decode_all
    for w in args.workers:
        images_mod.ImageChecker.decode_all = lambda self, workers=None, w=w: real(self, w or None)
        t = time.perf_counter()
        ds = load_dataset(path, split="test", mode="eval", check_images="decode")
        took = time.perf_counter() - t
        label = f"{w} thread{'s' if w != 1 else ''}" if w else f"one thread per CPU ({min(32, os.cpu_count())})"
        print(f"decode check, {label}: {1000 * took / args.images:.2f} s per 1,000 images "
              f"({len(ds.skipped)} bad); 100k images: {100 * took / args.images * 1000 / 60:.1f} min")
    images_mod.ImageChecker.decode_all = real


if __name__ == "__main__":
    main()
