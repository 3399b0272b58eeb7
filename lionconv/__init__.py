"""lionconv: experiments that check the convergence theorems of Lion and CLion by running them.

    from lionconv import Lion, CLion, SignSGD, gradient_metrics, bound_template
    result = lionconv.run_preset("negative_controls", jobs=2, out_dir="results")   # sweep + analysis
    result.verdicts, result.report, result.figures     # verdict rows (DataFrame), REPORT.md, PNGs
    runs, left_out = lionconv.load_runs("results/runs/negative_controls")         # one row per run

The names are imported on first use (module ``__getattr__``), so ``import lionconv`` stays cheap
for the command line.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "Lion": "lionconv.optim",
    "CLion": "lionconv.optim",
    "SignSGD": "lionconv.optim",
    "gradient_metrics": "lionconv.metrics",
    "bound_template": "lionconv.theory",
    "run_preset": "lionconv.reproduce",
    "PresetResult": "lionconv.reproduce",
    "load_runs": "lionconv.analysis.load",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lionconv' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
