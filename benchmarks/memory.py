"""Peak memory and step time of one training step per stage of ``llava_eim``, on this CPU, at real shapes.

    .venv/bin/python benchmarks/memory.py                 # 16 configurations, ~8 min on 2 shared cores
    .venv/bin/python benchmarks/memory.py --toy           # tiny shapes, seconds (tests/test_benchmarks.py)
    .venv/bin/python benchmarks/memory.py --stages lm,finetune_ie --dtypes bfloat16 --checkpointing on

Issue item 3. The model is the LLaVA-1.5 architecture built from configs with random weights
(nothing downloaded): CLIP ViT-L/14-336's vision tower (1024 wide, 24 layers, 16 heads, 336 px,
patch 14: 576 patches; LLaVA's features: the second-to-last layer, patches only), LLaVA's
``mlp2x_gelu`` projector, and a LLaMA of 0.55B parameters (1536 wide, 16 layers, 12 heads,
intermediate 4096 — Vicuna-7B's 11008/4096 ratio — vocabulary 32,000). CLIP's text tower, which
only the ``text`` bank of loss_IE reads, is shrunk (2 layers × 256). The LLM is tuned by LoRA r128
(α 256) on ``q/k/v/o/gate/up/down_proj`` (LLaVA-1.5's LoRA recipe); the rest is ``llava_eim`` as
shipped: CLIP LoRA (q/v, r8) in ``finetune_ie``, sdpa attention, CLIP in the loop, LLaVA's
templates and padded images. One sample per step: 576 image positions and a few hundred text
positions (printed).

Each configuration — stage × weights dtype (``vision.dtype`` / ``lm.dtype``: float32 or
bfloat16, the latter computing under CPU autocast as the trainer's accelerate does) × gradient
checkpointing — runs in a fresh process (this script with ``--one``): imports, then the baseline
resident set (``VmRSS``), then the model is loaded (the checkpoints are float16 on disk, as
Vicuna's are, so both dtypes convert them into memory of their own rather than mapping the file),
the stage's banks read (prebuilt once per dtype by the parent, as ``eim banks build`` would: a bank
build loads a second copy of the LLM) and one sample collated; then ``VmHWM`` is reset
(``/proc/self/clear_refs``) and ``--steps`` optimiser steps run. "peak" is the process's
high-water mark above the baseline, the larger of the loading's (the float16 file mapped while it
is converted) and the steps'; both are printed, and the resident set after loading.

A step is the trainer's (:class:`Step` below): the stage's trainable set in float32, the frozen
segments in eval mode (a frozen LLM's checkpointed blocks still recomputed), the stage's losses
(:func:`eim.losses.build_losses`) through :class:`eim.training.stage.StageStep`, backward, gradient
clipping at 1.0 and fused AdamW — without the run folder, the loader and accelerate. "saved for
backward" counts the distinct tensors autograd keeps from the first step's forward (parameters
excluded; :class:`SavedTensors`), split into CLIP, the LLM's blocks (per position), the LLM's
``T × T`` attention matrices, its ``[T, vocabulary]`` head/loss tensors, its 16-bit copies of
float32 weights (autocast's casts of the LoRA weights, held for backward) and the rest: the
per-position figures ``docs/scaling.md`` extrapolates from. With checkpointing it counts only what
is kept outside the recomputed blocks (their inputs are held by the checkpoints and not counted),
so it is given for the plain runs. ``--rows N`` puts N samples in a step (the two alternate).

The banks hold one row per sample (2 here): their memory at real size (1.0–5.5 GB each in
float16) is derived in ``docs/scaling.md``, not measured. Step times (first / second step) are
wall-clock on shared cores: the load average before and after is printed.
"""

import eim  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

STAGES = ("st", "lm", "pretrain", "finetune_ie")
THROUGH_LLM = ("lm", "pretrain", "finetune_ie")  # the stages that backpropagate through the LLM
LORA_TARGET = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

SHAPES = {
    "real": dict(
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=336, patch_size=14),
        text=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=77),
        projection_dim=768,
        llm=dict(hidden_size=1536, intermediate_size=4096, num_hidden_layers=16, num_attention_heads=12,
                 num_key_value_heads=12, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5),
        lora_r=128, lora_alpha=256, response_words=230, tok_vocab=2000),
    "toy": dict(
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    image_size=28, patch_size=14),
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  max_position_embeddings=77),
        projection_dim=24,
        llm=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=2, vocab_size=600, max_position_embeddings=512, rms_norm_eps=1e-5),
        lora_r=4, lora_alpha=8, response_words=12, tok_vocab=400),
}


# --- memory of this process ---------------------------------------------------------------------
def proc_status_mb(field):
    """``VmRSS`` (resident now) or ``VmHWM`` (its high-water mark) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak():
    """Set ``VmHWM`` back to the current resident set (Linux: ``5`` into ``/proc/self/clear_refs``);
    False where the kernel refuses (the steps' peak is then the process's)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class SavedTensors:
    """Bytes autograd keeps for backward while active (``torch.autograd.graph.saved_tensors_hooks``):
    each distinct storage once, parameters (and views of them) left out, by the segment that saved
    it (``vision``, ``lm``, ``other``). The LLM's are split further by shape (``lm_len``: the
    positions of a row, ``rows``: the rows of the batch): ``lm_attention`` ``[.., T, T]``, ``lm_vocab`` ``[.., vocabulary]`` (its
    head and loss), ``lm_weights`` tensors without a position axis (autocast's 16-bit copies of
    float32 weights, e.g. LoRA's, held for backward), ``lm`` the rest: the blocks' per-position
    activations (a position axis of ``T``, or ``rows × T`` where a product flattened the batch)."""

    def __init__(self, model, lm_len, rows=1):
        self.model, self.lm_len, self.flat = model, lm_len, rows * lm_len
        self.vocab = model.lm.get_output_embeddings().weight.shape[0]
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.seen = set()
        self.bytes = {"vision": 0, "lm": 0, "lm_attention": 0, "lm_vocab": 0, "lm_weights": 0, "other": 0}
        self.where = "other"

    def __enter__(self):
        self.handles = []
        for seg in ("vision", "lm"):
            m = getattr(self.model, seg)
            self.handles.append(m.register_forward_pre_hook(lambda *a, s=seg: setattr(self, "where", s)))
            self.handles.append(m.register_forward_hook(lambda *a: setattr(self, "where", "other")))
        self.ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self.ctx.__exit__(*exc)
        for h in self.handles:
            h.remove()

    def _pack(self, t):
        if t.device.type != "meta" and t.numel():
            s = t.untyped_storage()
            ptr = s.data_ptr()
            if ptr not in self.params and ptr not in self.seen:
                self.seen.add(ptr)
                key = self.where
                if key == "lm":
                    T = self.lm_len
                    if t.dim() >= 2 and t.shape[-1] == t.shape[-2] == T:
                        key = "lm_attention"
                    elif t.dim() and t.shape[-1] == self.vocab:
                        key = "lm_vocab"
                    elif T not in t.shape and self.flat not in t.shape:
                        key = "lm_weights"
                self.bytes[key] += s.nbytes()
        return t

    def mb(self):
        return {k: v / 2**20 for k, v in self.bytes.items()}


# --- the data and the models on disk ------------------------------------------------------------
def words(n, seed):
    """``n`` made-up words over a pool of ~300 (the tokenizers learn each as about one token)."""
    rng = random.Random(seed)
    syl = ["ka", "lo", "mi", "tu", "re", "sa", "no", "vi", "de", "po", "ri", "gu", "fe", "ba", "zo", "ne", "mu"]
    pool = sorted({a + b + c for a in syl[:7] for b in syl[4:12] for c in syl[8:]})[:300]
    return " ".join(rng.choice(pool) for _ in range(n))


def samples(root, shapes, n=2):
    """``n`` one-turn samples over drawn images (400 × 300, padded to squares as LLaVA does): a short
    instruction and a ``response_words``-word answer each."""
    from PIL import Image, ImageDraw

    from eim.data.sample import Sample

    out = []
    for i in range(n):
        path = Path(root) / f"image{i}.png"
        if not path.exists():
            im = Image.new("RGB", (400, 300), (250, 250, 250))
            ImageDraw.Draw(im).ellipse((60 + 40 * i, 40, 300, 260), fill=(200, 40 * i, 60))
            im.save(path)
        out.append(Sample(index=i, image=str(path), instruction="Describe the image in detail.",
                          response=words(shapes["response_words"], 100 + i) + ".", image_id=i))
    return out


class ListDataset(torch.utils.data.Dataset):
    """Samples as the trainer and the banks take a dataset (``files``, ``format``, ``split``)."""

    files, format, split = [], "list", "train"

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def save_clip(out, shapes, tokenizer, image_size):
    """A random ``CLIPModel`` (float16 on disk) laid out as openai/clip-vit-*, its tokenizer and processor."""
    from transformers import CLIPConfig, CLIPModel

    from eim.model.vision import CLIPImageProcessor

    cfg = CLIPConfig(text_config=dict(vocab_size=len(tokenizer), bos_token_id=0, pad_token_id=1, eos_token_id=2,
                                      **shapes["text"]),
                     vision_config=shapes["vision"], projection_dim=shapes["projection_dim"])
    torch.manual_seed(0)
    CLIPModel(cfg).to(torch.float16).save_pretrained(out)
    tokenizer.model_max_length = shapes["text"]["max_position_embeddings"]
    tokenizer.save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(out)


def save_llm(out, shapes, tokenizer):
    """A random LLaMA (float16 on disk, as Vicuna's checkpoints) + a LLaMA-layout tokenizer (``<s>`` lead, ``</s>`` EOS).
    Its vocabulary is LLaMA's 32,000 rows; the tokenizer, trained here on the benchmark's words, uses
    the first ``len(tokenizer)`` of them."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, **shapes["llm"])
    assert cfg.vocab_size >= len(tokenizer)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.float16).save_pretrained(out)
    tokenizer.save_pretrained(out)


def prepare(root, shapes):
    """Write the models, ``shapes.json`` and the images under ``root``."""
    from eim.api import quiet_transformers
    from eim_harness.tiny import make_clip_tokenizer, make_tokenizer

    quiet_transformers()
    root = Path(root)
    corpus = [words(60, s) + "." for s in range(400)] + ["Describe the image in detail."]
    save_clip(root / "clip", shapes, make_clip_tokenizer(corpus, vocab_size=500), shapes["vision"]["image_size"])
    save_llm(root / "llm", shapes, make_tokenizer(corpus, vocab_size=shapes["tok_vocab"], llama_specials=True))
    samples(root, shapes)
    (root / "shapes.json").write_text(json.dumps(shapes))


def prepare_banks(root, shapes, dtypes):
    """Build (or reuse) every bank of ``llava_eim`` for each weights dtype, in ``root/banks-<dtype>``."""
    from eim.banks import BankProvider

    data = ListDataset(samples(root, shapes))
    for dtype in dtypes:
        banks = BankProvider(recipe_for(root, shapes, dtype, False), data, root, quiet=True,
                             banks_dir=Path(root) / f"banks-{dtype}")
        for name in banks.NAMES:
            banks.get(name)
        del banks
        gc.collect()


def recipe_for(root, shapes, dtype, checkpointing, batch_size=1, base="llava_eim", lora=True):
    """``base`` (``llava_eim``) pointed at the models under ``root``: weights in ``dtype``, checkpointing on
    or off, LLaVA-1.5's LoRA on the LLM (r and α from ``shapes``), every stage at ``batch_size``."""
    from eim.recipe import load_recipe

    over = {"vision.name_or_path": str(Path(root) / "clip"), "lm.name_or_path": str(Path(root) / "llm"),
            "vision.dtype": dtype, "lm.dtype": dtype, "train.gradient_checkpointing": checkpointing}
    if lora:
        over.update({"lm.trainable": "lora", "lm.lora_r": shapes["lora_r"], "lm.lora_alpha": shapes["lora_alpha"],
                     "lm.lora_target": LORA_TARGET})
    r = load_recipe(base)
    over.update({f"stages.{s.name}.batch_size": batch_size for s in r.stages})
    return load_recipe(base, over)


# --- one training step, as the trainer runs it -----------------------------------------------------
class Step:
    """One stage's training step the way :class:`eim.training.trainer.Trainer` runs it on one
    process: trainable set in float32 (:func:`eim.training.stage.unfreeze`), frozen segments in eval
    mode and a frozen LLM's checkpointed blocks still recomputed (:func:`~eim.training.stage.set_stage_modes`), the forward under the
    weights' autocast (accelerate's), backward, gradient clipping at ``train.max_grad_norm`` and
    fused AdamW (:func:`eim.training.optim.adamw`). ``model``: built already (else from the recipe);
    ``batch``: a collated batch (:meth:`collate`)."""

    def __init__(self, recipe, stage_name, banks=None, model=None, device="cpu"):
        from eim.losses import build_losses, stage_banks
        from eim.model.multimodal import build_model
        from eim.training.optim import adamw
        from eim.training.stage import StageStep, set_stage_modes, unfreeze

        self.recipe, self.device = recipe, torch.device(device)
        self.stage = next(s for s in recipe.stages if s.name == stage_name)
        if model is None:
            model, self.tok = build_model(recipe)
        self.model = model.to(self.device)
        self.params = unfreeze(model, self.stage.trainable)
        losses = build_losses(self.stage, recipe, banks if stage_banks(self.stage) else None, model)
        self.names = list(losses)
        self.weights = [w for _, w in losses.values()]
        self.module = StageStep(model, losses, need_cls="ie" in self.stage.losses).to(self.device)
        self.opt = adamw(self.params, recipe.stage_lr(self.stage), recipe.train.weight_decay)
        if recipe.train.gradient_checkpointing:
            model.set_gradient_checkpointing(True)
        set_stage_modes(model, self.module, self.stage.trainable, recipe.train.gradient_checkpointing)
        low = {d for d in (recipe.vision.dtype, recipe.lm.dtype) if d != "float32"}
        self.autocast = getattr(torch, low.pop()) if low else None

    def collate(self, rows, tokenizer, image_processor):
        from eim.model.splice import TextEncoder
        from eim.training.collate import Collator, to_device
        from eim.training.stage import collate_mode

        r, s = self.recipe, self.stage
        batch = Collator(TextEncoder.for_recipe(tokenizer, r, s), image_processor, mode=collate_mode(r, s),
                         bank_text="lm" in s.losses, image_aspect_ratio=r.data.image_aspect_ratio)(rows)
        return to_device(batch, self.device)

    def __call__(self, batch):
        """One optimiser step; returns the weighted loss."""
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            terms = self.module(batch)
        loss = sum(w * terms[f"loss_{n}"] for n, w in zip(self.names, self.weights))
        loss.backward()
        if self.recipe.train.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.recipe.train.max_grad_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())


def llm_positions(batch, stage, n_image):
    """Positions the LLM reads per row: the stage's text, plus the image's when the image is spliced."""
    if set(stage.losses) == {"st"}:
        return 0
    if "pixel_values" not in batch and "features" not in batch:  # text mode (loss_LM alone)
        return int(batch["text_lengths"].max())
    return int(batch["text_lengths"].max()) + n_image


# --- one configuration in this process -------------------------------------------------------------
def one(root, stage_name, dtype, checkpointing, steps, rows=1):
    """Measure one configuration in this (fresh) process, ``rows`` samples a step; returns the result dict."""
    from eim.api import quiet_transformers
    from eim.banks import BankProvider
    from eim.model.multimodal import segment_counts
    from eim.model.vision import load_image_processor

    quiet_transformers()
    root = Path(root)
    shapes = json.loads((root / "shapes.json").read_text())
    gc.collect()
    base = proc_status_mb("VmRSS")
    recipe = recipe_for(root, shapes, dtype, checkpointing)
    data = ListDataset(samples(root, shapes))
    banks = BankProvider(recipe, data, root, quiet=True, no_rebuild=True, banks_dir=root / f"banks-{dtype}")
    step = Step(recipe, stage_name, banks)
    proc = load_image_processor(root / "clip")
    batches = [step.collate([data[(i + k) % len(data)] for k in range(rows)], step.tok, proc) for i in range(len(data))]
    built, build_peak = proc_status_mb("VmRSS") - base, proc_status_mb("VmHWM") - base
    reset_peak()
    n_image = step.model.vision.num_tokens
    T = llm_positions(batches[0], step.stage, n_image)
    counts = segment_counts(step.model)
    times, saved = [], None
    for i in range(steps):
        t0 = time.perf_counter()
        if i == 0:
            with SavedTensors(step.model, T, rows) as s:
                step(batches[i % len(batches)])
            saved = s.mb()
        else:
            step(batches[i % len(batches)])
        times.append(time.perf_counter() - t0)
    steps_peak = proc_status_mb("VmHWM") - base
    return {"stage": stage_name, "dtype": dtype, "checkpointing": checkpointing, "baseline_mb": base,
            "built_mb": built, "build_peak_mb": build_peak, "steps_peak_mb": steps_peak,
            "peak_mb": max(build_peak, steps_peak), "step_s": times, "rows": rows, "llm_positions": T,
            "text_positions": int(batches[0]["text_lengths"].max()), "saved_mb": saved,
            "trainable": sum(p.numel() for p in step.params),
            "params": {k: v["total"] for k, v in counts.items()}, "threads": torch.get_num_threads()}


# --- the parent: every configuration in its own process --------------------------------------------
def run_child(root, stage, dtype, ckpt, steps, rows, timeout):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", "--dir", str(root), "--stages", stage,
           "--dtypes", dtype, "--checkpointing", "on" if ckpt else "off", "--steps", str(steps), "--rows", str(rows)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"stage": stage, "dtype": dtype, "checkpointing": ckpt, "error": f"timed out after {timeout} s"}
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"stage": stage, "dtype": dtype, "checkpointing": ckpt,
                "error": (out.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


def table(results):
    rows = [("| stage | weights | checkpointing | rows × LLM positions | peak (MB) | loading: peak / resident after (MB) "
             "| steps: peak (MB) | step (s) | saved for backward: CLIP / LLM blocks / LLM T×T / LLM vocabulary "
             "/ LLM 16-bit weight copies / rest (MB) |"),
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        head = f"| {r['stage']} | {r['dtype']} | {'on' if r['checkpointing'] else 'off'} |"
        if "error" in r:
            rows.append(f"{head} failed: {r['error']} | | | | | |")
            continue
        s = r["saved_mb"]
        saved = "—" if r["checkpointing"] else " / ".join(
            f"{s.get(k, 0):,.0f}" for k in ("vision", "lm", "lm_attention", "lm_vocab", "lm_weights", "other"))
        steps = " / ".join(f"{t:.1f}" for t in r["step_s"])
        pos = f"{r.get('rows', 1)} × {r['llm_positions']}" if r["llm_positions"] else "— (no LLM)"
        rows.append(f"{head} {pos} | **{r['peak_mb']:,.0f}** | {r['build_peak_mb']:,.0f} / "
                    f"{r['built_mb']:,.0f} | {r['steps_peak_mb']:,.0f} | {steps} | {saved} |")
    return "\n".join(rows)


def ratios(results):
    """Per stage: bf16 + checkpointing peak / float32 without checkpointing peak (target ≤ 0.5 where the
    stage backpropagates through the LLM), of the whole process and of the steps alone."""
    by = {(r["stage"], r["dtype"], r["checkpointing"]): r for r in results if "error" not in r}
    rows = [("| stage | float32, no checkpointing: peak (MB) | bfloat16 + checkpointing: peak (MB) | ratio "
             "| ratio of the steps' peaks | target ≤ 0.5× |"), "|---|---|---|---|---|---|"]
    for st in STAGES:
        a, b = by.get((st, "float32", False)), by.get((st, "bfloat16", True))
        if a and b:
            q, qs = b["peak_mb"] / a["peak_mb"], b["steps_peak_mb"] / a["steps_peak_mb"]
            met = ("met" if q <= 0.5 else "**not met**") if st in THROUGH_LLM else "— (no backward through the LLM)"
            rows.append(f"| {st} | {a['peak_mb']:,.0f} | {b['peak_mb']:,.0f} | {q:.2f}× | {qs:.2f}× | {met} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toy", action="store_true", help="tiny shapes: seconds, for the test suite")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--checkpointing", default="off,on", help="off, on or off,on")
    ap.add_argument("--steps", type=int, default=2, help="optimiser steps per configuration (the first is also "
                                                          "the one whose saved tensors are counted)")
    ap.add_argument("--rows", type=int, default=1, help="samples per step (the two samples alternate)")
    ap.add_argument("--dir", help="where the models and banks are written (default: a temporary folder)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per configuration")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: one configuration
    a = ap.parse_args()
    stages, dtypes = a.stages.split(","), a.dtypes.split(",")
    ckpts = [{"off": False, "on": True}[c] for c in a.checkpointing.split(",")]
    if a.one:
        print(json.dumps(one(a.dir, stages[0], dtypes[0], ckpts[0], a.steps, a.rows)))
        return
    shapes = SHAPES["toy" if a.toy else "real"]
    with tempfile.TemporaryDirectory(prefix="eim-memory-") as tmp:
        root = Path(a.dir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        # digests of the model folders computed once, here, not in the ~/.cache of whoever runs this
        os.environ["EIM_CACHE_DIR"] = str(root / "digests")
        load0, t0 = os.getloadavg(), time.time()
        if not (root / "shapes.json").exists() or json.loads((root / "shapes.json").read_text()) != shapes:
            prepare(root, shapes)
        prepare_banks(root, shapes, dtypes)
        gc.collect()
        print(f"models and banks ready in {time.time() - t0:.0f} s ({root}); torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, load average {load0[0]:.1f}", flush=True)
        results = []
        for stage in stages:
            for dtype in dtypes:
                for ckpt in ckpts:
                    r = run_child(root, stage, dtype, ckpt, a.steps, a.rows, a.timeout)
                    results.append(r)
                    what = r.get("error") or f"peak {r['peak_mb']:,.0f} MB, step {r['step_s'][-1]:.1f} s"
                    print(f"  {stage} {dtype} checkpointing {'on' if ckpt else 'off'}: {what}", flush=True)
        load1 = os.getloadavg()
    ok = next((r for r in results if "error" not in r), None)
    print()
    if ok:
        p = ok["params"]
        print(f"Parameters: CLIP vision {p['vision'] / 1e6:.1f}M, projector {p['projector'] / 1e6:.1f}M, "
              f"LLM {p['lm'] / 1e6:.1f}M (LoRA r{shapes['lora_r']} included); {ok['threads']} threads; "
              f"{a.rows} row(s) per step")
    print(f"Load average (1 min) before {load0[0]:.1f}, after {load1[0]:.1f}; {time.time() - t0:.0f} s in all\n")
    print(table(results))
    print()
    print(ratios(results))
    if a.json:
        Path(a.json).write_text(json.dumps({"results": results, "load": [load0, load1], "shapes": shapes}, indent=1))
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
