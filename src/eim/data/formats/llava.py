"""LLaVA instruction data (``llava_instruct_150k.json`` and kin), docs/design.md §5.

``[{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}, ...]}]``. The token
``<image>`` marks where the image goes; it is stripped from the text because the collator
places the image tokens itself (before the instruction). ``image`` is optional (text-only
entries, as in LLaVA-1.5's mix) and relative to ``image_root`` (default: the JSON's folder).
An optional ``caption`` per record (eim's addition, not in LLaVA's release: e.g. the image's COCO
caption) is the sample's :attr:`Sample.caption`, the text ``loss_IE``'s bank pairs with the image
(docs/design.md §2); without it the key is the response, as before.

One sample per (human, gpt) turn pair. Earlier turns are context: each is rendered with
:data:`HISTORY_TEMPLATE` and prepended to the current question, which stays bare like every
other dataset's instruction. A 2-turn conversation therefore gives the instructions
``"q1"`` and ``"Human: q1\\nAssistant: a1\\nq2"``.
"""

import os
import re

from eim.data.base import BadRecord, RecordDataset, abspath, read_data_json
from eim.data.sample import Sample
from eim.errors import DataError

HISTORY_TEMPLATE = "Human: {question}\nAssistant: {answer}\n"


def instruction_after(turns, question):
    """The instruction for ``question`` after the earlier ``turns`` ``[(question, answer)]``: each
    turn rendered with :data:`HISTORY_TEMPLATE`, then the question, bare. What the loader trains on,
    ``eim chat`` asks with and the llava-hf export's chat template reproduces."""
    return "".join(HISTORY_TEMPLATE.format(question=q, answer=a) for q, a in turns) + question
IMAGE_TOKEN = "<image>"
# The token and the newline LLaVA puts after (or before) it: "<image>\nWhat is ..." -> "What is"
_IMAGE_RE = re.compile(r"\s*<image>\s*")


def strip_image_token(text):
    return _IMAGE_RE.sub(" ", text).strip()


class LLaVAInstruct(RecordDataset):
    format = "llava"

    def __init__(self, path, split="train", mode="train", image_root=None, skip_bad=False,
                 check_images=True):
        # The file is the split: LLaVA ships one JSON per mixture, so `split` is a label only.
        super().__init__(split, mode, skip_bad)
        path = os.path.abspath(path)
        self.path, self.files = path, [path]
        self.image_root = os.path.abspath(image_root or os.path.dirname(path))
        data = read_data_json(path)
        if not isinstance(data, list):
            raise DataError("expected a JSON list of conversations (LLaVA's format)", file=path,
                            remedy="point --data at a LLaVA instruction JSON")
        check = self._checker(check_images)
        seen = {}
        for pos, rec in enumerate(data):
            rid = rec.get("id", f"#{pos}") if isinstance(rec, dict) else f"#{pos}"
            try:
                if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list):
                    raise BadRecord("lacks a 'conversations' list")
                if "id" in rec:
                    if rid in seen:
                        raise BadRecord(f"duplicate id {rid} (first at position {seen[rid]})")
                    seen[rid] = pos
                pairs = self._turn_pairs(rec["conversations"])
                caption = rec.get("caption")
                if caption is not None and not (isinstance(caption, str) and caption.strip()):
                    raise BadRecord("caption is not a non-empty string")
                img = None
                if rec.get("image"):
                    img = abspath(self.image_root, rec["image"])
                    bad = check(img, rid, path)
                    if bad:
                        hint = "" if image_root else " (relative paths resolve against the " \
                            "JSON's folder; pass --image-root DIR)"
                        raise BadRecord(bad + hint)
            except BadRecord as b:
                self._reject(rid, str(b), path)
                continue
            for t, (q, a) in enumerate(pairs):
                self._rows.append((rid, img, instruction_after(pairs[:t], q), a, t, caption and caption.strip()))
        self._finish(check)

    @staticmethod
    def _turn_pairs(conv):
        """[(question, answer)]: turns must alternate human, gpt, human, gpt, ..."""
        if not conv:
            raise BadRecord("empty conversation")
        if len(conv) % 2:
            raise BadRecord(f"odd number of turns ({len(conv)}): the last question has no answer")
        pairs = []
        for t in range(0, len(conv), 2):
            h, g = conv[t], conv[t + 1]
            if not (isinstance(h, dict) and isinstance(g, dict)):
                raise BadRecord(f"turn {t} is not an object")
            if h.get("from") != "human" or g.get("from") != "gpt":
                raise BadRecord(f"turns {t}-{t + 1} are from {h.get('from')!r}, "
                                f"{g.get('from')!r}; expected 'human' then 'gpt'")
            q = strip_image_token(str(h.get("value") or ""))
            a = str(g.get("value") or "").strip()
            if not q:
                raise BadRecord(f"empty question (turn {t})")
            if not a:
                raise BadRecord(f"empty response (turn {t + 1})")
            pairs.append((q, a))
        return pairs

    def _sample(self, i, row):
        rid, img, instruction, response, turn, caption = row
        return Sample(index=i, image=img, instruction=instruction, response=response, caption=caption,
                      image_id=rid, meta={"id": rid, "turn": turn, "has_image": img is not None})
