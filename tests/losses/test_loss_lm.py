"""loss_LM's query (eim.losses.loss_lm) asks the LLM for the last position's logits only
(``logits_to_keep=1``): the final hidden states it reads are those of the plain call, for every LLM
family and tuning mode (their per-call hooks sit on the whole model, which is still what is called)."""

import pytest
import torch
from helpers import tiny_recipe

from eim.model.multimodal import build_model


@pytest.mark.parametrize("name, lm, over", [
    ("clipcap_eim", "gpt2", {}),  # GPT-2, fully tuned
    ("llava_eim", "llama", {"lm.trainable": "lora"}),  # LoRA layers inside the decoder
    ("lavin_eim", "llama", {}),  # LaVIN's adapters, routed from each row's first real token
    ("llama_adapter_eim", "llama", {"lm.adapter_layer": 2, "lm.adapter_len": 4}),  # adaption prompts
])
def test_last_position_logits_leave_the_hidden_states_alone(tiny_dir, name, lm, over):
    torch.manual_seed(0)
    model, _ = build_model(tiny_recipe(tiny_dir, name, lm=lm, overrides=over))
    model.eval()
    for p in model.parameters():  # LoRA B and gates start at zero: make every added path count
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    ids = torch.randint(3, 200, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # a left-padded row: LaVIN routes it from position 3
    embeds = model.lm.get_input_embeddings()(ids)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    for kw in ({"input_ids": ids, "attention_mask": mask},
               {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": pos}):
        with torch.no_grad():
            whole = model.lm(**kw, output_hidden_states=True, use_cache=False)
            last = model.lm(**kw, output_hidden_states=True, use_cache=False, logits_to_keep=1)
        assert last.logits.shape[1] == 1 and whole.logits.shape[1] == 9
        torch.testing.assert_close(last.hidden_states[-1], whole.hidden_states[-1], rtol=0, atol=0)
