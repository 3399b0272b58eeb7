"""MNIST-1D generated locally (no download, cached atomically, global RNG untouched) and the
validation split carved from a network problem's training set."""
from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import run_cli
from lionconv.problems import build_problem
from lionconv.problems import mnist1d as m1d

F64 = torch.float64


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh cache folder, generated once for the module with downloads made impossible."""
    import requests

    path = tmp_path_factory.mktemp("mnist1d_cache")
    real_get = requests.get
    requests.get = lambda *a, **k: (_ for _ in ()).throw(AssertionError("download attempted"))
    try:
        np.random.seed(123)
        random.seed(123)
        before = (np.random.get_state()[1].copy(), random.getstate())
        m1d.mnist1d_split.cache_clear()
        arrays = m1d.mnist1d_split(42, str(path))
        after = (np.random.get_state()[1], random.getstate())
    finally:
        requests.get = real_get
    assert np.array_equal(before[0], after[0]) and before[1] == after[1]  # global RNGs untouched
    return path, arrays


def test_mnist1d_shapes_classes_and_cache(cache, monkeypatch):
    path, (x, y, xt, yt) = cache
    assert x.shape == (4000, 40) and xt.shape == (1000, 40)
    assert set(np.unique(y)) == set(range(10)) == set(np.unique(yt))
    assert np.bincount(y, minlength=10).min() > 300
    assert abs(np.concatenate([x, xt]).mean()) < 1e-6 and np.concatenate([x, xt]).std() == \
        pytest.approx(1.0, rel=1e-6)                             # the package standardises
    (file,) = path.glob("mnist1d_*.npz")
    assert not list(path.glob(".*.tmp"))
    # a second build reads the cache and never regenerates
    import mnist1d.data

    monkeypatch.setattr(mnist1d.data, "make_dataset", lambda *a, **k: 1 / 0)
    m1d.mnist1d_split.cache_clear()
    again = m1d.mnist1d_split(42, str(path))
    assert all(np.array_equal(a, b) for a, b in zip(again, cache[1]))


def test_mnist1d_problems_build_with_their_d_formulas(cache):
    path, _ = cache
    for name, options, formula in [
            ("mnist1d", {"width": 16, "depth": 3}, m1d.Mnist1dMLP.d_formula(16, 3)),
            ("mnist1d_cnn", {"width": 4}, m1d.Mnist1dCNN.d_formula(4))]:
        problem = build_problem({"name": name, **options, "cache_dir": str(path),
                                 "estimate_constants": False, "n_train": 500}, seed=0)
        assert problem.d == formula and problem.n_train == 500 and problem.n_test == 1000
        loss, grads = problem.full_gradient()
        assert loss.item() == pytest.approx(np.log(10), rel=0.2)
        assert set(problem.evaluate()) == {"test_loss", "test_acc", "train_acc"}


def _digits(**options):
    return build_problem({"name": "digits_mlp", "width": 8, "n_train": 300,
                          "estimate_constants": False, **options}, seed=0, dtype=F64)


def test_validation_split_is_carved_from_the_training_set():
    plain, split = _digits(), _digits(val_fraction=0.2)
    assert (split.n_train, split.n_val) == (240, 60)
    rows = lambda t: {tuple(r) for r in t.tolist()}  # noqa: E731
    train, val = rows(split.train_inputs), rows(split.val_inputs)
    assert not train & val and train | val == rows(plain.train_inputs)
    # the remaining training examples keep their order
    keep = [i for i, r in enumerate(plain.train_inputs.tolist()) if tuple(r) in train]
    assert torch.equal(split.train_inputs, plain.train_inputs[keep])
    # for a given training set, the split does not depend on the run seed (the training subset
    # itself does, unless subset_seed pins it)
    other = build_problem({"name": "digits_mlp", "width": 8, "n_train": 300, "subset_seed": split.subset_seed,
                           "estimate_constants": False, "val_fraction": 0.2}, seed=7, dtype=F64)
    assert torch.equal(other.val_inputs, split.val_inputs)
    # val metrics by hand, next to the test ones
    out = split.evaluate()
    with torch.no_grad():
        logits = split.model(split.val_inputs)
    assert out["val_loss"] == pytest.approx(F.cross_entropy(logits, split.val_targets).item())
    assert out["val_acc"] == pytest.approx((logits.argmax(1) == split.val_targets).double().mean().item())
    assert set(out) == {"test_loss", "test_acc", "val_loss", "val_acc", "train_acc"}
    assert set(plain.evaluate()) == {"test_loss", "test_acc", "train_acc"}  # default: as before


def test_validation_split_on_regression_and_bad_values():
    ts = build_problem({"name": "teacher_student", "width": 4, "n_train": 100, "n_test": 20,
                        "estimate_constants": False, "val_fraction": 0.25}, seed=0)
    assert ts.n_train == 75 and set(ts.evaluate()) == {"test_loss", "val_loss"}
    with pytest.raises(ValueError, match=r"val_fraction=1.0 is not allowed: expected a number < 1"):
        _digits(val_fraction=1.0)
    with pytest.raises(ValueError, match=r"val_fraction=0.001 is not allowed here: it gives 0 "
                                         r"validation examples of the 300"):
        _digits(val_fraction=0.001)


def test_mnist1d_with_validation_from_the_command_line(tmp_path, cache):
    path, _ = cache
    run_cli("problem=mnist1d", "problem.width=16", "problem.val_fraction=0.1",
            f"problem.cache_dir={path}", "problem.estimate_constants=false", "optimizer.lr=1e-3",
            "lr_schedule=cosine", "steps=60", "progress=off", f"out_dir={tmp_path}")
    (metrics,) = tmp_path.rglob("metrics.parquet")
    rows = pd.read_parquet(metrics)
    assert {"val_loss", "val_acc", "test_loss", "test_acc"} <= set(rows.columns)
    assert rows["val_loss"].iloc[-1] < rows["val_loss"].iloc[0]
