"""bank_infonce (docs/design.md §2): chunked, memory-bounded InfoNCE against a frozen bank."""

import math

import pytest
import torch

from eim.losses.infonce import BankInfoNCE, bank_infonce, naive_bank_infonce


def _data(B=6, N=257, d=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, d, generator=g).requires_grad_()
    bank = (torch.randn(N, d, generator=g) * 2.5).to(dtype)
    idx = torch.randint(0, N, (B,), generator=g)
    return q, bank, idx


def _value_grad(fn, q, *args, **kw):
    q.grad = None
    loss = fn(q, *args, **kw)
    (g,) = torch.autograd.grad(loss, q)
    return loss.detach(), g


def _assert_matches(q, bank, idx, naive_kw=None, **kw):
    lv, lg = _value_grad(bank_infonce, q, bank, idx, **kw)
    nkw = {k: v for k, v in kw.items() if k != "chunk_size"} if naive_kw is None else naive_kw
    nv, ng = _value_grad(naive_bank_infonce, q, bank, idx, **nkw)
    assert lv.dtype == torch.float32 and lv.dim() == 0
    torch.testing.assert_close(lv, nv, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(lg, ng, rtol=1e-5, atol=1e-6)
    return lv, lg


def test_hand_computed_3x2():
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]])  # N=3, d=2
    q = torch.tensor([[3.0, 4.0], [1.0, -1.0]], requires_grad=True)
    idx = torch.tensor([1, 0])
    tau = 0.5
    khat = [[1.0, 0.0], [0.0, 1.0], [-1 / math.sqrt(2), 1 / math.sqrt(2)]]
    want_loss, want_grad = 0.0, []
    for (x, y), i in zip([(3.0, 4.0), (1.0, -1.0)], [1, 0]):
        r = math.hypot(x, y)
        qh = (x / r, y / r)
        cos = [qh[0] * k[0] + qh[1] * k[1] for k in khat]
        z = sum(math.exp(c / tau) for c in cos)
        want_loss += -math.log(math.exp(cos[i] / tau) / z) / 2
        sm = [math.exp(c / tau) / z for c in cos]
        gq = [(sum(s * k[t] for s, k in zip(sm, khat)) - khat[i][t]) / tau / 2 for t in range(2)]
        dot = gq[0] * qh[0] + gq[1] * qh[1]  # back through q/|q|: (g - (g·q̂)q̂)/|q|
        want_grad.append([(gq[t] - dot * qh[t]) / r for t in range(2)])
    for chunk in (1, 2, 3, 10):
        loss, g = _value_grad(bank_infonce, q, bank, idx, tau=tau, chunk_size=chunk)
        assert loss.item() == pytest.approx(want_loss, rel=1e-6)
        torch.testing.assert_close(g, torch.tensor(want_grad), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("chunk", [1, 7, 64, 257, 256, 1000, None])
def test_matches_naive_for_chunk_sizes(chunk):
    q, bank, idx = _data()  # N=257: prime, so most chunks do not divide it
    _assert_matches(q, bank, idx, chunk_size=chunk)
    _assert_matches(q, bank, idx, tau=0.2, chunk_size=chunk)


def test_duplicate_indices():
    q, bank, idx = _data(B=8)
    idx = torch.tensor([5, 5, 5, 0, 0, 256, 17, 5])
    _assert_matches(q, bank, idx, chunk_size=50)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_banks_match_naive_on_upcast(dtype):
    q, bank, idx = _data(N=300, dtype=dtype)
    assert bank.dtype == dtype
    _assert_matches(q, bank, idx, chunk_size=64)
    lv, lg = _value_grad(bank_infonce, q, bank, idx, chunk_size=64)
    nv, ng = _value_grad(naive_bank_infonce, q, bank.float(), idx)
    torch.testing.assert_close(lv, nv, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(lg, ng, rtol=1e-5, atol=1e-6)
    assert bank.dtype == dtype  # not converted in place


@pytest.mark.parametrize("query_dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_query_dtypes(query_dtype):
    q32, bank, idx = _data()
    q = q32.detach().to(query_dtype).requires_grad_()
    loss = bank_infonce(q, bank, idx, chunk_size=40)
    loss.backward()
    assert loss.dtype == torch.float32 and q.grad.dtype == query_dtype
    ref = naive_bank_infonce(q.detach().float(), bank, idx)
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-6, atol=1e-5)


def _groups(B, N, idx, n_groups=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    bank_groups = torch.randint(0, n_groups, (N,), generator=g)
    return bank_groups[idx].clone(), bank_groups  # each query's group = its positive's group


def test_exclude_dense_and_compact_agree_with_naive():
    q, bank, idx = _data(B=8, N=203)
    qg, bg = _groups(8, 203, idx, n_groups=5)  # ~40 excluded rows per query
    dense = qg[:, None] == bg[None, :]
    assert dense[torch.arange(8), idx].all()  # the positive is marked, yet must stay
    for chunk in (1, 16, 64, 500):
        a = _assert_matches(q, bank, idx, exclude=dense, chunk_size=chunk)
        b = _assert_matches(q, bank, idx, exclude=(qg, bg), chunk_size=chunk)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # -inf masking by hand, independent of naive_bank_infonce's own mask handling
    qn = torch.nn.functional.normalize(q.detach(), dim=-1)
    logits = qn @ torch.nn.functional.normalize(bank, dim=-1).T / 0.07
    mask = dense.clone()
    mask[torch.arange(8), idx] = False
    want = torch.nn.functional.cross_entropy(logits.masked_fill(mask, float("-inf")), idx)
    torch.testing.assert_close(bank_infonce(q, bank, idx, exclude=dense, chunk_size=30).detach(), want)
    # the mask matters: differs from no mask
    assert not torch.allclose(a[0], bank_infonce(q, bank, idx).detach())


def test_exclude_whole_leading_chunks():
    # Every row of the first chunks is excluded for every query: the running max starts at -inf.
    q, bank, idx = _data(B=4, N=100)
    idx = torch.tensor([90, 95, 99, 80])
    bg = torch.zeros(100, dtype=torch.long)
    bg[60:] = torch.arange(1, 41)  # rows 0..59 in group 0, the rest alone
    qg = torch.zeros(4, dtype=torch.long)
    for chunk in (10, 30, 64):
        _assert_matches(q, bank, idx, exclude=(qg, bg), chunk_size=chunk)


def test_exclude_everything_but_the_positive_gives_zero_loss():
    q, bank, idx = _data(B=3, N=50)
    dense = torch.ones(3, 50, dtype=torch.bool)
    loss, g = _value_grad(bank_infonce, q, bank, idx, exclude=dense, chunk_size=8)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert g.abs().max() < 1e-6


def test_normalized_path():
    q, bank, idx = _data(N=150)
    unit = torch.nn.functional.normalize(bank, dim=-1)
    a = _assert_matches(q, unit, idx, normalized=True, chunk_size=32)
    b = _value_grad(bank_infonce, q, bank, idx, chunk_size=32)
    torch.testing.assert_close(a, b)
    # normalized=True trusts the caller: on a raw bank it uses raw dot products, like the reference
    _assert_matches(q, bank / 3, idx, normalized=True, chunk_size=32)
    for dt in (torch.float16, torch.bfloat16):
        _assert_matches(q, unit.to(dt), idx, normalized=True, chunk_size=40)


def test_module_form():
    q, bank, idx = _data()
    qg, bg = _groups(6, 257, idx)
    m = BankInfoNCE(tau=0.1, chunk_size=33)
    assert "tau=0.1" in repr(m) and list(m.parameters()) == []
    for ex in (None, (qg, bg)):
        got = _value_grad(m, q, bank, idx, exclude=ex)
        want = _value_grad(bank_infonce, q, bank, idx, tau=0.1, exclude=ex)
        torch.testing.assert_close(got, want)
    import eim

    assert eim.bank_infonce is bank_infonce and eim.BankInfoNCE is BankInfoNCE


def test_no_grad_and_no_bank_grad():
    q, bank, idx = _data()
    bank.requires_grad_()
    with torch.no_grad():
        v = bank_infonce(q, bank, idx, chunk_size=20)
    torch.testing.assert_close(v, naive_bank_infonce(q, bank, idx).detach())
    bank_infonce(q, bank, idx).backward()
    assert bank.grad is None and q.grad is not None


def _saved_numels(fn):
    numels = []

    def pack(t):
        numels.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn().backward()
    return numels


@pytest.mark.parametrize("exclude", [False, True])
def test_saved_tensors_are_independent_of_n(exclude):
    B, N, d = 16, 5000, 8  # B·N = 80,000 > bank N·d = 40,000
    q, bank, idx = _data(B=B, N=N, d=d, dtype=torch.float16)
    ex = _groups(B, N, idx) if exclude else None
    naive = _saved_numels(lambda: naive_bank_infonce(q, bank, idx, exclude=ex))
    assert max(naive) >= B * N  # control: the hook does see the full logits of the naive loss
    ours = _saved_numels(lambda: bank_infonce(q, bank, idx, exclude=ex, chunk_size=512))
    assert max(ours) <= B * d, ours  # only B-sized and B×d tensors: nothing scales with N


def test_peak_allocation_is_independent_of_n():
    # The profiler's allocation records are a timing-free view of what the forward+backward allocates.
    B, d, chunk = 16, 8, 256

    def biggest_alloc(N, fn=bank_infonce, **kw):
        q, bank, idx = _data(B=B, N=N, d=d, dtype=torch.float16)
        ex = _groups(B, N, idx)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as p:
            fn(q, bank, idx, exclude=ex, **kw).backward()
        return max(e.self_cpu_memory_usage for e in p.events())

    assert biggest_alloc(40_000, naive_bank_infonce) >= B * 40_000 * 4  # control: sees B×N logits
    small, large = biggest_alloc(2_000, chunk_size=chunk), biggest_alloc(40_000, chunk_size=chunk)
    assert small > 0
    assert large == small  # per-chunk buffers only
    assert large < B * 2_000 * 4  # below even the small bank's float32 logits


def test_input_validation():
    q, bank, idx = _data()
    with pytest.raises(ValueError, match="index"):
        bank_infonce(q, bank, idx.int())
    with pytest.raises(ValueError, match="bank"):
        bank_infonce(q, bank[:, :5], idx)
    with pytest.raises(ValueError, match="exclude"):
        bank_infonce(q, bank, idx, exclude=torch.zeros(6, 257))
    with pytest.raises(ValueError, match="exclude"):
        bank_infonce(q, bank, idx, exclude=(idx, idx))
    with pytest.raises(ValueError, match="chunk_size"):
        bank_infonce(q, bank, idx, chunk_size=0)
