"""The README's real-scale commands, run as a user runs them (issue 35), at tiny size on 2 CPU processes
over gloo: ``eim train llava_eim`` with LLaVA-1.5's two files (captions, then conversations of which
some are text-only, so LLaVA's modality grouping makes whole batches text-only), the recipe's bf16,
gradient checkpointing and clipping, through the shipped accelerate configs unchanged but for the
process count (``deepspeed_zero3``, ``deepspeed_zero2``, ``fsdp``, which falls back to DDP without
GPUs), through LLaVA's own DeepSpeed JSON files (``"auto"`` values, ``--use_deepspeed
--deepspeed_config_file``), and the one-GPU LoRA command (banks first, ``--no-rebuild``) in one
process. The tiny LLaMA is 320 wide, so ZeRO-3 really partitions its layers and the projector (a
probe counts the parameters that hold no element on a rank).
"""

import json

import pytest
import torch
from helpers import TESTS, check, launch, write_llava_world

from eim.cli import main
from eim.io import load_tensors
from eim.training.checkpoint import run_weights

pytestmark = pytest.mark.slow

# LLaVA's scripts/zero2.json and zero3.json, by their documented keys: HF Trainer's "auto" values, which
# accelerate fills from the model's config (bucket sizes, persistence threshold) and from the run
LLAVA_DEEPSPEED = {
    2: {"fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
                 "hysteresis": 2, "min_loss_scale": 1},
        "bf16": {"enabled": "auto"}, "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True, "sub_group_size": 1e9,
                              "reduce_bucket_size": "auto"}},
    3: {"fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
                 "hysteresis": 2, "min_loss_scale": 1},
        "bf16": {"enabled": "auto"}, "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "zero_optimization": {"stage": 3, "overlap_comm": True, "contiguous_gradients": True, "sub_group_size": 1e9,
                              "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                              "stage3_param_persistence_threshold": "auto", "stage3_max_live_parameters": 1e9,
                              "stage3_max_reuse_distance": 1e9, "stage3_gather_16bit_weights_on_model_save": True}},
}
FLOAT32 = ["--vision.dtype", "float32", "--lm.dtype", "float32"]
STAGES = ("st", "lm", "pretrain", "finetune_ie")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_llava_world(tmp_path_factory.mktemp("llava-world"))


def readme_train(world, out, *extra):
    """The README's "Many GPUs" eim line with the tiny world's files and models, sized for it: batch 2
    per process in every stage, two steps in the first three, one epoch (4 steps, one of them a whole
    text-only batch) in ``finetune_ie``, a checkpoint every 2 steps."""
    sized = [a for k in range(3) for a in (f"--stages.{k}.epochs", "none", f"--stages.{k}.steps", "2")]
    sized += [a for k in range(4) for a in (f"--stages.{k}.batch_size", "2")]
    return ["train", "llava_eim", "--data", f"captions={world['captions']}", "--data", f"instruct={world['instruct']}",
            "--image-root", str(world["images"]), "--out", str(out), "--vision.name_or_path", str(world["clip"]),
            "--lm.name_or_path", str(world["llama"]), *sized, "--train.save_every", "2", "--train.warmup_steps", "0",
            "--train.log_every", "1", "--quiet", *extra]


def probed(world, out, stop=(-1, -1), extra=(), **kw):
    """``eim train`` through tests/distributed_driver.py ``train-probed`` (partition counts per rank)."""
    args = readme_train(world, out, *extra)
    return launch([str(TESTS / "distributed_driver.py"), "train-probed", str(out / "probe"), str(stop[0]), str(stop[1]),
                   "--", *args[1:]], **kw)


def rows(run):
    """{stage folder: [metrics rows by step]} (a resumed stage's later row of a step wins)."""
    out = {}
    for d in sorted(run.glob("stage-*")):
        by_step = {r["step"]: r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())}
        out[d.name] = [by_step[k] for k in sorted(by_step)]
    return out


def partitioned(run):
    """{rank: {stage: parameters holding no element on that rank}} from the probe."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((run / "probe").glob("rank*.json"))}


@pytest.fixture(scope="module")
def zero3(world, tmp_path_factory):
    """The README's ZeRO-3 command in bf16, killed after step 3 of ``finetune_ie`` (checkpoint at 2),
    then resumed with the same command and ``--resume``."""
    out = tmp_path_factory.mktemp("zero3")
    res = probed(world, out, stop=(3, 3), config="deepspeed_zero3", precision=None, launcher="accelerate")
    assert res.returncode != 0 and "stopped after stage 3 step 3" in res.stdout + res.stderr, res.stderr[-3000:]
    assert (out / "stage-3-finetune_ie.partial" / "checkpoint" / "state").is_dir()
    check(launch(["-m", "eim.cli", *readme_train(world, out), "--resume"], launcher="accelerate",
                 config="deepspeed_zero3", precision=None))
    return out


@pytest.fixture(scope="module")
def zero2(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("zero2")
    check(launch(["-m", "eim.cli", *readme_train(world, out)], launcher="accelerate", config="deepspeed_zero2",
                 precision=None))
    return out


def test_finetune_ie_meets_whole_text_only_batches(world):
    """The world makes LLaVA's modality grouping give ``finetune_ie`` a global batch without an image,
    one with images only, and mixed ones: every case the ranks must agree on."""
    from eim.data import load_dataset
    from eim.training.sampler import EpochBatches, modality_lengths

    data = load_dataset(str(world["instruct"]), image_root=str(world["images"]))
    lengths = modality_lengths(data)
    batches = [[i for r in range(2) for i in EpochBatches(len(data), 2, 0, 4, world=2, rank=r, lengths=lengths)
                .order(0)[k * 4:(k + 1) * 4].tolist()] for k in range(4)]
    kinds = {tuple(sorted({lengths[i] > 0 for i in b})) for b in batches}
    assert {(False,), (True,)} <= kinds, kinds


def test_zero3_partitions_trains_every_stage_and_resumes_after_a_kill(zero3, tmp_path):
    """ZeRO-3 partitions the layers on both ranks in every stage; the resumed run finishes its four
    stages; each stage's file holds what that stage trained, and nothing else; the run exports as a
    LLaVA that transformers loads (the export checks its logits against eim's before writing)."""
    counts = partitioned(zero3)
    assert set(counts) == {"rank0", "rank1"} and all(n > 0 for c in counts.values() for n in c.values()), counts
    assert sorted(p.name for p in zero3.glob("stage-*")) == [f"stage-{k}-{s}" for k, s in enumerate(STAGES)]
    trained = {"st": {"projector"}, "lm": {"lm"}, "pretrain": {"projector"}, "finetune_ie": {"vision", "projector", "lm"}}
    for k, s in enumerate(STAGES):
        held = load_tensors(zero3 / f"stage-{k}-{s}" / "model.safetensors")[0]
        assert {n.split(".")[0] for n in held} == trained[s], s
    assert all("lora_" in n for n in run_weights(zero3) if n.startswith("vision."))  # CLIP tuned by LoRA only
    out = tmp_path / "export"
    assert main(["export", str(zero3), "--format", "llava-hf", "--out", str(out)]) == 0
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(out)
    assert model.config.text_config.hidden_size == 320


def test_zero3_follows_zero2_within_bf16_rounding(zero3, zero2):
    """Every step's losses of the resumed ZeRO-3 run within bf16's band of the ZeRO-2 run's."""
    a, b = rows(zero3), rows(zero2)
    assert a.keys() == b.keys() and len(a) == 4
    for stage in a:
        assert [r["step"] for r in a[stage]] == [r["step"] for r in b[stage]], stage
        for ra, rb in zip(a[stage], b[stage]):
            assert ra["loss"] == pytest.approx(rb["loss"], rel=3e-2), (stage, ra["step"])


def test_llava_deepspeed_files_zero3_equals_zero2_in_float32(world, tmp_path):
    """LLaVA's own zero3.json and zero2.json ("auto" bucket sizes and persistence threshold, filled from
    the LLM's config) through ``accelerate launch --use_deepspeed --deepspeed_config_file``, with its
    default zero3_init_flag (on for a ZeRO-3 file): in float32 the two give the same weights (1e-4)."""
    runs = {}
    for stage in (3, 2):
        cfg = tmp_path / f"zero{stage}.json"
        cfg.write_text(json.dumps(LLAVA_DEEPSPEED[stage]))
        out = tmp_path / f"run{stage}"
        res = check(probed(world, out, extra=FLOAT32, launcher="accelerate", deepspeed_json=cfg, precision="no"))
        if stage == 3:
            assert "zero3_init_flag is on" in res.stdout
            assert all(n > 0 for c in partitioned(out).values() for n in c.values()), partitioned(out)
        runs[stage] = out
    wa, wb = run_weights(runs[3]), run_weights(runs[2])
    assert wa.keys() == wb.keys() and wa
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-4, msg=key)
    a, b = rows(runs[3]), rows(runs[2])
    for stage in a:
        for ra, rb in zip(a[stage], b[stage]):
            assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-4), (stage, ra["step"])


def test_fsdp_config_runs_where_it_can(world, zero2, tmp_path):
    """The shipped fsdp config: without GPUs accelerate runs it as DDP on CPU processes; the four stages
    finish (loss_LM leaves the untied LM head without a gradient, which DDP is told to expect) and
    follow the ZeRO-2 run within bf16 rounding."""
    out = tmp_path / "fsdp"
    check(launch(["-m", "eim.cli", *readme_train(world, out)], launcher="accelerate", config="fsdp", precision=None))
    a, b = rows(out), rows(zero2)
    assert a.keys() == b.keys() and len(a) == 4
    for stage in a:
        for ra, rb in zip(a[stage], b[stage]):
            assert ra["loss"] == pytest.approx(rb["loss"], rel=3e-2), (stage, ra["step"])


def test_one_gpu_lora_command_runs_in_one_process(world, tmp_path):
    """The README's one-GPU lines: the banks built first, then the LoRA r128 run with ``--no-rebuild``
    and LLaVA's global batches by accumulation, in one process with the recipe's bf16."""
    out = tmp_path / "lora"
    common = ["--data", f"captions={world['captions']}", "--data", f"instruct={world['instruct']}",
              "--image-root", str(world["images"]), "--out", str(out), "--vision.name_or_path", str(world["clip"]),
              "--lm.name_or_path", str(world["llama"])]
    assert main(["banks", "build", "llava_eim", *common, "--quiet"]) == 0
    sized = [a for k in range(4) for a in (f"--stages.{k}.epochs", "none", f"--stages.{k}.steps", "1")]
    assert main(["train", "llava_eim", *common, "--no-rebuild", "--lm.trainable", "lora", "--lm.lora_r", "128",
                 "--lm.lora_alpha", "256", "--lm.lora_target", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                 "--train.grad_accum", "8", "--stages.finetune_ie.batch_size", "8",
                 "--stages.finetune_ie.grad_accum", "16", *sized, "--quiet"]) == 0
    lm = [n for n in run_weights(out) if n.startswith("lm.")]
    assert lm and all("lora_" in n for n in lm)
