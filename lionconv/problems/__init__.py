"""Problem families (THEORY §3, §6, §7, §8, §9) and `build_problem`, the one way to make them.

Each problem's options are the keyword arguments of its class (names and defaults:
`problem_options(name)`); `build_problem` rejects unknown ones.
"""

from __future__ import annotations

import inspect
from typing import Mapping

import torch

from .base import NetworkProblem, Problem, check_int, resolve_device, resolve_dtype
from .cifar10 import Cifar10
from .digits import DigitsCNN, DigitsMLP
from .mnist1d import Mnist1dCNN, Mnist1dMLP
from .synthetic import NaiveSeparable, Quadratic, RotatedSeparable, ScaledSeparable
from .teacher_student import TeacherStudent
from .zero_chain import ZeroChain

PROBLEMS: dict[str, type[Problem]] = {
    "scaled_separable": ScaledSeparable,
    "naive_separable": NaiveSeparable,
    "rotated_separable": RotatedSeparable,
    "quadratic": Quadratic,
    "teacher_student": TeacherStudent,
    "digits_mlp": DigitsMLP,
    "digits_cnn": DigitsCNN,
    "mnist1d": Mnist1dMLP,
    "mnist1d_cnn": Mnist1dCNN,
    "cifar10": Cifar10,
    "zero_chain": ZeroChain,
}

_BUILD_ARGUMENTS = ("seed", "device", "dtype")


def problem_options(name: str) -> dict:
    """{option: default} of problem `name` (its constructor's keyword arguments)."""
    if name not in PROBLEMS:
        raise ValueError(f"problem name={name!r} is not allowed: expected one of {sorted(PROBLEMS)}")
    signature = inspect.signature(PROBLEMS[name].__init__)
    return {key: p.default for key, p in signature.parameters.items()
            if p.kind is p.KEYWORD_ONLY and key not in _BUILD_ARGUMENTS}


def build_problem(cfg: Mapping, *, seed: int, device="cpu", dtype=torch.float32) -> Problem:
    """The problem cfg["name"] with the other keys of cfg as its options (defaults elsewhere).

    Same (cfg, seed) -> same initial parameters and data, on any device; the global RNG is
    neither read nor changed.
    """
    if not isinstance(cfg, Mapping):
        raise ValueError(f"problem config {cfg!r} is not allowed: expected a mapping with 'name'")
    options = {str(k): v for k, v in cfg.items()}
    name = options.pop("name", None)
    defaults = problem_options(name)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for problem {name!r}: allowed options are "
                         f"{sorted(defaults)}")
    seed = check_int("seed", seed, minimum=0)
    return PROBLEMS[name](**options, seed=seed, device=resolve_device(device),
                          dtype=resolve_dtype(dtype))


__all__ = ["PROBLEMS", "Problem", "NetworkProblem", "build_problem", "problem_options",
           "ScaledSeparable", "NaiveSeparable", "RotatedSeparable", "Quadratic", "TeacherStudent", "DigitsMLP",
           "DigitsCNN", "Mnist1dMLP", "Mnist1dCNN", "Cifar10", "ZeroChain"]
