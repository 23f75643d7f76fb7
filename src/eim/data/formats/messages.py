"""Conversations in the ``messages`` layout TRL and LLaMA-Factory use, as a JSON list or JSON Lines
(docs/design.md §5)::

    {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...], "images": ["a.jpg"]}

``content`` is a string (``<image>`` marks the image) or a list of typed parts
(``{"type": "text", "text": ...}``, ``{"type": "image"}``). An optional leading ``system`` message
replaces the conversation template's system line; the rest alternates ``user`` / ``assistant``
and ends with an answer. ``images`` holds at most one path (relative to ``image_root``, default the
file's folder): one image per sample, as LLaVA-1.5 trains; a record with more is a bad record. An
image marker with no image is a bad record too; an image with no marker goes, like every image,
to the start of the first user turn. Optional ``id`` and ``caption`` as in LLaVA's layout. The
text is kept as in LLaVA's layout (:mod:`eim.data.formats.conversation`): the user message that holds
the image (a marker or an ``image`` part) without its markers and stripped, every other message as
written; a list's text parts are joined by a space.
"""

from eim.data.base import BadRecord
from eim.data.formats.conversation import IMAGE_TOKEN, ConversationDataset, without_image_token


def _text(content, where):
    """(text, image markers) of a message's content: a string or a list of typed parts."""
    if isinstance(content, str):
        return content, content.count(IMAGE_TOKEN)
    if not isinstance(content, list):
        raise BadRecord(f"{where}: content is neither a string nor a list of parts")
    text, images = [], 0
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text.append(str(part.get("text") or ""))
            images += text[-1].count(IMAGE_TOKEN)
        elif kind in ("image", "image_url"):
            images += 1
        else:
            raise BadRecord(f"{where}: a content part of type {kind!r} (allowed: text, image)")
    return " ".join(text), images


class Messages(ConversationDataset):
    format = "messages"

    def parse(self, rec):
        msgs = rec.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise BadRecord("lacks a non-empty 'messages' list")
        system, markers = None, 0
        if isinstance(msgs[0], dict) and msgs[0].get("role") == "system":
            system, n = _text(msgs[0].get("content"), "message 0")
            system, markers, msgs = system.strip() or None, n, msgs[1:]
        if len(msgs) % 2:
            raise BadRecord(f"{len(msgs)} user/assistant messages: the conversation must end with an answer")
        turns = []
        for t in range(0, len(msgs), 2):
            u, a = msgs[t], msgs[t + 1]
            roles = [m.get("role") if isinstance(m, dict) else None for m in (u, a)]
            if roles != ["user", "assistant"]:
                raise BadRecord(f"messages {t}-{t + 1} are {roles[0]!r}, {roles[1]!r}; expected 'user' then 'assistant'")
            (q, nq), (ans, na) = _text(u.get("content"), f"message {t}"), _text(a.get("content"), f"message {t + 1}")
            if na:
                raise BadRecord(f"message {t + 1}: an answer cannot hold the image")
            markers += nq
            turns.append((without_image_token(q) if nq else q, ans))  # as LLaVA keeps a message with the image
        images = rec.get("images") or []
        if isinstance(images, str):
            images = [images]
        if not isinstance(images, list) or not all(isinstance(x, str) for x in images):
            raise BadRecord("images is not a list of paths")
        if len(images) > 1:
            raise BadRecord(f"holds {len(images)} images; eim trains one image per sample, as LLaVA-1.5 does")
        if markers > 1:
            raise BadRecord(f"marks {markers} images; eim trains one image per sample, as LLaVA-1.5 does")
        if markers and not images:
            raise BadRecord("marks an image but 'images' names none")
        return self.check_turns(turns), images[0] if images else None, system
