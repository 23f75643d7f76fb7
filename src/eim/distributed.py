"""Multi-process helpers and the row-sharded bank InfoNCE (issue 8).

Training runs on ``accelerate`` (DDP by default; FSDP and DeepSpeed through its config files in
``eim/accelerate_configs/``); this module only adds what accelerate does not know about:

- thin wrappers over ``torch.distributed`` that are no-ops in a single process, so library code
  (banks, losses) is written once (:func:`world_size`, :func:`rank`, :func:`barrier`,
  :func:`all_reduce_sum`, :func:`broadcast_object`);
- :func:`shard_range`: the contiguous, balanced row range a rank owns (banks, bank building);
- :func:`sharded_bank_infonce`: the exact full-bank InfoNCE of DESIGN §2 when the bank ``K``
  (N×d) is split by rows across ranks — for banks too large for one device (10M × 4096 float16
  = 82 GB). Rank r holds ``K[o_r : o_r + n_r]``.

How the sharded loss is exact. For a query q (unit, float32) and a set S of bank rows, let
``lse_S = log Σ_{j∈S} exp(q·K̂_j/τ)`` and ``w_S = Σ_{j∈S} softmax_S(j) K̂_j`` (the
softmax-weighted mean key: the gradient direction of ``lse_S``). For disjoint shards S_1..S_W::

    lse = M + log Σ_r exp(lse_r - M),         M = max_r lse_r          (all-reduce MAX, SUM)
    w   = Σ_r exp(lse_r - lse) · w_r                                   (all-reduce SUM)
    d lse / d q = w / τ

So each rank all-gathers the batch's queries (B_r×d each, with their bank indices and groups),
streams its own shard once over all of them (the chunked online log-sum-exp of
:mod:`eim.contrastive`), and two all-reduces of (ΣB)×(2d+2) floats give every rank the full-bank
``lse`` and ``w`` of its own queries. The positive key ``K[i_b]`` rides in the same all-reduce
(its owner contributes it, the others zeros). Backward is local: no collective.
Cost per step: one pass over N/W rows per rank for ΣB queries (ΣB = global batch), instead of N
rows for B queries: the same FLOPs per rank as the unsharded loss, 1/W of the bank memory.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F

from eim.contrastive import _chunk_rows, bank_infonce, stream_lse


# --- process group helpers (no-ops without one) --------------------------------------------------
def is_distributed(group=None):
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def world_size(group=None):
    return dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1


def rank(group=None):
    return dist.get_rank(group) if dist.is_available() and dist.is_initialized() else 0


def ensure_process_group():
    """Join the launcher's process group when started by ``torchrun``/``accelerate launch``
    (``WORLD_SIZE`` > 1) and nothing has yet — e.g. ``eim banks build`` run on 8 processes.
    Training needs none of this: its ``Accelerator`` joins first."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        from accelerate import PartialState

        PartialState()


def barrier(group=None):
    if is_distributed(group):
        dist.barrier(group=group)


def all_reduce_sum(t, group=None):
    """In-place sum over ranks (returns ``t``); nothing to do in one process."""
    if is_distributed(group):
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


def broadcast_object(obj, src=0, group=None):
    """Rank ``src``'s ``obj`` on every rank (picklable objects)."""
    if not is_distributed(group):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=group)
    return box[0]


def shard_range(n, world, r):
    """``(offset, count)`` of rank r's contiguous share of n items; sizes differ by at most 1."""
    base, extra = divmod(n, world)
    return r * base + min(r, extra), base + (1 if r < extra else 0)


def _all_gather_rows(t, sizes, group):
    """Concatenate every rank's ``t`` (rows ``sizes[r]``, other dims equal) in rank order."""
    m = max(sizes)
    padded = t.new_zeros((m, *t.shape[1:]))
    padded[: t.shape[0]] = t
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded.contiguous(), group=group)
    return torch.cat([o[:s] for o, s in zip(out, sizes)])


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
        Qn = _all_gather_rows(qn.detach(), sizes, group)
        L = _all_gather_rows(longs, sizes, group)
        Iall = L[:, 0]
        n = bank.shape[0]
        local = Iall - offset  # positive as a local row; outside [0, n) when another rank owns it
        if groups is not None:
            exclude = (L[:, 1], groups[1])  # (ΣB query groups, n shard groups)
        elif dense is not None:
            rows_all = _all_gather_rows(dense.to(torch.uint8), sizes, group)  # gloo has no bool collectives
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
        dtype, streamed in chunks as in :func:`eim.contrastive.bank_infonce`).
    index: LongTensor B, *global* bank rows of the positives (any rank may hold them).
    exclude: None; a tuple ``(query_groups B, shard_groups n_r)`` (drop every bank row whose group
        equals the query's); or a dense bool mask B×N over the *full* bank (all-gathered: costs
        ΣB×N bools, use groups for large N). The positive is never excluded.
    Returns the mean over this rank's queries (a graph-connected 0 when B = 0), equal to
    ``bank_infonce(query, full_bank, index, ...)`` in value and gradient. Without a process
    group (or with one rank) it *is* ``bank_infonce`` on ``bank_shard``, which must then be the
    whole bank (``shard_offset`` 0).
    """
    if not is_distributed(group):
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
    rows = _chunk_rows(chunk_size, bank_shard.shape[1])
    lse, kpos = _ShardedLSE.apply(qn, bank_shard.detach(), int(shard_offset), index, float(tau), groups, dense,
                                  bool(normalized), rows, group)
    if B == 0:
        return qn.sum() * 0.0  # keeps this rank's (empty) query in the graph
    pos = (qn * kpos).sum(dim=-1) / tau  # B   positive logit, gradient K̂[i_b]/τ
    return (lse - pos).mean()
