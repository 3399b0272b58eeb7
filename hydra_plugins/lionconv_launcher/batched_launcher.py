"""`hydra/launcher=batched`: a sweep's closed-form runs stacked into batches in this process.

    python experiments/train.py -m experiment=rate_in_K hydra/launcher=batched

Every job is composed as the basic launcher composes it; the jobs `lionconv.batched` can stack
(closed-form problems; see `unstackable_reason`) run as batches of one problem, dtype and device,
each run keeping its own folder, files, generator and resume; the others (networks, unsupported
options) run one after the other through the app itself (`run_job`), as the basic launcher does.
Hydra finds this module in the `hydra_plugins` namespace package (repo root, or installed).
"""

import copy
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from hydra.core.config_store import ConfigStore
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


ConfigStore.instance().store(group="hydra/launcher", name="batched", node=BatchedLauncherConf,
                             provider="lionconv")


class BatchedLauncher(Launcher):
    def __init__(self, max_elements: int = 1 << 23) -> None:
        super().__init__()
        if not (isinstance(max_elements, int) and max_elements >= 1):
            raise ValueError(f"hydra.launcher.max_elements={max_elements!r} is not allowed: "
                             "expected an integer >= 1")
        self.max_elements = max_elements
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from lionconv import batched

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs, closed-form runs batched")
        sweep_configs, jobs = [], []
        for idx, overrides in enumerate(job_overrides):
            idx = initial_job_idx + idx
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            HydraConfig.instance().set_config(sweep_config)
            task_cfg = copy.deepcopy(sweep_config)
            with open_dict(task_cfg):
                del task_cfg["hydra"]
            container = OmegaConf.to_container(task_cfg, resolve=True, throw_on_missing=True)
            sweep_configs.append((overrides, sweep_config, task_cfg))
            jobs.append((container, sweep_config.hydra.job.override_dirname))

        def run_alone(index: int):
            overrides, sweep_config, _ = sweep_configs[index]
            log.info(f"\t#{initial_job_idx + index} : {' '.join(filter_overrides(overrides))}")
            ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                          config=sweep_config, job_dir_key="hydra.sweep.dir",
                          job_subdir_key="hydra.sweep.subdir")
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            return ret

        try:
            results = batched.run_configs(jobs, echo=log.info, max_elements=self.max_elements,
                                          run_alone=run_alone)
        except (ValueError, FileNotFoundError) as err:
            log.error("error: %s", err)
            sys.exit(2)
        returns: List[JobReturn] = []
        for (overrides, sweep_config, task_cfg), result in zip(sweep_configs, results):
            if isinstance(result, JobReturn):
                returns.append(result)
                continue
            ret = JobReturn(overrides=list(overrides), cfg=task_cfg, hydra_cfg=sweep_config,
                            working_dir=str(Path.cwd()), task_name=sweep_config.hydra.job.name,
                            status=JobStatus.COMPLETED)
            ret.return_value = (result.get("final") or {}).get("loss")
            returns.append(ret)
        return returns
