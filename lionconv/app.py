"""The training app (Hydra): one run, or a sweep with -m. `lionconv train ...` calls `main`.

    lionconv train optimizer=clion problem=digits_mlp steps=2000
    lionconv train -m optimizer=lion,clion,sgd problem.d=100,1000,10000 seed=0,1,2

The configs are read from `resources.config_dir()`, so the app works from any folder, installed
from a wheel or run from a clone.
"""
from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lionconv.config import register_configs
from lionconv.resources import config_dir
from lionconv.train import launch

register_configs()
log = logging.getLogger("lionconv")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    slug = HydraConfig.get().job.override_dirname
    try:
        summary = launch(container, slug, echo=log.info)
    except (ValueError, FileNotFoundError) as err:
        log.error("error: %s", err)
        sys.exit(2)
    final = summary.get("final") or {}
    return final.get("loss")
