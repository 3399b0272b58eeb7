"""Analysis of sweep folders: load runs, fit rates, check THEORY.md's claims, write REPORT.md.

    runs, problems = load_runs("results/runs/sweep")      # one row per run + runs left out
    fit_power_law(runs.K, runs.avg_grad_l1, groups=runs.seed)
    write_report("results/runs/sweep")                      # -> results/runs/sweep/analysis/REPORT.md
"""
from lionconv.analysis.claims import (CLAIMS, VerdictRow, bound_checks, comparable_groups, evaluate_claims,
                                      judge, register_claim)
from lionconv.analysis.fit import FitResult, fit_power_law, running_average_slope
from lionconv.analysis.load import RunProblem, load_metrics, load_runs, load_tensor_metrics
from lionconv.analysis import preset_claims  # noqa: F401  (registers the preset claims)
from lionconv.analysis.report import NoRunsError, write_report

__all__ = ["CLAIMS", "VerdictRow", "bound_checks", "comparable_groups", "evaluate_claims", "judge",
           "register_claim", "FitResult", "fit_power_law", "running_average_slope", "RunProblem",
           "load_metrics", "load_runs", "load_tensor_metrics", "NoRunsError", "write_report"]
