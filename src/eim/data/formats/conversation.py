"""What the conversation formats share (docs/design.md §5): records read from JSON or JSON Lines, one
sample per conversation, at most one image, placed at the start of the first user turn.

A conversation is ``[(question, answer), ...]`` (:attr:`eim.data.sample.Sample.turns`), an optional
system message (:attr:`Sample.system`: it replaces the conversation template's system line) and an
optional image. The text is kept as LLaVA-1.5's ``preprocess_multimodal`` keeps it: a message that
holds ``<image>`` loses every ``<image>`` (nothing put in its place) and is stripped, since the
conversation template writes the image itself (``<image>\\n`` then the question, at the start of the
first user turn, as LLaVA-1.5 does); every other question and every answer is kept byte for byte,
whitespace included. Every answer is a target when the sample trains (:mod:`eim.model.template`).
"""

import json
import os

from eim.data.base import BadRecord, RecordDataset, abspath, read_data_json
from eim.data.sample import Sample
from eim.errors import DataError

IMAGE_TOKEN = "<image>"


def without_image_token(text: str) -> str:
    """A message that held ``<image>``, as LLaVA's ``preprocess_multimodal`` leaves its text: every
    ``<image>`` removed (``"Look at <image> this"`` -> ``"Look at  this"``), then stripped."""
    return text.replace(IMAGE_TOKEN, "").strip()


def is_jsonl(path: str) -> bool:
    return str(path).endswith(".jsonl")


def read_records(path: str) -> list[tuple[str, object]]:
    """``[(position id, record)]`` of a JSON list (``#k``) or a JSON Lines file (``line k``, blank lines
    skipped). A JSON Lines line that does not parse is a bad record: its record is the
    :class:`BadRecord` to reject, so ``--skip-bad`` can skip it like any other."""
    if not is_jsonl(path):
        data = read_data_json(path)
        if not isinstance(data, list):
            raise DataError("expected a JSON list of records", file=path,
                            remedy="point --data at a JSON list, or a .jsonl file with one record per line")
        return [(f"#{i}", rec) for i, rec in enumerate(data)]
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append((f"line {n}", json.loads(line)))
                except json.JSONDecodeError as e:
                    out.append((f"line {n}", BadRecord(f"malformed JSON at column {e.colno}: {e.msg}")))
    except FileNotFoundError:
        raise DataError("file not found", file=path, remedy="check the --data path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read file ({e})", file=path, remedy="check the file") from None
    return out


class ConversationDataset(RecordDataset):
    """Base of the conversation formats: a subclass's :meth:`parse` turns one record into
    ``(turns, image path relative to image_root or None, system or None)``; the rest (ids, the
    optional ``caption``, image checks, bad records) is shared."""

    def __init__(self, path, split="train", mode="train", image_root=None, skip_bad=False, check_images=True):
        # the file is the split: LLaVA ships one file per mixture, so `split` is a label only
        super().__init__(split, mode, skip_bad)
        path = os.path.abspath(path)
        self.path, self.files = path, [path]
        self.image_root = os.path.abspath(image_root or os.path.dirname(path))
        check = self._checker(check_images)
        seen = {}
        for pos, rec in read_records(path):
            rid = str(rec.get("id", pos)) if isinstance(rec, dict) and "id" in rec else pos
            try:
                if isinstance(rec, BadRecord):
                    raise rec
                if not isinstance(rec, dict):
                    raise BadRecord(f"expected a JSON object, found {type(rec).__name__}")
                if "id" in rec:
                    if rid in seen:
                        raise BadRecord(f"duplicate id {rid} (first at {seen[rid].replace('#', 'position ')})")
                    seen[rid] = pos
                turns, image, system = self.parse(rec)
                caption = rec.get("caption")
                if caption is not None and not (isinstance(caption, str) and caption.strip()):
                    raise BadRecord("caption is not a non-empty string")
                img = None
                if image:
                    img = abspath(self.image_root, image)
                    bad = check(img, rid, path)
                    if bad:
                        hint = "" if image_root else " (relative paths resolve against the JSON's folder; pass --image-root DIR)"
                        raise BadRecord(bad + hint)
            except BadRecord as b:
                self._reject(rid, str(b), path)
                continue
            self._rows.append((rid, img, tuple(turns), system, caption and caption.strip()))
        self._finish(check)

    def parse(self, record: dict) -> tuple[list[tuple[str, str]], object, object]:
        raise NotImplementedError

    @staticmethod
    def check_turns(turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The turns as LLaVA-1.5 reads them (the module's docstring): a question that holds
        ``<image>`` without it and stripped, the rest as written. BadRecord, naming the turn (the
        message's position in the conversation), for an empty conversation, a question after the
        first that is empty or whitespace, an answer that is, an answer holding ``<image>``, or
        ``<image>`` in more than one question (LLaVA-1.5: one image per sample). A record without an
        image keeps the rule (``<image>`` removed from the text), where LLaVA would read it as words."""
        if not turns:
            raise BadRecord("empty conversation")
        marked = [2 * t for t, (q, _) in enumerate(turns) if IMAGE_TOKEN in q]
        if len(marked) > 1:
            raise BadRecord(f"<image> in turns {' and '.join(map(str, marked))}; one image per sample, as LLaVA-1.5 "
                            "trains: keep it in the first question")
        out = []
        for t, (q, a) in enumerate(turns):
            q, a = str(q), str(a)
            if IMAGE_TOKEN in q:
                q = without_image_token(q)
            if not q.strip() and t:  # the first question may be the image alone (LLaVA's captions: "<image>")
                raise BadRecord(f"empty question (turn {2 * t})")
            if not a.strip():
                raise BadRecord(f"empty response (turn {2 * t + 1})")
            if IMAGE_TOKEN in a:
                raise BadRecord(f"turn {2 * t + 1}: an answer cannot hold the image")
            out.append((q, a))
        return out

    def _sample(self, i, row):
        rid, img, turns, system, caption = row
        (q, a) = turns[0]
        return Sample(index=i, image=img, instruction=q, response=a, caption=caption, image_id=rid,
                      turns=list(turns) if len(turns) > 1 else None, system=system,
                      meta={"id": rid, "turns": len(turns), "has_image": img is not None})
