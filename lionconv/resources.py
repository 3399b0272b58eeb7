"""Where the configs and scripts are: inside the package in a wheel, at the repository top in a clone.

A wheel maps `conf/` to `lionconv/conf/` and `scripts/` to `lionconv/scripts/` at build time
(setup.py); a clone or an editable install has them next to the `lionconv/` folder.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """`lionconv/<name>` when installed from a wheel, else `<repository>/<name>`."""
    shipped = _PACKAGE / name
    return shipped if shipped.is_dir() else _PACKAGE.parent / name


def config_dir() -> Path:
    """The Hydra config folder (`conf/`)."""
    return resource_dir("conf")


def script(name: str) -> Path:
    """One of the command-line scripts (`scripts/<name>.py`)."""
    return resource_dir("scripts") / f"{name}.py"
