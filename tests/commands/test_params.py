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


def test_params_llava_at_real_size_is_the_published_projector(capsys):
    """LLaVA-1.5-7B: ViT-L/14-336 + Vicuna-7B shapes on the meta device; mlp2x_gelu 1024 -> 4096 -> 4096."""
    assert main(["params", "llava", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["segments"]["projector"]["total"] == 1024 * 4096 + 4096 + 4096 * 4096 + 4096 == 20_979_712
    assert rep["segments"]["vision"]["parts"] == {"tower": 303_507_456, "output_layer": 0, "tuning": 0}
    assert rep["segments"]["lm"]["total"] == 6_738_415_616  # LLaMA-2-7B / Vicuna-7B
    assert rep["total"] == 7_062_902_784  # llava-hf/llava-1.5-7b-hf's parameter count
    assert rep["trainable"] == 20_979_712 + 6_738_415_616  # the projector, then the LLM (stage 2)
    assert main(["params", "llava"]) == 0
    assert "20,979,712" in capsys.readouterr().out
