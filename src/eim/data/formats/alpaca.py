"""Alpaca-52k instruction data (text only), docs/design.md §5: ``[{"instruction", "input", "output"}]``.

The instruction is Stanford Alpaca's own prompt (:data:`PROMPT_INPUT` / :data:`PROMPT_NO_INPUT`),
the one LLaMA-Adapter trains with, so text-only tuning here matches the published recipe.
Records (a JSON list, or JSON Lines) have no id; they are named by position (``#17``, ``line 18``),
so duplicates cannot be told apart
from legitimately repeated instructions and are not checked.
"""

import os

from eim.data.base import BadRecord, RecordDataset, require, text_field
from eim.data.formats.conversation import read_records
from eim.data.sample import Sample

PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)


class Alpaca(RecordDataset):
    format = "alpaca"

    def __init__(self, path, split="train", mode="train", image_root=None, skip_bad=False,
                 check_images=True):
        super().__init__(split, mode, skip_bad)  # the file is the split; images: none
        path = os.path.abspath(path)
        self.path, self.files = path, [path]
        for pos, (rid, rec) in enumerate(read_records(path)):  # a JSON list or JSON Lines
            try:
                if isinstance(rec, BadRecord):
                    raise rec
                require(rec, "instruction", "output")
                ins = text_field(rec, "instruction")
                out = text_field(rec, "output", "response")
                inp = rec.get("input") or ""
                if not isinstance(inp, str):
                    raise BadRecord("input is not a string")
            except BadRecord as b:
                self._reject(rid, str(b), path)
                continue
            inp = inp.strip()
            prompt = (PROMPT_INPUT.format(instruction=ins, input=inp) if inp
                      else PROMPT_NO_INPUT.format(instruction=ins))
            self._rows.append((pos, prompt, out))
        self._finish()

    def _sample(self, i, row):
        pos, prompt, out = row
        return Sample(index=i, image=None, instruction=prompt, response=out, image_id=pos,
                      meta={"position": pos})
