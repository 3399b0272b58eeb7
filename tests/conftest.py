"""Shared helpers: compose the real configs from conf/, and run the real command line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
TRAIN = REPO / "experiments" / "train.py"


@pytest.fixture(scope="session", autouse=True)
def _registered_configs():
    from lionconv.config import register_configs

    register_configs()


@pytest.fixture(autouse=True)
def _stacked_engine_on(monkeypatch):
    """Every test (and the command lines it starts) sees the default engine for single runs,
    whatever the user's shell exports; a test that wants train.py's loop sets it itself."""
    from lionconv.batched import ONE_RUN_LOOP

    monkeypatch.delenv(ONE_RUN_LOOP, raising=False)


def compose_config(overrides=(), *, tmp_path=None, return_hydra_config=False) -> dict:
    """The resolved config `experiments/train.py` would run with these overrides."""
    overrides = list(overrides)
    if tmp_path is not None:
        overrides.append(f"out_dir={tmp_path}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides,
                      return_hydra_config=return_hydra_config)
    if return_hydra_config:
        return cfg
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def run_cli(*args, cwd=REPO, timeout=300, check=True, env=None) -> subprocess.CompletedProcess:
    """`python experiments/train.py ARGS` in a subprocess, as a user would type it."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([sys.executable, str(TRAIN), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def summaries(root: Path) -> dict[str, dict]:
    import json

    return {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(root).rglob("summary.json"))}
