"""A short run's loss curve is pinned (eim.train.trainer, docs/design.md §3): speed work on the
step (the vectorised splice, fused AdamW, GPT-2's GELU as one kernel, the bank loss) must leave
the per-step losses where the unchanged math put them.

The reference values were printed by the trainer as it was before issue 16's changes (commit
852d5a0: per-row splice, single-tensor AdamW, transformers' ``gelu_new``), on the session
fixtures (tiny CLIP + GPT-2 / LLaMA, 16 captions, batch 5). Float tolerance only: summation order
may differ, the arithmetic may not.
"""

import json

import pytest
import torch
from helpers import steps, tiny_recipe

from eim.api import train

REFERENCE = {  # case: (recipe, lm folder, steps per stage, stages, [[loss_<name> per stage loss] per step])
    "clipcap_gpt2": ("clipcap", "gpt2", 6, 1, [
        [5.6982879638671875], [5.608382225036621], [5.513449192047119], [5.476797580718994],
        [5.4202799797058105], [5.394771099090576]]),
    "clipcap_gpt2_left": ("clipcap", "gpt2_left", 6, 1, [
        [5.6982879638671875], [5.608382701873779], [5.513449192047119], [5.476797580718994],
        [5.420280456542969], [5.394771099090576]]),
    "clipcap_llama": ("clipcap", "llama", 6, 1, [
        [5.6982221603393555], [5.6080403327941895], [5.572566986083984], [5.540340423583984],
        [5.451664447784424], [5.448644161224365]]),
    "clipcap_eim_gpt2": ("clipcap_eim", "gpt2", 3, 3, [  # loss_st ×3, loss_lm ×3, (loss_base, loss_ie) ×3
        [3.878037214279175], [3.0776565074920654], [3.225299119949341],
        [1.872489333152771], [1.824599266052246], [1.7358278036117554],
        [5.763314247131348, 4.921366214752197], [5.631404399871826, 4.046624183654785],
        [5.553735256195068, 2.8642992973327637]]),
}


def _curve(tiny_dir, data, out, name, lm, n, k):
    torch.manual_seed(0)
    recipe = tiny_recipe(tiny_dir, name, lm=lm, overrides=steps(name, n, k, **{"train.batch_size": 5}))
    train(recipe, data, out, quiet=True)
    rows = []
    for i, stage in enumerate(recipe.stages):
        lines = (out / f"stage-{i}-{stage.name}" / "metrics.jsonl").read_text().splitlines()
        rows += [[json.loads(line)[f"loss_{loss}"] for loss in stage.losses] for line in lines]
    return rows


@pytest.mark.parametrize("case", list(REFERENCE))
def test_short_run_losses_equal_the_unchanged_math(tiny_dir, data, tmp_path, case):
    name, lm, n, k, want = REFERENCE[case]
    got = _curve(tiny_dir, data, tmp_path, name, lm, n, k)
    assert [len(r) for r in got] == [len(r) for r in want]
    flat = [torch.tensor([v for r in rows for v in r], dtype=torch.float64) for rows in (got, want)]
    torch.testing.assert_close(*flat, rtol=2e-6, atol=2e-6)
