"""Maps conf/ and scripts/ into the package at build time (lionconv.conf, lionconv.scripts), so a
wheel carries the configs and the scripts while a clone keeps them at the top; everything else
is in pyproject.toml. New subpackages of lionconv/ and new config groups are found automatically."""
from pathlib import Path

from setuptools import find_namespace_packages, find_packages, setup

config_groups = sorted(str(p.relative_to("conf")).replace("/", ".")
                       for p in Path("conf").rglob("*") if p.is_dir())
data_packages = ["lionconv.conf", *(f"lionconv.conf.{g}" for g in config_groups), "lionconv.scripts"]

setup(
    # hydra_plugins: the batched launcher, found by Hydra in that namespace package
    packages=find_packages(include=["lionconv", "lionconv.*"]) + data_packages
    + find_namespace_packages(include=["hydra_plugins.*"]),
    package_dir={"lionconv.conf": "conf", "lionconv.scripts": "scripts"},
    package_data={**{p: ["*.yaml"] for p in data_packages[:-1]}, "lionconv.scripts": ["*.py"]},
)
