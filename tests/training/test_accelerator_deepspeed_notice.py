"""A command that builds a model under DeepSpeed on a CPU prints no "Setting accelerator to CPU"
notice (eim/__init__.py filters DeepSpeed's logger; docs/design.md §9), and every other DeepSpeed
message still shows (issue 35 item 6)."""

import os
import subprocess
import sys

import pytest
from helpers import TESTS, free_port

NOTICE = "Setting accelerator to CPU"
GPU_DRIVERS = ("/proc/driver/nvidia/gpus", "/dev/kfd", "/dev/dxg")


def run_python(code, env=None):
    full = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS), **(env or {})}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


@pytest.fixture(autouse=True)
def cpu_only():
    pytest.importorskip("deepspeed")
    if any(os.path.exists(p) for p in GPU_DRIVERS):
        pytest.skip("a GPU driver is installed here: DeepSpeed's notice is kept (or never logged)")


def test_deepspeed_alone_prints_the_notice():
    """The notice this suite expects eim to drop is there without eim (the test below can fail)."""
    assert NOTICE in run_python("import deepspeed")


def test_a_deepspeed_rank_building_and_training_a_model_prints_no_notice(tiny_dir, shapes, tmp_path):
    """One rank of a ZeRO-2 run over gloo, with the environment ``accelerate launch`` gives it: the model
    is built, prepared by DeepSpeed and trained; its output holds no notice, and DeepSpeed did run."""
    args = ["train", "clipcap", "--data", str(shapes / "coco"), "--out", str(tmp_path / "run"), "--quiet",
            "--vision.name_or_path", str(tiny_dir / "clip"), "--lm.name_or_path", str(tiny_dir / "gpt2"),
            "--projector.prefix_length", "2", "--train.batch_size", "4",
            "--stages.0.epochs", "null", "--stages.0.steps", "1"]
    code = ("import sys\nfrom eim.cli import main\n"
            f"rc = main({args!r})\n"
            "print('deepspeed ran:', 'deepspeed' in sys.modules and rc == 0)\n")
    env = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2", "ACCELERATE_MIXED_PRECISION": "no",
           "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    out = run_python(code, env)
    assert "deepspeed ran: True" in out and "stage 0 base: 1 steps" in out, out[-3000:]
    assert NOTICE not in out, out[-3000:]


def test_other_deepspeed_warnings_still_show():
    out = run_python("import eim, deepspeed\nfrom deepspeed.utils import logger\n"
                     "logger.warning('Setting accelerator to CPU is not what this says')\n"
                     "logger.warning('a real DeepSpeed warning')")
    assert "a real DeepSpeed warning" in out and "is not what this says" in out
    assert NOTICE + "." not in out
