"""`eim demo` end to end on a minimal size (issue 6)."""

import json
import re

from eim.cli import main
from eim.demo import METRICS, VARIANTS


def test_demo_end_to_end_then_rerun_reuses_caches(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--preset", "test"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["variants"]) == set(VARIANTS)
    for v, d in summary["variants"].items():
        for m in METRICS:
            assert m in d["metrics"], (v, m)
            if m != "SPICE":  # SPICE needs Stanford CoreNLP, which cannot be downloaded here
                assert isinstance(d["metrics"][m]["mean"], float), (v, m)
        assert d["final_objective_steps"] == summary["schedule"]["steps"]
    assert summary["variants"]["clipcap_eim"]["extra_stage_steps"] == 4  # ST + LM stages, reported as extra cost
    assert summary["variants"]["clipcap"]["extra_stage_steps"] == 0
    assert summary["encoders"]["reused"] is False
    html = (out / "report.html").read_text()
    refs = re.findall(r"(?:src|href)='([^']+)'", html)
    assert any(r.endswith(".png") for r in refs)
    for r in refs:
        assert r.startswith("data:image/png;base64,") or (out / r).is_file(), r
    first = capsys.readouterr().out
    assert "report.html" in first
    assert main(["demo", "--out", str(out), "--preset", "test"]) == 0
    again = capsys.readouterr().out
    assert "reusing" in again and "already finished" in again and "fingerprint" in again
    again_summary = json.loads((out / "summary.json").read_text())
    assert again_summary["encoders"]["reused"] is True
    assert again_summary["variants"]["clipcap"]["metrics"] == summary["variants"]["clipcap"]["metrics"]


def test_progress_estimates_from_measured_rates_per_kind(monkeypatch, capsys):
    """The "~left" estimate is remaining units × the measured seconds per unit of each kind."""
    import eim.demo as demo

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
