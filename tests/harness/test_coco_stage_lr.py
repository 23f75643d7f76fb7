"""The demo's loss_LM stage learning rate keeps the LLM's language (issue 13): after the stage, the
LLM's text-only caption loss on held-out captions stays within 10% of the pretrained LLM's; at the
captioning rate (1e-3, what every stage used before) it does not."""

import torch

from eim.api import train
from eim.data import load_dataset
from eim_harness.coco import PRESETS, recipe_for
from eim_harness.encoders import training_texts
from eim_harness.pretrain import pretrain_lm
from eim.io import load_tensors
from eim.model.splice import TextEncoder
from eim_harness.tiny import make_clip_tokenizer, make_tiny_clip
from eim_harness.tokenizer import train_bpe_tokenizer
from eim.recipe import load_recipe
from eim.training.collate import Collator


def test_lm_stage_lr_keeps_the_caption_loss_within_ten_percent(shapes, tmp_path):
    from transformers import AutoModelForCausalLM

    texts, _ = training_texts(shapes)
    tok = train_bpe_tokenizer(texts, vocab_size=400)
    pretrain_lm(texts, tok, tmp_path / "lm", width=48, layers=2, heads=2, context=32, max_positions=64, steps=200,
                batch_size=16, lr=3e-3, quiet=True)
    make_tiny_clip(tmp_path / "clip", make_clip_tokenizer(texts, 400), image_size=32)
    captions = load_dataset(shapes / "coco", split="train", mode="train")
    held_out = load_dataset(shapes / "coco", split="val", mode="train")
    batch = Collator(TextEncoder(tok, 32), None, mode="text")([held_out[i] for i in range(len(held_out))])
    mask = (torch.arange(batch["input_ids"].shape[1])[None] < batch["text_lengths"][:, None]).long()

    def caption_loss(weights=None):
        lm = AutoModelForCausalLM.from_pretrained(tmp_path / "lm").eval()
        if weights is not None:
            lm.load_state_dict({k[3:]: v for k, v in load_tensors(weights)[0].items() if k.startswith("lm.")},
                               strict=False)
        with torch.no_grad():
            return lm(input_ids=batch["input_ids"], attention_mask=mask, labels=batch["labels"]).loss.item()

    p = PRESETS["tiny"]
    chosen = recipe_for("clipcap_eim", p, tmp_path / "clip", tmp_path / "lm", 0)
    lm_lr = chosen.stage_lr(chosen.stages[1])
    assert chosen.stages[1].name == "lm" and lm_lr == p.lr * 0.03
    pretrained = caption_loss()
    ratios = {}
    for lr in (lm_lr, p.lr):  # the demo's choice, and the captioning rate
        recipe = load_recipe("clipcap_eim", {
            "vision.name_or_path": str(tmp_path / "clip"), "lm.name_or_path": str(tmp_path / "lm"),
            "stages.drop": "st,base_ie", "stages.lm.epochs": None, "stages.lm.steps": p.lm_steps,
            "stages.lm.lr": lr, "train.batch_size": p.batch_size, "train.warmup_steps": p.warmup,
            "train.max_length": p.max_length})
        train(recipe, captions, tmp_path / f"lm-{lr}", quiet=True)
        ratios[lr] = caption_loss(tmp_path / f"lm-{lr}" / "stage-0-lm" / "model.safetensors") / pretrained
    assert ratios[lm_lr] < 1.10, ratios
    assert ratios[p.lr] > 1.10, ratios  # the test can fail: the old rate breaks the LLM
