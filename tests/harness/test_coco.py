"""``eim demo`` (ClipCap) end to end on a minimal size."""

import json
import re

from eim.cli import main
from eim_harness.coco import METRICS, VARIANTS


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
        assert d["loss_base_steps"] == summary["schedule"]["steps"]  # equal training on the final objective
    assert summary["variants"]["clipcap_eim"]["extra_stage_steps"] == 4  # ST + LM stages, reported as extra cost
    assert summary["variants"]["clipcap"]["extra_stage_steps"] == 0
    assert summary["encoders"]["reused"] is False
    # EIM - baseline with a 95% interval, per metric (paired bootstrap over seeds and test images)
    comps = {(c["variant"], c["metric"]): c for c in summary["comparisons"]}
    assert set(comps) == {(v, m) for v in VARIANTS[1:] for m in ("Bleu_4", "CIDEr")}
    c = comps[("clipcap_eim", "Bleu_4")]
    assert c["reference"] == "clipcap" and c["split"] == "test" and c["n_seeds"] == 1 and c["n_images"] == 6
    assert c["ci95"][0] <= c["diff"] <= c["ci95"][1]
    delta = summary["variants"]["clipcap_eim"]["delta_vs_baseline"]["Bleu_4"] * 100
    assert abs(c["diff"] - delta) < 1e-6 and "95% interval" in summary["verdict"]
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
