"""The demo pipeline's progress estimate (eim_harness.pipeline)."""

import eim_harness.pipeline as demo


def test_progress_estimates_from_measured_rates_per_kind(monkeypatch, capsys):
    """The "~left" estimate is remaining units × the measured seconds per unit of each kind."""
    now = [0.0]
    monkeypatch.setattr(demo.time, "time", lambda: now[0])
    prog = demo.Progress({"data": 1, "train-a-0": 100, "eval-a-0": 1, "train-b-0": 300, "eval-b-0": 1, "report": 1})
    for key, seconds in [("data", 5.0), ("train-a-0", 10.0)]:
        prog.start(key, key)
        now[0] += seconds
        prog.finish(key)
    prog.start("eval-a-0", "eval-a-0")
    assert prog.eta() is None  # evaluation not measured yet: no guess
    now[0] += 2.0
    prog.finish("eval-a-0")
    assert prog.eta() == 300 * 0.1 + 1 * 2.0
    prog.start("train-b-0", "train-b-0")
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "[0:17, ~0:32 left] train-b-0"
    assert "left" not in lines[-2]
