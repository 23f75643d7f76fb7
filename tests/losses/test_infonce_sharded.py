"""The row-sharded bank InfoNCE (eim.losses.infonce.sharded_bank_infonce) under 2 real processes."""

import pytest
import torch
from distributed_driver import CASES, case_data, rank_slice
from helpers import TESTS, check, launch

from eim.losses.infonce import bank_infonce


# --- sharded bank loss -------------------------------------------------------------------------
def test_sharded_bank_infonce_equals_single_process_loss_and_gradient(tmp_path):
    check(launch([str(TESTS / "distributed_driver.py"), "sharded", str(tmp_path)]))
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt")
        for name in CASES:
            c = case_data(name)
            sl = rank_slice(c["sizes"], r)
            q = c["q"][sl].clone().requires_grad_(True)
            idx = c["idx"][sl]
            if q.shape[0] == 0:  # a rank with no query still joins the collectives, returns 0
                assert got[name]["loss"].item() == 0 and got[name]["grad"].shape == (0, q.shape[1])
                continue
            exclude = {"groups": (c["groups"][idx], c["groups"]), "dense": c["dense"][sl]}.get(c["kind"])
            ref = bank_infonce(q, c["bank"], idx, tau=0.07, exclude=exclude, normalized=c["normalized"])
            ref.backward()
            torch.testing.assert_close(got[name]["loss"], ref.detach(), rtol=1e-5, atol=1e-5, msg=f"{name} rank {r}")
            torch.testing.assert_close(got[name]["grad"], q.grad, rtol=1e-4, atol=1e-6, msg=f"{name} rank {r}")


def test_sharded_bank_infonce_without_process_group_is_bank_infonce():
    from eim.losses.infonce import sharded_bank_infonce

    c = case_data("plain")
    q = c["q"][:3]
    a = sharded_bank_infonce(q, c["bank"], 0, c["idx"][:3], chunk_size=4)
    assert torch.equal(a, bank_infonce(q, c["bank"], c["idx"][:3], chunk_size=4))
    with pytest.raises(ValueError, match="without a process group"):
        sharded_bank_infonce(q, c["bank"][5:], 5, c["idx"][:3])
