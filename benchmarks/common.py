"""What the benchmarks share (run them as scripts: ``python benchmarks/<name>.py``)."""

import statistics

import torch


def cuda_time(fn, reps=5, warm=2):
    """Median seconds of ``fn()`` on the GPU over ``reps`` runs after ``warm`` warm-up runs (CUDA events)."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    return statistics.median(ts)
