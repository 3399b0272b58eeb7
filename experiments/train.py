"""Train one problem with one optimizer and log the theory metrics (see README).

    python experiments/train.py optimizer=clion problem=digits_mlp steps=2000
    python experiments/train.py -m optimizer=lion,clion,sgd problem.d=100,1000,10000 seed=0,1,2
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

# From a clone without install: the repo root holds `lionconv` and the `hydra_plugins` launcher.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from lionconv.config import register_configs  # noqa: E402
from lionconv.train import launch  # noqa: E402

register_configs()
log = logging.getLogger("lionconv")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
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


if __name__ == "__main__":
    main()
