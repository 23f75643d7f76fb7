"""Crash safety of `eim train` (eim.training.trainer, eim.training.run_dir; issue 18, item 5), proven on
real processes: tests/crash_driver.py runs ``eim train`` and SIGKILLs itself at a chosen point
(during a bank build, a step, a checkpoint write, a checkpoint swap, a stage's move into place,
between stages); each time ``--resume`` continues, and the final weights of every stage are
bit-identical to an uninterrupted run. A full disk during a checkpoint write (simulated, and real
on a small tmpfs where one can be mounted) is a clear error that leaves the previous checkpoint
whole.

The LLM has dropout, so a resumed run is exact only if it also restores the RNG.
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from helpers import TESTS

from eim.io import load_tensors
from eim_harness.tiny import make_tiny_lm


@pytest.fixture(scope="module")
def setup(tiny_dir, tmp_path_factory):
    """Shapes COCO data (25 captions), a tiny GPT-2 with dropout, and the uninterrupted run."""
    from transformers import AutoTokenizer

    from eim_harness.shapes.writer import write_shapes

    root = tmp_path_factory.mktemp("crash")
    write_shapes(root / "shapes", train=5, val=1, test=1, size=32, overwrite=True)
    make_tiny_lm(root / "gpt2_dropout", AutoTokenizer.from_pretrained(tiny_dir / "gpt2"), dropout=0.1)
    s = {"root": root, "data": root / "shapes" / "coco", "clip": tiny_dir / "clip", "lm": root / "gpt2_dropout"}
    ref = root / "reference"
    res = drive(s, "none", ref)
    assert res.returncode == 0, res.stderr[-3000:]
    s["reference"] = ref
    return s


def args(s, out):
    over = []
    for k in range(3):
        over += [f"--stages.{k}.epochs", "none", f"--stages.{k}.steps", "6"]
    return ["clipcap_eim", "--data", str(s["data"]), "--out", str(out),
            "--vision.name_or_path", str(s["clip"]), "--lm.name_or_path", str(s["lm"]),
            "--train.batch_size", "4", "--train.warmup_steps", "0", "--train.lr", "1e-3",
            "--train.log_every", "1", "--train.save_every", "2", "--eim.bank_batch_size", "4", *over]


def drive(s, spec, out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    return subprocess.run([sys.executable, str(TESTS / "crash_driver.py"), spec, "--", *args(s, out), *extra],
                          capture_output=True, text=True, env=env, timeout=300)


def killed(res):
    assert res.returncode == -signal.SIGKILL, (res.returncode, res.stderr[-3000:])


def assert_same_weights(a, b):
    stages = sorted(p.name for p in a.glob("stage-*"))
    assert stages == ["stage-0-st", "stage-1-lm", "stage-2-base_ie"]
    assert stages == sorted(p.name for p in b.glob("stage-*"))  # no .partial, .old or .tmp left
    for name in stages:
        wa, wb = load_tensors(a / name / "model.safetensors")[0], load_tensors(b / name / "model.safetensors")[0]
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), f"{name}: {key} differs"
        ra = json.loads((a / name / "stage.json").read_text())["final"]
        rb = json.loads((b / name / "stage.json").read_text())["final"]
        assert ra == rb, name


def ckpt_step(ckpt):
    return json.loads((ckpt / "optimizer.json").read_text())["step"]


def test_sigkill_anywhere_then_resume_is_bit_identical(setup):
    s, run = setup, setup["root"] / "killed"
    st, lm = run / "stage-0-st.partial", run / "stage-1-lm.partial"

    killed(drive(s, "bank:embed:3", run))  # stage 0's bank: 2 of its 7 parts written
    assert sorted(p.name for p in (run / "banks" / "embed.parts").glob("*.safetensors")) == ["0.safetensors",
                                                                                              "4.safetensors"]
    assert not (run / "banks" / "embed.safetensors").exists()

    killed(drive(s, "step:0:3", run, "--resume"))  # the bank resumes from its parts; killed in step 3
    assert (run / "banks" / "embed.safetensors").exists() and ckpt_step(st / "checkpoint") == 2

    killed(drive(s, "checkpoint:0:4", run, "--resume"))  # half an optimizer file in checkpoint.tmp
    assert ckpt_step(st / "checkpoint") == 2 and (st / "checkpoint.tmp" / "model.safetensors").exists()

    killed(drive(s, "between:0", run, "--resume"))  # stage 0 finished and in place
    assert (run / "stage-0-st" / "stage.json").exists() and not st.exists()

    killed(drive(s, "swap:1:4", run, "--resume"))  # the step-2 checkpoint renamed aside, step 4 not in
    assert not (lm / "checkpoint").exists() and ckpt_step(lm / "checkpoint.old") == 2

    killed(drive(s, "finish:1", run, "--resume"))  # stage 1 whole in its .partial, not yet moved
    assert (lm / "stage.json").exists() and not (run / "stage-1-lm").exists()

    killed(drive(s, "step:2:1", run, "--resume"))  # stage 1 moved in; stage 2 killed before a checkpoint
    assert (run / "stage-1-lm" / "stage.json").exists()

    res = drive(s, "none", run, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "stage 0 (st): already finished" in res.stdout and "stage 1 (lm): already finished" in res.stdout
    assert_same_weights(s["reference"], run)
    assert not list(run.rglob("*.tmp")) and not list(run.rglob("*.old"))


def check_full_disk(s, run, res, step):
    """The error names the file and the intact checkpoint; that checkpoint is whole; --resume ends
    where the uninterrupted run did."""
    assert res.returncode == 2, res.stderr[-3000:]
    err = res.stderr[res.stderr.index("eim train: error: "):].splitlines()[0]  # after the progress bar
    ckpt = run / "stage-0-st.partial" / "checkpoint"
    assert err.startswith(f"eim train: error: cannot write {ckpt}.tmp/"), err
    assert "No space left on device (errno 28)" in err
    assert f"the checkpoint at {ckpt} is intact: free space, then run again with --resume" in err
    assert ckpt_step(ckpt) == step and not ckpt.with_name("checkpoint.tmp").exists()
    load_tensors(ckpt / "model.safetensors")
    load_tensors(ckpt / "optimizer.safetensors")
    (ckpt.parent / "filler").unlink(missing_ok=True)
    res = drive(s, "none", run, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"stage 0 (st): resuming at step {step}/6" in res.stdout
    assert_same_weights(s["reference"], run)


def test_full_disk_during_a_checkpoint_is_a_clear_error_and_the_last_checkpoint_survives(setup):
    run = setup["root"] / "enospc"
    check_full_disk(setup, run, drive(setup, "enospc:0:4", run), 2)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs (root, and a system that allows mounting); skipped elsewhere."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount") or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_really_full_disk_during_a_checkpoint(setup, small_disk):
    run = small_disk / "run"
    check_full_disk(setup, run, drive(setup, "fill:0:4", run), 2)


def test_an_overwrite_killed_in_its_first_stage_leaves_the_old_run_and_resumes(setup):
    s, run = setup, setup["root"] / "overwritten"
    shutil.copytree(s["reference"], run)  # the old run: lr 1e-3
    new = ["--train.lr", "2e-3"]
    ref = s["root"] / "reference-lr"
    res = drive(s, "none", ref, *new)
    assert res.returncode == 0, res.stderr[-3000:]
    old = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "banks" not in p.parts}
    killed(drive(s, "step:0:3", run, "--overwrite", *new))
    assert {p: p.read_bytes() for p in old} == old  # every file of the old run as it was
    assert ckpt_step(run / "stage-0-st.partial" / "checkpoint") == 2
    res = drive(s, "none", run, "--resume", *new)  # the folder still holds the old run: refused
    assert res.returncode == 2 and "holds a different run" in res.stderr
    res = drive(s, "none", run, "--resume", "--overwrite", *new)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "stage 0 (st): resuming at step 2/6" in res.stdout  # the new run's stage, not the old one
    assert_same_weights(ref, run)
    assert json.loads((run / "recipe.json").read_text())["train"]["lr"] == 2e-3
