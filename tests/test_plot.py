"""Loss curves (eim.plot) as a page 1,366 px wide shows them: three panels a row, legends below
their panel, a stage logged once drawn as a dot, the run page's image never wider than the page."""

import json

from eim.plot import _figure, run_page


def _run(root, stages, rows):
    for i, name in enumerate(stages):
        d = root / f"stage-{i}-{name}"
        d.mkdir(parents=True)
        (d / "metrics.jsonl").write_text("".join(json.dumps({"step": 5 * (k + 1), "loss": 2.0 - k / 10,
                                                              f"loss_{name}": 2.0 - k / 10}) + "\n"
                                                  for k in range(rows)))
    return root


def test_four_stages_wrap_and_legends_sit_below_their_panel(tmp_path):
    fig, plt = _figure([_run(tmp_path / "run", ["st", "lm", "adapter", "base_ie"], 40)])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(fig.axes) == 6 and len(visible) == 4  # 3 + 1, the two spare panels hidden
    assert fig.get_size_inches()[0] <= 4.2 * 3 + 1e-6  # 3 panels wide: 1,134 px at 90 dpi
    fig.canvas.draw()
    for ax in visible:
        legend = ax.get_legend().get_window_extent()
        assert legend.y1 <= ax.get_window_extent().y0 + 1  # under the axes, over no curve
        assert ax.lines[0].get_marker() in ("None", "", None)  # 40 points: a plain line
    plt.close(fig)


def test_a_stage_logged_once_is_a_visible_dot(tmp_path):
    fig, plt = _figure([_run(tmp_path / "run", ["base"], 1)])
    assert fig.axes[0].lines[0].get_marker() == "o"
    plt.close(fig)


def test_the_run_page_keeps_the_image_and_path_inside_the_page(tmp_path):
    run = _run(tmp_path / "run", ["base"], 3)
    run_page(run, "stage  state\n0 base finished", tmp_path / "page.html")
    page = (tmp_path / "page.html").read_text()
    assert "img{max-width:100%" in page and "overflow-wrap:anywhere" in page and "data:image/png;base64," in page
