"""Classifiers on MNIST-1D (Greydanus 2020): 10 classes of length-40 1-D signals, generated
locally by the `mnist1d` package from its bundled templates (never its download path).

Data: `mnist1d.data.make_dataset` with the package's default arguments (5000 sequences, train
split 0.8 -> 4000 train / 1000 test, length 40, generation seed `data_seed` = 42 as published),
run under a saved-and-restored global NumPy/`random` state (the package seeds them). The arrays
are cached in `cache_dir/mnist1d_<hash of the generation arguments and package version>.npz`, written atomically, so
a data set is generated once per machine. The package already standardises the signals; the
training set is then chosen as on digits (n_train, subset_seed, drop_index; digits.py).

    mnist1d:     40 -> width -> (depth − 1 more width-wide layers) -> 10, ReLU
                 d = 51·width + 10 + (depth − 1)·width·(width + 1)
    mnist1d_cnn: 1×40 -> conv5(width, pad 2) -> ReLU -> conv5(width, pad 2, stride 2) -> ReLU
                 -> conv5(width, pad 2, stride 2) -> ReLU -> flatten (width·10) -> Linear(10)
                 d = 10·width² + 108·width + 10
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .base import check_int
from .digits import SplitClassifier, relu_mlp

SEQ_LENGTH, N_CLASSES = 40, 10


def generation_args(data_seed: int) -> dict:
    """The package's default generation arguments (the published data set at seed 42)."""
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url")  # the download address: never used here
    return {**args, "seed": int(data_seed)}


@functools.lru_cache(maxsize=2)
def mnist1d_split(data_seed: int, cache_dir: str):
    """(train_x, train_y, test_x, test_y) float64/int64 arrays, generated once and cached."""
    from lionconv import runio

    from importlib.metadata import version

    args = generation_args(data_seed)
    keyed = {**args, "mnist1d_version": version("mnist1d")}  # its generator could change
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"mnist1d_{key}.npz"
    if not path.exists():
        from mnist1d.data import make_dataset
        from mnist1d.utils import ObjectView

        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            data = make_dataset(ObjectView(dict(args)))
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        runio.atomic_write(path, lambda f: np.savez(f, x=data["x"], y=data["y"],
                                                    x_test=data["x_test"], y_test=data["y_test"]))
    with np.load(path) as saved:
        arrays = (saved["x"].astype(np.float64), saved["y"].astype(np.int64),
                  saved["x_test"].astype(np.float64), saved["y_test"].astype(np.int64))
    for array in arrays:  # the cache is shared between builds
        array.setflags(write=False)
    return arrays


class _Mnist1d(SplitClassifier):
    image_shape = (SEQ_LENGTH,)

    def _setup(self, *, data_seed, cache_dir, **options):
        self.data_seed = check_int("data_seed", data_seed, minimum=0)
        self.cache_dir = str(cache_dir)
        self._setup_split(split=mnist1d_split(self.data_seed, self.cache_dir), **options)


class Mnist1dMLP(_Mnist1d):
    """ReLU MLP on MNIST-1D; d = 51·w + 10 + (depth − 1)·w·(w + 1)."""

    name = "mnist1d"

    def __init__(self, *, width: int = 100, depth: int = 2, n_train: int | None = None,
                 drop_index: int | None = None, replace_index: int | None = None, data_seed: int = 42,
                 cache_dir: str = "data/mnist1d", subset_seed: int | None = None, batch_size: int = 100,
                 eval_batch_size: int = 4096, estimate_constants: bool = True,
                 power_iters: int = 20, variance_batches: int = 16,
                 hessian_batch_size: int = 512, val_fraction: float = 0.0, seed: int, device,
                 dtype):
        self.width = width = check_int("width", width)
        self.depth = depth = check_int("depth", depth)

        self._setup(make_model=lambda: relu_mlp(SEQ_LENGTH, width, depth, N_CLASSES), data_seed=data_seed, cache_dir=cache_dir,
                    n_train=n_train, subset_seed=subset_seed, drop_index=drop_index, replace_index=replace_index, seed=seed,
                    device=device, dtype=dtype, batch_size=batch_size,
                    eval_batch_size=eval_batch_size, estimate_constants=estimate_constants,
                    power_iters=power_iters, variance_batches=variance_batches,
                    hessian_batch_size=hessian_batch_size, val_fraction=val_fraction)

    @staticmethod
    def d_formula(width: int, depth: int = 2) -> int:
        return 51 * width + 10 + (depth - 1) * width * (width + 1)


class _Conv1dNet(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv1d(1, width, 5, padding=2)
        self.conv2 = nn.Conv1d(width, width, 5, stride=2, padding=2)
        self.conv3 = nn.Conv1d(width, width, 5, stride=2, padding=2)
        self.fc = nn.Linear(width * SEQ_LENGTH // 4, N_CLASSES)

    def forward(self, x):
        x = torch.relu(self.conv1(x.unsqueeze(1)))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.fc(x.flatten(1))


class Mnist1dCNN(_Mnist1d):
    """Three-conv 1-D CNN on MNIST-1D; d = 10·w² + 108·w + 10."""

    name = "mnist1d_cnn"

    def __init__(self, *, width: int = 32, n_train: int | None = None,
                 drop_index: int | None = None, replace_index: int | None = None, data_seed: int = 42,
                 cache_dir: str = "data/mnist1d", subset_seed: int | None = None, batch_size: int = 100,
                 eval_batch_size: int = 4096, estimate_constants: bool = True,
                 power_iters: int = 20, variance_batches: int = 16,
                 hessian_batch_size: int = 512, val_fraction: float = 0.0, seed: int, device,
                 dtype):
        self.width = width = check_int("width", width)
        self._setup(make_model=lambda: _Conv1dNet(width), data_seed=data_seed,
                    cache_dir=cache_dir, n_train=n_train, subset_seed=subset_seed,
                    drop_index=drop_index, replace_index=replace_index, seed=seed, device=device, dtype=dtype,
                    batch_size=batch_size, eval_batch_size=eval_batch_size,
                    estimate_constants=estimate_constants, power_iters=power_iters,
                    variance_batches=variance_batches, hessian_batch_size=hessian_batch_size,
                    val_fraction=val_fraction)

    @staticmethod
    def d_formula(width: int) -> int:
        return 10 * width * width + 108 * width + 10
