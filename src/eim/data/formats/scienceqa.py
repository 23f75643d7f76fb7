"""ScienceQA (Lu et al. 2022) in its published layout, docs/design.md §5.

A folder holding ``problems.json`` (qid -> problem), ``pid_splits.json`` (split -> [qid]) and
``images/<split>/<qid>/image.png`` (``image`` is ``"image.png"`` or null for text-only
problems). ``image_root`` overrides the ``images`` folder.

Image captions, where the folder has them: ``captions.json`` beside ``problems.json`` (LaVIN's
and LLaMA-Adapter's layout; ScienceQA's own ``data/captions.json``), ``{"captions": {qid:
caption}}``, or a path given as ``captions``. A problem's caption becomes ``Sample.caption``:
the text ``loss_IE``'s bank encodes for its image (docs/design.md §2); the prompt does not change
(QCM-ALE uses no caption). Without the file the bank encodes the responses.

The prompt is LaVIN's / LLaMA-Adapter's "QCM-ALE" training format (LaVIN
``util/base_prompt.py``, ``create_training_example``): see :data:`PROMPT_TEMPLATE` and
:data:`RESPONSE_TEMPLATE`. Evaluation reads the letter back with :data:`ANSWER_PATTERN`.
One thing differs from LaVIN, on purpose: a problem without lecture and solution ends at
"The answer is X." (LaVIN means to strip the dangling "BECAUSE:" but assigns the result to
the wrong variable); otherwise the text is LaVIN's, character for character.
"""

import os
import string

from eim.data.base import BadRecord, RecordDataset, abspath, read_data_json, require
from eim.data.sample import Sample
from eim.errors import DataError

# Instruction = question, context (the hint, "N/A" when empty) and options "(A) x (B) y".
PROMPT_TEMPLATE = "Question: {question}\nContext: {context}\nOptions: {options}\nResponse:"
# Response = answer letter, then lecture and solution (newlines written as "\\n" like LaVIN,
# a GPT-3-era choice kept so the targets match published LaVIN/LLaMA-Adapter training text).
RESPONSE_TEMPLATE = "The answer is {answer}. BECAUSE: {lecture} {solution}"
ANSWER_PATTERN = r"The answer is ([A-Z])."
LETTERS = string.ascii_uppercase
# Requested split -> the split folder its images live in (mini* are subsets of the full ones).
# Used only when a problem lacks its own "split" field.
IMAGE_SPLIT = {"minitrain": "train", "minival": "val", "minitest": "test"}
CAPTIONS_FILE = "captions.json"
SUBJECT_TAG = {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}


def build_prompt(problem):
    """(instruction, response) for one problems.json entry, in the QCM-ALE format."""
    context = (problem.get("hint") or "").strip() or "N/A"
    options = " ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(problem["choices"]))
    instruction = PROMPT_TEMPLATE.format(question=problem["question"], context=context,
                                         options=options)
    lecture = (problem.get("lecture") or "").replace("\n", "\\n")
    solution = (problem.get("solution") or "").replace("\n", "\\n")
    response = RESPONSE_TEMPLATE.format(answer=LETTERS[problem["answer"]], lecture=lecture,
                                        solution=solution)
    # LaVIN: collapse double spaces once and strip; then drop an empty "BECAUSE:".
    instruction = instruction.replace("  ", " ").strip()
    response = response.replace("  ", " ").strip()
    if response.endswith("BECAUSE:"):
        response = response[: -len("BECAUSE:")].strip()
    return instruction, response


def categories(problem):
    """The scoring buckets of docs/design.md §6: NAT/SOC/LAN, TXT, IMG, NO, G1-6 / G7-12."""
    tags = [SUBJECT_TAG.get(problem.get("subject"), "OTHER")]
    txt, img = bool((problem.get("hint") or "").strip()), bool(problem.get("image"))
    tags += (["TXT"] if txt else []) + (["IMG"] if img else []) + ([] if txt or img else ["NO"])
    grade = problem.get("grade") or ""
    g = int(grade[5:]) if grade.startswith("grade") and grade[5:].isdigit() else 0
    tags.append("G1-6" if 1 <= g <= 6 else "G7-12" if g >= 7 else "G?")
    return tags


class ScienceQA(RecordDataset):
    format = "scienceqa"

    def __init__(self, path, split="train", mode="train", image_root=None, skip_bad=False,
                 check_images=True, captions=None):
        super().__init__(split, mode, skip_bad)
        if os.path.basename(path) in ("problems.json", "pid_splits.json"):
            path = os.path.dirname(path)
        root = os.path.abspath(path)
        self.root = root
        problems_file = os.path.join(root, "problems.json")
        splits_file = os.path.join(root, "pid_splits.json")
        self.files = [problems_file, splits_file]
        self.image_root = os.path.abspath(image_root or os.path.join(root, "images"))
        dups = []
        problems = read_data_json(problems_file, duplicates=dups)
        splits = read_data_json(splits_file)
        if not isinstance(problems, dict):
            raise DataError("expected an object mapping qid -> problem", file=problems_file,
                            remedy="point --data at a ScienceQA folder")
        if not isinstance(splits, dict):
            raise DataError("expected an object mapping split -> [qid]", file=splits_file,
                            remedy="point --data at a ScienceQA folder")
        if split not in splits:
            raise DataError(f"unknown split {split!r} (this file has: {', '.join(splits)})",
                            file=splits_file, remedy="pass --split with one of them")
        self.captions = self._captions(captions or os.path.join(root, CAPTIONS_FILE), explicit=bool(captions))
        dups = set(dups)
        check = self._checker(check_images)
        seen = set()
        for qid in splits[split]:
            qid = str(qid)
            try:
                if qid in seen:
                    raise BadRecord(f"duplicate id {qid} in split {split!r}")
                seen.add(qid)
                if qid in dups:
                    raise BadRecord(f"duplicate id {qid} in problems.json")
                if qid not in problems:
                    raise BadRecord("listed in pid_splits.json but not in problems.json")
                p = problems[qid]
                require(p, "question", "choices", "answer")
                if not isinstance(p["choices"], list) or len(p["choices"]) < 2:
                    raise BadRecord("needs at least two choices")
                if not isinstance(p["answer"], int) or not 0 <= p["answer"] < len(p["choices"]):
                    raise BadRecord(f"answer index {p['answer']!r} is not a valid choice")
                if not str(p["question"]).strip():
                    raise BadRecord("empty question")
                img = None
                if p.get("image"):
                    folder = str(p.get("split") or IMAGE_SPLIT.get(split, split))
                    img = abspath(self.image_root, folder, qid, p["image"])
                    bad = check(img, qid, problems_file)
                    if bad:
                        raise BadRecord(bad)
            except BadRecord as b:
                self._reject(qid, str(b), problems_file)
                continue
            self._rows.append((qid, p, img))
        self._finish(check)

    def _captions(self, path, explicit):
        """{qid: caption} from a captions file ({} when there is none and none was asked for)."""
        if not os.path.exists(path):
            if explicit:
                raise DataError("no such captions file", file=path,
                                remedy="pass the path of ScienceQA's captions.json, or none")
            return {}
        data = read_data_json(path)
        caps = data.get("captions") if isinstance(data, dict) else None
        if not isinstance(caps, dict) or not all(isinstance(c, str) for c in caps.values()):
            raise DataError('expected {"captions": {qid: caption text}}', file=path,
                            remedy="use ScienceQA's captions.json layout, or remove the file")
        self.files.append(path)
        return {str(q): c.strip() for q, c in caps.items()}

    def _sample(self, i, row):
        qid, p, img = row
        instruction, response = build_prompt(p)
        letter = LETTERS[p["answer"]]
        meta = {
            "qid": qid, "answer": letter, "answer_index": p["answer"],
            "choices": list(p["choices"]), "question": p["question"],
            "hint": p.get("hint") or "", "has_image": img is not None,
            "subject": p.get("subject"), "grade": p.get("grade"), "topic": p.get("topic"),
            "category": p.get("category"), "skill": p.get("skill"),
            "categories": categories(p),
        }
        return Sample(index=i, image=img, instruction=instruction, response=response,
                      image_id=qid, meta=meta, caption=self.captions.get(qid) if img else None)
