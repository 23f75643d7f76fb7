"""Small datasets written in the real formats (COCO, ScienceQA, MME), for the loader tests."""

import json
import os

from PIL import Image

CAPTIONS = [
    "A man with a red helmet on a small moped on a dirt road. ",
    "Man riding a motor bike on a dirt road on the countryside.",
    "A man riding on the back of a motorcycle.",
    "A dirt path with a young person on a motor bike rests to the foreground of a verdant "
    "area with a bridge and a background of cloud-wreathed mountains. ",
    "A man in a red shirt and a red hat is on a motorcycle on a hill side.",
]


def image(path, fmt=None, colour=(120, 30, 30)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 6), colour).save(path, fmt)
    return str(path)


def coco_record(cocoid, imgid, filename, split, captions, filepath="val2014", sentid0=0):
    sents = [{"tokens": c.lower().strip(" .").split(), "raw": c, "imgid": imgid,
              "sentid": sentid0 + k} for k, c in enumerate(captions)]
    return {"filepath": filepath, "sentids": [s["sentid"] for s in sents], "filename": filename,
            "imgid": imgid, "split": split, "sentences": sents, "cocoid": cocoid}


def write_coco(root, records):
    root.mkdir(parents=True, exist_ok=True)
    for r in records:
        p = root / r["filepath"] / r["filename"]
        if not p.exists():
            image(p, "JPEG")
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"images": records, "dataset": "coco"}))
    return path


SQA_PROBLEMS = {
    "1": {"question": "Which of these states is farthest north?",
          "choices": ["West Virginia", "Louisiana", "Arizona", "Oklahoma"], "answer": 0,
          "hint": "", "image": "image.png", "task": "closed choice", "grade": "grade2",
          "subject": "social science", "topic": "geography", "category": "Geography",
          "skill": "Read a map: cardinal directions",
          "lecture": "Maps have four cardinal directions, or main directions. Those directions "
                     "are north, south, east, and west.\nA compass rose is a set of arrows.",
          "solution": "To find the answer, look at the compass rose. West Virginia is farthest "
                      "north.", "split": "train"},
    "2": {"question": "Identify the question that Tom and Justin's experiment can answer.",
          "choices": ["Do ping pong balls stop rolling along the ground sooner after being "
                      "launched from a 30\u00b0 angle or a 45\u00b0 angle?",
                      "Do ping pong balls travel farther when launched from a 30\u00b0 angle "
                      "compared to a 45\u00b0 angle?"], "answer": 1,
          "hint": "The passage below describes an experiment.\n\nTom placed a ping pong ball "
                  "in a catapult.", "image": None, "task": "closed choice", "grade": "grade8",
          "subject": "natural science", "topic": "science-and-engineering-practices",
          "category": "Designing experiments", "skill": "Identify the experimental question",
          "lecture": "", "solution": "", "split": "train"},
    "3": {"question": "Which word would you find on a dictionary page with the guide words "
                      "helping - hunter?", "choices": ["hospital", "hardly"], "answer": 0,
          "hint": "", "image": None, "task": "closed choice", "grade": "grade3",
          "subject": "language science", "topic": "reference-skills",
          "category": "Reference skills", "skill": "Use guide words",
          "lecture": "Guide words appear on each page of a dictionary.",
          "solution": "Put the words in alphabetical order.", "split": "test"},
}


def write_sqa(root, problems=SQA_PROBLEMS, splits=None):
    root.mkdir(parents=True, exist_ok=True)
    for qid, p in problems.items():
        if p.get("image"):
            image(root / "images" / p["split"] / qid / p["image"], "PNG")
    splits = splits or {"train": ["1", "2"], "val": [], "test": ["3"], "trainval": ["1", "2"],
                        "minitrain": ["1"], "minival": [], "minitest": ["3"]}
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps(splits))
    return root


def write_mme(root):
    # existence: side-by-side; artwork: images/ + questions_answers_YN/
    image(root / "existence" / "000000006040.jpg", "JPEG")
    (root / "existence" / "000000006040.txt").write_text(
        "Is there a train in this image? Please answer yes or no.\tYes\n"
        "Is there a bed in this image? Please answer yes or no.\tNo\n")
    image(root / "artwork" / "images" / "10002.jpg", "JPEG")
    os.makedirs(root / "artwork" / "questions_answers_YN")
    (root / "artwork" / "questions_answers_YN" / "10002.txt").write_text(
        "Does this artwork exist in the form of painting? Please answer yes or no.\tYes\n"
        "Does this artwork exist in the form of glassware? Please answer yes or no.\tNo\n")
    return root


def truncate(path, keep=0.6):
    """Replace the image at ``path`` by a noisy 64×48 one of the same format cut to ``keep`` of its
    bytes: the header is intact (PIL identifies it), the pixels are not all there."""
    import random

    fmt = Image.open(path).format
    rng = random.Random(0)
    im = Image.new("RGB", (64, 48))
    im.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(64 * 48)])
    im.save(path, fmt)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])
    return str(path)
