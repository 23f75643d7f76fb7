"""Small real-architecture models saved as Hugging Face folders (tests and the embedded demo).

No pretrained CLIP or GPT-2 weights can be downloaded on this platform (docs/design.md §7), so tests and
the demo build ``CLIPModel``/``GPT2LMHeadModel``/``LlamaForCausalLM`` from small configs, save them
with ``save_pretrained`` and load them back through the same path a user's real model takes.
"""

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from eim.model.tokenizer import train_bpe_tokenizer
from eim.model.vision import CLIPImageProcessor


def make_tokenizer(texts, vocab_size=400, padding_side="right"):
    return train_bpe_tokenizer(texts, vocab_size=vocab_size, padding_side=padding_side)


def make_tiny_clip(out_dir, tokenizer, image_size=32, patch_size=8, width=32, layers=2, heads=2,
                   projection_dim=24, text_width=32, text_layers=None, max_text_len=64, seed=0):
    """Save a random ``CLIPModel`` + the tokenizer + a CLIP image processor to ``out_dir``.

    ``text_layers`` (default ``layers``) and ``text_width`` size the text tower on its own. The text
    config's ``eos_token_id`` is the tokenizer's EOS, so CLIP's pooler takes the state at the first
    EOS (pad is EOS too: the first one ends the caption).
    """
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=text_width, intermediate_size=4 * text_width,
                         num_hidden_layers=text_layers or layers, num_attention_heads=heads,
                         max_position_embeddings=max_text_len, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                           num_attention_heads=heads, image_size=image_size, patch_size=patch_size),
        projection_dim=projection_dim,
    )
    model = CLIPModel(cfg)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(out_dir)
    return out_dir


def make_tiny_lm(out_dir, tokenizer, arch="gpt2", width=32, layers=2, heads=2, max_positions=128, seed=0,
                 dropout=0.0):
    """Save a random causal LM (``gpt2`` or ``llama``) + tokenizer to ``out_dir``."""
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=len(tokenizer), n_embd=width, n_layer=layers, n_head=heads,
                         n_positions=max_positions, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
                         resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
        model = GPT2LMHeadModel(cfg)
    elif arch == "llama":
        cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
                          num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                          max_position_embeddings=max_positions, bos_token_id=eos, eos_token_id=eos,
                          pad_token_id=eos, tie_word_embeddings=False)
        model = LlamaForCausalLM(cfg)
    else:
        raise ValueError(f"arch must be gpt2 or llama, got {arch!r}")
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
