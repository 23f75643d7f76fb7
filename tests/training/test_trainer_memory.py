"""The memory levers as recipe fields (eim.training.trainer): 16-bit weights with float32 trainable
parameters, per-stage batches, gradient clipping, the attention implementation, data-loader workers."""

import json

import pytest
import torch
from helpers import steps, tiny_recipe

from eim.api import train
from eim.banks import BankProvider
from eim.errors import ConfigError
from eim.model.multimodal import build_model
from eim.recipe import load_recipe
from eim.training.checkpoint import tunable_state
from eim.training.loader import loader_workers


@pytest.mark.parametrize("name, lm, over", [
    ("clipcap_eim", "gpt2", {}),  # GPT-2 fully tuned, VPT
    ("llava_eim", "llama", {"lm.trainable": "lora"}),  # LoRA LLM, LoRA CLIP
    ("lavin_eim", "llama", {}),  # adapters in both segments
    ("llama_adapter_eim", "llama", {"lm.adapter_layer": 2, "lm.adapter_len": 4}),  # adaption prompts, VPT
])
def test_bfloat16_weights_train_float32_parameters(tiny_dir, data, tmp_path, name, lm, over):
    """``vision.dtype`` / ``lm.dtype`` bfloat16: the frozen weights stay bfloat16, what a stage trains
    is float32 (the optimiser's), the run computes under bf16 autocast, and the frozen LLM of the
    banks computes in bfloat16 too (part of the bank's fingerprint)."""
    over = {**over, "vision.dtype": "bfloat16", "lm.dtype": "bfloat16", "train.save_every": 2}
    recipe = tiny_recipe(tiny_dir, name, lm=lm, overrides={**over, **steps(name, 2, len(load_recipe(name).stages))})
    for s in recipe.stages:
        s.data = None
    summaries = train(recipe, data, tmp_path / "run", quiet=True)
    assert all(torch.isfinite(torch.tensor(list(s["final"].values()))).all() for s in summaries)
    model, _ = build_model(recipe)
    assert model.lm.get_input_embeddings().weight.dtype == torch.bfloat16
    assert next(model.vision.vision_model.parameters()).dtype == torch.bfloat16
    assert next(model.projector.parameters()).dtype == torch.float32  # built trainable
    from eim.training.checkpoint import find_checkpoint, load_checkpoint

    load_checkpoint(model, find_checkpoint(tmp_path / "run")[1])  # a float32 checkpoint loads into it
    fp = json.loads((tmp_path / "run" / "banks" / "lm.json").read_text())
    assert fp["model"]["dtype"] == "bfloat16"
    fp32 = BankProvider(tiny_recipe(tiny_dir, name, lm=lm), data, tmp_path).fingerprint("lm")
    assert "dtype" not in fp32["model"]  # float32 banks keep the fingerprint they always had


def test_the_trainable_parameters_are_float32_during_the_stage(tiny_dir, data, tmp_path):
    seen = {}

    def record(trainer, k, step):
        seen[k] = {p.dtype for seg in trainer.recipe.stages[k].trainable for p in trainer.model.segment_tunable(seg)}
        seen[f"frozen{k}"] = trainer.model.vision.vision_model.embeddings.patch_embedding.weight.dtype

    over = {"vision.dtype": "bfloat16", "lm.dtype": "bfloat16", **steps("clipcap_eim", 1, 3)}
    train(tiny_recipe(tiny_dir, "clipcap_eim", overrides=over), data, tmp_path, quiet=True, callbacks=[record])
    assert seen[0] == seen[1] == seen[2] == {torch.float32}
    assert seen["frozen0"] == torch.bfloat16  # CLIP's tower: VPT trains the prompts only


def test_mixed_dtypes_and_no_autocast_are_refused():
    with pytest.raises(ConfigError, match="one run computes in one 16-bit precision"):
        load_recipe("llava", {"vision.dtype": "float16", "lm.dtype": "bfloat16"})
    with pytest.raises(ConfigError, match="compute under autocast: set train.mixed_precision auto or bf16"):
        load_recipe("llava", {"lm.dtype": "bfloat16", "train.mixed_precision": "no"})


def test_per_stage_batch_and_accumulation(tiny_dir, data, tmp_path):
    """``stages.<k>.batch_size`` / ``grad_accum`` (LLaVA-1.5: 32 then 16 per device): a stage's epochs
    count its own batches, and it sees them."""
    sizes = {}

    def record(trainer, k, step):
        sizes.setdefault(k, trainer.acc.gradient_accumulation_steps)

    over = {"stages": [{"name": "a", "losses": {"base": 1.0}, "trainable": ["projector"], "epochs": 1, "batch_size": 8},
                       {"name": "b", "losses": {"base": 1.0}, "trainable": ["projector", "lm"], "epochs": 1,
                        "batch_size": 2, "grad_accum": 2}]}
    out = train(tiny_recipe(tiny_dir, overrides=over), data, tmp_path, quiet=True, callbacks=[record])
    assert [s["steps"] for s in out] == [2, 4] and sizes == {0: 1, 1: 2}  # 16 samples: 16/8, then 16/(2·2)


def test_gradient_clipping_logs_the_norm_and_bounds_the_update(tiny_dir, data, tmp_path):
    over = {**steps("c", 1), "train.max_grad_norm": 1e-3, "train.lr": 1.0, "train.warmup_steps": 0}
    recipe = tiny_recipe(tiny_dir, overrides=over)
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in tunable_state(build_model(recipe)[0]).items() if k.startswith("projector")}
    train(recipe, data, tmp_path, quiet=True)
    rows = [json.loads(x) for x in (tmp_path / "stage-0-base" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["grad_norm"] > 1e-3  # the norm before clipping
    from helpers import final_weights

    after = final_weights(tmp_path)
    # AdamW's first step moves each weight by about lr whatever the gradient's scale: clipping shows in
    # no weight moving more than lr, and in the logged norm
    assert max((after[k] - before[k]).abs().max() for k in before) <= 1.0 + 1e-6
    with pytest.raises(ConfigError, match="train.max_grad_norm must be > 0"):
        load_recipe("clipcap", {"train.max_grad_norm": 0})


def test_attention_implementation(tiny_dir):
    for impl in ("eager", "sdpa"):
        model, _ = build_model(tiny_recipe(tiny_dir, "llava", lm="llama", overrides={"lm.attn_implementation": impl}))
        assert model.lm.config._attn_implementation == impl
    with pytest.raises(ConfigError, match="flash_attention_2 needs the flash_attn package and a CUDA device"):
        build_model(tiny_recipe(tiny_dir, "llava", lm="llama", overrides={"lm.attn_implementation": "flash_attention_2"}))
    with pytest.raises(ConfigError, match="lm.attn_implementation: 'flash' is not allowed"):
        load_recipe("llava", {"lm.attn_implementation": "flash"})


def test_loader_workers_auto_is_none_without_cuda():
    assert loader_workers("auto", cuda=False) == 0 and loader_workers("3", cuda=False) == 3
    assert 1 <= loader_workers("auto", cuda=True) <= 4
    with pytest.raises(ConfigError, match="train.num_workers"):
        load_recipe("clipcap", {"train.num_workers": "many"})


def test_a_16bit_llm_trained_then_frozen_is_16bit_again_and_resumes_exactly(tiny_dir, data, tmp_path):
    """llava_eim with the whole bfloat16 LLM trained by loss_LM, then frozen while the projector
    trains: the LLM is float32 for its stage only, bfloat16 again after it, and a run killed in the
    later stage resumes (from the earlier stage's float32 file) to the same weights, bit for bit."""
    from helpers import Interrupt, final_weights, interrupt_at

    seen = {}

    def record(trainer, k, step):
        seen[k] = trainer.model.lm.get_input_embeddings().weight.dtype

    over = {"lm.trainable": "full", "vision.dtype": "bfloat16", "lm.dtype": "bfloat16", "train.save_every": 2,
            **steps("llava_eim", 4, 3)}
    recipe = tiny_recipe(tiny_dir, "llava_eim", lm="llama", overrides=over)
    recipe.stages = recipe.stages[:3]  # st (projector), lm (the LLM), pretrain (projector, LLM frozen)
    for s in recipe.stages:
        s.data = None
    assert [s.trainable for s in recipe.stages][1:] == [["lm"], ["projector"]]
    train(recipe, data, tmp_path / "full", quiet=True, callbacks=[record])
    assert seen == {0: torch.bfloat16, 1: torch.float32, 2: torch.bfloat16}
    with pytest.raises(Interrupt):
        train(recipe, data, tmp_path / "cut", quiet=True, callbacks=[interrupt_at(2, 3)])
    train(recipe, data, tmp_path / "cut", quiet=True, resume=True)
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
