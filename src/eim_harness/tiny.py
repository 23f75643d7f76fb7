"""Small real-architecture models saved as Hugging Face folders (tests and the embedded demo).

Nothing downloads pretrained CLIP or GPT-2 weights at run time (docs/design.md §7), so tests and the
demo build ``CLIPModel``/``GPT2LMHeadModel``/``LlamaForCausalLM`` from small configs, save them with
``save_pretrained`` and load them back through the same path a user's real model takes;
:func:`make_vicuna_lm` writes a LLaMA in the layout lmsys/vicuna-7b-v1.5 ships (SentencePiece
``tokenizer.model``, sharded ``.bin`` weights).
"""

import json
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from eim_harness.tokenizer import train_bpe_tokenizer, train_clip_tokenizer, train_sentencepiece_tokenizer
from eim.model.vision import CLIPImageProcessor


def make_tokenizer(texts, vocab_size=400, padding_side="right", llama_specials=False):
    """A GPT-2-layout tokenizer trained on ``texts`` (for the LLM); ``llama_specials``: LLaMA's
    ``<s>`` / ``</s>`` instead, ``<s>`` added before every text."""
    return train_bpe_tokenizer(texts, vocab_size=vocab_size, padding_side=padding_side, llama_specials=llama_specials)


def make_clip_tokenizer(texts, vocab_size=400):
    """A CLIP-layout tokenizer trained on ``texts`` (for :func:`make_tiny_clip`)."""
    return train_clip_tokenizer(texts, vocab_size=vocab_size)


def make_tiny_clip(out_dir, tokenizer, image_size=32, patch_size=8, width=32, layers=2, heads=2,
                   projection_dim=24, text_width=32, text_layers=None, max_text_len=64, legacy_eos=True, seed=0):
    """Save a random ``CLIPModel`` + its tokenizer + a CLIP image processor to ``out_dir``, laid out
    like the published OpenAI checkpoints.

    ``tokenizer``: a CLIP-layout tokenizer (:func:`eim_harness.tokenizer.train_clip_tokenizer`: it
    adds ``<|startoftext|>`` … ``<|endoftext|>``, the EOT being the highest id). ``legacy_eos``:
    the text config carries the published configs' ``eos_token_id = 2``, for which transformers
    pools the text at the highest token id; False: the tokenizer's EOT id (pooled at its first
    occurrence). ``text_layers`` (default ``layers``) and ``text_width`` size the text tower.
    """
    if tokenizer.bos_token is None or tokenizer("a").input_ids[-1] != tokenizer.eos_token_id:
        raise ValueError("make_tiny_clip needs a CLIP-layout tokenizer that adds BOS and EOS "
                         "(eim_harness.tokenizer.train_clip_tokenizer)")
    torch.manual_seed(seed)
    special = (dict(bos_token_id=0, pad_token_id=1, eos_token_id=2) if legacy_eos else  # openai/clip-vit-*
               dict(bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id))
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=text_width, intermediate_size=4 * text_width,
                         num_hidden_layers=text_layers or layers, num_attention_heads=heads,
                         max_position_embeddings=max_text_len, **special),
        vision_config=dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                           num_attention_heads=heads, image_size=image_size, patch_size=patch_size),
        projection_dim=projection_dim,
    )
    model = CLIPModel(cfg)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.model_max_length = max_text_len
    tokenizer.save_pretrained(out_dir)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(out_dir)
    return out_dir


def make_tiny_lm(out_dir, tokenizer, arch="gpt2", width=32, layers=2, heads=2, max_positions=128, seed=0,
                 dropout=0.0):
    """Save a random causal LM (``gpt2`` or ``llama``) + tokenizer to ``out_dir``."""
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=len(tokenizer), n_embd=width, n_layer=layers, n_head=heads,
                         n_positions=max_positions, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
                         resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
        model = GPT2LMHeadModel(cfg)
    elif arch == "llama":
        cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
                          num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                          max_position_embeddings=max_positions, bos_token_id=bos, eos_token_id=eos,
                          pad_token_id=eos, tie_word_embeddings=False)
        model = LlamaForCausalLM(cfg)
    else:
        raise ValueError(f"arch must be gpt2 or llama, got {arch!r}")
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def make_vicuna_lm(out_dir, texts, vocab_size=400, width=32, layers=2, heads=2, max_positions=4096, shards=2, seed=0):
    """Save a random ``LlamaForCausalLM`` in lmsys/vicuna-7b-v1.5's own layout to ``out_dir``: its
    tokenizer files (:func:`eim_harness.tokenizer.train_sentencepiece_tokenizer`, trained on
    ``texts``; no ``tokenizer.json``), ``config.json`` with Vicuna's special ids (BOS 1, EOS 2, pad 0)
    and float16 weights as ``pytorch_model-0000k-of-0000n.bin`` shards plus
    ``pytorch_model.bin.index.json`` (torch pickles of plain tensors, which transformers reads with
    ``weights_only=True``). The vocabulary is the SentencePiece model's. Returns ``out_dir``."""
    import sentencepiece as spm  # a dependency of eim; the vocabulary size is the model's

    out_dir = Path(out_dir)
    train_sentencepiece_tokenizer(out_dir, texts, vocab_size=vocab_size)
    sp = spm.SentencePieceProcessor(model_file=str(out_dir / "tokenizer.model"))
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=sp.get_piece_size(), hidden_size=width, intermediate_size=2 * width,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=max_positions, rms_norm_eps=1e-5, bos_token_id=sp.bos_id(),
                      eos_token_id=sp.eos_id(), pad_token_id=sp.unk_id(), tie_word_embeddings=False,
                      dtype="float16")
    model = LlamaForCausalLM(cfg).to(torch.float16)
    model.config.save_pretrained(out_dir)
    model.generation_config.save_pretrained(out_dir)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    names = list(state)
    weight_map, total = {}, 0
    for k in range(shards):
        part = names[k * len(names) // shards:(k + 1) * len(names) // shards]
        file = f"pytorch_model-{k + 1:05d}-of-{shards:05d}.bin"
        torch.save({n: state[n] for n in part}, out_dir / file)
        weight_map.update(dict.fromkeys(part, file))
        total += sum(state[n].numel() * state[n].element_size() for n in part)
    (out_dir / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    return out_dir
