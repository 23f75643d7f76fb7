"""Benchmark: training step time for 1 and 2 processes, and the bank loss cost as N grows.

    .venv/bin/python benchmarks/scaling.py                       # both parts (~10 min on 2 cores)
    .venv/bin/python benchmarks/scaling.py --part steps --steps 12
    .venv/bin/python benchmarks/scaling.py --part bank --sizes 1e4,1e5,1e6,4e6

Part ``steps``: ``eim train clipcap_eim_ie`` (loss_base + loss_IE, every segment trained) on a
small CLIP + GPT-2 (random weights, real architectures) and a synthetic COCO-format set, run as
one process and as ``torchrun --nproc-per-node 2`` (gloo): the same global batch (strong
scaling) and twice it (weak scaling). Step time = median difference of the per-step wall-clock
in ``metrics.jsonl`` after the first steps (bank building and warm-up excluded).

Part ``bank``: ``bank_infonce`` forward+backward for B queries against an N-row float16 bank
(d=768, B=40: the ClipCap/COCO loss_IE shape), each size in its own process as in
``benchmarks/bank_loss.py``; plus ``sharded_bank_infonce`` with the bank split over 2 processes.
Time per row shows whether the cost is linear in N. Prints markdown tables with the load average
(the machine is shared: timings are noisy).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cuda_time

HERE = Path(__file__).resolve().parent


def _load():
    return "{:.1f}".format(os.getloadavg()[0])


# --- part 1: step time ---------------------------------------------------------------------------
def make_assets(root, width, layers, image_size, n_images):
    from eim.api import quiet_transformers
    from eim_harness.shapes.writer import write_shapes
    from eim_harness.tiny import make_clip_tokenizer, make_tiny_clip, make_tiny_lm, make_tokenizer

    quiet_transformers()
    texts = [f"a {c} {s} bigger than a {c2} {s}" for c in ("red", "green", "blue", "yellow")
             for c2 in ("red", "blue") for s in ("circle", "square", "cross", "diamond")]
    tok = make_tokenizer(texts * 5, vocab_size=400)
    make_tiny_clip(root / "clip", make_clip_tokenizer(texts * 5, vocab_size=400), image_size=image_size,
                   patch_size=image_size // 4, width=width,
                   layers=layers, heads=4, projection_dim=width, text_width=width)
    make_tiny_lm(root / "lm", tok, arch="gpt2", width=width, layers=layers, heads=4)
    write_shapes(root / "data", train=n_images, val=1, test=1, size=image_size, overwrite=True)
    return root / "data" / "coco"


def run_train(root, data, out, procs, batch, steps, threads=None):
    args = ["-m", "eim.cli", "train", "clipcap_eim_ie", "--data", str(data), "--out", str(out), "--quiet",
            "--vision.name_or_path", str(root / "clip"), "--lm.name_or_path", str(root / "lm"),
            "--train.batch_size", str(batch), "--train.warmup_steps", "0", "--train.log_every", "1",
            "--stages.0.epochs", "null", "--stages.0.steps", str(steps)]
    if procs == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs), *args]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    load0 = _load()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(f"training failed ({' '.join(cmd)}):\n{res.stderr[-3000:]}")
    rows = [json.loads(l) for l in (out / "stage-0-base_ie" / "metrics.jsonl").read_text().splitlines()]
    t = [r["time"] for r in rows]
    skip = min(3, len(t) - 2)  # the first steps include bank loading and allocator warm-up
    dt = statistics.median(b - a for a, b in zip(t[skip:], t[skip + 1 :]))
    return dt, f"{load0}→{_load()}"


def part_steps(a):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_assets(root, a.width, a.layers, a.image_size, a.images)
        print(f"\n### Training step time (clipcap_eim_ie: loss_base + loss_IE, all segments trained)\n")
        print(f"small CLIP ViT ({a.layers} layers, width {a.width}, {a.image_size}px, 16 patches + [CLS]) + "
              f"GPT-2 ({a.layers} layers, width {a.width}), {a.images * 5} samples, float32, gloo, "
              f"{os.cpu_count()} CPUs; torchrun gives each of the 2 processes 1 thread\n")
        print("| processes × threads | per-process batch | global batch | step (s) | samples/s | vs 1 × 1 | load avg (before→after) |")
        print("|---|---|---|---|---|---|---|")
        base = None
        for procs, threads, batch in ((1, 1, a.batch), (1, None, a.batch), (2, 1, a.batch // 2), (2, 1, a.batch)):
            dt, load = run_train(root, data, root / f"run{procs}_{threads}_{batch}", procs, batch, a.steps, threads)
            glob = procs * batch
            if base is None:
                base = glob / dt
            t = threads or os.cpu_count()
            print(f"| {procs} × {t} | {batch} | {glob} | {dt:.3f} | {glob / dt:.1f} | {glob / dt / base:.2f}× | {load} |",
                  flush=True)


# --- part 2: bank loss vs N -----------------------------------------------------------------------
def sharded_child(a):
    """Runs under torchrun: each rank holds N/W rows; median sharded fwd+bwd time on rank 0."""
    import torch
    import torch.distributed as dist

    from eim.distributed import shard_range
    from eim.losses.infonce import sharded_bank_infonce

    dist.init_process_group("gloo")
    r, w = dist.get_rank(), dist.get_world_size()
    off, n = shard_range(a.n, w, r)
    torch.manual_seed(r)
    bank = torch.empty(n, a.d, dtype=torch.float16)
    for s in range(0, n, 4096):
        bank[s : s + 4096] = torch.nn.functional.normalize(torch.randn(min(4096, n - s), a.d), dim=-1)
    torch.manual_seed(100 + r)
    q = torch.randn(a.batch, a.d, requires_grad=True)
    idx = torch.randint(0, a.n, (a.batch,))
    times = []
    for _ in range(a.reps + 1):
        dist.barrier()
        t0 = time.perf_counter()
        q.grad = None
        sharded_bank_infonce(q, bank, off, idx, normalized=True).backward()
        dist.barrier()
        times.append(time.perf_counter() - t0)
    if r == 0:
        print(json.dumps({"time": statistics.median(times[1:]), "load": float(_load())}))
    dist.destroy_process_group()


def part_bank(a):
    sizes = [int(float(s)) for s in a.sizes.split(",")]
    print(f"\n### Bank InfoNCE forward+backward vs N (B={a.batch}, d={a.d}, float16 bank, float32 softmax)\n")
    print("FLOPs per call: 2 products × 2·B·d·N (q·Kᵀ and softmax·K, fused: backward reuses the forward's "
          "weighted sum); bank bytes = 2·d·N.\n")
    print("| N | bank (MB) | 1 process (s) | ns per row | GFLOP/s | peak extra RSS (MB) | 2 processes, sharded (s) | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        cmd = [sys.executable, str(HERE / "bank_loss.py"), "--_child", str(n), "--dtype", "float16", "--d", str(a.d),
               "--batch", str(a.batch), "--reps", str(a.reps), "--chunks", ""]  # unit rows, normalized=True
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(f"| {n:,} | failed: {res.stderr.strip().splitlines()[-1:]} |")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])[0]
        shard = "—"
        if n >= a.shard_min:
            sh = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                                 str(Path(__file__).resolve()), "--_sharded", str(n), "--dim", str(a.d),
                                 "--batch", str(a.batch), "--reps", str(a.reps)], capture_output=True, text=True)
            if sh.returncode == 0:
                shard = f"{json.loads(sh.stdout.strip().splitlines()[-1])['time']:.3f}"
            else:
                err = [l for l in sh.stderr.splitlines() if "Error" in l or "error" in l]
                shard = f"failed ({err[-1][:80] if err else sh.returncode})"
        flops = 4 * a.batch * a.d * n
        print(f"| {n:,} | {2 * a.d * n / 1e6:,.0f} | {r['loss']:.3f} | {r['loss'] / n * 1e9:.1f} | "
              f"{flops / r['loss'] / 1e9:.0f} | {r['peak_mb']:.0f} | {shard} | {r['load']:.1f} |", flush=True)


# --- part 3: GPU calibration (run on a CUDA machine) ------------------------------------------------
def part_gpu(a):
    """Per-step costs of the COCO / 10M scenarios' parts on one GPU (random weights, bf16):
    the bank loss at real N and d, a LLaMA-7B layer, CLIP ViT-L/14 — the inputs of docs/scaling.md."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from eim.losses.infonce import bank_infonce

    dev = torch.device("cuda")
    print(f"\n### GPU calibration: {torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    print("| what | shape | time (ms) | derived |")
    print("|---|---|---|---|")
    # 1. bank loss: fwd+bwd, float16 bank, float32 softmax, chunk 65,536 rows (eim.chunk_size)
    for n, d in ((566_747, 768), (566_747, 4096), (4_000_000, 4096), (10_000_000, 4096)):
        try:
            bank = torch.empty(n, d, dtype=torch.float16, device=dev)
            for s0 in range(0, n, 1 << 20):
                e0 = min(n, s0 + (1 << 20))
                bank[s0:e0] = torch.nn.functional.normalize(torch.randn(e0 - s0, d, device=dev), dim=-1)
        except torch.OutOfMemoryError:
            print(f"| bank loss | N={n:,} d={d} | out of memory | |")
            continue
        for B in (5, 40):
            q = torch.randn(B, d, device=dev, requires_grad=True)
            idx = torch.randint(0, n, (B,), device=dev)

            def step():
                q.grad = None
                bank_infonce(q, bank, idx, normalized=True, chunk_size=65536).backward()

            t = cuda_time(step, reps=3, warm=1)
            print(f"| bank loss fwd+bwd | N={n:,} d={d} B={B} | {t * 1e3:.1f} | "
                  f"{2 * n * d / t / 1e9:,.0f} GB/s of bank, {4 * B * n * d / t / 1e12:.1f} TFLOP/s |", flush=True)
        del bank
        torch.cuda.empty_cache()
    # 2. LLaMA-7B per layer (difference of a 4- and a 2-layer model at 7B width), bf16
    cfg = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
               vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False)
    res = {}
    for layers in (2, 4):
        with dev:  # random init on the GPU: seconds, not minutes
            m = LlamaForCausalLM(LlamaConfig(num_hidden_layers=layers, **cfg)).to(torch.bfloat16)
        for B, L in ((5, 320), (5, 512), (64, 32)):
            ids = torch.randint(0, 32000, (B, L), device=dev)
            for mode in ("full", "frozen", "forward"):
                m.requires_grad_(mode == "full")
                if mode == "forward":
                    fn = lambda: m(input_ids=ids).logits  # noqa: E731
                    with torch.no_grad():
                        t = cuda_time(fn)
                else:
                    emb = m.get_input_embeddings()

                    def fn():
                        x = emb(ids).detach().requires_grad_(True)  # frozen: gradient reaches the input only
                        m(inputs_embeds=x, labels=ids).loss.backward()

                    t = cuda_time(fn)
                    m.zero_grad(set_to_none=True)
                res[(layers, B, L, mode)] = t
        del m
        torch.cuda.empty_cache()
    for B, L in ((5, 320), (5, 512), (64, 32)):
        for mode in ("full", "frozen", "forward"):
            per_layer = (res[(4, B, L, mode)] - res[(2, B, L, mode)]) / 2
            rest = res[(2, B, L, mode)] - 2 * per_layer
            full = rest + 32 * per_layer
            flops = (6 if mode == "full" else 4 if mode == "frozen" else 2) * 6.74e9 * B * L
            print(f"| LLaMA-7B {mode} ({'fwd+bwd' if mode != 'forward' else 'fwd'}) | B={B} L={L} | "
                  f"{full * 1e3:.1f} | layer {per_layer * 1e3:.2f} ms; {flops / full / 1e12:.0f} TFLOP/s "
                  f"(≈{flops / 1e12:.1f} TFLOP counted) |", flush=True)
    # 3. CLIP ViT-L/14 at 224 px, bf16
    with dev:
        vit = CLIPVisionModel(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                               num_attention_heads=16, image_size=224, patch_size=14)).to(torch.bfloat16)
    for B in (5, 40):
        pix = torch.randn(B, 3, 224, 224, device=dev, dtype=torch.bfloat16)
        vit.requires_grad_(False)
        with torch.no_grad():
            t_f = cuda_time(lambda: vit(pixel_values=pix).last_hidden_state)

        def fb():
            x = pix.clone().requires_grad_(True)  # prompt tuning: gradient through the activations
            vit(pixel_values=x).last_hidden_state.float().pow(2).mean().backward()

        t_b = cuda_time(fb)
        print(f"| CLIP ViT-L/14 | B={B} 224px | fwd {t_f * 1e3:.1f} / fwd+bwd {t_b * 1e3:.1f} | "
              f"{B / t_f:,.0f} images/s forward |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["steps", "bank", "all", "gpu"], default="all",
                    help="gpu: per-step costs on a CUDA device for docs/scaling.md (not in 'all')")
    ap.add_argument("--steps", type=int, default=12, help="optimiser steps per training run")
    ap.add_argument("--batch", type=int, default=None, help="steps: global batch of the 1-process run (16); bank: B (40)")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--images", type=int, default=40, help="synthetic images (5 captions each)")
    ap.add_argument("--sizes", default="1e4,1e5,1e6,4e6", help="bank rows")
    ap.add_argument("--dim", dest="d", type=int, default=768, help="bank width d")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shard-min", type=float, default=1e6, help="also time the 2-process sharded loss from this N")
    ap.add_argument("--_sharded", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._sharded:
        a.n, a.batch = a._sharded, a.batch or 40
        return sharded_child(a)
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {_load()} at start")
    if a.part == "gpu":
        return part_gpu(a)
    if a.part in ("steps", "all"):
        a_steps = argparse.Namespace(**{**vars(a), "batch": a.batch or 16})
        part_steps(a_steps)
    if a.part in ("bank", "all"):
        part_bank(argparse.Namespace(**{**vars(a), "batch": a.batch or 40}))


if __name__ == "__main__":
    main()
