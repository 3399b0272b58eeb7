"""The training app (Hydra): one run, or a sweep with -m. `lionconv train ...` calls `main`.

    lionconv train optimizer=clion problem=digits_mlp steps=2000
    lionconv train -m optimizer=lion,clion,sgd problem.d=100,1000,10000 seed=0,1,2

The configs are read from `resources.config_dir()`, so the app works from any folder, installed
from a wheel or run from a clone.
"""
from __future__ import annotations

import logging
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from lionconv.batched import launch
from lionconv.config import register_configs
from lionconv.optim import skip_dynamo_import
from lionconv.resources import config_dir
from lionconv.train import check_command_line

register_configs()
log = logging.getLogger("lionconv")
INTERRUPTED = "interrupted: run the same command again to resume from the last checkpoint"


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except InterpolationResolutionError as err:  # e.g. ${lookup:...} without this key
        log.error("error: %s", err.__cause__ or err)
        sys.exit(2)
    slug = HydraConfig.get().job.override_dirname
    try:
        summary = launch(container, slug, echo=log.info)
    except (ValueError, OSError) as err:  # OSError: out_dir unwritable, the disk full, ...
        log.error("error: %s", err)
        sys.exit(2)
    if summary["status"] == "failed" and HydraConfig.get().mode == RunMode.RUN:
        sys.exit(1)  # a single run: say so in the exit status (a sweep goes on to its next run)
    final = summary.get("final") or {}
    return final.get("loss")


def run(argv: list[str]) -> None:
    """The app on `argv` (Hydra's own arguments and overrides). What Hydra itself uses before the
    app runs (the output folder, the launcher's n_jobs) would fail there with a traceback, so it is
    checked from the command line first."""
    problem = check_command_line(argv)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    skip_dynamo_import()  # nothing here compiles
    # Ctrl-C is how a run is stopped and resumed: a parent that ignored or blocked SIGINT (a
    # background job, a test harness) must not make the run unstoppable short of SIGKILL
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        main()
    except KeyboardInterrupt:  # in a run, or while Hydra composes a sweep's jobs: one line
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)
