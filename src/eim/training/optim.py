"""The stage optimiser (docs/design.md §3): AdamW, fused where torch has the kernel."""

import torch


def adamw(params, lr, weight_decay, fused=True):
    """AdamW, fused where torch has the kernel for these parameters (CPU, CUDA): one pass per
    tensor instead of seven, the same update to float rounding (several times faster on a CPU,
    benchmarks/RESULTS.md). FSDP/DeepSpeed keep their engine's default."""
    if fused and params and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params):
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        except RuntimeError:  # torch < 2.4 has no fused AdamW for CPU tensors
            pass
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
