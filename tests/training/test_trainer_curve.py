"""A short run's loss curve is pinned (eim.training.trainer, docs/design.md §3): speed work on the
step (the vectorised splice, fused AdamW, GPT-2's GELU as one kernel, the bank loss) must leave
the per-step losses where the unchanged math put them.

The reference values were printed by the trainer as it was before issue 16's changes (commit
72d826b: per-row splice, single-tensor AdamW, transformers' ``gelu_new``; first pinned at 852d5a0,
re-pinned after issue 13 gave the tiny CLIP a CLIP-layout tokenizer and EIM's loss_LM stage its
own rate), on the session fixtures (tiny CLIP + GPT-2 / LLaMA, 16 captions, batch 5). Float tolerance only: summation order
may differ, the arithmetic may not.
"""

import json

import pytest
import torch
from helpers import steps, tiny_recipe

from eim.api import train

REFERENCE = {  # case: (recipe, lm folder, steps per stage, stages, [[loss_<name> per stage loss] per step])
    "clipcap_gpt2": ("clipcap", "gpt2", 6, 1, [
        [5.712687969207764], [5.612270355224609], [5.520545482635498], [5.470902442932129],
        [5.429351806640625], [5.3993144035339355]]),
    "clipcap_gpt2_left": ("clipcap", "gpt2_left", 6, 1, [
        [5.712687969207764], [5.612270832061768], [5.520545482635498], [5.470902442932129],
        [5.429351806640625], [5.3993144035339355]]),
    "clipcap_llama": ("clipcap", "llama", 6, 1, [
        [5.668008804321289], [5.581662178039551], [5.556120872497559], [5.518300533294678],
        [5.432133674621582], [5.4309515953063965]]),
    "clipcap_eim_gpt2": ("clipcap_eim", "gpt2", 3, 3, [  # loss_st ×3, loss_lm ×3, (loss_base, loss_ie) ×3
        [5.364533424377441], [3.409602403640747], [3.224836826324463], [1.872489333152771],
        [1.8130697011947632], [1.595725417137146], [5.751144886016846, 2.698476552963257],
        [5.610965728759766, 2.900787353515625], [5.532247543334961, 3.0809226036071777]]),
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
