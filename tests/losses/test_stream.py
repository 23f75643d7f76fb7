"""The streamed pass over the bank (eim.losses.stream): fixed shift, its fallback, CPU workers."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from eim.losses import stream
from eim.losses.infonce import bank_infonce, naive_bank_infonce


def _data(B=6, N=300, d=16, dtype=torch.float32, scale=2.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, d, generator=g).requires_grad_()
    bank = (torch.randn(N, d, generator=g) * scale).to(dtype)
    return q, bank, torch.randint(0, N, (B,), generator=g)


def _value_grad(fn, q, *args, **kw):
    loss = fn(q, *args, **kw)
    return loss.detach(), torch.autograd.grad(loss, q)[0]


def _close(a, b):
    torch.testing.assert_close(a[0], b[0], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(a[1], b[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fixed_shift_and_online_passes_agree(dtype, monkeypatch):
    q, bank, idx = _data(dtype=dtype)
    qg = torch.randint(0, 7, (300,))
    for kw in ({}, {"normalized": True}, {"exclude": (qg[idx], qg)}):
        b = bank if "normalized" not in kw else torch.nn.functional.normalize(bank.float(), dim=-1).to(dtype)
        fast = _value_grad(bank_infonce, q, b, idx, chunk_size=32, **kw)
        monkeypatch.setattr(stream, "MAX_SHIFT", 0.0)  # every τ takes the online (running-max) pass
        online = _value_grad(bank_infonce, q, b, idx, chunk_size=32, **kw)
        monkeypatch.undo()
        _close(fast, online)
        _close(fast, _value_grad(naive_bank_infonce, q, b, idx, **{k: v for k, v in kw.items()}))


def test_rows_that_are_not_unit_norm_fall_back_to_the_online_pass():
    # normalized=True trusts the caller; rows of norm ~100 overflow exp(l - 1/τ): the check catches it
    q, bank, idx = _data(scale=25.0)
    _close(_value_grad(bank_infonce, q, bank, idx, normalized=True, chunk_size=50),
           _value_grad(naive_bank_infonce, q, bank, idx, normalized=True))
    # and a τ below 0.05 (2/τ > 40) takes the online pass directly
    _close(_value_grad(bank_infonce, q, bank, idx, tau=0.02, chunk_size=50),
           _value_grad(naive_bank_infonce, q, bank, idx, tau=0.02))


def test_cpu_workers_change_only_the_summation_order():
    q, bank, idx = _data(N=4000)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _value_grad(bank_infonce, q, bank, idx, chunk_size=64)
        torch.set_num_threads(3)
        assert stream._workers(torch.device("cpu"), 4000, 64) == 3
        three = _value_grad(bank_infonce, q, bank, idx, chunk_size=64)
        assert torch.get_num_threads() == 3  # the workers' single-thread setting did not leak
    finally:
        torch.set_num_threads(threads)
    _close(one, three)


def test_chunk_rows_caps_at_the_device_block():
    assert stream.chunk_rows(None, 768, "cpu") == stream.CPU_BLOCK_BYTES // (4 * 768)
    assert stream.chunk_rows(65536, 768, "cpu") == stream.CPU_BLOCK_BYTES // (4 * 768)  # a cap, not a size
    assert stream.chunk_rows(7, 768, "cpu") == 7
    assert stream.chunk_rows(None, 768, "cuda") == stream.CHUNK_BYTES // (4 * 768)
    with pytest.raises(ValueError, match="chunk_size"):
        stream.chunk_rows(0, 768)


class _Reads(TorchDispatchMode):
    """Records the shapes of every tensor an op reads."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        flat = list(args) + list((kwargs or {}).values())
        self.shapes += [tuple(a.shape) for a in flat if isinstance(a, torch.Tensor)]
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_backward_does_no_pass_over_the_bank(dtype):
    q, bank, idx = _data(B=4, N=5000, d=8, dtype=dtype)
    loss = bank_infonce(q, bank, idx, chunk_size=256)
    with _Reads() as forward_check:
        bank_infonce(q, bank, idx, chunk_size=256)
    assert any(s[0] in (256, 5000) and len(s) == 2 and s[1] == 8 for s in forward_check.shapes)  # control
    with _Reads() as reads:
        loss.backward()
    assert reads.shapes and all(max(s, default=1) <= 8 for s in reads.shapes), sorted(set(reads.shapes))
