"""Benchmark: bank_infonce forward+backward vs the bare matrix products it cannot avoid.

    .venv/bin/python benchmarks/bank_loss.py                    # COCO (566,747) and 4M rows
    .venv/bin/python benchmarks/bank_loss.py --sizes coco --chunks 4096,8192,16384

Each size runs in its own subprocess so that the peak-memory figure (ru_maxrss delta, measured
around the *first* forward+backward after the bank is built) is not polluted by other sizes.
Prints a markdown table.

Dtype strategy (both sides): each bank chunk is upcast float16 -> float32 into one reused
buffer, then float32 GEMMs (CPU float16 GEMMs would need a float16 query: not float32-exact).
"Bare products" = per chunk: that upcast + qKᵀ (B×d·d×c) + accumulate P·K (B×c·c×d); "GEMMs
only" = the two products on an already-float32 chunk (upcast excluded), for reference.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SIZES = {"coco": 566_747, "4m": 4_000_000}


def _maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _median_times(fns, reps):
    """Median seconds of each fn, the fns interleaved per repetition (the host is noisy)."""
    ts = [[] for _ in fns]
    for _ in range(reps):
        for fn, t in zip(fns, ts):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [sorted(t)[len(t) // 2] for t in ts]


def child(a):
    import torch

    from eim.losses.infonce import _chunk_rows, bank_infonce, naive_bank_infonce

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dt = getattr(torch, a.dtype)
    N, d, B = a.n, a.d, a.batch
    bank = torch.empty(N, d, dtype=dt)
    for s in range(0, N, 1024):  # fill in small pieces: keeps the RSS high-water mark at the bank
        piece = torch.randn(min(1024, N - s), d)
        bank[s : s + 1024] = torch.nn.functional.normalize(piece, dim=-1) if a.normalized else piece
    idx = torch.randint(0, N, (B,))
    q = torch.randn(B, d, requires_grad=True)
    rows_list = [None] if not a.chunks else [int(c) for c in a.chunks.split(",")]

    def loss_step(rows):
        q.grad = None
        bank_infonce(q, bank, idx, chunk_size=rows, normalized=a.normalized).backward()

    base = _maxrss_mb()
    loss_step(rows_list[0])  # first call: measure peak extra memory
    peak = _maxrss_mb() - base

    out = []
    for rows in rows_list:
        c = _chunk_rows(rows, d)
        qs = torch.randn(B, d)
        buf = torch.empty(min(c, N), d)
        acc = torch.zeros(B, d)

        def bare(upcast=True):
            for s in range(0, N, c):
                e = min(s + c, N)
                k = buf[: e - s]
                if upcast:
                    k.copy_(bank[s:e])
                p = qs @ k.T  # B×c
                acc.addmm_(p, k)  # B×d

        bare()  # warm
        t_loss, t_bare, t_gemm = _median_times([lambda: loss_step(rows), bare, lambda: bare(upcast=False)], a.reps)
        kind = a.dtype + (", unit rows, normalized=True" if a.normalized else "")
        out.append(dict(n=N, dtype=kind, chunk=c, loss=t_loss, bare=t_bare, gemm=t_gemm,
                        peak_mb=peak if rows is rows_list[0] else None, load=os.getloadavg()[0]))
    if N <= a.naive_max:
        base = _maxrss_mb()

        def naive():
            q.grad = None
            naive_bank_infonce(q, bank, idx).backward()

        (t,) = _median_times([naive], 1)
        out[0].update(naive=t, naive_peak_mb=_maxrss_mb() - base)
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="coco,4m", help="comma list of coco, 4m or row counts")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--batch", type=int, default=40)
    ap.add_argument("--chunks", default="", help="comma list of chunk rows to compare (default: library default)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--normalized", action="store_true", help="unit-norm bank rows, normalized=True (skips row norms)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--naive-max", type=int, default=1_000_000, help="also time the naive loss up to this N")
    ap.add_argument("--_child", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child:
        a.n = a._child
        return child(a)
    import torch

    nt = a.threads or torch.get_num_threads()
    print(f"torch {torch.__version__}, {nt} threads on {os.cpu_count()} CPUs, B={a.batch}, d={a.d}, bank {a.dtype}")
    print("strategy: upcast each chunk to float32 in a reused buffer, float32 GEMMs (same for 'bare')\n")
    print("| N | bank | chunk rows | bank_infonce fwd+bwd (s) | bare: upcast+qKᵀ+P·K (s) | ratio | "
          "GEMMs only (s) | peak extra RSS (MB) | naive fwd+bwd (s) | naive peak extra (MB) | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for tok in a.sizes.split(","):
        n = SIZES.get(tok.strip().lower()) or int(tok)
        cmd = [sys.executable, __file__, "--_child", str(n), "--dtype", a.dtype, "--d", str(a.d),
               "--batch", str(a.batch), "--chunks", a.chunks, "--reps", str(a.reps),
               "--naive-max", str(a.naive_max), "--threads", str(a.threads)] + ["--normalized"] * a.normalized
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(f"| {n:,} | failed: {res.stderr.strip().splitlines()[-1:]} |")
            continue
        for r in json.loads(res.stdout.strip().splitlines()[-1]):
            pk = "" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
            nv = f"{r['naive']:.2f}" if "naive" in r else "—"
            npk = f"{r['naive_peak_mb']:.0f}" if "naive" in r else "—"
            print(f"| {r['n']:,} | {r['dtype']} | {r['chunk']:,} | {r['loss']:.3f} | {r['bare']:.3f} | "
                  f"{r['loss'] / r['bare']:.2f}× | {r['gemm']:.3f} | {pk} | {nv} | {npk} | {r['load']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
