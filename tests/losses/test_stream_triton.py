"""The Triton bank pass (eim.losses.stream_triton), run on the CPU by Triton's interpreter.

Each check runs in a subprocess with ``TRITON_INTERPRET=1`` (Triton reads it at import) and
compares ``bank_infonce`` through the Triton kernels with the naive float32 formula: the same
tolerances as the torch pass (tests/losses/test_infonce.py). The interpreter multiplies bfloat16
tiles as float32 (its own bfloat16 dot is wrong), so on the CPU the split-precision arithmetic is
checked, not the tensor-core instructions.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = r"""
import json, torch
from eim.losses import stream, stream_triton
from eim.losses.infonce import bank_infonce, naive_bank_infonce

calls = []
real = stream_triton.stream_lse
stream_triton.stream_lse = lambda *a, **k: calls.append(1) or real(*a, **k)
out = []
g = torch.Generator().manual_seed(0)
for dt in (torch.float32, torch.float16, torch.bfloat16):
    for norm in (True, False):
        for ex in ("none", "groups", "dense"):
            B, N, d = 7, 203, 40  # N, d: no multiple of the 64-row / 64-column tiles
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
            out.append(dict(case=f"{dt} normalized={norm} exclude={ex}", used=len(calls) > n0,
                            loss=abs(a.item() - b.item()), tol_loss=1e-5 + 1e-6 * abs(b.item()),
                            grad=((ga - gb).abs() - 1e-5 * gb.abs()).max().item()))
print(json.dumps(out))
"""


def test_triton_kernels_match_the_naive_loss_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(rows) == 18
    for r in rows:
        assert r["used"], r  # the call went through the kernels, not the torch pass
        assert r["loss"] <= r["tol_loss"], r
        assert r["grad"] <= 1e-6, r
