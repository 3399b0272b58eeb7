"""`hydra/launcher=batched`: a sweep's closed-form runs stacked into batches in this process.

    python experiments/train.py -m experiment=rate_in_K hydra/launcher=batched

Every job is composed as the basic launcher composes it; the jobs `lionconv.batched` can stack
(closed-form problems; see `unstackable_reason`) run as batches of one problem, dtype and device,
each run keeping its own folder, files, generator and resume; the others (networks, unsupported
options) run one after the other through the app itself (`run_job`), as the basic launcher does.
Hydra finds this module in the `hydra_plugins` namespace package (repo root, or installed).
"""

import logging
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("lionconv")


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.lionconv_launcher.batched_launcher.BatchedLauncher"
    # R·d of one batch at most (its [R, d] buffers); larger groups are cut into several batches
    max_elements: int = 1 << 23
    # processes the stackable runs are dealt into (equal Σ K·d each; -1: one per core): 2 on two
    # cores runs two dispatch-bound batches at once (give each run threads=1 then)
    n_jobs: int = 1


ConfigStore.instance().store(group="hydra/launcher", name="batched", node=BatchedLauncherConf,
                             provider="lionconv")


class CachedSweepConfigs:
    """`config_loader.load_sweep_config` with the defaults list composed once per set of config-group
    choices. Hydra composes a job in ~0.2 s (the defaults tree and the structured schemas), which a
    batched sweep of short runs would otherwise pay 75 times over. A job whose other overrides are plain `key=value` changes gets a
    copy of its group choices' composition with those overrides applied the way Hydra applies them
    (`_apply_overrides_to_config`, then `hydra.overrides.task` and `override_dirname`), so the config is
    the one Hydra composes (tests/test_batched.py compares them); any other job is composed by Hydra.

    The sweeper composes every job to validate the batch and drops the result; the launcher then
    composes it again. So each composed job is also kept (up to KEPT jobs) and handed, the one time,
    to the launcher's `take` instead of being composed twice."""

    KEPT = 4096  # jobs kept between the sweeper's validation and the launcher (a few MiB each 100)

    def __init__(self, load_sweep_config, repository) -> None:
        self.compose = load_sweep_config
        self.repository = repository
        self.parser = OverridesParser.create()
        self.cache: dict = {}
        self.kept: dict = {}

    def __call__(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        cfg = self._compose(master_config, sweep_overrides)
        if len(self.kept) < self.KEPT:
            self.kept[(id(master_config), tuple(sweep_overrides))] = cfg
        return cfg

    def take(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        """The job's config, for the launcher to change: the one composed for the sweeper's
        validation (which only checks that it composes), else a new one."""
        kept = self.kept.pop((id(master_config), tuple(sweep_overrides)), None)
        return kept if kept is not None else self._compose(master_config, sweep_overrides)

    def _compose(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        parsed = self.parser.parse_overrides(list(sweep_overrides))
        values = [o for o in parsed if not self.repository.group_exists(o.key_or_group)]
        if any(o.type != OverrideType.CHANGE or o.is_hydra_override() or o.is_sweep_override()
               or o.package is not None for o in values):
            return self.compose(master_config, sweep_overrides)
        groups = [o.input_line for o in parsed if o not in values]
        key = (id(master_config), tuple(groups))
        if key not in self.cache:
            self.cache[key] = self.compose(master_config, groups)
        cfg = pickle.loads(pickle.dumps(self.cache[key]))  # a deep copy at 2/3 of deepcopy's cost
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        cfg.hydra.overrides.task = [o.input_line for o in parsed]
        dirname = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=parsed, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep,
            exclude_keys=dirname.exclude_keys)
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg


def cache_sweep_configs(config_loader) -> None:
    """Install CachedSweepConfigs on this config loader (the sweeper's and the launcher's)."""
    if not isinstance(getattr(config_loader, "load_sweep_config", None), CachedSweepConfigs):
        config_loader.load_sweep_config = CachedSweepConfigs(config_loader.load_sweep_config,
                                                              config_loader.repository)


class BatchedLauncher(Launcher):
    def __init__(self, max_elements: int = 1 << 23, n_jobs: int = 1) -> None:
        super().__init__()
        if not (isinstance(max_elements, int) and max_elements >= 1):
            raise ValueError(f"hydra.launcher.max_elements={max_elements!r} is not allowed: "
                             "expected an integer >= 1")
        if n_jobs < 0:  # as joblib counts: -1 one per core, -2 all cores but one, ...
            n_jobs = max(1, (os.cpu_count() or 1) + 1 + n_jobs)
        self.max_elements, self.n_jobs = max_elements, n_jobs
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        cache_sweep_configs(hydra_context.config_loader)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from lionconv import batched

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs, closed-form runs batched")
        # spawned worker processes import the suite while the jobs are composed here; forked ones
        # (batched.fork_safe: one CPU thread a run, as the sweep's config says) start at once later
        spawn = self.n_jobs > 1 and len(job_overrides) > 1 and not batched.fork_safe([(self.config, "")])
        pool = batched.process_pool(self.n_jobs) if spawn else None
        try:
            return self._launch(job_overrides, initial_job_idx, pool)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    def _launch(self, job_overrides, initial_job_idx: int, pool) -> Sequence[JobReturn]:
        from lionconv import batched

        compose = self.hydra_context.config_loader.load_sweep_config
        take = getattr(compose, "take", compose)
        sweep_configs, jobs = [], []
        for idx, overrides in enumerate(job_overrides):
            idx = initial_job_idx + idx
            sweep_config = take(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            sweep_configs.append((overrides, sweep_config))
            jobs.append((task_container(sweep_config), sweep_config.hydra.job.override_dirname))

        def run_alone(index: int):
            overrides, sweep_config = sweep_configs[index]
            log.info(f"\t#{initial_job_idx + index} : {' '.join(filter_overrides(overrides))}")
            ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                          config=sweep_config, job_dir_key="hydra.sweep.dir",
                          job_subdir_key="hydra.sweep.subdir")
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            return ret

        try:
            results = batched.run_configs(jobs, echo=log.info, max_elements=self.max_elements,
                                          run_alone=run_alone, n_jobs=self.n_jobs, pool=pool)
        except (ValueError, FileNotFoundError) as err:
            log.error("error: %s", err)
            sys.exit(2)
        returns: List[JobReturn] = []
        for (overrides, sweep_config), (container, _), result in zip(sweep_configs, jobs, results):
            if isinstance(result, JobReturn):
                returns.append(result)
                continue
            # cfg: the resolved task config as the run read it, a dict (run_job's is a DictConfig
            # of it: 5 ms a job at the end of the sweep, and Hydra reads only return_value)
            ret = JobReturn(overrides=list(overrides), cfg=container, hydra_cfg=sweep_config,
                            working_dir=str(Path.cwd()), task_name=sweep_config.hydra.job.name,
                            status=JobStatus.COMPLETED)
            ret.return_value = (result.get("final") or {}).get("loss")
            returns.append(ret)
        return returns


def task_container(sweep_config: DictConfig) -> dict:
    """The job's task config (all but `hydra`) resolved, as the launcher resolved it with
    HydraConfig.set_config and a copy without `hydra` (two copies a job; here nothing is copied):
    `${hydra:...}` reads this job's hydra node. Unlike run_job, hydra.runtime.output_dir is not set
    yet (a batched run's folder is the app's, `run_folder`), and a plain `${hydra.x}` resolves
    here, where the copy without `hydra` failed."""
    OmegaConf.set_readonly(sweep_config.hydra, True)
    HydraConfig.instance().cfg = sweep_config
    out = {}
    for key in sweep_config:
        if key != "hydra":
            value = sweep_config[key]  # (resolved; raises on a missing value, as throw_on_missing)
            out[key] = (OmegaConf.to_container(value, resolve=True, throw_on_missing=True)
                        if OmegaConf.is_config(value) else value)
    return out
