"""The bank pass of :mod:`eim.losses.stream` as Triton kernels, for CUDA devices (docs/design.md §2).

Why Triton, not SDPA/flash or ``torch.compile``: the flash kernels stop at head dim 256 (the banks
are d = 768 … 4096) and take q and return the weighted sum in the bank's half precision, so the
gradient would lose float32 accuracy; ``torch.compile`` does not fuse two matmuls and a softmax
into one pass over K. The loop in :mod:`eim.losses.stream` on a GPU runs its float32 products on
CUDA cores (an H200 gives ~240 GB/s of bank that way, RESULTS.md) and launches ~12 kernels a block.

Per block of ``rows`` bank rows (sized so the block stays in L2 between the two kernels), the
queries in tiles of up to 128 (a grid axis: any number of queries, every tile reading the block
from L2, so HBM still sees the bank once):

1. ``_logits`` (grid: query tiles × row tiles): logits = q·Kᵀ from the bank as stored, on tensor cores in
   *split precision* — q = q₁ + 2⁻¹¹q₂ (float16 bank) or q₁ + q₂ + q₃ (bfloat16) in the bank's
   dtype, each part times the exact bank tile with float32 accumulation, so the logits carry
   float32 accuracy; float32 banks use IEEE float32 dots. Row norms (``normalized=False``),
   masking and p = exp(l − 1/τ) (the fixed shift) follow in registers; p goes to a B×rows scratch
   and Σp to one slot per program.
2. ``_weights`` (grid: query tiles × d tiles × splits): acc += p·K for its columns, p split the same way under
   a per-row power-of-two scale kept online (so float16's narrow range loses nothing), the scale
   and the partial acc carried from block to block in its own slot.

The slots are summed once at the end: extra memory is O(B·rows + splits·B·d), independent of N
(``rows`` shrinks when B·rows would pass 32 MiB). What the kernels do not cover (a bank of another
dtype or with non-contiguous rows; in :mod:`eim.losses.stream`, τ < 0.05 or no Triton ≥ 3) runs
the torch pass, and :func:`fallback` says so once per process and reason.
On the CPU the same kernels run under Triton's interpreter (``TRITON_INTERPRET=1``), which is how
the tests check them against the torch pass; on a GPU ``benchmarks/gpu_bank_loss.py`` times them.
"""

import logging
import os

import torch

try:  # optional: Triton ships with CUDA builds of torch; CPU installs may lack it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is absent
    triton = tl = None

BLOCK_N, BLOCK_D, SPLITS, BLOCK_B = 64, 64, 8, 128  # bank rows, columns, row splits, queries per tile
P_BYTES = 32 * 2**20  # the most bytes of the float32 query×rows weight scratch (caps a block's rows)
log = logging.getLogger("eim.losses")
_said = set()


def unavailable(bank):
    """Why the kernels cannot run on ``bank`` (a phrase), or None when they can."""
    if triton is None:
        return "this install (triton is not importable)"
    if int(triton.__version__.split(".")[0]) < 3:  # tl.dot(input_precision=) is Triton 3
        return f"triton {triton.__version__} (they need triton >= 3)"
    if not (bank.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        return f"a bank on {bank.device} (they run on CUDA, or under TRITON_INTERPRET=1)"
    return None


def available(bank):
    """Triton importable, and the bank on CUDA (or Triton's CPU interpreter switched on)."""
    return unavailable(bank) is None


def fallback(reason):
    """Say once per process and reason (a phrase; None: nothing to say) that the torch pass runs instead."""
    if reason is None or reason in _said:
        return
    _said.add(reason)
    log.warning("bank loss: the Triton kernels do not cover %s; the torch pass of eim.losses.stream runs "
                "instead (the same loss to float rounding, slower on a GPU). Said once per process.", reason)


if triton is not None:

    @triton.jit
    def _dot(a, b, HALF: tl.constexpr, UPCAST: tl.constexpr):
        """a·b with float32 accumulation: tensor cores for half inputs; ``UPCAST`` (Triton's CPU
        interpreter, whose bfloat16 dot is wrong) multiplies the same values as float32, which is
        exact for products of half-precision numbers."""
        if UPCAST:
            return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
        elif HALF:
            return tl.dot(a, b)
        else:
            return tl.dot(a, b, input_precision="ieee")

    @triton.jit
    def _logits(q_ptr, k_ptr, p_ptr, ssum_ptr, idx_ptr, qg_ptr, bg_ptr, ex_ptr, B, rows, d, s0, N, shift,
                stride_k, stride_ex, NPARTS: tl.constexpr, SCALE2: tl.constexpr, HALF: tl.constexpr,
                UPCAST: tl.constexpr, NORMALIZED: tl.constexpr, MASK: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
                BD: tl.constexpr):
        pid = tl.program_id(1)  # row tile
        BT = tl.num_programs(0) * BP  # padded queries: query tiles × BP
        b = tl.program_id(0) * BP + tl.arange(0, BP)  # this program's query tile (neighbours share its rows)
        n = pid * BN + tl.arange(0, BN)  # block rows
        row_ok = n < rows
        l = tl.zeros((BP, BN), dtype=tl.float32)
        sq = tl.zeros((BN,), dtype=tl.float32)
        for d0 in range(0, d, BD):
            c = d0 + tl.arange(0, BD)
            k = tl.load(k_ptr + n[:, None] * stride_k + c[None, :], mask=row_ok[:, None] & (c[None, :] < d), other=0.0)
            if not NORMALIZED:
                kf = k.to(tl.float32)
                sq += tl.sum(kf * kf, axis=1)
            for part in tl.static_range(NPARTS):  # q split in the bank's dtype, [NPARTS, BT, d]
                q = tl.load(q_ptr + part * BT * d + b[:, None] * d + c[None, :], mask=c[None, :] < d, other=0.0)
                t = _dot(q, tl.trans(k), HALF, UPCAST)
                if SCALE2 and part == 1:
                    t = t * (1.0 / 2048.0)  # float16: the second part was stored times 2^11
                l += t
        inv = tl.full((BN,), 1.0, tl.float32)
        if not NORMALIZED:
            inv = 1.0 / tl.maximum(tl.sqrt(sq), 1e-12)
            l = l * inv[None, :]
        keep = (b[:, None] < B) & row_ok[None, :]
        if MASK > 0:
            g = s0 + n  # bank rows of this block
            pos = tl.load(idx_ptr + b, mask=b < B, other=-1)
            if MASK == 1:  # groups
                qg = tl.load(qg_ptr + b, mask=b < B, other=-1)
                bg = tl.load(bg_ptr + g, mask=row_ok, other=-2)
                drop = qg[:, None] == bg[None, :]
            else:  # dense B×N mask (uint8)
                drop = tl.load(ex_ptr + b[:, None].to(tl.int64) * stride_ex + g[None, :], mask=keep, other=0) != 0
            keep = keep & ~(drop & (g[None, :] != pos[:, None]))
        p = tl.where(keep, tl.exp(l - shift), 0.0)
        tl.store(ssum_ptr + pid * BT + b, tl.load(ssum_ptr + pid * BT + b) + tl.sum(p, axis=1))
        tl.store(p_ptr + b[:, None] * rows + n[None, :], p * inv[None, :], mask=row_ok[None, :])

    @triton.jit
    def _weights(p_ptr, k_ptr, acc_ptr, exp_ptr, rows, d, stride_k, per_split, NPARTS: tl.constexpr,
                 FP16: tl.constexpr, HALF: tl.constexpr, UPCAST: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr):
        j = tl.program_id(1)  # column tile
        s = tl.program_id(2)  # row split of this block
        BT = tl.num_programs(0) * BP  # padded queries: query tiles × BP
        b = tl.program_id(0) * BP + tl.arange(0, BP)  # this program's query tile (neighbours share its rows)
        c = j * BD + tl.arange(0, BD)
        slot = acc_ptr + s * BT * d + b[:, None] * d + c[None, :]
        acc = tl.load(slot, mask=c[None, :] < d, other=0.0)  # in units of 2^-e (per row)
        eslot = exp_ptr + (j * tl.num_programs(2) + s) * BT + b
        e = tl.load(eslot)  # per-row power-of-two exponent of this program's scale
        lo = s * per_split
        for n0 in range(lo, tl.minimum(lo + per_split, rows), BN):
            n = n0 + tl.arange(0, BN)
            ok = n < tl.minimum(lo + per_split, rows)
            p = tl.load(p_ptr + b[:, None] * rows + n[None, :], mask=ok[None, :], other=0.0)
            k = tl.load(k_ptr + n[:, None] * stride_k + c[None, :], mask=ok[:, None] & (c[None, :] < d), other=0.0)
            if FP16:  # keep the row's largest weight in [2^14, 2^15): float16's range holds p·2^e
                pm = tl.max(p, axis=1)
                want = tl.where(pm > 0, 14.0 - tl.floor(tl.log2(tl.maximum(pm, 1e-38))), 126.0)
                e_new = tl.minimum(e, want)
                acc = acc * tl.exp2(e_new - e)[:, None]  # exact: a power of two
                e = e_new
                ps = p * tl.exp2(e)[:, None]
                p1 = ps.to(tl.float16)
                p2 = ((ps - p1.to(tl.float32)) * 2048.0).to(tl.float16)
                acc += _dot(p1, k, HALF, UPCAST) + _dot(p2, k, HALF, UPCAST) * (1.0 / 2048.0)
            elif HALF:  # bfloat16: float32's range, three parts give its 24 bits
                r = p
                for _ in tl.static_range(NPARTS):
                    pp = r.to(tl.bfloat16)
                    r = r - pp.to(tl.float32)
                    acc += _dot(pp, k, HALF, UPCAST)
            else:
                acc += _dot(p, k, HALF, UPCAST)
        tl.store(slot, acc, mask=c[None, :] < d)
        tl.store(eslot, e)


def _split(qs, dtype, BT):
    """qs (B×d float32) as [parts, BT, d] in the bank's dtype whose sum is qs to float32 accuracy."""
    B, d = qs.shape
    pad = qs.new_zeros(BT, d)
    pad[:B] = qs
    if dtype == torch.float32:
        return pad[None].contiguous()
    if dtype == torch.float16:
        q1 = pad.half()
        return torch.stack([q1, ((pad - q1.float()) * 2048.0).half()]).contiguous()
    parts, r = [], pad
    for _ in range(3):
        parts.append(r.bfloat16())
        r = r - parts[-1].float()
    return torch.stack(parts).contiguous()


def stream_lse(qs, bank, index, tau, exclude, normalized, want_weights, rows=None):
    """``(lse, acc, ssum)`` as :func:`eim.losses.stream.stream_lse` (fixed shift 1/τ); ``qs = q̂/τ``.

    Any number of queries: they run in tiles of up to ``BLOCK_B`` (a second grid axis), every
    tile's programs reading the same bank block while it is in L2, so the bank is still read once.
    Returns None when the kernels do not cover the call (a bank whose rows are not contiguous, or
    of another dtype; B·d ≥ 2^28 with weights); the caller then runs the torch pass (:func:`fallback`
    says so once).
    """
    B, d = qs.shape
    N = bank.shape[0]
    if bank.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        fallback(f"a {str(bank.dtype)[6:]} bank (the kernels read float32, float16 and bfloat16)")
        return None
    if bank.stride(1) != 1:
        fallback("a bank whose rows are not contiguous (stride(1) != 1; pass bank.contiguous())")
        return None
    BP = min(BLOCK_B, max(16, triton.next_power_of_2(B)))  # queries per tile
    QT = triton.cdiv(B, BP)  # query tiles
    BT = QT * BP  # padded queries
    if want_weights and SPLITS * BT * d >= 2**31:  # the weight slots' offsets are 32-bit (8 GiB of slots)
        fallback(f"{B:,} queries of width {d:,} at once (their weight slots would pass 2^31 floats)")
        return None
    dev, dt = qs.device, bank.dtype
    if rows is None:  # ~32 MiB of bank per block: it stays in L2 between the two kernels
        rows = 32 * 2**20 // (bank.element_size() * d)
    rows = min(rows, P_BYTES // (4 * BT))  # many queries: a smaller block keeps the weight scratch small
    rows = max(BLOCK_N, rows // BLOCK_N * BLOCK_N)
    rows = min(rows, N)
    qparts = _split(qs, dt, BT)
    nparts = qparts.shape[0]
    half = dt != torch.float32
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    n_prog = triton.cdiv(rows, BLOCK_N)
    p = qs.new_empty(BT, rows)  # B×rows weights of the current block
    ssum_part = qs.new_zeros(n_prog, BT)
    acc_part = qs.new_zeros(SPLITS, BT, d) if want_weights else None
    n_dt = triton.cdiv(d, BLOCK_D)
    exps = qs.new_full((n_dt, SPLITS, BT), 126.0)  # one scale per (column tile, split, query) program
    index = index.to(dev)
    mask, qg, bg, ex, stride_ex = 0, index, index, p, 0
    if isinstance(exclude, tuple):
        mask, qg, bg = 1, exclude[0].to(dev).long(), exclude[1].to(dev).long()
    elif exclude is not None:
        mask, ex = 2, exclude.to(dev).to(torch.uint8).contiguous()
        stride_ex = ex.stride(0)
    for s0 in range(0, N, rows):
        n = min(rows, N - s0)
        k = bank[s0 : s0 + n]
        grid1 = (QT, triton.cdiv(n, BLOCK_N))  # ≤ 8,192 row tiles (P_BYTES): within axis 1's 65,535
        _logits[grid1](qparts, k, p, ssum_part, index, qg, bg, ex, B, n, d, s0, N, 1.0 / tau, k.stride(0), stride_ex, NPARTS=nparts,
                       SCALE2=dt == torch.float16, HALF=half, UPCAST=interp and half, NORMALIZED=bool(normalized), MASK=mask, BP=BP,
                       BN=BLOCK_N, BD=BLOCK_D)
        if want_weights:
            per = triton.cdiv(triton.cdiv(n, SPLITS), BLOCK_N) * BLOCK_N
            _weights[(QT, n_dt, SPLITS)](p, k, acc_part, exps, n, d, k.stride(0), per, NPARTS=3,
                                                         FP16=dt == torch.float16, HALF=half, UPCAST=interp and half, BP=BP, BN=BLOCK_N,
                                                         BD=BLOCK_D)
    ssum = ssum_part.sum(0)[:B]
    acc = None
    if want_weights:
        if dt == torch.float16:  # undo each program's scale: [tiles, splits, BT] -> [splits, BT, d]
            acc_part = acc_part * torch.exp2(-exps).permute(1, 2, 0).repeat_interleave(BLOCK_D, dim=2)[..., :d]
        acc = acc_part.sum(0)[:B]
    return 1.0 / tau + ssum.log(), acc, ssum
