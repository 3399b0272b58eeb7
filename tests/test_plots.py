"""The shared figure helpers never put a log scale on an axis with nothing positive on it, and never
draw an empty legend: the two causes of matplotlib's warnings in the reports."""
from __future__ import annotations

import warnings

from lionconv.analysis.plots import legend, loglog, logx, plt


def _draw_quietly(fig, tmp_path) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(tmp_path / "f.png")
    plt.close(fig)
    return [str(w.message) for w in caught]


def test_log_only_where_some_data_is_positive(tmp_path):
    fig, (a, b, c, d) = plt.subplots(1, 4)
    a.plot([1, 10], [0.0, 0.0])               # nothing positive on y: y stays linear, x goes log
    b.plot([1, 10], [0.0, 2.0])               # one positive value: both log (the zero is not drawn)
    c.plot([], [])                            # an empty line: a log axis would fail to draw
    d.plot([-1.0, 0.0], [1.0, 2.0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for ax in (a, b, c):
            loglog(ax)
        logx(d)
    assert [w.message for w in caught] == []
    assert (a.get_xscale(), a.get_yscale()) == ("log", "linear")
    assert (b.get_xscale(), b.get_yscale()) == ("log", "log")
    assert (c.get_xscale(), c.get_yscale()) == ("linear", "linear")
    assert d.get_xscale() == "linear"
    assert _draw_quietly(fig, tmp_path) == []


def test_legend_of_an_empty_panel_is_a_note(tmp_path):
    fig, (a, b) = plt.subplots(1, 2)
    b.plot([1, 2], [1, 2], label="line")
    legend(a, "no σ = 0 run in this sweep", loc="best")
    legend(b, "unused", loc="best")
    assert a.get_legend() is None and [t.get_text() for t in a.texts] == ["no σ = 0 run in this sweep"]
    assert b.get_legend() is not None and len(b.texts) == 0
    assert _draw_quietly(fig, tmp_path) == []
