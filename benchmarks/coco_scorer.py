"""Time the COCO caption scorer (docs/design.md §6) on a Karpathy-test-sized synthetic set, on the CPU.

    .venv/bin/python benchmarks/coco_scorer.py [--images 5000] [--refs 5] [--seed 0]

Captions come from a small grammar ("a young man riding a red bike down a busy street."), so
n-gram statistics look like COCO's: shared vocabulary, varied length, partial overlaps between a
prediction and its references. Prints seconds per stage and the total; METEOR's Java process
starts before tokenization, so its row is the time left to wait after the Python metrics.
"""

import argparse
import random
import time

from eim.evaluation.coco import METRICS, score_captions

DETERMINERS = ["a", "a", "the", "one", "two", "some"]
ADJECTIVES = ["", "", "young", "old", "red", "white", "black", "brown", "little", "happy",
              "wooden", "busy", "green", "tall"]
NOUNS = ["man", "woman", "dog", "cat", "boy", "girl", "horse", "bus", "train", "giraffe",
         "plate of food", "group of people", "bird", "skateboarder", "elephant", "pizza"]
VERBS = ["riding", "sitting on", "standing next to", "holding", "looking at", "walking along",
         "eating", "playing with", "lying on", "parked near", "flying over", "carrying"]
OBJECTS = ["bike", "table", "street", "field", "beach", "bench", "frisbee", "umbrella", "kite",
           "couch", "sidewalk", "river", "tree", "surfboard", "building", "fence"]
PLACES = ["", "", "", "in a park", "on a sunny day", "near the water", "in the city",
          "at night", "in a kitchen", "on a snowy hill"]


def noun_phrase(rng, nouns):
    words = [rng.choice(DETERMINERS), rng.choice(ADJECTIVES), rng.choice(nouns)]
    return " ".join(w for w in words if w)


def caption(rng, scene):
    """One sentence about ``scene`` (subject, verb, object); words vary, the scene mostly not."""
    subject, verb, obj = (rng.choice(pool) if rng.random() < 0.2 else word  # a synonym-ish swap
                          for word, pool in zip(scene, (NOUNS, VERBS, OBJECTS)))
    parts = [noun_phrase(rng, [subject]), verb, noun_phrase(rng, [obj]), rng.choice(PLACES)]
    text = " ".join(p for p in parts if p)
    text = text[0].upper() + text[1:]
    return text + rng.choice([".", ".", "", " ."])


def synthetic(n_images, n_refs, seed):
    rng = random.Random(seed)
    gts, res = {}, {}
    for image_id in range(n_images):
        scene = (rng.choice(NOUNS), rng.choice(VERBS), rng.choice(OBJECTS))
        gts[image_id] = [caption(rng, scene) for _ in range(n_refs)]
        res[image_id] = caption(rng, scene)
    return gts, res


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--refs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    gts, res = synthetic(args.images, args.refs, args.seed)
    timings = {}
    start = time.perf_counter()
    scores = score_captions(gts, res, timings=timings)
    total = time.perf_counter() - start

    print(f"COCO scorer, {args.images} images x {args.refs} references (CPU)")
    print(f"  {'stage':<10} {'seconds':>8}  {'score':>7}")
    for stage, seconds in timings.items():
        names = [m for m in METRICS if m.startswith(stage)] or [stage]
        shown = ", ".join(f"{100 * scores[m]:.2f}" for m in names if scores.get(m) is not None)
        print(f"  {stage:<10} {seconds:8.2f}  {shown}")
    print(f"  {'total':<10} {total:8.2f}")
    for metric, reason in scores["unavailable"].items():
        print(f"  {metric} not computed: {reason}")


if __name__ == "__main__":
    main()
