"""The Python API (`lionconv.run_preset`, `lionconv.load_runs`) on a tiny real sweep, the portability
of what it writes (no absolute path, links only to files that are committed), and a quiet analysis."""
from __future__ import annotations

import json
import re
import warnings

import pandas as pd
import pytest

import lionconv
from conftest import REPO

# negative_controls shrunk by command-line overrides (they replace the preset's sweep values of the
# same key): 2 schedules x 2 horizons, one noise level, one seed = 4 runs of at most 60 steps.
TINY = ["control=skewed_fixed_beta1,skewed_annealed", "steps=30,60", "seed=0"]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """(result, results folder, warnings the analysis emitted)."""
    out = tmp_path_factory.mktemp("api") / "results"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = lionconv.run_preset("negative_controls", jobs=2, out_dir=out, overrides=TINY, n_boot=50)
    return result, out, caught


def test_run_preset_returns_the_verdict_rows_report_and_figures(reproduced):
    result, out, _ = reproduced
    assert isinstance(result, lionconv.PresetResult)
    assert result.report == out / "negative_controls" / "REPORT.md" and result.report.exists()
    written = pd.read_csv(out / "negative_controls" / "verdicts.csv", keep_default_na=False, na_values=[""])
    assert len(result.verdicts) == len(written) > 0
    assert list(result.verdicts["claim"]) == list(written["claim"])
    assert list(result.verdicts["holds"].astype(str)) == list(written["holds"])
    assert set(result.verdicts["claim_module"]) == {"negative_controls"}
    assert result.figures and all(p.suffix == ".png" and p.exists() for p in result.figures)
    report = result.report.read_text()
    assert all(f"]({p.relative_to(result.report.parent).as_posix()})" in report for p in result.figures)
    assert (out / "REPORT.md").exists()  # the top report, as `scripts/reproduce.py --only` writes it
    assert json.loads((out / "negative_controls" / "sweep_time.json").read_text())["seconds"] > 0


def test_load_runs_reads_the_sweep_the_api_ran(reproduced):
    result, out, _ = reproduced
    runs, left_out = lionconv.load_runs(out / "runs" / "negative_controls")
    assert result.runs_dir == out / "runs" / "negative_controls"
    assert left_out == [] and len(runs) == 4 and runs["usable"].all()
    assert sorted(runs["cfg.steps"]) == [30, 30, 60, 60]


def test_the_analysis_of_the_tiny_sweep_emits_no_warning(reproduced):
    _, _, caught = reproduced
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


def test_a_second_preset_tiny_is_analysed_without_warning(tmp_path):
    """kkt_constrained at one λ, two horizons, one seed: its claims' figures (feasibility, box
    invariance, rate, bound) on real runs; every warning of the analysis is a failure."""
    tiny = ["optimizer.weight_decay=5.0", "steps=100,200", "seed=0"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = lionconv.run_preset("kkt_constrained", jobs=2, out_dir=tmp_path, overrides=tiny, n_boot=50)
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []
    assert len(lionconv.load_runs(result.runs_dir)[0]) == 2 and result.figures
    modules = set(result.verdicts["claim_module"])   # feasibility has rows only for infeasible starts
    assert {"bound", "box_invariance", "rate_in_K"} <= modules <= {
        "active_constraint", "bound", "box_invariance", "feasibility", "rate_in_K"}


def test_results_hold_no_absolute_path_and_link_only_committed_files(reproduced):
    """What reproduce writes (everything but the runs/ folder, which is never committed) names no
    folder of this machine, records the command relative to the repository and the results folder,
    and links only files that exist and are committed (PDFs are git-ignored)."""
    _, out, _ = reproduced
    files = [p for p in out.rglob("*") if p.is_file() and "runs" not in p.relative_to(out).parts]
    assert {p.suffix for p in files} >= {".md", ".csv", ".json", ".png"}
    for path in files:
        if path.suffix in (".png", ".pdf"):
            continue
        text = path.read_text()
        for folder in {str(out), str(out.resolve()), str(REPO), "/tmp/", "/work/"}:
            assert folder not in text, (path, folder)
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            assert not re.match(r"\w+://", target), (path, target)
            assert (path.parent / target).is_file() and not target.endswith(".pdf"), (path, target)
    made_by = re.search(r"Made by `([^`]*)`", (out / "REPORT.md").read_text()).group(1)
    assert made_by == ("scripts/reproduce.py --only negative_controls --scale small --jobs 2 --results . "
                       + " ".join(TINY))
    assert json.loads((out / "negative_controls" / "sweep_time.json").read_text())["argv"] == made_by.split()


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "nope"}, "preset 'nope' is unknown; allowed: kkt_constrained, rate_in_K"),
    ({"name": "rate_in_K", "scale": "huge"}, "scale='huge' is not allowed; allowed: small, paper"),
    ({"name": "rate_in_K", "jobs": 0}, "jobs=0 is not allowed"),
])
def test_run_preset_bad_argument_is_one_clear_error(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=re.escape(message)):
        lionconv.run_preset(out_dir=tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_portable_argv_makes_every_absolute_path_relative(tmp_path):
    from lionconv.analysis.report import portable_argv

    results = tmp_path / "res"
    argv = ["scripts/reproduce.py", "--results", str(results), f"--out={results / 'x'}",
            f"out_dir={results / 'runs'}", str(REPO / "scripts" / "analyze.py"), "steps=30", "-m"]
    assert portable_argv(argv, results) == ["scripts/reproduce.py", "--results", ".", "--out=x",
                                            "out_dir=runs", "scripts/analyze.py", "steps=30", "-m"]
