"""Multi-process training and bank building (eim.distributed): 2 CPU processes, gloo, tiny models.

The processes are real: ``torchrun --nproc-per-node 2`` (and ``accelerate launch``) runs
``python -m eim.cli train`` or tests/distributed_driver.py in subprocesses.
"""

import json
from pathlib import Path

import pytest
import torch
from helpers import TESTS, check, launch

from eim.io import load_tensors


# --- training: 2 processes == 1 process with the doubled batch ---------------------------------
@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """25 image-caption pairs in COCO Karpathy format: 25 = 6 global batches of 4 + 1, so the
    last batch of an epoch leaves rank 1 without a sample (it gets a padding row)."""
    from eim_harness.shapes.writer import write_shapes

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
    ckpt = tmp_path / "stage-2-base_ie.partial" / "checkpoint"
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


# --- DeepSpeed ZeRO-2 / ZeRO-3 through the shipped accelerate configs, 2 CPU processes (gloo) -------
def test_deepspeed_zero2_equals_one_process_with_the_global_batch(tiny_dir, coco, single, tmp_path):
    out = tmp_path / "zero2"
    check(launch(["-m", "eim.cli", *train_args(tiny_dir, coco, out, 2)], launcher="accelerate", config="deepspeed_zero2"))
    assert_same_run(single, out, atol=1e-4)


def test_deepspeed_zero3_with_sharded_banks_resumes_after_a_kill(tiny_dir, coco, single, tmp_path):
    """ZeRO-3 (parameters partitioned too), banks split by rows across the ranks, killed after step
    5 of the last stage (its checkpoint at step 3, each rank's optimizer shard) and resumed: the run
    equals one process with the doubled batch."""
    args, env = train_args(tiny_dir, coco, tmp_path, 2), {"EIM_SHARD_BANKS": "1"}
    res = launch([str(TESTS / "distributed_driver.py"), "train-interrupted", "2", "5", "--", *args[1:]], env=env,
                 launcher="accelerate", config="deepspeed_zero3")
    assert res.returncode != 0 and "stopped after stage 2 step 5" in res.stdout + res.stderr
    assert (tmp_path / "stage-2-base_ie.partial" / "checkpoint" / "state").is_dir()  # DeepSpeed's own shards
    check(launch(["-m", "eim.cli", *args, "--resume"], env=env, launcher="accelerate", config="deepspeed_zero3"))
    assert_same_run(single, tmp_path, atol=1e-4)


def test_deepspeed_bf16_follows_float32_within_bf16_rounding(tiny_dir, coco, single, tmp_path):
    """bf16 under DeepSpeed (bf16 weights and activations, float32 master copy in its optimizer): every
    step's losses within 3% of the float32 single process (bf16 keeps 8 bits of mantissa; over 21 steps
    the rounding of weights and activations adds up to about 1%)."""
    out = tmp_path / "bf16"
    check(launch(["-m", "eim.cli", *train_args(tiny_dir, coco, out, 2)], launcher="accelerate", config="deepspeed_zero2",
                 precision="bf16"))
    ma, mb = metrics(single), metrics(out)
    for stage in ma:
        for ra, rb in zip(ma[stage], mb[stage]):
            assert rb["loss"] == pytest.approx(ra["loss"], rel=3e-2), (stage, ra["step"])
