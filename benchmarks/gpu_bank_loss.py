"""Benchmark for a CUDA device: the bank loss through the Triton kernels vs the torch pass.

    .venv/bin/python benchmarks/gpu_bank_loss.py            # ~5 min on an H200, needs ~90 GB of GPU memory
    .venv/bin/python benchmarks/gpu_bank_loss.py --quick    # N = 566,747 only

One prepared run (issue 16): first a correctness check of the kernels against the naive float32
loss on the device (value and gradient, float16 and bfloat16 banks, with and without a mask),
then a markdown table of ``bank_infonce`` forward+backward — the Triton kernels
(:mod:`eim.losses.stream_triton`) and, for comparison, the torch pass of :mod:`eim.losses.stream`
— at N = 566,747 × d = 768 (COCO) and N = 10M × d = 4,096, B = 5 and 40, float16 and bfloat16
banks. "GB/s" = bank bytes / time (the bank is read once per step); "of peak" divides by the
card's memory bandwidth, measured here as the best of a device copy (read + write of 4 GiB, the
bytes moved per second), and by the nominal figure where the card's name is known.
"""

import argparse

import torch
from common import cuda_time

NOMINAL_TBS = {"H200": 4.8, "H100 SXM": 3.35, "H100 PCIe": 2.0, "H100": 3.35, "A100-SXM4-80GB": 2.04, "A100": 1.56}


def copy_bandwidth():
    x = torch.empty(2**31, dtype=torch.float16, device="cuda")  # 4 GiB
    y = torch.empty_like(x)
    t = cuda_time(lambda: y.copy_(x), reps=5)
    del x, y
    return 2 * 4 * 2**30 / t  # bytes read + written per second


def check(dev):
    from eim.losses import stream_triton
    from eim.losses.infonce import bank_infonce, naive_bank_infonce

    assert stream_triton.available(torch.empty(1, device=dev)), "triton is not importable"
    worst = 0.0
    for dt in (torch.float16, torch.bfloat16):
        for masked in (False, True):
            g = torch.Generator(device=dev).manual_seed(0)
            N, d, B = 50_003, 768, 40
            bank = torch.nn.functional.normalize(torch.randn(N, d, device=dev, generator=g), dim=-1).to(dt)
            q = torch.randn(B, d, device=dev, generator=g, requires_grad=True)
            idx = torch.randint(0, N, (B,), device=dev, generator=g)
            groups = torch.randint(0, 1000, (N,), device=dev, generator=g)
            ex = (groups[idx], groups) if masked else None
            a = bank_infonce(q, bank, idx, exclude=ex, normalized=True)
            (ga,) = torch.autograd.grad(a, q)
            b = naive_bank_infonce(q, bank, idx, exclude=ex, normalized=True)
            (gb,) = torch.autograd.grad(b, q)
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-5)
            torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)
            worst = max(worst, (ga - gb).abs().max().item())
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 566,747 × 768 only")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--block-mib", type=float, default=0,
                    help="GPU block size in MiB of float32 rows (default: eim.losses.stream.CHUNK_BYTES, 32)")
    a = ap.parse_args()
    from eim.losses import stream, stream_triton
    from eim.losses.infonce import bank_infonce

    if a.block_mib:
        stream.CHUNK_BYTES = int(a.block_mib * 2**20)
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name()
    print(f"{name}, torch {torch.__version__}, triton {stream_triton.triton.__version__}, "
          f"block {stream.CHUNK_BYTES / 2**20:g} MiB of float32 rows")
    print(f"correctness vs the naive loss (float16/bfloat16, with/without mask): max |grad diff| {check(dev):.2e}")
    bw = copy_bandwidth()
    nominal = next((v for k, v in NOMINAL_TBS.items() if k in name), None)
    print(f"device copy: {bw / 1e12:.2f} TB/s moved; nominal {nominal or '?'} TB/s\n")
    print("| N | d | B | bank | path | fwd+bwd (ms) | GB/s of bank | of copy bandwidth | of nominal |")
    print("|---|---|---|---|---|---|---|---|---|")
    shapes = [(566_747, 768)] + ([] if a.quick else [(10_000_000, 4096)])
    real = stream_triton.available
    for n, d in shapes:
        for dt in (torch.float16, torch.bfloat16):
            try:
                bank = torch.empty(n, d, dtype=dt, device=dev)
            except torch.OutOfMemoryError:
                print(f"| {n:,} | {d} | — | {dt} | out of memory | | | | |")
                continue
            for s in range(0, n, 1 << 20):
                e = min(n, s + (1 << 20))
                bank[s:e] = torch.nn.functional.normalize(torch.randn(e - s, d, device=dev), dim=-1)
            for B in (5, 40):
                q = torch.randn(B, d, device=dev, requires_grad=True)
                idx = torch.randint(0, n, (B,), device=dev)

                def step():
                    q.grad = None
                    bank_infonce(q, bank, idx, normalized=True).backward()

                for path in ("triton", "torch"):
                    stream_triton.available = real if path == "triton" else (lambda bank: False)
                    t = cuda_time(step, reps=a.reps)
                    gbs = n * d * bank.element_size() / t / 1e9
                    nom = f"{gbs / 1e3 / nominal:.0%}" if nominal else "—"
                    print(f"| {n:,} | {d} | {B} | {str(dt)[6:]} | {path} | {t * 1e3:.1f} | {gbs:,.0f} | "
                          f"{gbs * 1e9 / bw:.0%} | {nom} |", flush=True)
                stream_triton.available = real
            del bank
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
