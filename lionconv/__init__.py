"""lionconv: experiments that check the convergence theorems of Lion and CLion by running them.

    from lionconv import Lion, CLion, SignSGD, gradient_metrics, bound_template

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
