"""InfoNCE against a whole-dataset feature bank (docs/design.md §2: loss_IE, loss_ST, loss_LM).

    loss = -(1/B) Σ_b log( exp(cos(q_b, K[i_b])/τ) / Σ_{j ∉ excluded(b)} exp(cos(q_b, K[j])/τ) )

The bank K (N×d, frozen, float32/float16/bfloat16) is read once per step, in cache-sized row
blocks (:mod:`eim.losses.stream`): each block is upcast to float32 on its own (the bank is never
converted whole) and used by both of its products while it is in cache; the softmax runs in
float32. Memory beyond the inputs is O(block·d + B·block + B·d), independent of N: the B×N logits
never exist. The same pass that yields the log-sum-exp accumulates Σ_j softmax_bj·K̂_j, which
*is* the gradient direction, and the forward keeps only that B×d tensor — so backward does no
pass over the bank (flash-attention style). Only the query carries gradient.

**Sharded form** (:func:`sharded_bank_infonce`): the exact full-bank loss when K is split by rows
across ranks — for banks too large for one device (10M × 4096 float16 = 82 GB); rank r holds
``K[o_r : o_r + n_r]``. For a unit query q and a set S of bank rows let
``lse_S = log Σ_{j∈S} exp(q·K̂_j/τ)`` and ``w_S = Σ_{j∈S} softmax_S(j) K̂_j`` (the gradient
direction of ``lse_S``). For disjoint shards S_1..S_W::

    lse = M + log Σ_r exp(lse_r - M),         M = max_r lse_r          (all-reduce MAX, SUM)
    w   = Σ_r exp(lse_r - lse) · w_r                                   (all-reduce SUM)
    d lse / d q = w / τ

So each rank all-gathers the batch's queries (B_r×d each, with their bank indices and groups),
streams its own shard once over all of them (:func:`stream_lse`), and two all-reduces of
(ΣB)×(2d+2) floats give every rank the full-bank ``lse`` and ``w`` of its own queries. The
positive key ``K[i_b]`` rides in the same all-reduce (its owner contributes it, the others zeros).
Backward is local: no collective. Cost per step: one pass over N/W rows per rank for ΣB queries,
the same FLOPs per rank as the unsharded loss, 1/W of the bank memory.
"""

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from eim import distributed as D
from eim.distributed import all_gather_rows
from eim.losses.stream import chunk_rows, stream_lse


class _BankLSE(torch.autograd.Function):
    """lse_b = log Σ_{j kept} exp(qn_b·K̂_j / τ), streamed over bank chunks. Gradient: qn only."""

    @staticmethod
    def forward(ctx, qn, bank, index, tau, exclude, normalized, rows, want_grad):
        lse, acc, ssum = stream_lse(qn, bank, index, tau, exclude, normalized, rows, want_grad)
        if want_grad:
            ctx.save_for_backward(acc / ssum[:, None])  # B×d  Σ_j softmax_bj K̂_j
            ctx.tau = tau
        return lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_lse):  # grad_lse: B
        (wk,) = ctx.saved_tensors  # B×d
        return grad_lse[:, None] * wk / ctx.tau, None, None, None, None, None, None, None


def _check(query, bank, index, exclude):
    if query.dim() != 2 or bank.dim() != 2 or query.shape[1] != bank.shape[1]:
        raise ValueError(f"query B×d and bank N×d expected, got {tuple(query.shape)}, {tuple(bank.shape)}")
    B, N = query.shape[0], bank.shape[0]
    if index.shape != (B,) or index.dtype != torch.long:
        raise ValueError(f"index must be a LongTensor of shape ({B},), got {index.dtype} {tuple(index.shape)}")
    if isinstance(exclude, tuple):
        qg, bg = exclude
        if qg.shape != (B,) or bg.shape != (N,):
            raise ValueError(f"exclude groups must have shapes ({B},) and ({N},), got {tuple(qg.shape)}, {tuple(bg.shape)}")
    elif exclude is not None and (exclude.shape != (B, N) or exclude.dtype != torch.bool):
        raise ValueError(f"exclude mask must be bool ({B}, {N}), got {exclude.dtype} {tuple(exclude.shape)}")


def bank_infonce(query, bank, index, tau=0.07, exclude=None, normalized=False, chunk_size=None):
    """InfoNCE of queries against a frozen bank; scalar float32 loss (mean over the batch).

    query: B×d, any float dtype, carries gradient (computed in float32).
    bank: N×d, float32/float16/bfloat16, no gradient; upcast one chunk at a time.
    index: LongTensor B, the row of each query's positive (duplicates allowed).
    exclude: None, a B×N bool mask (True = not in the denominator), or a tuple
        (query_groups B, bank_groups N): drop every j with bank_groups[j] == query_groups[b].
        The positive K[i_b] is never excluded.
    normalized: the bank rows are already unit-norm (skips their normalisation).
    chunk_size: the most bank rows one block holds (None: the device's default block, ~3 MiB of
        float32 rows on a CPU, ~32 MiB on a GPU; a larger value does not enlarge the block).
    """
    _check(query, bank, index, exclude)
    bank = bank.detach()
    qn = F.normalize(query.float(), dim=-1)  # B×d, autograd handles the normalisation
    dev = qn.device
    index = index.to(dev)
    if isinstance(exclude, tuple):
        exclude = (exclude[0].to(dev), exclude[1])
    rows = chunk_rows(chunk_size, bank.shape[1], dev)
    kpos = bank[index.to(bank.device)].to(device=dev, dtype=torch.float32)  # B×d
    if not normalized:
        kpos = F.normalize(kpos, dim=-1)
    pos = (qn * kpos).sum(dim=-1) / tau  # B   positive logit
    want_grad = torch.is_grad_enabled() and qn.requires_grad  # else skip the softmax·K product
    lse = _BankLSE.apply(qn, bank, index, float(tau), exclude, bool(normalized), rows, want_grad)  # B
    return (lse - pos).mean()


class BankInfoNCE(nn.Module):
    """Module form of :func:`bank_infonce`: ``loss = BankInfoNCE(tau)(query, bank, index)``."""

    def __init__(self, tau=0.07, chunk_size=None, normalized=False):
        super().__init__()
        self.tau, self.chunk_size, self.normalized = tau, chunk_size, normalized

    def forward(self, query, bank, index, exclude=None):
        return bank_infonce(query, bank, index, self.tau, exclude, self.normalized, self.chunk_size)

    def extra_repr(self):
        return f"tau={self.tau}, chunk_size={self.chunk_size}, normalized={self.normalized}"


def naive_bank_infonce(query, bank, index, tau=0.07, exclude=None, normalized=False):
    """Reference: full B×N float32 logits and F.cross_entropy (for tests and benchmarks)."""
    qn = F.normalize(query.float(), dim=-1)  # B×d
    k = bank.detach().float()  # N×d
    if not normalized:
        k = F.normalize(k, dim=-1)
    logits = qn @ k.T / tau  # B×N
    if exclude is not None:
        if isinstance(exclude, tuple):
            exclude = exclude[0][:, None] == exclude[1][None, :]  # B×N
        mask = exclude.clone()
        mask[torch.arange(len(index)), index] = False
        logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, index)


# --- sharded InfoNCE -----------------------------------------------------------------------------
def _shard_lse(qn, bank, local_index, tau, exclude, normalized, rows):
    """lse_b and w_b (see module doc) of queries qn (Q×d) over this rank's shard (n×d).

    ``local_index``: each query's positive as a row of this shard (outside [0, n) when another
    rank owns it); ``exclude`` is indexed by local rows. Rows fully masked on this shard get
    lse = -inf and w = 0.
    """
    lse, acc, ssum = stream_lse(qn, bank, local_index, tau, exclude, normalized, rows)
    w = torch.where(ssum[:, None] > 0, acc / ssum.clamp_min(1e-38)[:, None], torch.zeros_like(acc))
    return lse, w


class _ShardedLSE(torch.autograd.Function):
    """Full-bank lse_b (and the positive keys) of this rank's queries; gradient on qn only."""

    @staticmethod
    def forward(ctx, qn, bank, offset, index, tau, groups, dense, normalized, rows, group):
        B, d = qn.shape
        dev = qn.device
        sizes = torch.tensor([B], device=dev)
        all_sizes = [torch.zeros_like(sizes) for _ in range(dist.get_world_size(group))]
        dist.all_gather(all_sizes, sizes, group=group)
        sizes = [int(s) for s in all_sizes]
        me = dist.get_rank(group)
        start = sum(sizes[:me])
        # every rank's queries, their bank rows (and groups / mask rows): ΣB×d, ΣB
        longs = index[:, None] if groups is None else torch.stack([index, groups[0]], dim=1)
        Qn = all_gather_rows(qn.detach(), sizes, group)
        L = all_gather_rows(longs, sizes, group)
        Iall = L[:, 0]
        n = bank.shape[0]
        local = Iall - offset  # positive as a local row; outside [0, n) when another rank owns it
        if groups is not None:
            exclude = (L[:, 1], groups[1])  # (ΣB query groups, n shard groups)
        elif dense is not None:
            rows_all = all_gather_rows(dense.to(torch.uint8), sizes, group)  # gloo has no bool collectives
            exclude = rows_all[:, offset : offset + n].bool()  # ΣB×n
        else:
            exclude = None
        lse_r, w_r = _shard_lse(Qn, bank, local, tau, exclude, normalized, rows)
        M = lse_r.clone()
        dist.all_reduce(M, op=dist.ReduceOp.MAX, group=group)  # finite: the positive is never masked
        scale = torch.exp(lse_r - M)  # ΣB, 0 where this shard contributed nothing
        own = (local >= 0) & (local < n)  # ΣB: this rank holds the positive
        kpos = Qn.new_zeros(Qn.shape)
        if own.any():
            k = bank[local[own].to(bank.device)].to(device=dev, dtype=torch.float32)
            kpos[own] = k if normalized else F.normalize(k, dim=-1)
        pack = torch.cat([scale[:, None], scale[:, None] * w_r, kpos, own[:, None].float()], dim=1)
        dist.all_reduce(pack, op=dist.ReduceOp.SUM, group=group)  # ΣB×(2d+2)
        owners = pack[:, -1]
        if not torch.equal(owners, torch.ones_like(owners)):
            bad = Iall[owners != 1].tolist()[:5]
            raise ValueError(f"sharded bank: query positives {bad} are held by {owners[owners != 1].tolist()[:5]} "
                             "ranks (each bank row must be on exactly one rank: check the shard offsets)")
        mine = slice(start, start + B)
        S = pack[mine, 0]
        lse = M[mine] + S.log()  # B
        w = pack[mine, 1 : 1 + d] / S[:, None]  # B×d  Σ_j softmax_bj K̂_j over the whole bank
        kp = pack[mine, 1 + d : 1 + 2 * d]  # B×d  K̂[i_b]
        ctx.save_for_backward(w)
        ctx.tau = tau
        ctx.mark_non_differentiable(kp)
        return lse, kp

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_lse, _grad_kp):
        (w,) = ctx.saved_tensors
        return grad_lse[:, None] * w / ctx.tau, None, None, None, None, None, None, None, None, None


def sharded_bank_infonce(query, bank_shard, shard_offset, index, tau=0.07, exclude=None, normalized=False,
                         group=None, chunk_size=None):
    """InfoNCE of this rank's queries against the whole bank, each rank holding one row shard.

    query: B×d (B may differ between ranks, and be 0: the call is collective, every rank of
        ``group`` must make it each step). Carries gradient; computed in float32.
    bank_shard: n_r×d, rows ``[shard_offset, shard_offset + n_r)`` of the full bank (any float
        dtype, streamed in chunks as in :func:`bank_infonce`).
    index: LongTensor B, *global* bank rows of the positives (any rank may hold them).
    exclude: None; a tuple ``(query_groups B, shard_groups n_r)`` (drop every bank row whose group
        equals the query's); or a dense bool mask B×N over the *full* bank (all-gathered: costs
        ΣB×N bools, use groups for large N). The positive is never excluded.
    Returns the mean over this rank's queries (a graph-connected 0 when B = 0), equal to
    ``bank_infonce(query, full_bank, index, ...)`` in value and gradient. Without a process
    group (or with one rank) it *is* ``bank_infonce`` on ``bank_shard``, which must then be the
    whole bank (``shard_offset`` 0).
    """
    if not D.is_distributed(group):
        if shard_offset:
            raise ValueError(f"shard_offset {shard_offset} without a process group: the shard is not the whole bank")
        return bank_infonce(query, bank_shard, index, tau, exclude, normalized, chunk_size)
    if query.dim() != 2 or bank_shard.dim() != 2 or query.shape[1] != bank_shard.shape[1]:
        raise ValueError(f"query B×d and bank shard n×d expected, got {tuple(query.shape)}, {tuple(bank_shard.shape)}")
    B = query.shape[0]
    if index.shape != (B,) or index.dtype != torch.long:
        raise ValueError(f"index must be a LongTensor of shape ({B},), got {index.dtype} {tuple(index.shape)}")
    qn = F.normalize(query.float(), dim=-1)  # B×d
    dev = qn.device
    index = index.to(dev)
    groups = dense = None
    if isinstance(exclude, tuple):
        qg, bg = exclude
        if qg.shape != (B,) or bg.shape != (bank_shard.shape[0],):
            raise ValueError(f"exclude groups must have shapes ({B},) and ({bank_shard.shape[0]},) (the shard's rows), "
                             f"got {tuple(qg.shape)}, {tuple(bg.shape)}")
        groups = (qg.to(device=dev, dtype=torch.long), bg)
    elif exclude is not None:
        if exclude.dim() != 2 or exclude.shape[0] != B or exclude.dtype != torch.bool:
            raise ValueError(f"exclude mask must be bool (B={B}, N), got {exclude.dtype} {tuple(exclude.shape)}")
        dense = exclude.to(dev)
    rows = chunk_rows(chunk_size, bank_shard.shape[1], dev)
    lse, kpos = _ShardedLSE.apply(qn, bank_shard.detach(), int(shard_offset), index, float(tau), groups, dense,
                                  bool(normalized), rows, group)
    if B == 0:
        return qn.sum() * 0.0  # keeps this rank's (empty) query in the graph
    pos = (qn * kpos).sum(dim=-1) / tau  # B   positive logit, gradient K̂[i_b]/τ
    return (lse - pos).mean()
