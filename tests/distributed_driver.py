"""Programs that tests/test_distributed.py and tests/losses/test_infonce_sharded.py run under ``torchrun --nproc-per-node 2`` (gloo, CPU).

    torchrun --nproc-per-node 2 tests/distributed_driver.py sharded OUT_DIR
    torchrun --nproc-per-node 2 tests/distributed_driver.py train-interrupted STAGE STEP -- <eim train args>
    torchrun --nproc-per-node 2 tests/distributed_driver.py banks-small-parts <eim banks build args>
    accelerate launch ... tests/distributed_driver.py train-probed PROBE_DIR STAGE STEP -- <eim train args>

``sharded``: every rank evaluates :func:`eim.losses.infonce.sharded_bank_infonce` on the cases of
:func:`case_data` and saves its loss and query gradient to ``OUT_DIR/rank<r>.pt``; the test
compares them with the single-process ``bank_infonce`` on the full bank.
``train-interrupted``: ``eim train`` that raises after optimiser step STEP of stage STAGE, on
every rank (a killed job), so the test can resume it.
``banks-small-parts``: ``eim banks build`` with 4-row parts, so the two ranks share the blocks.
``train-probed``: ``eim train`` that writes, per rank, how many of the model's parameters hold no
element on it at each stage's first step (ZeRO-3 partitioned them) to ``PROBE_DIR/rank<r>.json``,
and raises after step STEP of stage STAGE (a killed job; STAGE -1: never).
"""

import sys

import torch

N, D = 11, 8  # N odd: the two shards differ in size
CASES = {
    # name: (per-rank batch sizes, bank dtype, normalized, exclude kind, chunk rows)
    "plain": ((3, 2), torch.float32, False, None, 4),
    "fp16_groups": ((2, 3), torch.float16, True, "groups", 3),
    "dense_mask": ((3, 3), torch.float32, False, "dense", None),
    "empty_rank": ((4, 0), torch.float16, True, "groups", 5),
}


def case_data(name):
    """The full data of one case, identical on every rank: bank N×D, queries, indices, masks."""
    sizes, dtype, normalized, kind, chunk = CASES[name]
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    bank = torch.randn(N, D, generator=g)
    if normalized:
        bank = torch.nn.functional.normalize(bank, dim=-1)
    bank = bank.to(dtype)
    total = sum(sizes)
    q = torch.randn(total, D, generator=g)
    idx = torch.randint(0, N, (total,), generator=g)
    groups = torch.randint(0, 4, (N,), generator=g)
    dense = torch.rand(total, N, generator=g) < 0.3
    return dict(sizes=sizes, bank=bank, q=q, idx=idx, groups=groups, dense=dense, normalized=normalized,
                kind=kind, chunk=chunk)


def rank_slice(sizes, r):
    start = sum(sizes[:r])
    return slice(start, start + sizes[r])


def sharded(out):
    import torch.distributed as dist

    from eim.distributed import shard_range
    from eim.losses.infonce import sharded_bank_infonce

    dist.init_process_group("gloo")
    r, w = dist.get_rank(), dist.get_world_size()
    res = {}
    for name in CASES:
        c = case_data(name)
        off, n = shard_range(N, w, r)
        sl = rank_slice(c["sizes"], r)
        q = c["q"][sl].clone().requires_grad_(True)
        idx = c["idx"][sl]
        exclude = None
        if c["kind"] == "groups":
            exclude = (c["groups"][idx], c["groups"][off : off + n])
        elif c["kind"] == "dense":
            exclude = c["dense"][sl]
        loss = sharded_bank_infonce(q, c["bank"][off : off + n], off, idx, tau=0.07, exclude=exclude,
                                    normalized=c["normalized"], chunk_size=c["chunk"])
        loss.backward()
        res[name] = {"loss": loss.detach(), "grad": q.grad.clone()}
    torch.save(res, f"{out}/rank{r}.pt")
    dist.destroy_process_group()


class Interrupt(Exception):
    pass


def train_interrupted(stage, step, argv):
    import eim.commands.train as train_cmd  # the verb's own reference to eim.api.train
    from eim.cli import main

    def stop(trainer, k, s):
        if (k, s) == (stage, step):
            raise Interrupt(f"stopped after stage {k} step {s}")

    real = train_cmd.train
    train_cmd.train = lambda *a, **kw: real(*a, **{**kw, "callbacks": [stop]})
    return main(["train", *argv])


def train_probed(probe_dir, stage, step, argv):
    import json
    from pathlib import Path

    import eim.commands.train as train_cmd
    from eim.cli import main

    seen = {}

    def probe(trainer, k, s):
        if k not in seen:
            seen[k] = sum(p.numel() == 0 for p in trainer.model.parameters())
            Path(probe_dir).mkdir(parents=True, exist_ok=True)
            (Path(probe_dir) / f"rank{trainer.rank}.json").write_text(json.dumps(seen))
        if (k, s) == (stage, step):
            raise Interrupt(f"stopped after stage {k} step {s}")

    real = train_cmd.train
    train_cmd.train = lambda *a, **kw: real(*a, **{**kw, "callbacks": [probe]})
    return main(["train", *argv])


def banks_small_parts(argv):
    import eim.banks
    from eim.cli import main

    eim.banks.PART_ROWS = 4
    return main(["banks", "build", *argv])


if __name__ == "__main__":
    if sys.argv[1] == "sharded":
        sharded(sys.argv[2])
    elif sys.argv[1] == "train-interrupted":
        rest = sys.argv[4:]
        sys.exit(train_interrupted(int(sys.argv[2]), int(sys.argv[3]), rest[1:] if rest[:1] == ["--"] else rest))
    elif sys.argv[1] == "train-probed":
        rest = sys.argv[5:]
        sys.exit(train_probed(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), rest[1:] if rest[:1] == ["--"] else rest))
    elif sys.argv[1] == "banks-small-parts":
        sys.exit(banks_small_parts(sys.argv[2:]))
