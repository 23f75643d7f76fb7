"""Progress where output is not a terminal (eim.progress_bar; issue 35 item 6): whole lines, one every
few seconds and one at the end, never carriage-return redraws; a tqdm bar on a terminal."""

import io
import os
import re
import subprocess
import sys

import pytest
from helpers import TESTS
from tqdm import std as tqdm_std

from eim.errors import ConfigError
from eim.progress_bar import LineProgress, line_seconds, progress_bar


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_lines_every_n_seconds_and_at_the_end():
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(total=100, desc="stage 0 st", unit="it", stream=out, every=30, clock=clock)
    for i in range(100):
        clock.t += 1.0  # a step a second: a line at 30, 60 and 90 s, then the last at 100 s
        bar.set_postfix(st=f"{5 - i / 100:.3f}", samples_s="8.0", refresh=False)
        bar.update(1)
    bar.close()
    bar.close()  # closing twice prints once
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 4 == bar.lines
    assert lines[0] == "stage 0 st: 30/100 (30%), 00:30 elapsed, 1.00 it/s, 01:10 left, samples_s=8.0, st=4.710"
    assert lines[-1] == "stage 0 st: 100/100 (100%), 01:40 elapsed, 1.00 it/s, samples_s=8.0, st=4.010"


def test_resumed_counts_rate_from_initial_slow_rates_and_no_total():
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(total=10, initial=6, desc="stage 1 lm", stream=out, every=1000, clock=clock)
    clock.t = 8.0
    bar.update(4)
    bar.close()
    assert out.getvalue() == "stage 1 lm: 10/10 (100%), 00:08 elapsed, 2.00 s/it\n"
    out = io.StringIO()
    with LineProgress(desc="bank text", unit="row", stream=out, every=1000, clock=clock) as bar:
        bar.update(1_000_000)
    assert out.getvalue() == "bank text: 1000000, 00:00 elapsed\n"


def test_iteration_disable_and_every_zero():
    out, clock = io.StringIO(), Clock()
    seen = list(LineProgress(range(3), desc="CLIP features", stream=out, every=0, clock=clock))
    assert seen == [0, 1, 2] and out.getvalue().splitlines() == [f"CLIP features: {c}, 00:00 elapsed" for c in (
        "1/3 (33%)", "2/3 (67%)", "3/3 (100%)", "3/3 (100%)")]  # a line per update, and the last
    quiet = io.StringIO()
    assert list(LineProgress(range(3), stream=quiet, every=0, disable=True)) == [0, 1, 2] and quiet.getvalue() == ""


def test_a_terminal_gets_tqdm_anything_else_lines(monkeypatch):
    bar = progress_bar(total=3, desc="x", stream=Terminal())
    assert isinstance(bar, tqdm_std.tqdm)
    bar.close()
    monkeypatch.setenv("EIM_PROGRESS_SECONDS", "5")
    bar = progress_bar(total=3, desc="x", stream=io.StringIO())
    assert isinstance(bar, LineProgress) and bar.every == 5.0
    monkeypatch.delenv("EIM_PROGRESS_SECONDS")
    assert line_seconds() == 30.0
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("EIM_PROGRESS_SECONDS", bad)
        with pytest.raises(ConfigError, match="EIM_PROGRESS_SECONDS"):
            line_seconds()


def test_a_training_run_into_a_log_file_writes_lines(tiny_dir, shapes, tmp_path):
    """``eim train`` with stderr in a file: no '\\r', a bounded number of lines, each bar's last line
    holding its final counts (stage 1 runs long enough for lines on the clock)."""
    log = tmp_path / "err.log"
    args = ["-m", "eim.cli", "train", "clipcap_eim", "--data", str(shapes / "coco"), "--out", str(tmp_path / "run"),
            "--vision.name_or_path", str(tiny_dir / "clip"), "--lm.name_or_path", str(tiny_dir / "gpt2"),
            "--projector.prefix_length", "2", "--train.batch_size", "4", "--train.log_every", "1",
            *[a for k, n in enumerate((2, 200, 2)) for a in (f"--stages.{k}.epochs", "null", f"--stages.{k}.steps", str(n))]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS), "EIM_PROGRESS_SECONDS": "0.2"}
    with open(log, "w") as err:
        res = subprocess.run([sys.executable, *args], stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=300)
    text = log.read_text()
    assert res.returncode == 0, res.stdout[-2000:] + text[-3000:]
    assert "\r" not in text
    lines = text.splitlines()
    seconds = float(re.search(r"stage 1 lm: 200 steps, ([0-9.]+)s", res.stdout).group(1))
    stage1 = [ln for ln in lines if ln.startswith("stage 1 lm: ")]
    assert 2 <= len(stage1) <= seconds / 0.2 + 2, (seconds, stage1)  # on the clock, not a line per step
    assert stage1[-1].startswith("stage 1 lm: 200/200 (100%), ") and "lm=" in stage1[-1] and "ETA_run=" in stage1[-1]
    for prefix, final in (("stage 0 st: ", "2/2 (100%)"), ("stage 2 base_ie: ", "2/2 (100%)"),
                          ("bank text: ", "200/200 (100%)"), ("CLIP features: ", "")):
        last = [ln for ln in lines if ln.startswith(prefix)][-1]
        assert last.startswith(prefix + final), last
    stage2 = [ln for ln in lines if ln.startswith("stage 2 base_ie: ")][-1]
    assert "base=" in stage2 and "ie=" in stage2
