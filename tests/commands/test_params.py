"""``eim params``: the paper's exact parameter counts, on the meta device."""

import json

from eim.cli import main


def test_params_report_exact_reference_numbers(capsys):
    assert main(["params", "clipcap", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["segments"]["projector"]["total"] == 31_468_800
    assert rep["segments"]["lm"]["total"] == 124_439_808
    assert rep["segments"]["vision"]["parts"] == {"tower": 87_456_000, "output_layer": 393_216, "tuning": 0}
    assert rep["segments"]["vision"]["total"] == 87_456_000 + 393_216
    assert rep["trainable"] == 31_468_800 + 124_439_808
    assert main(["params", "clipcap_eim", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["segments"]["projector"]["total"] == 4_722_432
    assert rep["segments"]["vision"]["parts"]["tower"] == 87_456_000
    assert rep["segments"]["vision"]["parts"]["output_layer"] == 0
    assert rep["segments"]["vision"]["parts"]["tuning"] == 8 * 768  # 8 shallow VPT prompts
    assert rep["total"] == sum(s["total"] for s in rep["segments"].values())
