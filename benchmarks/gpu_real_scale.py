"""GPU benchmark at LLaVA-1.5-7B scale: eim's training steps against transformers' own LLaVA (issue item 4).

    timeout 600 .venv/bin/python benchmarks/gpu_real_scale.py --out "$OUT/gpu_real_scale.md"  # one 80 GB GPU, ≤ 8 min
    .venv/bin/python benchmarks/gpu_real_scale.py --toy --out /tmp/toy.md  # tiny shapes on the CPU, seconds (the tests)

Shapes: LLaVA-1.5-7B — CLIP ViT-L/14-336 (the second-to-last layer's 576 patch features), the
``mlp2x_gelu`` projector, Vicuna-7B (LLaMA-2-7B's shapes) — with random weights built on the GPU
itself (``build_model(recipe, device="meta")``, then ``to_empty`` and transformers' own
``initialize_weights``), in bfloat16 with sdpa attention and gradient checkpointing; LoRA r128 /
α 256 on the LLM's ``q/k/v/o/gate/up/down_proj`` (LLaVA-1.5's ``finetune_lora.sh``); 16 image rows
per step of realistic, unequal lengths (``benchmarks/real_lengths.py``: drawn from a stated,
assumed mixture resembling mix665k's conversations for the instruction stages and LCS-558K's
captions for the caption stages, each batch sorted longest first and padded by the collator to its
longest row, as ``group_by: modality_length`` batches them on one process), under
``train.max_length`` 2,048 (every row ≤ 2,048 positions, the 576 image positions included); a
different batch at each timed step, the same batches for every configuration. CLIP in the loop
(frozen, as LLaVA's stage 2). Trainable parameters in float32 under bf16 autocast, AdamW, gradient
clipping at 1.0.

Measured, each configuration in a ``try`` (a failure prints its error and the rest still runs), the
GPU's peak allocation reset before each (``torch.cuda.max_memory_allocated``, after building:
weights, optimizer state, activations, banks, over all its steps). Each configuration's table line
is printed as soon as it finishes, and the report so far is rewritten to ``--out`` after every line,
so a run stopped by ``timeout`` keeps what it measured:

- **anchor**: ``transformers.LlavaForConditionalGeneration(LlavaConfig(...))`` with the same shapes
  (LLaVA-HF's vocabulary of 32,064 rows for the image token; eim's LLM has Vicuna's 32,000), peft
  LoRA on the same modules of its language model, the projector trained, checkpointing through
  transformers, in a plain loop (forward with ``labels``, backward, clip, fused AdamW) on the same
  token sequences (the image token repeated 576 times where eim splices the image).
- **llava finetune**: the ``llava`` recipe's stage 2 through eim (``benchmarks/memory.py``'s
  :class:`Step`: the trainer's step without the run folder). Targets: ≥ 0.95× the anchor's
  tokens/s at ≤ 1.05× its peak memory.
- **llava_eim** ``st``, ``lm``, ``pretrain``, ``finetune_ie``: each stage's step with banks of the
  real row counts (random unit rows, float16, on the GPU: LCS-558K's 558,128 captions for the
  caption stages, llava_v1_5_mix665k's 665,298 conversations for the instruction stages); the
  extra cost is given against eim's llava finetune step.

"tokens/s" counts tokens as the trainer does (:func:`eim.training.tracking.batch_tokens`: text
tokens plus 576 positions per image, padding excluded; the anchor's input holds each image as 576
image tokens, so its attention mask counts the same): the timed steps' tokens over their time;
"tokens per step" and "step (s)" are the timed steps' means. ``lm`` reads the instruction rows'
bare text. Then the same run prints ``benchmarks/gpu_bank_loss.py --quick``'s table (the Triton
bank-loss kernels at 566,747 × 768), each of its lines kept in ``--out`` too. ``--time-limit``
(seconds, default 450) skips what would start after it, keeping ``--bank-reserve`` seconds for the
bank-loss table. Without CUDA (``--toy`` on the CPU) peak memory is not measured and the bank-loss
table is skipped.
"""

import eim  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_lengths  # the rows' lengths
from memory import LORA_TARGET, Step, words  # the trainer's step, shared with the CPU benchmark
from report import Report  # printed and kept in --out line by line

BANK_ROWS = {"captions": 558_128, "instruct": 665_298}  # LCS-558K, llava_v1_5_mix665k
REAL = dict(batch=16, positions=2048, lora_r=128, lora_alpha=256, warmup=2, steps=3, bank_rows=BANK_ROWS)
TOY = dict(batch=4, positions=128, lora_r=4, lora_alpha=8, warmup=1, steps=2, bank_rows={"captions": 48, "instruct": 64},
           vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=28,
                       patch_size=14),
           text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
           projection_dim=24,
           llm=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=4, vocab_size=32000, max_position_embeddings=256))


# --- the inputs ------------------------------------------------------------------------------------
def toy_configs(root):
    """Config-only folders for the toy shapes (the recipes' hub ids resolve offline to the real ones)."""
    from transformers import CLIPConfig, LlamaConfig

    CLIPConfig(text_config=TOY["text"], vision_config=TOY["vision"],
               projection_dim=TOY["projection_dim"]).save_pretrained(root / "clip")
    LlamaConfig(tie_word_embeddings=False, **TOY["llm"]).save_pretrained(root / "llm")
    return {"vision.name_or_path": str(root / "clip"), "lm.name_or_path": str(root / "llm")}


def recipe(base, size, paths, toy):
    """``base`` with LLaVA-1.5's LoRA on the LLM, every stage at ``size["batch"]`` rows, on ``paths``."""
    from eim.recipe import load_recipe

    over = {"lm.trainable": "lora", "lm.lora_r": size["lora_r"], "lm.lora_alpha": size["lora_alpha"],
            "lm.lora_target": LORA_TARGET, "train.max_length": size["positions"], **paths}
    if toy:
        over["data.system"] = "A chat."  # LLaVA's system line (~45 tokens) would fill most of a toy row
    over.update({f"stages.{s.name}.batch_size": size["batch"] for s in load_recipe(base).stages})
    return load_recipe(base, over)


def make_data(root, size, tokenizer, r, toy):
    """``({"instruct": batches, "captions": batches}, lines)``: ``size["steps"]`` batches of
    ``size["batch"]`` one-turn samples over two drawn images, of realistic unequal lengths in the
    ``llava`` recipe's template for that data (``benchmarks/real_lengths.py``), each sorted longest
    first; ``lines`` describe them (lengths, padding)."""
    from PIL import Image, ImageDraw

    from eim.data.sample import Sample
    from eim.model.splice import TextEncoder

    paths = []
    for i in range(2):
        p = root / f"image{i}.png"
        im = Image.new("RGB", (400, 300), (250, 250, 250))
        ImageDraw.Draw(im).ellipse((60 + 40 * i, 40, 300, 260), fill=(200, 90 * i, 60))
        im.save(p)
        paths.append(str(p))
    out, lines = {}, []
    for kind, question in (("instruct", "Describe the image in detail."), ("captions", "Describe the image briefly.")):
        def sample(n, i, question=question):
            return Sample(index=i, image=paths[i % 2], instruction=question, response=words(n, 1000 + i) + ".",
                          image_id=i % 2)

        enc = TextEncoder.for_recipe(tokenizer, r.recipe, next(s for s in r.recipe.stages if s.data == kind))
        out[kind] = real_lengths.batches(kind, size, enc, r.n_image, sample, toy)
        lines.append(real_lengths.describe(kind, out[kind], enc, r.n_image))
    return out, lines


class Shapes:
    """A recipe and the shapes its model ids resolve to (offline: eim's known configs or a folder)."""

    def __init__(self, recipe):
        from transformers import CLIPConfig

        from eim.model.hub import resolve_config

        self.recipe = recipe
        self.clip = resolve_config(recipe.vision.name_or_path, CLIPConfig)
        self.llm = resolve_config(recipe.lm.name_or_path)
        self.image_size = self.clip.vision_config.image_size
        self.n_image = (self.image_size // self.clip.vision_config.patch_size) ** 2  # LLaVA's features: the patches


class RandomBanks:
    """Banks of ``rows`` random unit rows in float16 on ``device`` (the :class:`eim.losses.BankSource` a
    stage's losses read; what ``eim banks build`` writes, in size)."""

    sharded = False

    def __init__(self, rows, dims, device):
        self.rows, self.dims, self.device, self.banks = rows, dims, device, {}

    def get(self, name):
        if name not in self.banks:
            g = torch.Generator(device=self.device).manual_seed(0)
            bank = torch.empty(self.rows, self.dims[name], dtype=torch.float16, device=self.device)
            for s in range(0, self.rows, 1 << 16):
                e = min(self.rows, s + (1 << 16))
                x = torch.randn(e - s, self.dims[name], device=self.device, generator=g)
                bank[s:e] = torch.nn.functional.normalize(x, dim=-1)
            self.banks[name] = bank
        return self.banks[name]

    def shard_offset(self, name):
        return 0

    def groups(self):
        return torch.arange(self.rows)


# --- the models, built on the device -----------------------------------------------------------------
def materialize(model, device, vision_dtype):
    """eim's model built on ``meta`` given random weights on ``device``: ``to_empty``, then
    transformers' own initialisation (normal(0, 0.02), norms 1, rotary and position buffers) for CLIP
    and the LLM, the torch default for the projector; CLIP (and loss_IE's head kept beside it) in
    ``vision_dtype``, as loading it would give."""
    head = model.vision.ie_projection
    model.to_empty(device=device)
    if head is not None and head.weight.device.type == "meta":
        head.to_empty(device=device)
    with torch.no_grad():
        model.lm.initialize_weights()
        model.vision.vision_model.initialize_weights()
        for m in [*model.projector.modules(), head]:
            if m is not None and hasattr(m, "reset_parameters"):
                m.reset_parameters()
    model.vision.to(vision_dtype)
    if head is not None:
        head.to(vision_dtype)
    return model


def eim_config(r, stage, size, data, tok, proc, device):
    """eim's step of ``stage`` (a name in ``r.recipe``) and its batches (of the stage's data)."""
    from eim.losses import stage_banks
    from eim.model.multimodal import build_model

    model, _ = build_model(r.recipe, device="meta")
    materialize(model, device, getattr(torch, r.recipe.vision.dtype))
    st = next(s for s in r.recipe.stages if s.name == stage)
    banks = None
    if stage_banks(st):
        dims = {"text": r.clip.projection_dim, "embed": r.llm.hidden_size, "lm": r.llm.hidden_size}
        banks = RandomBanks(size["bank_rows"][st.data or "instruct"], dims, device)
    step = Step(r.recipe, stage, banks, model=model, device=device)
    return step, [step.collate(rows, tok, proc) for rows in data[st.data or "instruct"]]


def anchor_config(r, size, data, tok, proc, device):
    """transformers' ``LlavaForConditionalGeneration`` with the same shapes, LoRA and checkpointing, and a
    plain training step on the same sequences (``data``: batches of samples); returns ``(step, batches)``."""
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    from eim.model.splice import IGNORE, TextEncoder

    rec = r.recipe
    image_token = r.llm.vocab_size  # LLaVA-HF's: the first id after Vicuna's 32,000, the rows padded to 32,064
    vocab = max(32064, image_token + 1)
    text = r.llm.to_dict()
    text.update(vocab_size=vocab)
    cfg = LlavaConfig(vision_config=r.clip.vision_config.to_dict(), text_config=text, image_token_index=image_token,
                      vision_feature_layer=rec.vision.feature_layer, vision_feature_select_strategy="default",
                      projector_hidden_act="gelu", image_seq_length=r.n_image)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16,
                                                           attn_implementation=rec.lm.attn_implementation)
    target = r".*language_model.*\.(" + "|".join(LORA_TARGET) + ")"
    model = inject_adapter_in_model(LoraConfig(r=rec.lm.lora_r, lora_alpha=rec.lm.lora_alpha, target_modules=target),
                                    model)
    model.requires_grad_(False)
    params = [p for n, p in model.named_parameters() if "lora_" in n or "multi_modal_projector" in n]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    kw = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.25
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
    model.train()
    opt = torch.optim.AdamW(params, lr=rec.stage_lr(rec.stages[-1]), fused=device.type in ("cuda", "cpu"))

    # the same sequences as eim's finetune step: the image token where eim splices the image
    from eim.training.collate import pixel_values

    enc = TextEncoder.for_recipe(tok, rec, rec.stages[-1])
    n_image = cfg.image_seq_length

    def collate(rows):  # padded to the longest row, as eim's collator pads
        ids, labels = [], []
        for s in rows:
            i, lab, lead = enc.encode_sample(s)
            ids.append(i[:lead] + [image_token] * n_image + i[lead:])
            labels.append(lab[:lead] + [IGNORE] * n_image + lab[lead:])
        L = max(map(len, ids))
        return {"input_ids": torch.tensor([x + [tok.pad_token_id] * (L - len(x)) for x in ids], device=device),
                "labels": torch.tensor([x + [IGNORE] * (L - len(x)) for x in labels], device=device),
                "attention_mask": torch.tensor([[1] * len(x) + [0] * (L - len(x)) for x in ids], device=device),
                "pixel_values": pixel_values(proc, [s.image for s in rows], rec.data.image_aspect_ratio).to(device)}

    def step(b):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**b, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, rec.train.max_grad_norm or float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    step.model, step.params, step.opt = model, params, opt
    return step, [collate(rows) for rows in data["instruct"]]


def step_tokens(batch, n_image):
    """Tokens in one step, defined as the trainer defines them (eim's batches); the anchor's padded
    sequences, the image expanded to its positions, counted by their attention mask."""
    if "text_lengths" not in batch:
        return int(batch["attention_mask"].sum())
    from eim.training.tracking import batch_tokens

    return batch_tokens(batch, n_image)


def measure(build, size, device):
    """Build a configuration, run warm-up steps (its batches in turn) and one timed step per batch;
    ``{"step_s", "tokens", "tokens_s", "peak_gb"}`` (means per step; tokens/s = their sums' ratio) or
    ``{"error"}``."""
    cuda = device.type == "cuda"
    step = batches = None
    try:
        step, batches, tokens = build()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for k in range(size["warmup"]):
            step(batches[k % len(batches)])
        ts = []
        for batch in batches:
            t0 = time.perf_counter()
            step(batch)
            if cuda:
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        return {"step_s": statistics.mean(ts), "tokens": round(statistics.mean(tokens)), "tokens_s": sum(tokens) / sum(ts),
                "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None}
    except Exception as e:  # noqa: BLE001  (one failure must not hide the other configurations)
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
    finally:
        del step, batches
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()


def row(label, trains, r, anchor, ref, key):
    """The table line of one configuration (``anchor``, ``ref``: those results, or {} while not run)."""
    if "error" in r:
        return f"| {label} | {trains} | {r['error']} | | | | | | | |"
    peak = f"{r['peak_gb']:.1f}" if r["peak_gb"] is not None else "—"
    vs_t = f"{r['tokens_s'] / anchor['tokens_s']:.2f}×" if "tokens_s" in anchor else "—"
    vs_m = f"{r['peak_gb'] / anchor['peak_gb']:.2f}×" if r["peak_gb"] and anchor.get("peak_gb") else "—"
    extra = "—"
    if key.startswith("llava_eim:") and "step_s" in ref:
        extra = f"step {r['step_s'] / ref['step_s']:.2f}×"
        if r["peak_gb"] is not None and ref.get("peak_gb") is not None:
            extra += f", peak {r['peak_gb'] - ref['peak_gb']:+.1f} GB"
    return (f"| {label} | {trains} | {r['tokens']:,} | {r['step_s']:.3f} | {r['tokens_s']:,.0f} | {peak} | {vs_t} "
            f"| {vs_m} | {extra} | {r['wall_s']:.0f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toy", action="store_true", help="tiny shapes on whatever device there is (CPU: seconds)")
    ap.add_argument("--out", default="gpu_real_scale.md",
                    help="the report (markdown), rewritten after every line (default: ./gpu_real_scale.md)")
    ap.add_argument("--time-limit", type=float, default=450, help="seconds; configurations that would start later are skipped")
    ap.add_argument("--bank-reserve", type=float, default=100, help="seconds kept for the bank-loss table")
    ap.add_argument("--steps", type=int, help="timed steps per configuration, one batch each (default 3; toy 2)")
    ap.add_argument("--warmup", type=int, help="warm-up steps per configuration (default 2; toy 1)")
    ap.add_argument("--only", help="comma-separated configurations to run (anchor, llava:finetune, llava_eim:st, ...)")
    a = ap.parse_args()
    t_start = time.time()
    from eim.api import quiet_transformers
    from eim.model.template import VICUNA_SYSTEM
    from eim.model.vision import load_image_processor
    from eim_harness.tiny import make_tokenizer

    quiet_transformers()
    size = dict(TOY if a.toy else REAL)
    size.update({k: v for k, v in (("steps", a.steps), ("warmup", a.warmup)) if v is not None})
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda and not a.toy:
        sys.exit("no CUDA device: the real-size run needs one (use --toy on a CPU)")
    report = Report(a.out)
    name = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)"
    total = f", {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB" if cuda else ""
    report(f"{name}{total}, torch {torch.__version__}; {size['batch']} rows per step, ≤ {size['positions']} positions "
           f"each, LoRA r{size['lora_r']} α{size['lora_alpha']}, bf16, sdpa, checkpointing; "
           f"{size['warmup']} warm-up + {size['steps']} timed steps, one batch each (means)")

    with tempfile.TemporaryDirectory(prefix="eim-gpu-") as tmp:
        root = Path(tmp)
        paths = toy_configs(root) if a.toy else {}
        recipes = {b: Shapes(recipe(b, size, paths, a.toy)) for b in ("llava", "llava_eim")}
        r0 = recipes["llava"]
        # the template's words in the corpus: the toy tokenizer then spells LLaVA's system line in about
        # as many tokens as Vicuna's does (~45 with the roles), not ~160
        corpus = [words(60, s) + "." for s in range(400)] + ["Describe the image in detail.", "Describe the image briefly."] \
            + [f"{VICUNA_SYSTEM} USER: ASSISTANT:"] * 20
        tok = make_tokenizer(corpus, vocab_size=2000, llama_specials=True)
        proc = load_image_processor(root / "no-processor", image_size=r0.image_size)
        data, lines = make_data(root, size, tok, r0, a.toy)
        for line in lines:
            report(line)
        n_image = r0.n_image

        def eim_build(base, stage):
            def build():
                step, batches = eim_config(recipes[base], stage, size, data, tok, proc, device)
                return step, batches, [step_tokens(b, n_image) for b in batches]
            return build

        def anchor_build():
            step, batches = anchor_config(r0, size, data, tok, proc, device)
            return step, batches, [step_tokens(b, n_image) for b in batches]

        configs = [("anchor", "transformers LlavaForConditionalGeneration", "projector + LLM LoRA", anchor_build),
                   ("llava:finetune", "eim llava finetune", "projector + LLM LoRA", eim_build("llava", "finetune"))]
        for s in recipes["llava_eim"].recipe.stages:
            configs.append((f"llava_eim:{s.name}", f"eim llava_eim {s.name} ({' + '.join(f'loss_{k}' for k in s.losses)})",
                            " + ".join({"vision": "CLIP LoRA", "projector": "projector", "lm": "LLM LoRA"}[t]
                                       for t in s.trainable), eim_build("llava_eim", s.name)))
        if a.only:
            keep = set(a.only.split(","))
            configs = [c for c in configs if c[0] in keep]
        deadline = t_start + a.time_limit - (a.bank_reserve if cuda else 0)
        report()
        report("| configuration | trains | tokens per step | step (s) | tokens/s | peak allocated (GB) "
               "| throughput vs anchor | peak vs anchor | vs eim llava finetune | wall (s) |")
        report("|---|---|---|---|---|---|---|---|---|---|")
        results = {}
        for key, label, trains, build in configs:  # the anchor and eim's finetune first: the ratios' bases
            if time.time() > deadline:
                results[key] = {"error": "skipped: --time-limit reached"}
            else:
                t0 = time.time()
                results[key] = measure(build, size, device)
                results[key]["wall_s"] = time.time() - t0
            report(row(label, trains, results[key], results.get("anchor", {}), results.get("llava:finetune", {}), key))

    anchor, ref = results.get("anchor", {}), results.get("llava:finetune", {})
    if "tokens_s" in anchor and "tokens_s" in ref:
        t, m = ref["tokens_s"] / anchor["tokens_s"], (ref["peak_gb"] / anchor["peak_gb"]) if cuda else None
        verdict = "met" if t >= 0.95 and (m is None or m <= 1.05) else "NOT met"
        report()
        report(f"Target, eim llava finetune vs the anchor: ≥ 0.95× throughput ({t:.2f}×) at ≤ 1.05× peak memory "
               f"({f'{m:.2f}×' if m is not None else 'not measured without CUDA'}): {verdict}")

    report()
    left = t_start + a.time_limit - time.time()
    if not cuda:
        report("benchmarks/gpu_bank_loss.py --quick: skipped (the Triton kernels need CUDA)")
    elif left < 30:
        report(f"benchmarks/gpu_bank_loss.py --quick: skipped (--time-limit: {left:.0f} s left)")
    else:
        report("benchmarks/gpu_bank_loss.py --quick:")
        report.run([sys.executable, str(Path(__file__).resolve().parent / "gpu_bank_loss.py"), "--quick"], left)
    report()
    report(f"{time.time() - t_start:.0f} s in all")


if __name__ == "__main__":
    main()
