"""InfoNCE against a whole-dataset feature bank (DESIGN.md §2: loss_IE, loss_ST, loss_LM).

    loss = -(1/B) Σ_b log( exp(cos(q_b, K[i_b])/τ) / Σ_{j ∉ excluded(b)} exp(cos(q_b, K[j])/τ) )

The bank K (N×d, frozen, float32/float16/bfloat16) is streamed in row chunks; each chunk is
upcast to float32 on its own (the bank is never converted whole), and the softmax runs in float32.
Memory beyond the inputs is O(chunk·d + B·chunk + B·d), independent of N: the B×N logits never
exist. The log-sum-exp is an online (running-max) reduction over chunks, and in the same pass we
accumulate Σ_j softmax_bj·K̂_j, which *is* the gradient direction — so backward needs no second
pass over the bank (flash-attention style; one q·Kᵀ and one softmax·K product per chunk, total).
Only the query carries gradient.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

# Default chunk: ~32 MiB of float32 rows (≈ 10,900 rows at d=768); tuned with
# benchmarks/bank_loss.py (a chunk that stays in cache between its two products).
CHUNK_BYTES = 32 * 2**20
_EPS = 1e-12  # as F.normalize


def _chunk_rows(chunk_size, d):
    if chunk_size is None:
        return max(1, CHUNK_BYTES // (4 * d))
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return int(chunk_size)


def _chunk_mask(exclude, index, s, e, device):
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


def stream_lse(qn, bank, index, tau, exclude, normalized, rows, want_weights=True):
    """One streamed pass over the bank: ``(lse, acc, ssum)`` for unit queries ``qn`` (B×d).

    lse_b = log Σ_{j kept} exp(qn_b·K̂_j / τ); ``acc / ssum`` = Σ_j softmax_bj K̂_j (the gradient
    direction; B×d, None unless ``want_weights``). Memory: one c×d chunk and B×c logits. Rows with
    nothing kept get lse = -inf and ssum = 0. Shared by :func:`bank_infonce` and the sharded loss.
    """
    B, d = qn.shape  # qn: B×d float32, unit rows
    N = bank.shape[0]
    dev = qn.device
    qs = qn / tau  # B×d, so logits = qs·K̂ᵀ
    m = qn.new_full((B,), float("-inf"))  # B   running max
    ssum = qn.new_zeros(B)  # B   running Σ exp(l - m)
    acc = qn.new_zeros(B, d) if want_weights else None  # B×d running Σ exp(l - m)·K̂
    direct = bank.dtype == torch.float32 and bank.device == dev
    buf = None if direct else qn.new_empty(min(rows, N), d)  # c×d float32 staging
    for s in range(0, N, rows):
        e = min(s + rows, N)
        if direct:
            k = bank[s:e]  # c×d view, no copy
        else:
            k = buf[: e - s]
            k.copy_(bank[s:e])  # c×d upcast of this chunk only
        logits = qs @ k.T  # B×c
        if not normalized:
            inv = torch.linalg.vector_norm(k, dim=1).clamp_min_(_EPS).reciprocal_()  # c
            logits.mul_(inv)
        mask = _chunk_mask(exclude, index, s, e, dev)
        if mask is not None:
            logits.masked_fill_(mask, float("-inf"))
        m_new = torch.maximum(m, logits.amax(dim=1))  # B
        m_safe = m_new.masked_fill(m_new == float("-inf"), 0.0)  # rows fully masked so far
        alpha = torch.exp(m - m_safe)  # B   rescale of earlier chunks
        p = logits.sub_(m_safe[:, None]).exp_()  # B×c, in place
        ssum.mul_(alpha).add_(p.sum(dim=1))
        if want_weights:
            if not normalized:
                p.mul_(inv)  # fold 1/|K_j| into the weights: p·K̂ = (p/|K|)·K
            acc.mul_(alpha[:, None]).addmm_(p, k)  # B×d
        m = m_new
    return m + ssum.log(), acc, ssum  # lse: B


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
    chunk_size: bank rows per chunk (None: ~CHUNK_BYTES of float32).
    """
    _check(query, bank, index, exclude)
    bank = bank.detach()
    qn = F.normalize(query.float(), dim=-1)  # B×d, autograd handles the normalisation
    dev = qn.device
    index = index.to(dev)
    if isinstance(exclude, tuple):
        exclude = (exclude[0].to(dev), exclude[1])
    rows = _chunk_rows(chunk_size, bank.shape[1])
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
