"""The analysis core: load runs, group and fit them, judge with named intervals, render reports, plot style.

    runs, problems = load_runs("results/runs/sweep")      # one row per run + runs left out
    fit_power_law(runs.K, runs.avg_grad_l1, groups=runs.seed)
    write_report("results/runs/sweep", claims=[...])        # claim modules: see lionconv.claims

Nothing here imports a claim: the claims (lionconv/claims/) import this core.
"""
from lionconv.analysis.bounds import bound_checks
from lionconv.analysis.fit import FitResult, fit_power_law, running_average_slope
from lionconv.analysis.load import RunProblem, load_metrics, load_runs, load_tensor_metrics
from lionconv.analysis.report import NoRunsError, RunData, write_report
from lionconv.analysis.verdict import Threshold, VerdictRow, judge

__all__ = ["bound_checks", "FitResult", "fit_power_law", "running_average_slope", "RunProblem", "load_metrics",
           "load_runs", "load_tensor_metrics", "NoRunsError", "RunData", "write_report", "Threshold", "VerdictRow",
           "judge"]
