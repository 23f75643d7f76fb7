"""ScienceQA-style multiple-choice problems about the shapes world.

Image problems ask about a scene (count, colour, size comparison, relative position, which
sentence describes it); text-only problems ask general facts (sides of shapes, mixing paint,
directions, alphabetical order, plurals, word meanings), some with a hint. Subjects, grades and
hints are spread so every scoring bucket of docs/design.md §6 (NAT/SOC/LAN, TXT/IMG/NO, G1-6/G7-12) is
populated. Field names and value styles follow the published ``problems.json``.
"""

from eim_harness.shapes.captions import NUMBERS, SHAPE_WORDS, article, colour_word, join, noun_phrase, where
from eim_harness.shapes.scene import COLOURS, SHAPES

NAT, SOC, LAN = "natural science", "social science", "language science"
SIDES = {"triangle": 3, "square": 4, "diamond": 4, "cross": 12}
MIXES = {("blue", "yellow"): "green", ("red", "yellow"): "orange", ("blue", "red"): "purple"}
DIRECTIONS = {"left": "right", "right": "left", "up": "down", "down": "up", "north": "south",
              "south": "north", "east": "west", "west": "east"}
TURN_RIGHT = {"north": "east", "east": "south", "south": "west", "west": "north"}
PLURALS = {"cross": ("crosses", "crosss", "cross"), "circle": ("circles", "circlees", "circle"),
           "box": ("boxes", "boxs", "boxen"), "rhombus": ("rhombuses", "rhombus", "rhombs")}

LECTURES = {
    "count": "To count objects, point to each one once and say the numbers in order. The "
             "last number you say tells how many objects there are.",
    "colour": "Color is a property of an object. You can tell objects apart by their color: "
              "red, orange, yellow, green, blue and purple are some of the colors.",
    "compare": "Size is a property of an object. A bigger object takes up more space than a "
               "smaller one. To compare sizes, look at how much space each object covers.",
    "position": "Relative directions tell you where one thing is compared to another. Left "
                "and right go across a picture; above and below go up and down.",
    "describe": "A good description names the details you can see: how many things there "
                "are, what shape and color each one is, and where it is.",
    "sides": "A polygon is a closed shape made of straight sides. The number of sides is "
             "one of its properties; a circle has no straight sides.",
    "mix": "Paint colors mix. The primary paint colors are red, yellow and blue; mixing two "
           "of them makes a secondary color.",
    "direction": "A direction tells you which way to go. Opposite directions point away "
                 "from each other. On a map, north is up, south is down, east is right and "
                 "west is left.",
    "alphabet": "Words in a dictionary are in alphabetical order. Compare the first letters; "
                "if they are the same, compare the next letters.",
    "plural": "A plural noun names more than one thing. Most nouns add -s; nouns that end in "
              "s, x, ch or sh add -es.",
    "word": "A noun names a person, place, thing or idea. Some nouns name colors and some "
            "name shapes.",
}


def _choices(rng, answer, distractors, k):
    """(choices, answer index): the answer plus k-1 distinct distractors, shuffled."""
    pool = [d for d in dict.fromkeys(distractors) if d != answer]
    opts = [answer] + rng.sample(pool, min(k - 1, len(pool)))
    rng.shuffle(opts)
    return opts, opts.index(answer)


def _grade(rng, lo, hi):
    return f"grade{rng.randint(lo, hi)}"


def _make(kind, question, choices, answer, grade, subject, topic, category, skill, solution,
          hint=""):
    # Field order of the published problems.json (image and split are set by the writer).
    return {"question": question, "choices": choices, "answer": answer, "hint": hint,
            "image": None, "task": "closed choice", "grade": grade, "subject": subject,
            "topic": topic, "category": category, "skill": skill, "lecture": LECTURES[kind],
            "solution": solution, "split": None}


def _listing(words):
    """'There are a red circle and a blue block.' from [(colour word, shape word)]."""
    return "There " + ("is " if len(words) == 1 else "are ") + join(
        [f"{article(c)} {c} {shape}" for c, shape in words]) + "."


def image_problem(rng, s):
    """A problem about scene `s` (the writer attaches its image)."""
    kinds = ["count", "colour", "describe"]
    if any(o.size == "large" for o in s.objects) and any(o.size == "small" for o in s.objects):
        kinds.append("compare")
    if any(a.col != b.col for a in s.objects for b in s.objects):
        kinds.append("position")
    kind = rng.choice(kinds)
    objs = list(s.objects)
    if kind == "count":
        n = len(objs)
        ch, ans = _choices(rng, NUMBERS[n], NUMBERS[1:6], rng.randint(3, 5))
        hint = rng.choice(("", "", "Count every shape, whatever its color."))
        sol = f"Count the shapes: {join([noun_phrase(rng, o, 0) for o in objs])}. " \
              f"There {'is' if n == 1 else 'are'} {NUMBERS[n]}."
        return _make(kind, "How many shapes are in the picture?", ch, ans, _grade(rng, 1, 3),
                     NAT, "physics", "Counting objects", "Count shapes in a picture", sol, hint)
    if kind == "colour":
        o = rng.choice(objs)
        ch, ans = _choices(rng, o.colour, list(COLOURS), rng.randint(2, 4))
        sol = f"Look at the {o.shape} {where(o)}. It is {o.colour}."
        q = f"What color is the {o.shape} {where(o)}?"
        return _make(kind, q, ch, ans, _grade(rng, 1, 2), NAT, "physics", "Colors",
                     "Identify the color of an object", sol)
    if kind == "compare":
        big = rng.choice([o for o in objs if o.size == "large"])
        small = rng.choice([o for o in objs if o.size == "small"])
        pair = [f"the {big.name}", f"the {small.name}"]
        rng.shuffle(pair)
        sol = f"The {big.name} covers more of the picture than the {small.name}, so the " \
              f"{big.name} is bigger."
        return _make(kind, "Which shape is bigger?", pair, pair.index(f"the {big.name}"),
                     _grade(rng, 7, 9), NAT, "physics", "Size comparison",
                     "Compare the sizes of objects", sol,
                     rng.choice(("", "Compare how much space each shape covers.")))
    if kind == "position":
        a, b = rng.choice([(a, b) for a in objs for b in objs if a.col < b.col])
        if rng.random() < 0.5:
            q, ans, ref, side = f"Which shape is to the left of the {b.name}?", a, b, "left"
        else:
            q, ans, ref, side = f"Which shape is to the right of the {a.name}?", b, a, "right"
        test = (lambda o: o.col < ref.col) if side == "left" else (lambda o: o.col > ref.col)
        # Distractors: scene objects on the wrong side, absent shapes. Not the reference: the
        # question names it, so it would be ruled out without looking at the picture.
        wrong = [o.name for o in objs if not test(o) and o != ref]
        names = {o.name for o in objs}
        absent = [f"{c} {x}" for c in COLOURS for x in SHAPES if f"{c} {x}" not in names]
        ch, idx = _choices(rng, f"the {ans.name}",
                           [f"the {n}" for n in wrong + rng.sample(absent, 3)],
                           rng.randint(2, 4))
        sol = f"The {ans.name} is {where(ans)}, to the {side} of the {ref.name}."
        return _make(kind, q, ch, idx, _grade(rng, 3, 8), SOC, "geography",
                     "Relative directions", "Use relative directions in a picture", sol,
                     rng.choice(("", "Left and right are as you look at the picture.")))
    # describe: the true listing against listings of the scene with one object's colour changed.
    # All choices share the true sentence's words (synonyms included) and differ only in the
    # colour of the same object, to a colour no other object of that shape has: no choice can be
    # told from the others by its wording, or as the one closest to all the others.
    words = [(colour_word(rng, o.colour), rng.choice(SHAPE_WORDS[o.shape])) for o in objs]
    k = rng.randrange(len(objs))
    taken = {(o.colour, o.shape) for o in objs}
    true = _listing(words)
    fakes = [_listing([(colour_word(rng, c), w[1]) if i == k else w for i, w in enumerate(words)])
             for c in COLOURS if (c, objs[k].shape) not in taken]
    ch, ans = _choices(rng, true, fakes, rng.randint(2, 3))
    sol = f"The picture shows {join([noun_phrase(rng, o, 0) for o in objs])}. Only one " \
          "sentence names all of them with the right colors."
    return _make("describe", "Which sentence describes the picture?", ch, ans,
                 _grade(rng, 2, 9), LAN, "writing-strategies", "Descriptive details",
                 "Choose the sentence that describes a picture", sol)


def text_problem(rng):
    """A text-only problem; about half carry a hint (the TXT bucket)."""
    kind = rng.choice(("sides", "mix", "direction", "alphabet", "plural", "word"))
    hinted = rng.random() < 0.6
    if kind == "sides":
        shape = rng.choice(tuple(SIDES))
        n = SIDES[shape]
        ch, ans = _choices(rng, str(n), [str(k) for k in (3, 4, 5, 6, 8, 12)], rng.randint(3, 4))
        hint = f"Picture {article(shape)} {shape} and count its straight edges." if hinted else ""
        return _make(kind, f"How many straight sides does {article(shape)} {shape} have?", ch,
                     ans, _grade(rng, 1, 5) if n < 5 else _grade(rng, 7, 10), NAT,
                     "geometry-in-science", "Shapes", "Count the sides of a shape",
                     f"{article(shape).capitalize()} {shape} has {n} straight sides.", hint)
    if kind == "mix":
        (a, b), res = rng.choice(sorted(MIXES.items()))
        ch, ans = _choices(rng, res, ["green", "orange", "purple", "brown"], rng.randint(2, 4))
        hint = "Red, yellow and blue are the primary paint colors." if hinted else ""
        return _make(kind, f"Which color do you get when you mix {a} and {b} paint?", ch, ans,
                     _grade(rng, 7, 12), NAT, "physics", "Colors and mixtures",
                     "Predict the color of mixed paints", f"Mixing {a} and {b} makes {res}.",
                     hint)
    if kind == "direction":
        if rng.random() < 0.5:
            d = rng.choice(tuple(DIRECTIONS))
            ch, ans = _choices(rng, DIRECTIONS[d], list(DIRECTIONS), rng.randint(2, 4))
            return _make(kind, f"Which direction is opposite to {d}?", ch, ans,
                         _grade(rng, 1, 6), SOC, "geography", "Cardinal directions",
                         "Identify opposite directions",
                         f"{d.capitalize()} and {DIRECTIONS[d]} point away from each other.",
                         "Opposite directions point away from each other." if hinted else "")
        d = rng.choice(tuple(TURN_RIGHT))
        ch, ans = _choices(rng, TURN_RIGHT[d], list(TURN_RIGHT), rng.randint(2, 4))
        return _make(kind, f"You face {d} and turn right. Which direction do you face now?", ch,
                     ans, _grade(rng, 7, 11), SOC, "geography", "Cardinal directions",
                     "Use cardinal directions",
                     f"Turning right from {d} points you {TURN_RIGHT[d]}.",
                     "On a map, north is up and east is to the right." if hinted else "")
    if kind == "alphabet":
        words = rng.sample(list(SHAPES) + list(COLOURS), rng.randint(2, 3))
        first = min(words)
        return _make(kind, "Which word would you find first in a dictionary?", words,
                     words.index(first), _grade(rng, 2, 6), LAN, "vocabulary",
                     "Alphabetical order", "Put words in alphabetical order",
                     f"Of {join(words)}, {first} comes first in alphabetical order.",
                     "Compare the first letters of the words." if hinted else "")
    if kind == "plural":
        word = rng.choice(tuple(PLURALS))
        right, *wrong = PLURALS[word]
        ch, ans = _choices(rng, right, wrong, rng.randint(2, 3))
        return _make(kind, f"What is the plural of {word}?", ch, ans, _grade(rng, 7, 12), LAN,
                     "grammar", "Plural nouns", "Form plural nouns",
                     f"{word.capitalize()} ends in {word[-1]}, so its plural is {right}.",
                     "Nouns that end in s or x add -es." if hinted else "")
    target = rng.choice(("color", "shape"))
    pool, others = (list(COLOURS), list(SHAPES)) if target == "color" else \
        (list(SHAPES), list(COLOURS))
    answer = rng.choice(pool)
    ch, ans = _choices(rng, answer, others, rng.randint(2, 4))
    return _make(kind, f"Which word names a {target}?", ch, ans, _grade(rng, 1, 3), LAN,
                 "vocabulary", "Categories", "Sort words into categories",
                 f"{answer.capitalize()} is a {target}; the other words are not.",
                 "Some words name colors and some name shapes." if hinted else "")
