"""Scenes of the generated world: 1-4 coloured shapes on a 3x3 grid, drawn with Pillow.

A scene is pure data (:class:`Scene` of :class:`Obj`), sampled from a ``random.Random`` that
the writer seeds per image, so every image is reproducible on its own and the same seed gives
byte-identical files. Objects sit in distinct grid cells, which makes the relations the text
talks about (left of, above, ...) and the named positions (top left corner, ...) unambiguous,
and each (colour, shape) pair occurs at most once per scene, so "the red circle" names one
object.
"""

import io
from dataclasses import dataclass

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
# Saturated, far-apart colours: tell-apart-able at 64 px after antialiasing.
COLOURS = {
    "red": (214, 39, 40), "green": (44, 160, 44), "blue": (31, 90, 220),
    "yellow": (240, 200, 20), "purple": (148, 60, 189), "orange": (255, 127, 14),
}
BACKGROUNDS = {"white": (250, 250, 250), "gray": (190, 190, 190), "beige": (236, 224, 196),
               "black": (25, 25, 25), "pink": (248, 212, 222)}  # the last two: web scenes only
SCENE_BACKGROUNDS = ("white", "gray", "beige")  # downstream (COCO, ScienceQA, MME, LLaVA) scenes
SIZES = {"small": 0.085, "large": 0.15}  # radius as a fraction of the image side
ROWS, COLS = ("top", "middle", "bottom"), ("left", "center", "right")
SUPERSAMPLE = 4  # draw at 4x and downsample: smooth edges, still cheap (cost: benchmarks/RESULTS.md)


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str  # "small" | "large"
    row: int  # 0 top .. 2 bottom
    col: int  # 0 left .. 2 right
    dx: float  # jitter inside the cell, fraction of a cell
    dy: float

    @property
    def name(self):  # "red circle": unique within a scene
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: tuple
    background: str

    def left_to_right(self):
        return sorted(self.objects, key=lambda o: (o.col, o.row))


def sample_scene(rng, min_objects=1, max_objects=4, backgrounds=SCENE_BACKGROUNDS):
    """Draw a scene; the number of objects is uniform in [min_objects, max_objects]."""
    n = rng.randint(min_objects, max_objects)
    kinds = rng.sample([(s, c) for s in SHAPES for c in COLOURS], n)
    cells = rng.sample(range(9), n)
    objs = []
    for (shape, colour), cell in zip(kinds, cells, strict=True):
        objs.append(Obj(shape, colour, rng.choice(("small", "large")), cell // 3, cell % 3,
                        rng.uniform(-0.12, 0.12), rng.uniform(-0.12, 0.12)))
    return Scene(tuple(objs), rng.choice(tuple(backgrounds)))


# Relations between two objects; each is (phrase, test(a, b)).
def left_of(a, b):
    return a.col < b.col


def right_of(a, b):
    return a.col > b.col


def above(a, b):
    return a.row < b.row


def below(a, b):
    return a.row > b.row


def bigger(a, b):
    return a.size == "large" and b.size == "small"


RELATIONS = {"left of": left_of, "right of": right_of, "above": above, "below": below,
             "bigger than": bigger}
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above",
            "bigger than": "smaller than"}


def position_name(o):
    """'top left corner', 'top', 'left side', 'center', ... for the object's grid cell."""
    if (o.row, o.col) == (1, 1):
        return "center"
    if o.row == 1:
        return f"{COLS[o.col]} side"
    if o.col == 1:
        return ROWS[o.row]
    return f"{ROWS[o.row]} {COLS[o.col]} corner"


def _polygon(shape, cx, cy, r):
    if shape == "triangle":
        return [(cx, cy - r), (cx + 0.95 * r, cy + 0.8 * r), (cx - 0.95 * r, cy + 0.8 * r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.8 * r, cy), (cx, cy + r), (cx - 0.8 * r, cy)]
    if shape == "cross":
        t = 0.36 * r
        return [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t),
                (cx + r, cy + t), (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r),
                (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t)]
    raise ValueError(shape)


def render(scene, size=64):
    """The scene as an RGB ``PIL.Image`` of `size` x `size` pixels."""
    big = size * SUPERSAMPLE
    im = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(im)
    cell = big / 3
    for o in scene.objects:
        cx, cy = (o.col + 0.5 + o.dx) * cell, (o.row + 0.5 + o.dy) * cell
        r = SIZES[o.size] * big
        fill = COLOURS[o.colour]
        if o.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif o.shape == "square":
            s = 0.85 * r  # same visual area as the circle, roughly
            draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
        else:
            draw.polygon(_polygon(o.shape, cx, cy, r), fill=fill)
    return im.reduce(SUPERSAMPLE)


def png_bytes(im):
    """Deterministic PNG encoding: fixed compression, no metadata chunks (no timestamps)."""
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()
