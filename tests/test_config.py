"""The typed config schemas stay in step with the code they configure."""
from __future__ import annotations

import dataclasses

import pytest

from lionconv.config import PROBLEM_SCHEMAS
from lionconv.problems import PROBLEMS, problem_options


def test_every_problem_has_a_schema():
    assert set(PROBLEM_SCHEMAS) == set(PROBLEMS)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_schema_keys_and_defaults_match_the_problem(name):
    fields = {f.name: f.default for f in dataclasses.fields(PROBLEM_SCHEMAS[name]) if f.name != "name"}
    options = problem_options(name)
    assert set(fields) == set(options)
    if name != "cifar10":  # cifar10's schema gives data_dir a conventional default path
        assert fields == options
