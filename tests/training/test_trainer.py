"""Stages, resume and trainable sets on tiny models (eim.training.trainer)."""

import json

import pytest
import torch
from helpers import Interrupt, final_weights, interrupt_at, steps, tiny_recipe

from eim.api import train
from eim.io import load_tensors
from eim.model.multimodal import build_model
from eim.training.checkpoint import tunable_state


@pytest.mark.parametrize("name,k,group,extra", [("clipcap", 1, None, {}), ("clipcap_eim", 3, None, {}),
                                                ("clipcap", 1, "modality_length", {}),
                                                # a loss's own head (loss_IE's linear one) is in the checkpoint too
                                                ("clipcap_eim", 3, None, {"eim.ie_head": "linear"})])
def test_resume_after_interrupt_equals_uninterrupted(tiny_dir, data, tmp_path, name, k, group, extra):
    over = steps(name, 6, k, **{"train.save_every": 2, "train.group_by": group, **extra})
    torch.manual_seed(0)
    train(tiny_recipe(tiny_dir, name, overrides=over), data, tmp_path / "full", quiet=True)
    # interrupted in the middle of the last stage, after its checkpoint at step 4
    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        train(tiny_recipe(tiny_dir, name, overrides=over), data, tmp_path / "cut", quiet=True,
              callbacks=[interrupt_at(k - 1, 5)])
    assert (sorted((tmp_path / "cut").glob("stage-*"))[-1] / "checkpoint" / "model.safetensors").exists()
    torch.manual_seed(123)  # resuming must not depend on the fresh process's RNG
    train(tiny_recipe(tiny_dir, name, overrides=over), data, tmp_path / "cut", quiet=True, resume=True)
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_stages_only_change_their_trainable_segments(tiny_dir, data, tmp_path):
    recipe = tiny_recipe(tiny_dir, "clipcap_eim", overrides=steps("e", 3, 3))
    train(recipe, data, tmp_path, quiet=True)
    torch.manual_seed(recipe.train.seed)  # as train() does, so the VPT prompts start equal
    model, _ = build_model(recipe)
    before = {k: v.clone() for k, v in tunable_state(model).items()}
    for k, stage in enumerate(recipe.stages):
        # a stage's file holds what it trained: every parameter of its segments, nothing else
        own = load_tensors(tmp_path / f"stage-{k}-{stage.name}" / "model.safetensors")[0]
        assert {key for key in before if key.split(".")[0] in stage.trainable} == set(own), stage.name
        after = {**before, **own}  # the model after the stage, as readers compose it
        changed = {key.split(".")[0] for key in after if not torch.equal(after[key], before[key])}
        assert changed == set(stage.trainable), (stage.name, changed)
        before = after


def test_each_loss_decreases_when_its_stage_trains(tiny_dir, data, tmp_path):
    over = steps("e", 25, 3, **{"train.lr": 3e-3, "train.scheduler": "constant", "train.batch_size": 8})
    recipe = tiny_recipe(tiny_dir, "clipcap_eim", overrides=over)
    train(recipe, data, tmp_path, quiet=True)
    for k, stage in enumerate(recipe.stages):
        rows = [json.loads(l) for l in (tmp_path / f"stage-{k}-{stage.name}" / "metrics.jsonl").read_text().splitlines()]
        for name in stage.losses:
            first = sum(r[f"loss_{name}"] for r in rows[:3]) / 3
            last = sum(r[f"loss_{name}"] for r in rows[-3:]) / 3
            assert last < first, (stage.name, name, first, last)


def test_lora_modes_train_only_lora_and_projector(tiny_dir, data, tmp_path):
    over = steps("l", 2, 3, **{"vision.trainable": "lora", "lm.trainable": "lora", "lm.lora_target": ["c_attn"]})
    recipe = tiny_recipe(tiny_dir, "clipcap_eim", overrides=over)
    train(recipe, data, tmp_path, quiet=True)
    final = load_tensors(tmp_path / "stage-2-base_ie" / "model.safetensors")[0]
    assert final and all(k.startswith("projector.") or "lora_" in k for k in final)
    assert any(k.startswith("vision.") for k in final) and any(k.startswith("lm.") for k in final)
    torch.manual_seed(recipe.train.seed)
    model, _ = build_model(recipe)
    init = tunable_state(model)
    lm_lora_b = [k for k in final if k.startswith("lm.") and "lora_B" in k]
    assert lm_lora_b and any(not torch.equal(final[k], init[k]) for k in lm_lora_b)  # LoRA B starts at 0, then trains


def test_frozen_segments_run_in_eval_mode(tiny_dir, data, tmp_path):
    """With a dropout LLM (0.1, as GPT-2's): a segment a stage does not train runs in eval mode, so
    it computes what it computed when its bank was built; trained segments run in train mode."""
    from eim_harness.tiny import make_tiny_lm, make_tokenizer
    from helpers import TEXTS

    make_tiny_lm(tmp_path / "gpt2_dropout", make_tokenizer(TEXTS, vocab_size=300), dropout=0.1)
    recipe = tiny_recipe(tiny_dir, "clipcap_eim", overrides=steps("e", 2, 3, **{
        "lm.name_or_path": str(tmp_path / "gpt2_dropout"), "stages.0.losses": {"base": 1.0, "st": 1.0},
        "train.cache_clip_features": False}))
    seen = {}

    def modes(trainer, k, s):
        m = trainer.model
        seen[k] = {seg: getattr(m, seg).training for seg in ("vision", "projector", "lm")}
        seen[k]["dropout"] = any(x.training for x in m.lm.modules() if isinstance(x, torch.nn.Dropout))

    train(recipe, data, tmp_path / "run", quiet=True, callbacks=[modes])
    # stage 0 (ST + base, the LLM frozen and run), stage 1 (the LLM trained), stage 2 (all)
    assert seen[0] == {"vision": False, "projector": True, "lm": False, "dropout": False}
    assert seen[1] == {"vision": False, "projector": False, "lm": True, "dropout": True}
    assert seen[2] == {"vision": True, "projector": True, "lm": True, "dropout": True}


def test_cached_clip_features_are_recomputed_after_clip_trains(tiny_dir, data, tmp_path):
    """st (cached CLIP features) -> base+ie (CLIP's prompts train) -> base (cached again): the last
    stage reads the features of the CLIP the second stage left, not the first stage's cache."""
    over = steps("x", 2, 3, **{"stages.2.name": "base", "stages.2.losses": {"base": 1.0},
                               "stages.2.trainable": ["projector"], "stages.2.epochs": None, "stages.2.steps": 2,
                               "stages.1.name": "base_ie", "stages.1.losses": {"base": 1.0, "ie": 1.0},
                               "stages.1.trainable": ["vision", "projector", "lm"], "train.lr": 0.05})
    recipe = tiny_recipe(tiny_dir, "clipcap_eim", overrides=over)
    checked = []

    def compare(trainer, k, s):
        if k == 2 and s == 1:
            cache = trainer.features.get()
            path = sorted(cache)[0]
            pix = trainer.proc(images=[__import__("eim.data", fromlist=["load_image"]).load_image(path)],
                               return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                fresh = trainer.model.vision.eval()(pix)[0]
            checked.append(torch.allclose(cache[path], fresh, atol=1e-5))

    train(recipe, data, tmp_path, quiet=True, callbacks=[compare])
    assert checked == [True]


def test_stage_optimizer_is_fused_adamw_on_cpu():
    from eim.training.optim import adamw as _adamw

    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    assert _adamw(params, 1e-3, 0.0).defaults["fused"] is True
    assert not _adamw(params, 1e-3, 0.0, fused=False).defaults["fused"]  # FSDP / DeepSpeed: engine default
    ints = [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64)), torch.zeros(2, dtype=torch.long)]
    assert not _adamw(ints, 1e-3, 0.0).defaults["fused"]  # fused needs floating tensors
