"""One streamed pass over a feature bank: the log-sum-exp and softmax-weighted key sum of the bank
InfoNCE (docs/design.md §2), shared by :func:`eim.losses.infonce.bank_infonce` and its sharded form.

For unit queries q̂_b (B×d) and bank rows K̂_j::

    lse_b = log Σ_{j kept} exp(q̂_b·K̂_j/τ)        w_b = Σ_j softmax_bj K̂_j = acc_b / ssum_b

Both come from one read of the bank: each block of rows is used by its two products (q·Kᵀ, then
P·K) while it is in cache. Memory beyond the inputs: one block (a float32 copy when the bank is
float16/bfloat16) and its B×c logits per worker, independent of N.

**Fixed shift.** Unit vectors bound every logit by 1/τ, so ``exp(l - 1/τ)`` can neither overflow
nor, for τ ≥ 0.05 (2/τ ≤ 40 < 87), underflow. The shift then folds into the first product
(``addmm`` with a −1/τ bias), a block needs no running maximum or rescaling, and partial sums from
different workers simply add. A bank whose rows are not unit-norm although the caller said so
(``normalized=True``) or a smaller τ is caught by a check on ``ssum`` and recomputed with the
online (running-max) reduction; both give the same value to float rounding.

**CPU workers.** On a CPU the bank is split into one contiguous row range per torch thread, each
streamed by its own Python thread running single-threaded torch ops: the products of a cache-sized
block are too small to split across cores without a barrier per op, and on a shared (loaded)
machine those barriers cost more than the arithmetic. Partial sums merge in a fixed
order, so a result depends on the thread count only through float summation order.

**CUDA.** With Triton installed, :mod:`eim.losses.stream_triton` runs the block's two products as
split-precision tensor-core GEMMs, any number of queries; where it cannot (no triton >= 3, τ < 0.05,
a bank of another dtype or with non-contiguous rows) the torch loop below runs and the log says so
once per process and reason.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import torch

CHUNK_BYTES = 32 * 2**20  # GPU block: ~32 MiB of float32 rows (fits in a large L2 with its logits)
CPU_BLOCK_BYTES = 3 * 2**20  # CPU block: ~3 MiB of float32 rows (1,024 rows at d = 768), tuned with benchmarks/bank_loss.py
EPS = 1e-12  # as F.normalize
MAX_SHIFT = 20.0  # fixed shift 1/τ used up to here (τ ≥ 0.05): exp never under/overflows for unit rows
MIN_SSUM = 1e-20  # a fixed-shift ssum below this (or not finite) means the rows were not unit-norm


def chunk_rows(chunk_size, d, device=None):
    """Rows per streamed block: ``chunk_size`` caps it (memory); the default suits the device's cache."""
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    cache = CPU_BLOCK_BYTES if device is None or torch.device(device).type == "cpu" else CHUNK_BYTES
    rows = max(1, cache // (4 * d))
    return rows if chunk_size is None else min(rows, int(chunk_size))


def chunk_mask(exclude, index, s, e, device):
    """B×c bool, True = drop from the denominator, for bank rows s..e; never the positive."""
    if exclude is None:
        return None
    if isinstance(exclude, tuple):  # compact "same_image: mask" form
        qg, bg = exclude  # B, N
        m = qg[:, None] == bg[s:e].to(device)[None, :]  # B×c
    else:
        m = exclude[:, s:e].to(device)  # B×c
    cols = torch.arange(s, e, device=device)  # c
    return m & (cols[None, :] != index[:, None])  # B×c


def _block(bank, s, e, buf, dev):
    """Rows s..e as float32 on ``dev``: a view of a float32 bank, else upcast into ``buf``."""
    if buf is None:
        return bank[s:e]  # c×d view, no copy
    k = buf[: e - s]
    k.copy_(bank[s:e])  # c×d upcast of this block only
    return k


def _fixed_range(qs, bank, index, exclude, normalized, lo, hi, rows, shift, want_weights, single):
    """(ssum, acc) over bank rows lo..hi with the fixed shift: Σ exp(l - shift) and Σ exp(l - shift)·K̂."""
    if single:
        torch.set_num_threads(1)  # this worker's share of the cores
    B, d = qs.shape
    dev = qs.device
    bias = qs.new_full((B, 1), -shift)  # B×1, broadcast over the block
    ssum = qs.new_zeros(B)
    acc = qs.new_zeros(B, d) if want_weights else None
    direct = bank.dtype == torch.float32 and bank.device == dev
    buf = None if direct else qs.new_empty(min(rows, hi - lo), d)  # c×d float32 staging
    for s in range(lo, hi, rows):
        e = min(s + rows, hi)
        k = _block(bank, s, e, buf, dev)
        if normalized:
            p = torch.addmm(bias, qs, k.T)  # B×c  l - shift
        else:
            inv = torch.linalg.vector_norm(k, dim=1).clamp_min_(EPS).reciprocal_()  # c
            p = torch.mm(qs, k.T)
            torch.addcmul(bias, p, inv, out=p)  # B×c  l·(1/|K_j|) - shift
        mask = chunk_mask(exclude, index, s, e, dev)
        if mask is not None:
            p.masked_fill_(mask, float("-inf"))
        p.exp_()  # B×c, in place
        ssum.add_(p.sum(dim=1))
        if want_weights:
            if not normalized:
                p.mul_(inv)  # fold 1/|K_j| into the weights: p·K̂ = (p/|K|)·K
            acc.addmm_(p, k)  # B×d
    return ssum, acc


def _workers(device, n, rows):
    if device.type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), n // (2 * rows)))  # each worker streams ≥ 2 blocks


def _stream_fixed(qs, bank, index, tau, exclude, normalized, rows, want_weights):
    N = bank.shape[0]
    W = _workers(qs.device, N, rows)
    shift = 1.0 / tau
    if W == 1:
        ssum, acc = _fixed_range(qs, bank, index, exclude, normalized, 0, N, rows, shift, want_weights, False)
    else:
        threads = torch.get_num_threads()
        bounds = [N * w // W for w in range(W + 1)]
        try:
            with ThreadPoolExecutor(W) as pool:
                parts = [f.result() for f in [pool.submit(_fixed_range, qs, bank, index, exclude, normalized, a, b,
                                                          rows, shift, want_weights, True)
                                              for a, b in zip(bounds, bounds[1:])]]
        finally:
            torch.set_num_threads(threads)  # the workers' setting must not outlive them
        ssum, acc = parts[0]
        for s_w, a_w in parts[1:]:  # fixed order: worker 0, 1, ...
            ssum = ssum + s_w
            acc = acc + a_w if want_weights else None
    return shift + ssum.log(), acc, ssum


def _stream_online(qs, bank, index, exclude, normalized, rows, want_weights):
    """The running-max reduction: exact for any logits (fallback of the fixed shift)."""
    B, d = qs.shape
    N, dev = bank.shape[0], qs.device
    m = qs.new_full((B,), float("-inf"))  # B   running max
    ssum = qs.new_zeros(B)  # B   running Σ exp(l - m)
    acc = qs.new_zeros(B, d) if want_weights else None  # B×d running Σ exp(l - m)·K̂
    direct = bank.dtype == torch.float32 and bank.device == dev
    buf = None if direct else qs.new_empty(min(rows, N), d)
    for s in range(0, N, rows):
        e = min(s + rows, N)
        k = _block(bank, s, e, buf, dev)
        logits = qs @ k.T  # B×c
        if not normalized:
            inv = torch.linalg.vector_norm(k, dim=1).clamp_min_(EPS).reciprocal_()  # c
            logits.mul_(inv)
        mask = chunk_mask(exclude, index, s, e, dev)
        if mask is not None:
            logits.masked_fill_(mask, float("-inf"))
        m_new = torch.maximum(m, logits.amax(dim=1))  # B
        m_safe = m_new.masked_fill(m_new == float("-inf"), 0.0)  # rows fully masked so far
        alpha = torch.exp(m - m_safe)  # B   rescale of earlier blocks
        p = logits.sub_(m_safe[:, None]).exp_()  # B×c, in place
        ssum.mul_(alpha).add_(p.sum(dim=1))
        if want_weights:
            if not normalized:
                p.mul_(inv)
            acc.mul_(alpha[:, None]).addmm_(p, k)  # B×d
        m = m_new
    return m + ssum.log(), acc, ssum


def stream_lse(qn, bank, index, tau, exclude, normalized, rows, want_weights=True):
    """``(lse, acc, ssum)`` of unit queries ``qn`` (B×d float32) over the bank, in one pass.

    lse_b = log Σ_{j kept} exp(qn_b·K̂_j / τ); ``acc / ssum`` = Σ_j softmax_bj K̂_j (the gradient
    direction; B×d, None unless ``want_weights``). ``rows``: block rows (:func:`chunk_rows`).
    Rows with nothing kept get lse = -inf and ssum = 0.
    """
    qs = qn / tau  # B×d, so logits = qs·K̂ᵀ
    if qn.shape[0] == 0 or bank.shape[0] == 0:
        return _stream_online(qs, bank, index, exclude, normalized, rows, want_weights)
    gpu = qn.device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"  # CPU: Triton's interpreter (tests)
    if gpu:
        from eim.losses import stream_triton  # optional: needs triton, and a CUDA device to run
    if 1.0 / tau <= MAX_SHIFT:
        if gpu:
            if stream_triton.available(bank):
                out = stream_triton.stream_lse(qs, bank, index, tau, exclude, normalized, want_weights, rows)
                if out is not None:
                    return out
            else:
                stream_triton.fallback(stream_triton.unavailable(bank))  # once in the log
        lse, acc, ssum = _stream_fixed(qs, bank, index, tau, exclude, normalized, rows, want_weights)
        if bool(torch.isfinite(ssum).all()) and bool((ssum >= MIN_SSUM).all()):
            return lse, acc, ssum
    elif gpu:
        stream_triton.fallback(f"tau = {tau:g} < {1 / MAX_SHIFT:g} (their fixed shift 1/tau needs tau >= {1 / MAX_SHIFT:g})")
    return _stream_online(qs, bank, index, exclude, normalized, rows, want_weights)
