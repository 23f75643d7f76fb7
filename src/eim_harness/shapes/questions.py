"""Yes/no pairs for the MME layout and conversations for the LLaVA layout, about a scene.

MME (docs/design.md §5): each image gets two questions, the true statement first (answer Yes) and a
minimally changed false one second (No), for the perception subtasks the world can pose:
existence, count, position, color. ``MME_MIN_OBJECTS`` says how many objects a scene needs for a
subtask and :func:`mme_pair` returns None for a scene that cannot pose its pair, so the writer
redraws until the scene qualifies.

The chatbot's training mixture (docs/design.md §5, "MME chatbot data") adds two files beside
``llava/instruct.json``: short-answer questions on the training images (:func:`vqa_turns`, in
LLaVA's format, as LLaVA-1.5 mixes VQA data with one-word answers into its instructions) and
text instructions in Alpaca's format (:func:`alpaca_record`) whose input is a scene *written out
in words*, with an MME-style question about it: the LLM practises answering from a description
what the image model later has to answer from pixels (LaVIN's text + image mixture).
"""

from eim_harness.shapes.captions import NUMBERS, article, describe, join, noun_phrase, where
from eim_harness.shapes.scene import COLOURS, SHAPES, sample_scene

SUFFIX = " Please answer yes or no."  # MME's own question suffix
MME_SUBTASKS = ("existence", "count", "position", "color")
# Minimum objects per scene for a subtask to have a well-posed pair.
MME_MIN_OBJECTS = {"existence": 1, "count": 1, "position": 2, "color": 1}


def mme_pair(subtask, rng, s):
    """[(question, "Yes"), (question, "No")] for one image, or None if `s` cannot pose one."""
    objs = list(s.objects)
    if subtask == "existence":
        o = rng.choice(objs)
        names = {x.name for x in objs}
        absent = rng.choice([f"{c} {x}" for c in COLOURS for x in SHAPES
                             if f"{c} {x}" not in names])
        q = "Is there {} {} in this image?"
        return [(q.format(article(o.colour), o.name) + SUFFIX, "Yes"),
                (q.format(article(absent), absent) + SUFFIX, "No")]
    if subtask == "count":
        n = len(objs)
        m = rng.choice([k for k in (n - 1, n + 1) if 1 <= k <= 5])
        q = "Are there exactly {} shapes in this image?"
        one = "Is there exactly one shape in this image?"
        return [((one if n == 1 else q.format(NUMBERS[n])) + SUFFIX, "Yes"),
                ((one if m == 1 else q.format(NUMBERS[m])) + SUFFIX, "No")]
    if subtask == "position":
        pairs = [(a, b, r) for a in objs for b in objs if a is not b
                 for r, ok in (("to the left of", a.col < b.col), ("above", a.row < b.row)) if ok]
        if not pairs:
            return None
        a, b, r = rng.choice(pairs)
        flip = {"to the left of": "to the right of", "above": "below"}[r]
        q = "Is the {} {} the {} in this image?"
        return [(q.format(a.name, r, b.name) + SUFFIX, "Yes"),
                (q.format(a.name, flip, b.name) + SUFFIX, "No")]
    if subtask == "color":
        unique = [o for o in objs if sum(x.shape == o.shape for x in objs) == 1]
        if not unique:
            return None
        o = rng.choice(unique)
        wrong = rng.choice([c for c in COLOURS if c != o.colour])
        q = "Is the {} in this image {}?"
        return [(q.format(o.shape, o.colour) + SUFFIX, "Yes"),
                (q.format(o.shape, wrong) + SUFFIX, "No")]
    raise ValueError(subtask)


DESCRIBE = ("Describe the image briefly.", "What do you see in this picture?",
            "Give a short caption for this image.", "What is shown here?")


def llava_conversation(rng, s, caption):
    """LLaVA-style turns: a description request, then one or two questions about the scene."""
    objs = list(s.objects)
    turns = [("<image>\n" + rng.choice(DESCRIBE), caption)]
    o = rng.choice(objs)
    asks = [
        ("How many shapes are there?",
         f"There {'is' if len(objs) == 1 else 'are'} {NUMBERS[len(objs)]}: "
         f"{join([noun_phrase(rng, x, 0) for x in objs])}."),
        (f"Where is the {o.name}?", f"The {o.name} is {where(o)} of the image."),
        (f"What color is the {o.shape} {where(o)}?", f"It is {o.colour}."),
        (f"Is the {o.name} big or small?", f"It is {'big' if o.size == 'large' else 'small'}."),
    ]
    # MME-style yes/no questions, so an instruction-tuned model learns to answer in that form
    # (MME counts an answer only when it starts with yes/no).
    asks += mme_pair(rng.choice(("existence", "color")), rng, s) or []
    rng.shuffle(asks)
    turns += asks[: rng.randint(1, 2)]
    conv = []
    for q, a in turns:
        conv += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return conv


FACTS = (
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("How many sides does a square have?", "A square has four sides of equal length."),
    ("What color do you get by mixing blue and yellow?", "Mixing blue and yellow gives green."),
    ("What color do you get by mixing red and yellow?", "Mixing red and yellow gives orange."),
    ("Does a circle have corners?", "No. A circle is round and has no corners."),
    ("What is the opposite of left?", "The opposite of left is right."),
)


def llava_text_conversation(rng):
    """A text-only entry (no image), like those mixed into LLaVA-1.5's data."""
    q, a = rng.choice(FACTS)
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


def posable(rng, s):
    """One MME subtask (uniform over those ``s`` can pose) and its (Yes, No) pair."""
    subs = list(MME_SUBTASKS)
    rng.shuffle(subs)
    for sub in subs:
        pair = mme_pair(sub, rng, s)
        if pair is not None:
            return sub, pair
    raise ValueError("a scene of one object or more poses existence, count and color")


def vqa_turns(rng, s):
    """Both questions of one MME-style pair about the training scene ``s``, each as a one-turn
    LLaVA conversation ``[human, gpt]`` (MME asks each question on its own): -> (subtask, [conv, conv])."""
    sub, pair = posable(rng, s)
    return sub, [[{"from": "human", "value": "<image>\n" + q}, {"from": "gpt", "value": a}] for q, a in pair]


ALPACA_INPUT = "The image shows {}"  # the scene in words, where the image would be


def described_question(rng):
    """A freshly drawn scene written out in words (:func:`eim_harness.shapes.captions.describe`) and
    one MME-style question about it, answered "Yes" or "No" equally often:
    -> (description, question, answer, subtask)."""
    scene = sample_scene(rng)
    text = describe(rng, scene)
    sub, pair = posable(rng, scene)
    q, a = pair[rng.randrange(2)]
    return text, q, a, sub


def alpaca_record(rng):
    """An Alpaca-format text instruction from :func:`described_question`: the question is the
    instruction, the description its input, the answer its output. -> (record, subtask)"""
    text, q, a, sub = described_question(rng)
    return {"instruction": q, "input": ALPACA_INPUT.format(text[0].lower() + text[1:]), "output": a}, sub
