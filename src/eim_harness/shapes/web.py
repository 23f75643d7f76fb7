"""The "web" corpus of the shapes world: what the small CLIP and LLM are pretrained on in the
transfer condition (docs/evidence.md §2), as web-scale CLIP and GPT-2 are before COCO.

It differs from the downstream captions (:mod:`eim_harness.shapes.captions`) the way alt text
differs from COCO's human captions:

- **more and different scenes**: 1-6 objects instead of 1-4, on five backgrounds instead of three;
- **its own style**: tags, stock-photo titles, clip-art labels, hashtags, key-value specs, terse
  positional notes and a web-prose sentence, instead of COCO-like descriptive sentences;
- **its own vocabulary** for the same things: shapes are also balls, dots, boxes, tiles, pyramids,
  lozenges and plus signs; places are "top-left", "upper", "lower".

Each web image gets three captions (two alt texts of different styles and one prose sentence),
written as a Karpathy-format ``web/dataset_coco.json`` (every image in split ``train``).
"""

from eim_harness.shapes.scene import position_name

WEB_BACKGROUNDS = ("white", "gray", "beige", "black", "pink")  # downstream scenes use the first three
WEB_MAX_OBJECTS = 6
SHAPE = {"circle": ("circle", "ball", "dot"), "square": ("square", "box", "tile"),
         "triangle": ("triangle", "pyramid"), "diamond": ("diamond", "lozenge"),
         "cross": ("cross", "plus")}
SIZE = {"small": ("small", "mini", "little"), "large": ("big", "large", "huge")}
PLACE = {"top left corner": "top-left", "top right corner": "top-right", "bottom left corner": "bottom-left",
         "bottom right corner": "bottom-right", "top": "upper middle", "bottom": "lower middle",
         "left side": "left", "right side": "right", "center": "center"}


def _thing(rng, o, size_p=0.3):
    size = f"{rng.choice(SIZE[o.size])} " if rng.random() < size_p else ""
    return f"{size}{o.colour} {rng.choice(SHAPE[o.shape])}"


def _objs(rng, s):
    objs = list(s.objects)
    rng.shuffle(objs)
    return objs


def web_tags(rng, s):
    return ", ".join([_thing(rng, o) for o in _objs(rng, s)] + [f"{s.background} background"])


def web_stock(rng, s):
    things = [_thing(rng, o) for o in _objs(rng, s)]
    head = " and ".join(things) if len(things) <= 2 else ", ".join(things[:-1]) + " and " + things[-1]
    return rng.choice((f"{head} isolated on {s.background}", f"{head} on {s.background} backdrop",
                       f"stock image: {head}, {s.background}"))


def web_clipart(rng, s):
    n = len(s.objects)
    kind = rng.choice(("clip art", "vector graphic", "icon set", "flat illustration"))
    return f"{kind} with {n} shape{'s' if n > 1 else ''} - " + ", ".join(_thing(rng, o, 0) for o in _objs(rng, s))


def web_hashtags(rng, s):
    tags = []
    for o in _objs(rng, s):
        tags += [o.colour, rng.choice(SHAPE[o.shape]).replace(" ", "")]
    return " ".join(f"#{t}" for t in dict.fromkeys(tags + [s.background, "shapes"]))


def web_spec(rng, s):
    colours = ", ".join(dict.fromkeys(o.colour for o in _objs(rng, s)))
    shapes = ", ".join(dict.fromkeys(rng.choice(SHAPE[o.shape]) for o in _objs(rng, s)))
    return f"shapes: {len(s.objects)} | colours: {colours} | kinds: {shapes} | background: {s.background}"


def web_places(rng, s):
    return "; ".join(f"{_thing(rng, o, 0)} {PLACE[position_name(o)]}" for o in _objs(rng, s))


ALT_TEXT = (web_tags, web_stock, web_clipart, web_hashtags, web_spec, web_places)


def web_prose(rng, s):
    """One sentence of web prose about the scene (the LLM's 'article' text)."""
    objs = _objs(rng, s)
    first = objs[0]
    text = rng.choice(("In this graphic", "On this page", "Here", "In the picture below"))
    text += f" you will find a {_thing(rng, first)} in the {PLACE[position_name(first)]} area"
    for o in objs[1:3]:
        text += rng.choice((", plus a ", ", along with a ", " and a ")) + _thing(rng, o)
    if len(objs) > 3:
        text += f", among {len(objs)} shapes in total"
    return text + f", all on a {s.background} background."


def web_captions(rng, scene):
    """Two alt texts of different styles and one prose sentence."""
    a, b = rng.sample(ALT_TEXT, 2)
    return [a(rng, scene), b(rng, scene), web_prose(rng, scene)]
