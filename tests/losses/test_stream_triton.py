"""The Triton bank pass (eim.losses.stream_triton), run on the CPU by Triton's interpreter.

Each check runs in a subprocess with ``TRITON_INTERPRET=1`` (Triton reads it at import) and
compares ``bank_infonce`` through the Triton kernels with the naive float32 formula: the same
tolerances as the torch pass (tests/losses/test_infonce.py). The interpreter multiplies bfloat16
tiles as float32 (its own bfloat16 dot is wrong), so on the CPU the split-precision arithmetic is
checked, not the tensor-core instructions. More than ``BLOCK_B`` (128) queries run as several
query tiles of one grid (the sharded ``st`` stage gathers every rank's queries); what the kernels
do not cover falls back to the torch pass and says so once in the log.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = r"""
import json, sys, torch
from eim.losses import stream, stream_triton
from eim.losses.infonce import bank_infonce, naive_bank_infonce

calls = []
real = stream_triton.stream_lse
stream_triton.stream_lse = lambda *a, **k: calls.append(1) or real(*a, **k)
out = []
g = torch.Generator().manual_seed(0)
sizes = [int(x) for x in sys.argv[1].split(",")]
for i, dt in enumerate((torch.float32, torch.float16, torch.bfloat16)):
    for j, norm in enumerate((True, False)):
        for k, ex in enumerate(("none", "groups", "dense")):
            B, N, d = sizes[(i + j + k) % len(sizes)], 203, 40  # N, d: no multiple of the 64-row / 64-column tiles
            q = torch.randn(B, d, generator=g).requires_grad_()
            bank = torch.randn(N, d, generator=g) * 2.5
            bank = (torch.nn.functional.normalize(bank, dim=-1) if norm else bank).to(dt)
            idx = torch.randint(0, N, (B,), generator=g)
            idx[1] = idx[0]  # a duplicate positive
            groups = torch.randint(0, 5, (N,), generator=g)
            exclude = {"none": None, "groups": (groups[idx], groups),
                       "dense": groups[idx][:, None] == groups[None, :]}[ex]
            n0 = len(calls)
            a = bank_infonce(q, bank, idx, exclude=exclude, normalized=norm)
            (ga,) = torch.autograd.grad(a, q)
            b = naive_bank_infonce(q, bank, idx, exclude=exclude, normalized=norm)
            (gb,) = torch.autograd.grad(b, q)
            out.append(dict(case=f"{dt} normalized={norm} exclude={ex} B={B}", used=len(calls) > n0,
                            loss=abs(a.item() - b.item()), tol_loss=1e-5 + 1e-6 * abs(b.item()),
                            grad=(B * ((ga - gb).abs() - 1e-5 * gb.abs())).max().item()))  # per query (the loss is a mean)
print(json.dumps(out))
"""


@pytest.mark.parametrize("sizes", ["7", "130,300"], ids=["one query tile", "several query tiles"])
def test_triton_kernels_match_the_naive_loss_under_the_interpreter(sizes):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    res = subprocess.run([sys.executable, "-c", SCRIPT, sizes], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Triton kernels do not cover" not in res.stderr  # nothing fell back
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(rows) == 18
    assert {int(r["case"].rsplit("B=", 1)[1]) for r in rows} == {int(x) for x in sizes.split(",")}
    for r in rows:
        assert r["used"], r  # the call went through the kernels, not the torch pass
        assert r["loss"] <= r["tol_loss"], r
        assert r["grad"] <= 1e-6, r


def test_what_the_kernels_do_not_cover_falls_back_and_says_so_once(monkeypatch, caplog):
    import torch

    from eim.losses import stream_triton
    from eim.losses.infonce import bank_infonce, naive_bank_infonce

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the bank on the CPU counts as a device bank
    monkeypatch.setattr(stream_triton, "_said", set())
    monkeypatch.setattr(stream_triton, "_logits", None)  # a kernel launch would fail loudly
    g = torch.Generator().manual_seed(0)
    q = torch.randn(5, 16, generator=g)
    idx = torch.tensor([0, 3, 3, 7, 9])
    wide = torch.randn(12, 32, generator=g)
    cases = {"float64": (wide[:, :16].double().contiguous(), 0.07),
             "not contiguous": (wide[:, ::2], 0.07),  # stride(1) == 2
             "tau = 0.02": (wide[:, :16].contiguous(), 0.02)}
    with caplog.at_level("WARNING", logger="eim.losses"):
        for name, (bank, tau) in cases.items():
            for _ in range(3):  # said once, not once per step
                a = bank_infonce(q, bank, idx, tau=tau)
                torch.testing.assert_close(a, naive_bank_infonce(q, bank, idx, tau=tau), rtol=1e-6, atol=1e-5)
            said = [r.getMessage() for r in caplog.records if "do not cover" in r.getMessage()]
            assert len(said) == list(cases).index(name) + 1, said
            assert name in said[-1], said[-1]
