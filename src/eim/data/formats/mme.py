"""The MME benchmark in its own folder layout, docs/design.md §5.

``<root>/<subtask>/`` holds either the images and their ``.txt`` files side by side, or
``images/`` and ``questions_answers_YN/``. Each ``<image stem>.txt`` has two lines
``question<TAB>answer`` (``Yes``/``No``; the true statement first). One sample per question,
ordered by subtask, then image, then line, so the two questions of an image are consecutive
(what acc+ needs and what the official result files expect). MME is one test set: the split
argument is ignored and ``.split`` is always ``"test"``.
"""

import os

from eim.data.base import BadRecord, RecordDataset, abspath
from eim.data.sample import Sample
from eim.errors import DataError

QA_DIR, IMAGE_DIR = "questions_answers_YN", "images"
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
ANSWERS = {"yes": "Yes", "no": "No"}
SPLIT = "test"  # the benchmark's one split


def subtask_layout(folder):
    """(qa folder, image folder) of one subtask, or None when it holds no MME questions."""
    if os.path.isdir(os.path.join(folder, QA_DIR)):
        return os.path.join(folder, QA_DIR), os.path.join(folder, IMAGE_DIR)
    if any(n.endswith(".txt") for n in os.listdir(folder)):
        return folder, folder
    return None


def is_mme_root(path):
    """True when some sub-folder of `path` looks like an MME subtask (cheap: listdir only)."""
    if not os.path.isdir(path):
        return False
    for name in sorted(os.listdir(path)):
        sub = os.path.join(path, name)
        if os.path.isdir(sub) and subtask_layout(sub):
            qa, _ = subtask_layout(sub)
            for n in sorted(os.listdir(qa)):
                if n.endswith(".txt"):
                    with open(os.path.join(qa, n), encoding="utf-8", errors="replace") as f:
                        return "\t" in f.readline()
    return False


def _find_image(image_dir, stem, names):
    found = [n for n in names if os.path.splitext(n)[0] == stem
             and os.path.splitext(n)[1].lower() in IMAGE_EXTS]
    if len(found) > 1:
        raise BadRecord(f"duplicate id {stem}: several images share the name ({', '.join(found)})")
    if not found:
        raise BadRecord(f"missing image {os.path.join(image_dir, stem)}.* (no image file "
                        "with this name)")
    return os.path.join(image_dir, found[0])


class MME(RecordDataset):
    format = "mme"

    def __init__(self, path, split="test", mode="eval", image_root=None, skip_bad=False,
                 check_images=True):
        super().__init__(SPLIT, mode, skip_bad)  # whatever --split says: MME is one test set
        root = os.path.abspath(path)
        self.root = root
        if not os.path.isdir(root):
            raise DataError("not a folder", file=root, remedy="point --data at the MME root")
        check = self._checker(check_images)
        subtasks = [n for n in sorted(os.listdir(root))
                    if os.path.isdir(os.path.join(root, n))
                    and subtask_layout(os.path.join(root, n))]
        if not subtasks:
            raise DataError("no MME subtask folders (each holds <image>.txt question files)",
                            file=root, remedy="point --data at the MME root folder")
        self.subtasks = subtasks
        for sub in subtasks:
            qa_dir, image_dir = subtask_layout(os.path.join(root, sub))
            names = sorted(os.listdir(image_dir)) if os.path.isdir(image_dir) else []
            for txt in sorted(n for n in os.listdir(qa_dir) if n.endswith(".txt")):
                txt_path = abspath(qa_dir, txt)
                self.files.append(txt_path)
                stem = txt[:-4]
                rid = f"{sub}/{stem}"
                try:
                    pairs = self._read_pairs(txt_path)
                    img = _find_image(image_dir, stem, names)
                    bad = check(img, rid, txt_path)
                    if bad:
                        raise BadRecord(bad)
                except BadRecord as b:
                    self._reject(rid, str(b), txt_path)
                    continue
                for order, (q, a) in enumerate(pairs):
                    self._rows.append((sub, img, q, a, order))
        self._finish(check)

    @staticmethod
    def _read_pairs(txt_path):
        try:
            with open(txt_path, encoding="utf-8") as f:
                lines = [ln.rstrip("\r\n") for ln in f if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise BadRecord(f"cannot read ({e})") from None
        if len(lines) != 2:
            raise BadRecord(f"expected two 'question<TAB>answer' lines, found {len(lines)}")
        pairs = []
        for n, line in enumerate(lines, 1):
            q, tab, a = line.rpartition("\t")
            if not tab or not q.strip():
                raise BadRecord(f"line {n} is not 'question<TAB>answer'")
            if a.strip().lower() not in ANSWERS:
                raise BadRecord(f"line {n}: answer {a.strip()!r} is not Yes or No")
            pairs.append((q.strip(), ANSWERS[a.strip().lower()]))
        return pairs

    def _sample(self, i, row):
        sub, img, q, a, order = row
        name = os.path.basename(img)
        meta = {"subtask": sub, "question": q, "answer": a, "image_name": name, "order": order}
        return Sample(index=i, image=img, instruction=q, response=a, image_id=name, meta=meta)
