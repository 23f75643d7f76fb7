"""``eim caption CHECKPOINT IMAGE... [--beams N] [--max-new-tokens N]``: print a caption per image.

CHECKPOINT is a run folder (its last finished stage), a stage folder or a ``model.safetensors``.
"""

from pathlib import Path

from eim.api import load_for_inference
from eim.data.sample import Sample
from eim.errors import DataError
from eim.evaluation.predictions import generate_predictions


def add_parser(sub):
    p = sub.add_parser("caption", help="caption images with a trained checkpoint", description=__doc__)
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+")
    p.add_argument("--instruction", default="", help="text after the image tokens (default: none)")
    p.add_argument("--beams", type=int, default=None, help="beam width (default: the recipe's; 1 = greedy)")
    p.add_argument("--max-new-tokens", type=int, default=None)
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
