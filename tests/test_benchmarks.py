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
