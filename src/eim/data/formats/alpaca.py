"""Alpaca-52k instruction data (text only), docs/design.md §5: ``[{"instruction", "input", "output"}]``.

The instruction is Stanford Alpaca's own prompt (:data:`PROMPT_INPUT` / :data:`PROMPT_NO_INPUT`),
the one LLaMA-Adapter trains with, so text-only tuning here matches the published recipe.
Records have no id; they are named by position (``#17``), so duplicates cannot be told apart
from legitimately repeated instructions and are not checked.
"""

import os

from eim.data.base import BadRecord, RecordDataset, read_data_json, require, text_field
from eim.data.sample import Sample
from eim.errors import DataError

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
        data = read_data_json(path)
        if not isinstance(data, list):
            raise DataError("expected a JSON list of {instruction, input, output} records",
                            file=path, remedy="point --data at an Alpaca JSON")
        for pos, rec in enumerate(data):
            rid = f"#{pos}"
            try:
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
