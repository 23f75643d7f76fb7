"""A caption grammar for the shapes world: five different paraphrases per image.

Every caption is built from one of several *families* (a plain list, a count, a relation,
positions, grouping by shape, colours, size comparison), each with its own openers, word order
and synonyms. An image's five captions come from five different families, so the references
disagree in wording the way COCO's human captions do, while each still names visual detail
(colours, shapes, counts, where things are): a model must see the image to score well on
BLEU/CIDEr, and a model that emits a generic sentence scores badly.
"""

from eim_harness.shapes.scene import OPPOSITE, RELATIONS, position_name

NUMBERS = ("zero", "one", "two", "three", "four", "five")
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
SHAPE_WORDS = {"circle": ("circle", "disc"), "square": ("square", "block"),
               "triangle": ("triangle",), "diamond": ("diamond", "rhombus"),
               "cross": ("cross", "plus sign")}
PLURAL = {"circle": "circles", "disc": "discs", "square": "squares", "block": "blocks",
          "triangle": "triangles", "diamond": "diamonds", "rhombus": "rhombuses",
          "cross": "crosses", "plus sign": "plus signs"}
COLOUR_WORDS = {"purple": ("purple", "violet"), "gray": ("gray", "grey")}
RELATION_WORDS = {"left of": ("to the left of", "left of", "on the left of"),
                  "right of": ("to the right of", "right of", "on the right of"),
                  "above": ("above", "over"), "below": ("below", "under", "beneath"),
                  "bigger than": ("bigger than", "larger than")}
SHAPE_NOUNS = ("shapes", "objects", "figures")


def article(word):
    return "an" if word[0] in "aeiou" else "a"


def colour_word(rng, c):
    return rng.choice(COLOUR_WORDS.get(c, (c,)))


def noun_phrase(rng, o, size_p=0.5, det=None):
    """'a small red circle', 'the blue disc', ...: size is said with probability size_p."""
    words = []
    if rng.random() < size_p:
        words.append(rng.choice(SIZE_WORDS[o.size]))
    words += [colour_word(rng, o.colour), rng.choice(SHAPE_WORDS[o.shape])]
    det = det or article(words[0])
    return f"{det} {' '.join(words)}"


def join(items):
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def ordered(rng, scene):
    """Objects in reading order (left to right) or shuffled: word order varies by caption."""
    objs = list(scene.left_to_right()) if rng.random() < 0.5 else list(scene.objects)
    if objs == list(scene.objects):
        rng.shuffle(objs)
    return objs


def fam_list(rng, s):
    nps = [noun_phrase(rng, o) for o in ordered(rng, s)]
    opener = rng.choice(("a picture of", "an image of", "a drawing of", "this image shows",
                         "we can see", "there is" if len(nps) == 1 else "there are"))
    return f"{opener} {join(nps)}"


def fam_count(rng, s):
    n = len(s.objects)
    bg = colour_word(rng, s.background)
    if n == 1:
        return rng.choice((f"a single {noun_phrase(rng, s.objects[0], det=' ').strip()} on a "
                           f"{bg} background",
                           f"only one shape on a {bg} background: "
                           f"{noun_phrase(rng, s.objects[0], size_p=1)}"))
    noun = rng.choice(SHAPE_NOUNS)
    nps = join([noun_phrase(rng, o, size_p=0.3) for o in ordered(rng, s)])
    return rng.choice((f"{NUMBERS[n]} {noun} on a {bg} background: {nps}",
                       f"{nps}, {NUMBERS[n]} {noun} in all",
                       f"an image with {NUMBERS[n]} {noun}, namely {nps}"))


def _relation(rng, s):
    pairs = [(a, b, r) for a in s.objects for b in s.objects if a is not b
             for r, test in RELATIONS.items() if test(a, b)]
    return rng.choice(pairs) if pairs else None


def fam_relation(rng, s):
    rel = _relation(rng, s)
    if rel is None:
        return fam_position(rng, s)
    a, b, r = rel
    if rng.random() < 0.3 and r != "bigger than":  # the passive twin: "b, with a to its right"
        text = (f"{noun_phrase(rng, b)} with {noun_phrase(rng, a, size_p=0.2)} "
                f"{rng.choice(RELATION_WORDS[r])} it")
    else:
        text = f"{noun_phrase(rng, a)} {rng.choice(RELATION_WORDS[r])} {noun_phrase(rng, b)}"
    rest = [o for o in s.objects if o is not a and o is not b]
    if rest:
        text += rng.choice((" and ", ", plus ", " next to ")) + join(
            [noun_phrase(rng, o, size_p=0.2) for o in rest])
    return text


def where(o):
    """'in the top left corner', 'on the left side', 'at the top', 'in the center'."""
    name = position_name(o)
    prep = "in" if name.endswith(("corner", "center")) else "on" if name.endswith("side") else "at"
    return f"{prep} the {name}"


def fam_position(rng, s):
    return join([f"{noun_phrase(rng, o)} {where(o)}" for o in ordered(rng, s)[:3]])


def fam_groups(rng, s):
    by_shape = {}
    for o in ordered(rng, s):
        by_shape.setdefault(o.shape, []).append(o)
    parts = []
    for shape, objs in by_shape.items():
        if len(objs) == 1:
            parts.append(noun_phrase(rng, objs[0]))
        else:
            word = rng.choice(SHAPE_WORDS[shape])
            cols = [colour_word(rng, o.colour) for o in objs]
            parts.append(rng.choice((
                f"{NUMBERS[len(objs)]} {PLURAL[word]}, " + join([f"one {c}" for c in cols]),
                f"{join(cols)} {PLURAL[word]}")))
    return rng.choice(("", "there is ", "you can see ")) + join(parts) if len(s.objects) == 1 \
        else join(parts)


def fam_colours(rng, s):
    cols = [colour_word(rng, c) for c in dict.fromkeys(o.colour for o in ordered(rng, s))]
    if len(s.objects) == 1:
        o = s.objects[0]
        c = colour_word(rng, o.colour)
        return f"the only shape is {article(c)} {c} {rng.choice(SHAPE_WORDS[o.shape])} {where(o)}"
    noun = rng.choice(SHAPE_NOUNS)
    big = [o for o in s.objects if o.size == "large"]
    text = f"{NUMBERS[len(s.objects)]} {noun} coloured {join(cols)}"
    if len(big) == 1:
        text += f", the biggest being the {colour_word(rng, big[0].colour)} " \
                f"{rng.choice(SHAPE_WORDS[big[0].shape])}"
    return text


def fam_compare(rng, s):
    pairs = [(a, b) for a in s.objects for b in s.objects if a.size == "large"
             and b.size == "small"]
    if not pairs:
        same = rng.choice(("all the same size", "of equal size"))
        return f"{join([noun_phrase(rng, o, size_p=0) for o in ordered(rng, s)])}, {same}" \
            if len(s.objects) > 1 else f"{noun_phrase(rng, s.objects[0], size_p=1)} alone"
    a, b = rng.choice(pairs)
    big, small = noun_phrase(rng, a, size_p=0), noun_phrase(rng, b, size_p=0)
    if rng.random() < 0.5:
        return f"{big} that is {rng.choice(RELATION_WORDS['bigger than'])} {small}"
    return f"{small} {OPPOSITE['bigger than']} {big}"


FAMILIES = (fam_list, fam_count, fam_relation, fam_position, fam_groups, fam_colours,
            fam_compare)


def describe(rng, scene):
    """Every object with its size, colour, shape and place: 'A large red circle in the top left corner ...'."""
    parts = [f"{noun_phrase(rng, o, 1.0)} {where(o)}" for o in scene.objects]
    text = join(parts) + "."
    return text[0].upper() + text[1:]


def captions(rng, scene, k=5):
    """`k` different captions of `scene` from `k` different families (k <= 7)."""
    out = []
    fams = list(FAMILIES)
    rng.shuffle(fams)
    for fam in fams:
        for _ in range(10):  # a family may collide with an earlier caption: redraw its words
            text = fam(rng, scene)
            text = text[0].upper() + text[1:] + "."
            if text not in out:
                out.append(text)
                break
        if len(out) == k:
            return out
    raise RuntimeError(f"could not draw {k} different captions")  # pragma: no cover


def tokens(text):
    """Karpathy-style tokens: lowercase words, punctuation dropped."""
    return "".join(ch if ch.isalnum() or ch == " " else " " for ch in text.lower()).split()
