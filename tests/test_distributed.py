"""Multi-process training and sharded banks (issue 8): 2 CPU processes, gloo, tiny models.

The processes are real: ``torchrun --nproc-per-node 2`` (and ``accelerate launch``) runs
``python -m eim.cli train`` or tests/distributed_driver.py in subprocesses.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ListDataset, caption_samples, tiny_recipe
from distributed_driver import CASES, case_data, rank_slice

from eim.contrastive import bank_infonce
from eim.io import load_tensors

TESTS = Path(__file__).parent


def launch(args, env=None, launcher="torchrun"):
    """Run a 2-process job; returns the CompletedProcess (output in .stdout)."""
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    else:  # accelerate launch: DDP (--multi_gpu), which falls back to CPU processes and gloo here
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port())]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS), **(env or {})}
    return subprocess.run(cmd + args, capture_output=True, text=True, env=full_env, timeout=300)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(res):
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


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
    from eim.distributed import sharded_bank_infonce

    c = case_data("plain")
    q = c["q"][:3]
    a = sharded_bank_infonce(q, c["bank"], 0, c["idx"][:3], chunk_size=4)
    assert torch.equal(a, bank_infonce(q, c["bank"], c["idx"][:3], chunk_size=4))
    with pytest.raises(ValueError, match="without a process group"):
        sharded_bank_infonce(q, c["bank"][5:], 5, c["idx"][:3])


# --- training: 2 processes == 1 process with the doubled batch ---------------------------------
@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """25 image-caption pairs in COCO Karpathy format: 25 = 6 global batches of 4 + 1, so the
    last batch of an epoch leaves rank 1 without a sample (it gets a padding row)."""
    from eim.data.shapes.writer import write_shapes

    root = tmp_path_factory.mktemp("shapes")
    write_shapes(root, train=5, val=1, test=1, size=32, overwrite=True)
    return root / "coco"


def train_args(tiny_dir, coco, out, per_rank_batch):
    return ["train", "clipcap_eim", "--data", str(coco), "--out", str(out), "--quiet",
            "--vision.name_or_path", str(tiny_dir / "clip"), "--lm.name_or_path", str(tiny_dir / "gpt2"),
            "--train.batch_size", str(per_rank_batch), "--train.warmup_steps", "0", "--train.lr", "0.001",
            "--train.log_every", "1", "--train.save_every", "3", "--stages.2.epochs", "1",
            "--eim.same_image", "mask"]


def metrics(run):
    """{stage: [record per step]}; a resumed stage logs its steps after the checkpoint again, the
    later record of a step wins."""
    out = {}
    for d in sorted(run.glob("stage-*")):
        rows = {r["step"]: r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())}
        out[d.name] = [rows[k] for k in sorted(rows)]
    return out


def assert_same_run(a, b, atol):
    ma, mb = metrics(a), metrics(b)
    assert ma.keys() == mb.keys() and len(ma) == 3
    for stage in ma:
        assert [r["step"] for r in ma[stage]] == [r["step"] for r in mb[stage]] == list(range(1, 8)), stage
        for ra, rb in zip(ma[stage], mb[stage]):
            for key in ra:
                if key.startswith("loss"):
                    assert ra[key] == pytest.approx(rb[key], abs=1e-5), (stage, ra["step"], key)
        wa = load_tensors(a / stage / "model.safetensors")[0]
        wb = load_tensors(b / stage / "model.safetensors")[0]
        assert wa.keys() == wb.keys()
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=atol, msg=f"{stage}: {key}")


@pytest.fixture(scope="module")
def single(tiny_dir, coco, tmp_path_factory):
    """The reference: one process, batch 4 (= 2 ranks × 2)."""
    from eim.cli import main

    out = tmp_path_factory.mktemp("single")
    assert main(train_args(tiny_dir, coco, out, 4)) == 0
    return out


@pytest.fixture(scope="module")
def two(tiny_dir, coco, tmp_path_factory):
    """torchrun, 2 processes × batch 2, banks sharded by rows across the two ranks."""
    out = tmp_path_factory.mktemp("two")
    check(launch(["-m", "eim.cli", *train_args(tiny_dir, coco, out, 2)], env={"EIM_SHARD_BANKS": "1"}))
    return out


def test_two_processes_equal_one_process_with_the_global_batch(single, two):
    # every stage of clipcap_eim (loss_ST, loss_LM, loss_base + loss_IE with the same-image mask):
    # each step's logged (global) losses and each stage's final weights
    assert_same_run(single, two, atol=1e-4)
    assert sorted(p.name for p in (two / "banks").iterdir()) == [
        "embed.json", "embed.safetensors", "lm.json", "lm.safetensors", "text.json", "text.safetensors"]
    assert not list(two.glob("stage-*/checkpoint"))


def test_resume_under_two_processes(tiny_dir, coco, two, tmp_path):
    """Killed after step 5 of the last stage (checkpoint at step 3), resumed with accelerate
    launch: the same weights as the uninterrupted 2-process run."""
    args = train_args(tiny_dir, coco, tmp_path, 2)
    res = launch([str(TESTS / "distributed_driver.py"), "train-interrupted", "2", "5", "--", *args[1:]],
                 env={"EIM_SHARD_BANKS": "1"})
    assert res.returncode != 0 and "stopped after stage 2 step 5" in res.stdout + res.stderr
    ckpt = tmp_path / "stage-2-base_ie" / "checkpoint"
    assert (ckpt / "model.safetensors").exists() and (ckpt / "rng-1.safetensors").exists()
    check(launch(["-m", "eim.cli", *args, "--resume"], env={"EIM_SHARD_BANKS": "1"}, launcher="accelerate"))
    assert_same_run(two, tmp_path, atol=1e-6)


def test_bank_build_shared_by_two_processes_equals_single_process_banks(tiny_dir, coco, single, tmp_path):
    """``torchrun ... eim banks build`` with 4-row parts: rank 0 encodes blocks 0-3, rank 1
    blocks 4-6 of the 25 rows; the joined files equal the banks one process built."""
    check(launch([str(TESTS / "distributed_driver.py"), "banks-small-parts", *train_args(tiny_dir, coco, tmp_path, 2)[1:]]))
    for name in ("text", "embed", "lm"):
        got = load_tensors(tmp_path / "banks" / f"{name}.safetensors")[0]["bank"]
        ref = load_tensors(single / "banks" / f"{name}.safetensors")[0]["bank"]
        torch.testing.assert_close(got.float(), ref.float(), rtol=0, atol=2e-3, msg=name)
        assert json.loads((tmp_path / "banks" / f"{name}.json").read_text()) == json.loads(
            (single / "banks" / f"{name}.json").read_text())
    assert not list((tmp_path / "banks").glob("*.parts"))


# --- pieces, in one process --------------------------------------------------------------------
def test_rank_shares_of_a_global_batch_are_the_single_process_batch():
    from eim.train.trainer import EpochBatches

    n, b, total = 13, 3, 12  # global batch 6: two full batches and a short one (1 row) per epoch
    one = list(EpochBatches(n, 2 * b, seed=5, total=total))
    ranks = [list(EpochBatches(n, b, seed=5, total=total, world=2, rank=r)) for r in range(2)]
    for i, batch in enumerate(one):
        shares = [ranks[r][i] for r in range(2)]
        real = [j for s in shares for j in s if j < n]
        assert real == batch
        if len(batch) == 1:  # rank 1's share is empty: one padding row (index n + j)
            assert shares[1] == [n + batch[0]]
        else:
            assert all(len(s) >= len(batch) // 2 for s in shares)
    # resuming at micro-batch 4 continues the same sequence
    assert list(EpochBatches(n, b, seed=5, total=total, start=4, world=2, rank=1)) == ranks[1][4:]


@pytest.mark.parametrize("lm", ["gpt2", "llama"])  # no lead token / BOS lead
def test_target_count_equals_tokens_the_lm_loss_averages(tiny_dir, tmp_path, lm):
    from eim.losses import target_count
    from eim.model.multimodal import build_model
    from eim.model.splice import IGNORE, TextEncoder
    from eim.train.collate import Collator, load_image_processor

    recipe = tiny_recipe(tiny_dir, "clipcap_eim", lm=lm)
    model, tok = build_model(recipe)
    proc = load_image_processor(recipe.vision.name_or_path, model.vision.vision_model.config.image_size)
    samples = caption_samples(tmp_path, 3)
    samples[1].image = None  # a text-only row: its first token is not predicted by anything
    batch = Collator(TextEncoder(tok, 16), proc)(samples)
    _, _, _, labels = model.embed(batch)
    assert target_count(batch) == int((labels[:, 1:] != IGNORE).sum())
    text = Collator(TextEncoder(tok, 16), proc, mode="text")(samples)
    _, _, _, labels = model.embed(text)
    assert target_count(text) == int((labels[:, 1:] != IGNORE).sum())


def test_shipped_accelerate_configs_load():
    from accelerate.commands.config.config_args import ClusterConfig

    import eim

    folder = Path(eim.__file__).parent / "accelerate_configs"
    kinds = {p.stem: ClusterConfig.from_yaml_file(str(p)) for p in sorted(folder.glob("*.yaml"))}
    assert {k: str(c.distributed_type).split(".")[-1] for k, c in kinds.items()} == {
        "single_gpu": "NO", "ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero2": "DEEPSPEED",
        "deepspeed_zero3": "DEEPSPEED"}
    assert kinds["deepspeed_zero3"].deepspeed_config["zero_stage"] == 3
    assert kinds["fsdp"].fsdp_config["fsdp_version"] == 2


def test_bank_provider_in_one_process_is_unsharded(tiny_dir, tmp_path):
    from eim.banks import BankProvider

    data = ListDataset(caption_samples(tmp_path / "img", 4))
    data.files, data.format, data.split = [], "list", "train"
    prov = BankProvider(tiny_recipe(tiny_dir, "clipcap_eim"), data, tmp_path, quiet=True, shard=True)
    assert not prov.sharded and prov.shard_offset("lm") == 0 and prov.get("lm").shape[0] == len(data)
