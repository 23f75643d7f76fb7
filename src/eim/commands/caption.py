"""``eim caption CHECKPOINT IMAGE... [--beams N] [--max-new-tokens N]``: print a caption per image.

CHECKPOINT is a run folder (its last finished stage), a stage folder or a ``model.safetensors``.
"""

from pathlib import Path

from eim.api import load_for_inference
from eim.cli_help import verb_help
from eim.data.sample import Sample
from eim.errors import DataError
from eim.evaluation.predictions import generate_predictions


def add_parser(sub):
    p = sub.add_parser("caption", help="caption images with a trained checkpoint", **verb_help(
        "Print a caption for each image (its path, a tab, the caption) with a trained checkpoint. "
        "Beam width and length default to the recipe's generation section.",
        "eim caption runs/clipcap data/coco/images/test/shapes_test_000000.png",
        "eim caption runs/clipcap data/coco/images/test/shapes_test_000001.png --beams 1 --max-new-tokens 20"))
    p.add_argument("checkpoint", help="run folder (its last finished stage), stage folder or model.safetensors")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--instruction", default="", help="text after the image tokens (default: none)")
    p.add_argument("--beams", type=int, default=None, help="beam width (default: the recipe's; 1 = greedy)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="longest caption in tokens (default: the recipe's generation.max_new_tokens)")
    p.set_defaults(func=run)


def run(args):
    for p in args.images:
        if not Path(p).is_file():
            raise DataError("image file not found", file=p, remedy="check the path")
    model, tok, proc, recipe = load_for_inference(args.checkpoint)
    g = recipe.generation
    samples = [Sample(index=i, image=str(Path(p).resolve()), instruction=args.instruction, response="")
               for i, p in enumerate(args.images)]
    caps = generate_predictions(model, tok, proc, recipe, samples, batch_size=g.batch_size,
                                num_beams=args.beams or g.num_beams, max_new_tokens=args.max_new_tokens or g.max_new_tokens,
                                stop_text=g.stop_text, quiet=True)
    for p, c in zip(args.images, caps):
        print(f"{p}\t{c}")
    return 0
