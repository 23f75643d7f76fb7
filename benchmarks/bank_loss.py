"""Benchmark: bank_infonce forward+backward vs the bare matrix products over the whole bank.

    .venv/bin/python benchmarks/bank_loss.py --dtype float32 --threads 2      # COCO (566,747) and 4M rows
    .venv/bin/python benchmarks/bank_loss.py --sizes coco --dtype float16 --chunks 512,1024,2048,4096

Each size runs in its own subprocess so that the peak-memory figure (ru_maxrss delta, measured
around the *first* forward+backward after the bank is built) is not polluted by other sizes.
Prints a markdown table; every time in a row comes from one run, the compared things interleaved
(loss, products, loss, products, …) and the median taken, since the host is shared.

The loss needs two products with the bank, q·Kᵀ (B×N logits) and P·K (softmax weights times the
rows), in float32. "Two products" = those two, each over the whole bank as a plain torch product
would do them: for a float32 bank ``q @ K.T`` and ``P @ K``; for a float16/bfloat16 bank (torch
has no float16 × float32 product) each product upcasts the bank in 65,536-row pieces into a
reused buffer and multiplies each piece (the float32-exact route). "One product" = q·Kᵀ alone.
"Read" = ``bank.sum()``, one pass over the bank's bytes: the memory floor. For half banks the
table also gives the two products in the bank's own dtype (``q.half() @ K.T``, ``P.half() @ K``:
float16 arithmetic, *not* what the loss may use) for reference. The bank rows are unit-norm and
``normalized=True``, as the EIM losses call it (``--raw`` for raw rows and ``normalized=False``).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SIZES = {"coco": 566_747, "4m": 4_000_000}
PIECE = 65_536  # rows per upcast piece of the float32-exact bare products on a half bank


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

    from eim.losses import stream
    from eim.losses.infonce import bank_infonce
    from eim.losses.stream import chunk_rows

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dt = getattr(torch, a.dtype)
    N, d, B = a.n, a.d, a.batch
    bank = torch.empty(N, d, dtype=dt)
    for s in range(0, N, 1024):  # fill in small pieces: keeps the RSS high-water mark at the bank
        piece = torch.randn(min(1024, N - s), d)
        bank[s : s + 1024] = piece if a.raw else torch.nn.functional.normalize(piece, dim=-1)
    idx = torch.randint(0, N, (B,))
    q = torch.randn(B, d, requires_grad=True)
    rows_list = [None] if not a.chunks else [int(c) for c in a.chunks.split(",")]
    if a.chunks:  # tuning: the given rows are the block, not only its cap
        stream.CPU_BLOCK_BYTES = 1 << 40

    def loss_step(rows):
        q.grad = None
        bank_infonce(q, bank, idx, chunk_size=rows, normalized=not a.raw).backward()

    base = _maxrss_mb()
    loss_step(rows_list[0])  # first call: measure peak extra memory
    peak = _maxrss_mb() - base

    qs = torch.nn.functional.normalize(torch.randn(B, d), dim=-1) / 0.07
    P = torch.softmax(qs @ bank[: min(N, 4096)].float().T, dim=1).repeat(1, N // min(N, 4096) + 1)[:, :N].contiguous()
    buf = torch.empty(min(PIECE, N), d)

    def qk():  # B×N logits, float32
        if dt == torch.float32:
            return qs @ bank.T
        out = torch.empty(B, N)
        for s in range(0, N, PIECE):
            k = buf[: min(PIECE, N - s)]
            k.copy_(bank[s : s + PIECE])
            torch.mm(qs, k.T, out=out[:, s : s + len(k)])
        return out

    def pk():  # B×d, float32
        if dt == torch.float32:
            return P @ bank
        acc = torch.zeros(B, d)
        for s in range(0, N, PIECE):
            k = buf[: min(PIECE, N - s)]
            k.copy_(bank[s : s + PIECE])
            acc.addmm_(P[:, s : s + len(k)], k)
        return acc

    def two():
        qk()
        pk()

    Ph, qh = P.to(dt), qs.to(dt)

    def two_native():
        qh @ bank.T
        Ph @ bank

    out = []
    for rows in rows_list:
        fns = [lambda: loss_step(rows), two, qk, bank.sum] + ([two_native] if dt != torch.float32 else [])
        for fn in fns:
            fn()  # warm
        ts = _median_times(fns, a.reps)
        out.append(dict(n=N, dtype=a.dtype + (", raw rows" if a.raw else ""), block=chunk_rows(rows, d, "cpu"),
                        loss=ts[0], two=ts[1], one=ts[2], read=ts[3], native=ts[4] if len(ts) > 4 else None,
                        peak_mb=peak if rows is rows_list[0] else None, load=os.getloadavg()[0]))
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="coco,4m", help="comma list of coco, 4m or row counts")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--batch", type=int, default=40)
    ap.add_argument("--chunks", default="", help="comma list of block rows (chunk_size caps) to compare")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--raw", action="store_true", help="raw (not unit-norm) rows, normalized=False: row norms per step")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--_child", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child:
        a.n = a._child
        return child(a)
    import torch

    nt = a.threads or torch.get_num_threads()
    print(f"torch {torch.__version__}, {nt} threads on {os.cpu_count()} CPUs, B={a.batch}, d={a.d}, bank {a.dtype}\n")
    print("| N | bank | block rows | bank_infonce fwd+bwd (s) | two products (s) | loss / two | one product (s) | "
          "loss / one | read (s) | two products in bank dtype (s) | peak extra RSS (MB) | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for tok in a.sizes.split(","):
        n = SIZES.get(tok.strip().lower()) or int(tok)
        cmd = [sys.executable, __file__, "--_child", str(n), "--dtype", a.dtype, "--d", str(a.d),
               "--batch", str(a.batch), "--chunks", a.chunks, "--reps", str(a.reps),
               "--threads", str(a.threads)] + ["--raw"] * a.raw
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(f"| {n:,} | failed: {res.stderr.strip().splitlines()[-1:]} |")
            continue
        for r in json.loads(res.stdout.strip().splitlines()[-1]):
            pk = "" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
            nat = "—" if r["native"] is None else f"{r['native']:.3f}"
            print(f"| {r['n']:,} | {r['dtype']} | {r['block']:,} | {r['loss']:.3f} | {r['two']:.3f} | "
                  f"{r['loss'] / r['two']:.2f}× | {r['one']:.3f} | {r['loss'] / r['one']:.2f}× | {r['read']:.3f} | "
                  f"{nat} | {pk} | {r['load']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
