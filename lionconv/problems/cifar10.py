"""CIFAR-10 with a small GroupNorm ResNet, read from the standard python batches (no download).

Data: `data_dir` must hold (or hold a folder `cifar-10-batches-py` with) the six pickles
`data_batch_1` … `data_batch_5` and `test_batch`, each a dict with b"data" (uint8, n×3072, rows
R|G|B planes of 32×32) and b"labels" (n ints in 0..9). All six are required, so a partial copy
cannot silently change N. Images stay uint8 on the device and are normalised per batch with the
per-channel mean/std of all training images. Optional subsets: the first `n_train` (`n_test`)
examples of a permutation fixed by `subset_seed`. No augmentation: f is a fixed finite sum.

Model: stem conv3×3(3→w) → GN → ReLU; three stages of `blocks_per_stage` basic blocks
(conv3×3 → GN → ReLU → conv3×3 → GN, plus identity or conv1×1 → GN shortcut, then ReLU) with
w, 2w, 4w channels and strides 1, 2, 2; global average pool; Linear(4w → 10). Convolutions have
no bias (GN's affine shift plays that role).
GroupNorm, not BatchNorm: GN normalises each example by itself, so the loss of an example does
not depend on the rest of its batch or on running statistics; f(x) = mean of per-example losses
is well defined and the full gradient equals the average of per-chunk gradients. Groups per GN
layer: gcd(8, channels).
    d = (378·b − 80)·w² + (28·b + 81)·w + 10     (b = blocks_per_stage; b = 1: 298w² + 109w + 10)
"""

from __future__ import annotations

import functools
import math
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .base import NetworkProblem, build_model, check_int

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
N_CLASSES = 10


def find_cifar_dir(data_dir) -> Path:
    """The folder that holds the six batch files: data_dir or data_dir/cifar-10-batches-py."""
    if data_dir is None or (isinstance(data_dir, str) and not data_dir.strip()):
        raise ValueError(f"data_dir={data_dir!r} is not allowed: cifar10 needs data_dir, a folder "
                         f"with the CIFAR-10 python batches {', '.join(TRAIN_FILES)}, {TEST_FILE}")
    if not isinstance(data_dir, (str, Path)):
        raise ValueError(f"data_dir={data_dir!r} is not allowed: expected a path")
    root = Path(data_dir).expanduser()
    for folder in (root, root / "cifar-10-batches-py"):
        if folder.is_dir() and all((folder / f).is_file() for f in TRAIN_FILES + (TEST_FILE,)):
            return folder
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 data_dir {str(root)!r} is not a folder: expected one "
                                f"folder with the python batches {', '.join(TRAIN_FILES)}, "
                                f"{TEST_FILE} (cifar-10-python.tar.gz, extracted)")
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    missing = [f for f in TRAIN_FILES + (TEST_FILE,) if not (folder / f).is_file()]
    raise FileNotFoundError(f"CIFAR-10 data_dir {str(folder)!r} lacks {', '.join(missing)}: "
                            f"expected the python batches {', '.join(TRAIN_FILES)}, {TEST_FILE}")


# The only globals a CIFAR-10 batch pickle refers to (NumPy arrays inside a dict of lists, bytes
# and str; protocol-2 pickles written by Python 3 rebuild bytes with _codecs.encode): anything
# else, such as a planted `__reduce__` calling os.system, is refused.
_BATCH_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _BATCH_GLOBALS:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: a CIFAR-10 batch holds only "
                                         "NumPy arrays, lists, bytes, str and dicts")
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 n×3×32×32, labels int64 n) from one CIFAR-10 python pickle (read with a
    restricted unpickler: NumPy arrays, lists, bytes, str and dicts only)."""
    try:
        with open(path, "rb") as handle:
            batch = _BatchUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} is not a CIFAR-10 python batch ({type(err).__name__}: {err})") from None
    data = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
    labels = batch.get(b"labels", batch.get("labels")) if isinstance(batch, dict) else None
    if data is None or labels is None:
        raise ValueError(f"{path} is not a CIFAR-10 python batch: expected a dict with "
                         f"b'data' and b'labels'")
    data, labels = np.asarray(data), np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
            or labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: expected b'data' uint8 of shape (n, 3072) and n b'labels', got "
                         f"{data.dtype} {data.shape} and {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise ValueError(f"{path}: labels must lie in 0..9")
    return data.reshape(-1, 3, 32, 32), labels


@functools.lru_cache(maxsize=2)
def _load(folder: str, stamp: tuple):
    """Train and test arrays of one folder (cached per folder and file modification times)."""
    train = [read_batch(Path(folder) / f) for f in TRAIN_FILES]
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    test_x, test_y = read_batch(Path(folder) / TEST_FILE)
    pixels = train_x.transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64) / 255.0
    mean, std = pixels.mean(1), pixels.std(1)
    std = np.where(std > 0, std, 1.0)
    return train_x, train_y, test_x, test_y, mean, std


def load_cifar10(data_dir):
    """(train_x, train_y, test_x, test_y, channel_mean, channel_std) from data_dir."""
    folder = find_cifar_dir(data_dir)
    stamp = tuple((folder / f).stat().st_mtime_ns for f in TRAIN_FILES + (TEST_FILE,))
    return _load(str(folder.resolve()), stamp)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class BasicBlock(nn.Module):
    """relu(GN(conv(relu(GN(conv(x))))) + shortcut(x)); shortcut = conv1×1 → GN on a shape change."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = _group_norm(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                _group_norm(out_channels))

    def forward(self, x):
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNetGN(nn.Module):
    """Three-stage GroupNorm ResNet for 32×32 images (module docstring)."""

    def __init__(self, width: int, blocks_per_stage: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                                  _group_norm(width), nn.ReLU())
        blocks, channels = [], width
        for stage, stride in enumerate((1, 2, 2)):
            out = width * 2 ** stage
            for b in range(blocks_per_stage):
                blocks.append(BasicBlock(channels, out, stride if b == 0 else 1))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, N_CLASSES)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))


def _subset(n: int, keep, generator: torch.Generator) -> torch.Tensor:
    perm = torch.randperm(n, generator=generator)
    return perm if keep is None else perm[:keep]


class Cifar10(NetworkProblem):
    """GroupNorm ResNet on CIFAR-10 with cross-entropy (module docstring)."""

    name = "cifar10"

    def __init__(self, *, data_dir: str | None = None, width: int = 16,
                 blocks_per_stage: int = 1, n_train: int | None = None,
                 n_test: int | None = None, subset_seed: int = 0, batch_size: int = 128,
                 eval_batch_size: int = 1000, estimate_constants: bool = True,
                 power_iters: int = 20, variance_batches: int = 16,
                 hessian_batch_size: int = 256, val_fraction: float = 0.0, seed: int, device,
                 dtype):
        self.width = width = check_int("width", width)
        self.blocks_per_stage = blocks = check_int("blocks_per_stage", blocks_per_stage)
        n_train = check_int("n_train", n_train, allow_none=True)
        n_test = check_int("n_test", n_test, allow_none=True)
        subset_seed = check_int("subset_seed", subset_seed, minimum=0)
        train_x, train_y, test_x, test_y, mean, std = load_cifar10(data_dir)
        for option, value, available in (("n_train", n_train, len(train_y)),
                                          ("n_test", n_test, len(test_y))):
            if value is not None and value > available:
                raise ValueError(f"{option}={value} is not allowed: the data has {available} "
                                 f"examples (allowed 1..{available}, or null for all)")
        self.data_dir = str(data_dir)
        generator = torch.Generator().manual_seed(subset_seed)
        train_idx = _subset(len(train_y), n_train, generator).numpy()
        test_idx = _subset(len(test_y), n_test, generator).numpy()
        self.channel_mean = torch.tensor(mean, dtype=dtype).view(1, 3, 1, 1).to(device)
        self.channel_std = torch.tensor(std, dtype=dtype).view(1, 3, 1, 1).to(device)
        super().__init__(
            model=build_model(lambda: ResNetGN(width, blocks), seed=seed, device=device,
                              dtype=dtype),
            train_inputs=torch.tensor(train_x[train_idx]).to(device),
            train_targets=torch.tensor(train_y[train_idx]).to(device),
            test_inputs=torch.tensor(test_x[test_idx]).to(device),
            test_targets=torch.tensor(test_y[test_idx]).to(device),
            batch_size=batch_size, eval_batch_size=eval_batch_size,
            estimate_constants=estimate_constants, power_iters=power_iters,
            variance_batches=variance_batches, hessian_batch_size=hessian_batch_size,
            seed=seed, device=device, dtype=dtype, val_fraction=val_fraction)

    def prepare_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """uint8 images -> (x/255 − channel mean) / channel std in the problem's dtype."""
        return (inputs.to(self.dtype) / 255.0 - self.channel_mean) / self.channel_std

    @staticmethod
    def d_formula(width: int, blocks_per_stage: int = 1) -> int:
        b = blocks_per_stage
        return (378 * b - 80) * width ** 2 + (28 * b + 81) * width + 10
