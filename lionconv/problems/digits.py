"""Classifiers on scikit-learn's bundled digits (1797 8×8 images, 10 classes; no download).

Data: a stratified train/test split (`test_fraction` 0.25 -> 1347 / 450, fixed by `split_seed`,
independent of the run seed), features standardised with the mean/std of the whole train split
(constant pixels get std 1). The training set is the first `n_train` examples of a permutation of
the train split (n_train = null: all of it), so the sets for growing N of one seed are nested.
The permutation is seeded by `subset_seed`; null (the default) derives it from the run seed
(`derive_seed(seed, "training_subset")`), so that E_S over training sets (THEORY §7) is an average
over seeds. Statistics come from the whole split so that subsets and `replace_index` change which
examples are used, never the features of the others.

`replace_index` (THEORY §7 stability probe, "data sets that differ in one example"): training
example i is replaced by a spare one from outside the subset (the next example of the
permutation, position n_train), so N and the minibatch index stream of a given generator stay
the same and the two runs differ in that one example only (the neighbouring data sets of uniform
stability). It therefore needs n_train < size of the train split. `drop_index` is its older name
(the same replacement; setting both is an error).

Loss: cross-entropy; minibatches with replacement.
    digits_mlp: 64 -> width -> (depth − 1 more width-wide hidden layers) -> 10, ReLU
                d = 75·width + 10 + (depth − 1)·width·(width + 1)
    digits_cnn: 1×8×8 -> conv3×3(width, pad 1) -> ReLU -> conv3×3(2·width, pad 1) -> ReLU
                -> maxpool 2 -> flatten (2·width·4·4) -> Linear(10)
                d = 18·width² + 332·width + 10
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from .base import (NetworkProblem, build_model, check_float, check_int, derive_seed)

N_FEATURES, N_CLASSES = 64, 10


@functools.lru_cache(maxsize=4)
def digits_split(test_fraction: float, split_seed: int):
    """(train_x, train_y, test_x, test_y) as float64/int64 numpy arrays, standardised."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    try:
        train_x, test_x, train_y, test_y = train_test_split(
            x, y, test_size=test_fraction, stratify=y, random_state=split_seed)
    except ValueError as err:
        raise ValueError(f"test_fraction={test_fraction!r} does not give a stratified split of "
                         f"the 1797 digits: {err}") from err
    mean, std = train_x.mean(0), train_x.std(0)
    std = np.where(std > 0, std, 1.0)
    arrays = ((train_x - mean) / std, train_y, (test_x - mean) / std, test_y)
    for array in arrays:  # the cache is shared between builds
        array.setflags(write=False)
    return arrays


def training_subset_seed(subset_seed, seed) -> int:
    """The seed of the training-subset permutation: `subset_seed`, or (None) one derived from
    the run seed, so that the training set changes with the seed."""
    if subset_seed is not None:
        return int(subset_seed)
    if seed is None:
        raise ValueError("subset_seed=null derives the training subset from the run seed, "
                         "but no seed was given")
    return derive_seed(seed, "training_subset")


def select_training_set(n_split: int, n_train, subset_seed, drop_index=None, *,
                        replace_index=None, seed=None):
    """Indices into the train split: the first n_train of a permutation seeded by `subset_seed`
    (None: derive_seed(seed, "training_subset"), from the run seed), with slot replace_index
    (or its older name drop_index) replaced by the spare example perm[n_train]."""
    if drop_index is not None and replace_index is not None:
        raise ValueError(f"replace_index={replace_index} and drop_index={drop_index} are both set: "
                         f"drop_index is the older name of replace_index, set only one")
    replace_index = drop_index if replace_index is None else replace_index
    name = "drop_index" if drop_index is not None else "replace_index"
    subset_seed = training_subset_seed(subset_seed, seed)
    perm = torch.randperm(n_split, generator=torch.Generator().manual_seed(subset_seed))
    n_train = n_split if n_train is None else n_train
    if n_train > n_split:
        raise ValueError(f"n_train={n_train} is not allowed: the train split has {n_split} "
                         f"examples (allowed 1..{n_split}, or null for all)")
    chosen = perm[:n_train].clone()
    if replace_index is not None:
        if n_train == n_split:
            raise ValueError(f"{name}={replace_index} needs a spare example to take its place: "
                             f"set n_train < {n_split} (the size of the train split)")
        if replace_index >= n_train:
            raise ValueError(f"{name}={replace_index} is not allowed: expected 0..{n_train - 1} "
                             f"(an index into the {n_train} training examples) or null")
        chosen[replace_index] = perm[n_train]
    return chosen


def relu_mlp(n_in: int, width: int, depth: int, n_out: int) -> nn.Sequential:
    """Linear(n_in, w)·ReLU, then depth − 1 × Linear(w, w)·ReLU, then Linear(w, n_out)."""
    layers = [nn.Linear(n_in, width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, n_out))


class SplitClassifier(NetworkProblem):
    """A classifier on a fixed train/test split given as arrays (digits, MNIST-1D): the training
    set is `select_training_set` of the train split (n_train, subset_seed, drop_index as in the
    module docstring), inputs reshaped to `image_shape`, then NetworkProblem (val_fraction)."""

    image_shape: tuple[int, ...] = (N_FEATURES,)

    def _setup_split(self, *, make_model, split, n_train, subset_seed, drop_index, seed, device,
                     dtype, replace_index=None, **network_options):
        subset_seed = check_int("subset_seed", subset_seed, minimum=0, allow_none=True)
        n_train = check_int("n_train", n_train, allow_none=True)
        drop_index = check_int("drop_index", drop_index, minimum=0, allow_none=True)
        replace_index = check_int("replace_index", replace_index, minimum=0, allow_none=True)
        train_x, train_y, test_x, test_y = split
        self.train_indices = select_training_set(len(train_y), n_train, subset_seed, drop_index,
                                                 replace_index=replace_index, seed=seed)
        self.subset_seed = training_subset_seed(subset_seed, seed)
        self.replace_index = drop_index if replace_index is None else replace_index
        self.drop_index = drop_index

        def to_inputs(a):
            return torch.tensor(a, dtype=dtype).reshape(-1, *self.image_shape).to(device)

        picked = self.train_indices.numpy()
        super().__init__(model=build_model(make_model, seed=seed, device=device, dtype=dtype),
                         train_inputs=to_inputs(train_x[picked]),
                         train_targets=torch.tensor(train_y[picked]).to(device),
                         test_inputs=to_inputs(test_x),
                         test_targets=torch.tensor(test_y).to(device),
                         seed=seed, device=device, dtype=dtype, **network_options)

    def training_set(self) -> dict:
        return {"n_train": self.n_train, "subset_seed": self.subset_seed,
                "replace_index": self.replace_index}


class _Digits(SplitClassifier):
    """Shared data handling of digits_mlp and digits_cnn (module docstring)."""

    def _setup(self, *, test_fraction, split_seed, **options):
        test_fraction = check_float("test_fraction", test_fraction, minimum=0.0, strict=True,
                                    maximum=1.0, strict_max=True)
        split_seed = check_int("split_seed", split_seed, minimum=0)
        self.test_fraction, self.split_seed = test_fraction, split_seed
        self._setup_split(split=digits_split(test_fraction, split_seed), **options)


class DigitsMLP(_Digits):
    """ReLU MLP on standardised digits; d = 75·w + 10 + (depth − 1)·w·(w + 1)."""

    name = "digits_mlp"

    def __init__(self, *, width: int = 64, depth: int = 2, n_train: int | None = None,
                 drop_index: int | None = None, replace_index: int | None = None,
                 test_fraction: float = 0.25, split_seed: int = 0,
                 subset_seed: int | None = None, batch_size: int = 64,
                 eval_batch_size: int = 4096, estimate_constants: bool = True,
                 power_iters: int = 20, variance_batches: int = 16,
                 hessian_batch_size: int = 512, val_fraction: float = 0.0, seed: int, device,
                 dtype):
        self.width = width = check_int("width", width)
        self.depth = depth = check_int("depth", depth)

        def make_model():
            return relu_mlp(N_FEATURES, width, depth, N_CLASSES)

        self._setup(make_model=make_model, n_train=n_train, test_fraction=test_fraction,
                    split_seed=split_seed, subset_seed=subset_seed, drop_index=drop_index,
                    replace_index=replace_index,
                    seed=seed, device=device, dtype=dtype, batch_size=batch_size,
                    eval_batch_size=eval_batch_size, estimate_constants=estimate_constants,
                    power_iters=power_iters, variance_batches=variance_batches,
                    hessian_batch_size=hessian_batch_size, val_fraction=val_fraction)

    @staticmethod
    def d_formula(width: int, depth: int = 2) -> int:
        return 75 * width + 10 + (depth - 1) * width * (width + 1)


class _SmallCNN(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width * 4 * 4, N_CLASSES)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = nn.functional.max_pool2d(x, 2)
        return self.fc(x.flatten(1))


class DigitsCNN(_Digits):
    """Two-conv CNN on 1×8×8 digits; d = 18·w² + 332·w + 10."""

    name = "digits_cnn"
    image_shape = (1, 8, 8)

    def __init__(self, *, width: int = 16, n_train: int | None = None,
                 drop_index: int | None = None, replace_index: int | None = None,
                 test_fraction: float = 0.25, split_seed: int = 0,
                 subset_seed: int | None = None, batch_size: int = 64,
                 eval_batch_size: int = 4096, estimate_constants: bool = True,
                 power_iters: int = 20, variance_batches: int = 16,
                 hessian_batch_size: int = 512, val_fraction: float = 0.0, seed: int, device,
                 dtype):
        self.width = width = check_int("width", width)
        self._setup(make_model=lambda: _SmallCNN(width), n_train=n_train,
                    test_fraction=test_fraction, split_seed=split_seed, subset_seed=subset_seed,
                    drop_index=drop_index, replace_index=replace_index, seed=seed, device=device,
                    dtype=dtype,
                    batch_size=batch_size, eval_batch_size=eval_batch_size,
                    estimate_constants=estimate_constants, power_iters=power_iters,
                    variance_batches=variance_batches, hessian_batch_size=hessian_batch_size,
                    val_fraction=val_fraction)

    @staticmethod
    def d_formula(width: int) -> int:
        return 18 * width * width + 332 * width + 10
