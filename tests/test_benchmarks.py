"""The benchmarks still run (each at a toy size): they import the library's internals, and a
refactor that breaks one would otherwise go unnoticed until someone needs its table."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(script, *args):
    out = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300,
                         cwd=BENCH.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize("script, args, header", [
    ("banks.py", ["--rows", "48", "--width", "32", "--layers", "1", "--batch", "16", "--reps", "1"],
     "| bank | build (s) |"),
    ("bank_loss.py", ["--sizes", "5000", "--dtype", "float32", "--reps", "1", "--threads", "1"], "| N | bank |"),
    ("coco_scorer.py", ["--images", "12"], "METEOR"),
    ("scaling.py", ["--part", "bank", "--sizes", "1e4", "--reps", "1", "--shard-min", "1e9"], "| N | bank (MB) |"),
    ("scaling.py", ["--part", "steps", "--steps", "2", "--width", "32", "--layers", "1", "--images", "8",
                    "--image-size", "32"], "| 2 × 1 | 16 | 32 |"),
])
def test_benchmark_prints_its_table(script, args, header):
    assert header in _run(script, *args)


def test_data_check_benchmark_runs(tmp_path):
    assert "decode check" in _run("data_check.py", "--images", "20", "--workers", "0", "--dir", str(tmp_path / "d"))


def test_step_benchmark_eim_side_trains(monkeypatch, tmp_path):
    """``benchmarks/step.py``'s eim side (the real trainer's step on its loader) at a toy GPT-2;
    ClipCap's side needs its public ``train.py`` and is not run here."""
    spec = importlib.util.spec_from_file_location("bench_step", BENCH / "step.py")
    step = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(BENCH))
    spec.loader.exec_module(step)
    monkeypatch.setattr(step, "WIDTH", 32)
    monkeypatch.setattr(step, "LAYERS", 1)
    monkeypatch.setattr(step, "HEADS", 2)
    monkeypatch.setattr(step, "BATCH", 4)
    root = tmp_path
    tok = step.make_assets(root)
    texts = step.captions(tok, 4 * 3, step.CAPTION - 1)
    for unfused in (False, True):
        fn = step.eim_side(root, tok, texts, 3, unfused=unfused)
        losses = [fn(), fn()]
        assert all(0 < x < 20 for x in losses), losses


def _bench_module(monkeypatch, name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(BENCH))
    spec.loader.exec_module(mod)
    return mod


def test_memory_benchmark_steps_every_stage(monkeypatch, tmp_path):
    """``benchmarks/memory.py``'s step of each llava_eim stage at toy shapes, in this process, float32
    without and bfloat16 with checkpointing (the pair its target compares); the tables render."""
    memory = _bench_module(monkeypatch, "memory")
    monkeypatch.setenv("EIM_CACHE_DIR", str(tmp_path / "digests"))
    memory.prepare(tmp_path, memory.SHAPES["toy"])
    memory.prepare_banks(tmp_path, memory.SHAPES["toy"], ("float32", "bfloat16"))
    results = [memory.one(tmp_path, stage, dtype, ckpt, 2) for stage in memory.STAGES
               for dtype, ckpt in (("float32", False), ("bfloat16", True))]
    for r in results:
        assert len(r["step_s"]) == 2 and r["peak_mb"] > 0 and r["trainable"] > 0, r
    by = {r["stage"]: r for r in results if not r["checkpointing"]}
    assert by["st"]["llm_positions"] == 0 and by["st"]["saved_mb"]["lm"] == 0  # loss_ST runs no LLM
    assert by["lm"]["saved_mb"]["vision"] == 0 and by["lm"]["saved_mb"]["lm"] > 0  # text only
    assert by["finetune_ie"]["saved_mb"]["vision"] > 0 and by["finetune_ie"]["saved_mb"]["lm_vocab"] > 0
    assert "| finetune_ie | bfloat16 | on |" in memory.table(results)
    assert len(memory.ratios(results).splitlines()) == 2 + len(memory.STAGES)


def test_memory_benchmark_runs_a_configuration_in_its_own_process(tmp_path):
    out = _run("memory.py", "--toy", "--stages", "lm", "--dtypes", "bfloat16", "--checkpointing", "on", "--steps", "1",
               "--dir", str(tmp_path))
    assert "| lm | bfloat16 | on |" in out and "failed" not in out


def test_gpu_real_scale_benchmark_runs_at_toy_size(monkeypatch, tmp_path, capsys):
    """``benchmarks/gpu_real_scale.py --toy`` on the CPU, in this process: the anchor (transformers' LLaVA
    with peft LoRA), eim's llava finetune step and each llava_eim stage, on batches of unequal
    lengths padded as the trainer pads; each table line is in the report file before the next
    configuration starts (a run stopped there keeps it), and the file holds what was printed."""
    import torch

    import eim.api

    bench = _bench_module(monkeypatch, "gpu_real_scale")
    monkeypatch.setattr(eim.api, "quiet_transformers", lambda: None)  # leave transformers' logging as it is
    report = tmp_path / "sub" / "report.md"
    rows_before, batches = [], {}
    measure, eim_config = bench.measure, bench.eim_config

    def measure_spy(*a, **k):  # the table lines in the file as this configuration starts
        rows_before.append([ln for ln in report.read_text().splitlines() if ln.startswith("| ") and "---" not in ln])
        return measure(*a, **k)

    def eim_config_spy(r, stage, *a, **k):
        step, bs = eim_config(r, stage, *a, **k)
        batches[stage] = bs
        return step, bs

    monkeypatch.setattr(bench, "measure", measure_spy)
    monkeypatch.setattr(bench, "eim_config", eim_config_spy)
    monkeypatch.setattr(sys, "argv", ["gpu_real_scale.py", "--toy", "--out", str(report)])
    bench.main()
    out = capsys.readouterr().out
    assert report.read_text() == out  # every printed line, in the file
    assert "| transformers LlavaForConditionalGeneration |" in out and "Target, eim llava finetune" in out
    for stage in ("st", "lm", "pretrain", "finetune_ie"):
        assert f"| eim llava_eim {stage} (" in out
    assert "Error" not in out and "skipped: --time-limit" not in out
    # incremental: configuration k starts with the header and the k lines before it already written
    assert [len(r) for r in rows_before] == [1 + k for k in range(6)], rows_before
    assert rows_before[-1][1].startswith("| transformers LlavaForConditionalGeneration |")
    # unequal rows, sorted longest first and padded to the longest, as modality-length batches are
    for stage in ("finetune", "finetune_ie", "pretrain"):
        assert len(batches[stage]) == 2, stage  # --toy: two timed steps, a batch each
    lengths = [b["text_lengths"].tolist() for b in batches["finetune"]]
    assert all(len(set(x)) > 1 and x == sorted(x, reverse=True) for x in lengths), lengths
    assert all(b["input_ids"].shape[1] == max(b["text_lengths"]) for b in batches["finetune"])
    assert lengths[0] != lengths[1]  # a different batch at each step
    assert all(b["has_image"].all() for b in batches["finetune"]) and "% padding" in out
    # tokens per step defined once (eim.training.tracking.batch_tokens): padding excluded, and the
    # anchor's attention mask, the image expanded to its positions, counts the same sequences
    from eim.training.tracking import batch_tokens

    n_image = 4  # the toy CLIP: (28 / 14)^2 patches
    tokens = [batch_tokens(b, n_image) for b in batches["finetune"]]
    assert all(t < b["input_ids"].numel() + n_image * len(b["input_ids"]) for t, b in zip(tokens, batches["finetune"]))
    cells = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in out.splitlines()
             if line.startswith("| transformers Llava") or line.startswith("| eim llava finetune")}
    assert len(cells) == 2 and set(cells.values()) == {f"{round(sum(tokens) / len(tokens)):,}"}, cells
    assert torch.equal(batches["finetune"][0]["text_lengths"], batches["finetune_ie"][0]["text_lengths"])
