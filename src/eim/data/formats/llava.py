"""LLaVA instruction data (``llava_instruct_150k.json``, ``llava_v1_5_mix665k.json`` and kin), as a JSON
list or as JSON Lines, docs/design.md §5.

``[{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}, ...]}]``; ``image`` is optional
(text-only entries, as in LLaVA-1.5's mix) and relative to ``image_root`` (default: the file's
folder); a leading ``{"from": "system"}`` turn is the conversation's system message. One sample per
conversation (:mod:`eim.data.formats.conversation`): every answer is a target. The text is kept as
LLaVA-1.5's ``preprocess_multimodal`` keeps it: the question holding ``<image>`` without it and
stripped, every other message byte for byte.

An optional ``caption`` per record (eim's addition, not in LLaVA's release: e.g. the image's COCO
caption) is the sample's :attr:`Sample.caption`, the text ``loss_IE``'s bank pairs with the image
(docs/design.md §2); without it the key is the first answer.
"""

from eim.data.base import BadRecord
from eim.data.formats.conversation import ConversationDataset


class LLaVAInstruct(ConversationDataset):
    format = "llava"

    def parse(self, rec):
        conv = rec.get("conversations")
        if not isinstance(conv, list):
            raise BadRecord("lacks a 'conversations' list")
        system = None
        if conv and isinstance(conv[0], dict) and conv[0].get("from") == "system":
            system, conv = str(conv[0].get("value") or "").strip() or None, conv[1:]
        if not conv:
            raise BadRecord("empty conversation")
        if len(conv) % 2:
            raise BadRecord(f"odd number of turns ({len(conv)}): the last question has no answer")
        turns = []
        for t in range(0, len(conv), 2):
            h, g = conv[t], conv[t + 1]
            if not (isinstance(h, dict) and isinstance(g, dict)):
                raise BadRecord(f"turn {t} is not an object")
            if h.get("from") != "human" or g.get("from") != "gpt":
                raise BadRecord(f"turns {t}-{t + 1} are from {h.get('from')!r}, {g.get('from')!r}; "
                                "expected 'human' then 'gpt'")
            turns.append((str(h.get("value") or ""), str(g.get("value") or "")))
        image = rec.get("image")
        if isinstance(image, list):  # some mixes give a list: one image is allowed
            if len(image) > 1:
                raise BadRecord(f"holds {len(image)} images; eim trains one image per sample, as LLaVA-1.5 does")
            image = image[0] if image else None
        if image is not None and not isinstance(image, str):
            raise BadRecord("image is not a path")
        return self.check_turns(turns), image or None, system
