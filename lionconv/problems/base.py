"""The Problem interface, the network-problem base class, option checks and seed derivation.

A problem is an objective f over parameters x ∈ R^d together with a stochastic gradient oracle
g with E[g] = ∇f(x) (THEORY §1). Every source of randomness is a torch.Generator: the run's
training generator is passed to `stochastic_loss`; everything fixed at build time (initial point,
data, subsets, constant estimation) uses private generators derived from the run seed by
`derive_seed`, so building twice with one seed gives the same problem and the global RNG is never
read or changed.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# ------------------------------------------------------------------------------------------------
# seeds and generators


def derive_seed(seed: int, tag: str) -> int:
    """A 63-bit seed for one purpose of one run: sha256("seed:tag"), never Python's salted hash."""
    digest = hashlib.sha256(f"{int(seed)}:{tag}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_generator(seed: int, tag: str) -> torch.Generator:
    """A fresh CPU generator seeded with derive_seed(seed, tag)."""
    return torch.Generator().manual_seed(derive_seed(seed, tag))


def randn(shape, generator: torch.Generator, *, dtype, device) -> torch.Tensor:
    """N(0, 1) draws from `generator` (on the generator's device), then moved to `device`."""
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def accumulate_grad(param: torch.Tensor, grad: torch.Tensor) -> None:
    """p.grad += grad, as `backward()` does (so a caller's zero_grad convention is respected)."""
    if param.grad is None:
        param.grad = grad.detach().clone()
    else:
        param.grad.add_(grad)


# ------------------------------------------------------------------------------------------------
# option checks: each raises one ValueError naming the option, the value and what is allowed


def check_int(name: str, value: Any, *, minimum: int | None = 1, allow_none: bool = False):
    """An int (not bool) ≥ minimum; None only when allow_none."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        allowed = "an integer" + (" or null" if allow_none else "")
        raise ValueError(f"{name}={value!r} is not allowed: expected {allowed}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value!r} is not allowed: expected an integer >= {minimum}")
    return int(value)


def check_float(name: str, value: Any, *, minimum: float | None = 0.0, strict: bool = False,
                maximum: float | None = None, strict_max: bool = False):
    """A finite real number ≥ minimum (> minimum when strict), ≤ maximum (< when strict_max)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} is not allowed: expected a finite number")
    value = float(value)
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name}={value!r} is not allowed: expected a number "
                         f"{'>' if strict else '>='} {minimum}")
    if maximum is not None and (value >= maximum if strict_max else value > maximum):
        raise ValueError(f"{name}={value!r} is not allowed: expected a number "
                         f"{'<' if strict_max else '<='} {maximum}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not allowed: expected true or false")
    return value


def check_choice(name: str, value: Any, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not allowed: expected one of {sorted(choices)}")
    return value


def resolve_dtype(dtype) -> torch.dtype:
    """torch.float32 / torch.float64 or their names."""
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.removeprefix("torch.")]
    if dtype in (torch.float32, torch.float64):
        return dtype
    raise ValueError(f"dtype={dtype!r} is not allowed: expected one of {sorted(_DTYPES)}")


def resolve_device(device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not allowed: expected 'cpu' or 'cuda[:i]'") from err
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={str(device)!r} is not allowed: expected 'cpu' or 'cuda[:i]'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} is not allowed: CUDA is not available here")
    return device


# ------------------------------------------------------------------------------------------------
# the interface


class Problem:
    """An objective f with exact and stochastic gradients (see module docstring).

    Subclasses set `name`, `params` (leaf tensors, requires_grad=True) and `param_names`.
    """

    name: str = "problem"

    def __init__(self) -> None:
        self.params: list[torch.Tensor] = []
        self.param_names: list[str] = []

    @property
    def d(self) -> int:
        """Total number of trainable scalars."""
        return sum(p.numel() for p in self.params)

    def stochastic_loss(self, generator: torch.Generator) -> torch.Tensor:
        """Loss on a fresh sample; p.grad += g (E g = ∇f). Returns the detached 0-dim loss."""
        raise NotImplementedError

    def full_gradient(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Exact (f(x), ∇f(x)); leaves p.grad untouched."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics where a test split exists, else {}."""
        return {}

    def extra_metrics(self, params) -> dict[str, torch.Tensor]:
        """Problem-specific metrics of x = `params` at a logged step, as 0-dim tensors on the
        problem's device (no host sync here: the trainer reads them in one sync with the loss and
        writes each as a metrics.parquet column); {} by default."""
        return {}

    def constants(self) -> dict:
        """{"Delta", "L", "sigma", "f_low", "kind"}; sigma is the total ℓ2 noise level,
        E‖g − ∇f‖₂² ≤ sigma²; values may be None where unknown."""
        raise NotImplementedError

    def training_set(self) -> dict | None:
        """What fixes a finite training set (N, the subset seed as used, a replaced example),
        for the summary; None for problems without one."""
        return None

    # Stacked evaluation (lionconv.batched): a closed-form problem whose runs differ only in the
    # seed can evaluate R points at once, rows of an [R, d] tensor, and is then run batched.
    # Problems that do not define these are always run one by one.
    stackable: bool = False
    # True when the problem itself depends on the run's seed (a rotation drawn from it): the batch
    # then evaluates each run's [1, d] row with that run's own problem object.
    per_run_rows: bool = False

    @classmethod
    def why_not_stacked(cls, cfg: Mapping) -> str | None:
        """Why the run of resolved config `cfg` cannot be batched as far as this problem goes
        (None: it can be)."""
        return None if cls.stackable else f"problem {cls.name!r} has no stacked gradient"

    def stacked_full_gradient(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Rows of x ([R, d]): writes ∇f(x_i) into out[i] and returns f(x_i) ([R]), each
        elementwise the same ops as one run's `full_gradient` (so the same numbers)."""
        raise NotImplementedError

    def stacked_extra_metrics(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """`extra_metrics` of each row of x ([R, d]): per name an [R] float64 tensor; {} by default
        (a stackable problem with extra metrics must define it)."""
        return {}

    def draw_stacked_noise(self, generators, work: torch.Tensor, threads: int = 1) -> None:
        """Fill `work` ([R, d], a CPU buffer in x's dtype) with the raw noise draws of one step,
        row i from generators[i] exactly as `stochastic_loss` draws it alone; called on a worker
        thread while the step computes ∇f (lionconv.batched), so it touches nothing else."""
        raise NotImplementedError

    def add_stacked_noise(self, g: torch.Tensor, work: torch.Tensor, out: torch.Tensor,
                          x: torch.Tensor) -> None:
        """out[i] = the stochastic gradient at x[i] ([R, d]) from g[i] = ∇f(x_i) and
        `draw_stacked_noise`'s buffer `work` (g[i] + ξ_i for additive noise)."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """What besides `params` a resume needs."""
        return {}

    def load_state_dict(self, state: Mapping) -> None:
        if state:
            raise ValueError(f"{self.name} keeps no state, got keys {sorted(state)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, d={self.d})"


# ------------------------------------------------------------------------------------------------
# networks on a fixed finite training set


def build_model(factory, *, seed: int, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Calls `factory()` under a forked, seeded global RNG (PyTorch's default initialisers read
    the global RNG), on the CPU so the initial point is the same on every device, then moves it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "model_init"))
        model = factory()
    return model.to(device=device, dtype=dtype)


def validation_split(inputs: torch.Tensor, targets: torch.Tensor, fraction: float):
    """((train inputs, train targets), (val inputs, val targets)): round(fraction·N) examples
    picked by a permutation with a constant seed (independent of the run seed); the remaining
    ones keep their order."""
    n = int(targets.shape[0])
    n_val = round(fraction * n)
    if not 1 <= n_val < n:
        raise ValueError(f"val_fraction={fraction!r} is not allowed here: it gives {n_val} "
                         f"validation examples of the {n} training ones (need 1..{n - 1})")
    perm = torch.randperm(n, generator=make_generator(0, "validation_split"))
    val, keep = perm[:n_val].to(targets.device), perm[n_val:].sort().values.to(targets.device)
    return (inputs[keep], targets[keep]), (inputs[val], targets[val])


class NetworkProblem(Problem):
    """f(x) = (1/N)·Σ_n ℓ(model(a_n; x), y_n) over a fixed training set; g = the same mean over a
    minibatch of `batch_size` indices drawn uniformly WITH replacement (torch.randint on the
    passed generator), so E g = ∇f exactly. Full gradient and evaluation run in chunks of
    `eval_batch_size`; chunk losses are weighted n_chunk/N, so the result does not depend on it.

    Constants (kind "estimated", computed lazily at the initial point x_0 and cached; see
    estimate.py): L = ‖∇²f_B(x_0)‖₂ on a fixed batch B of `hessian_batch_size` examples (power
    iteration), sigma² = mean over `variance_batches` minibatches of ‖g − ∇f(x_0)‖₂²,
    Delta = f(x_0) − f_low with f_low = 0 (losses are ≥ 0). All three are local, at x_0.

    `val_fraction` > 0 carves a validation set of round(val_fraction·N) examples out of the given
    training set (a permutation fixed by a constant seed, the same for every run seed and
    optimizer, so hyperparameters are selected on one set); f and its gradients then use the N −
    n_val others (in their given order), and `evaluate` adds val_loss (and val_acc).
    """

    task = "classification"  # or "regression" (MSE on a scalar output)

    def __init__(self, *, model: nn.Module, train_inputs, train_targets, test_inputs, test_targets,
                 batch_size: int, eval_batch_size: int, estimate_constants: bool,
                 power_iters: int, variance_batches: int, hessian_batch_size: int, seed: int,
                 device: torch.device, dtype: torch.dtype, val_fraction: float = 0.0) -> None:
        super().__init__()
        self.batch_size = check_int("batch_size", batch_size)
        self.eval_batch_size = check_int("eval_batch_size", eval_batch_size)
        self.estimate_constants = check_bool("estimate_constants", estimate_constants)
        self.power_iters = check_int("power_iters", power_iters)
        self.variance_batches = check_int("variance_batches", variance_batches)
        self.hessian_batch_size = check_int("hessian_batch_size", hessian_batch_size)
        self.seed, self.device, self.dtype = seed, device, dtype
        self.model = model
        self.param_names = [n for n, _ in model.named_parameters()]
        self.params = [p for _, p in model.named_parameters()]
        self.val_fraction = check_float("val_fraction", val_fraction, maximum=1.0, strict_max=True)
        self.val_inputs = self.val_targets = None
        if self.val_fraction > 0:
            (train_inputs, train_targets), (self.val_inputs, self.val_targets) = \
                validation_split(train_inputs, train_targets, self.val_fraction)
        self.train_inputs, self.train_targets = train_inputs, train_targets
        self.test_inputs, self.test_targets = test_inputs, test_targets
        self.n_train = int(train_targets.shape[0])
        self.n_val = 0 if self.val_targets is None else int(self.val_targets.shape[0])
        self.n_test = 0 if test_targets is None else int(test_targets.shape[0])
        self._x0 = [p.detach().clone() for p in self.params]
        self._constants: dict | None = None
        # (parameter versions, correct count) from the last full_gradient's forward pass
        self._train_correct: tuple | None = None

    # --- data -------------------------------------------------------------------------------
    def prepare_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """Stored inputs -> model inputs (identity; CIFAR-10 normalises uint8 images here)."""
        return inputs

    def criterion(self, outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"):
        """ℓ: MSE on a scalar output for regression, cross-entropy for classification."""
        if self.task == "regression":
            return F.mse_loss(outputs.squeeze(-1), targets, reduction=reduction)
        return F.cross_entropy(outputs, targets, reduction=reduction)

    def loss_of(self, inputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"):
        """Mean (or summed) loss of the model on stored inputs and targets."""
        return self.criterion(self.model(self.prepare_inputs(inputs)), targets, reduction)

    def _param_versions(self) -> tuple:
        """In-place updates (optimizer steps, loads) bump these: 'x has not changed' if equal."""
        return tuple(p._version for p in self.params)

    def batch_loss(self, indices: torch.Tensor) -> torch.Tensor:
        """Mean training loss over the examples `indices` (with autograd graph)."""
        indices = indices.to(self.train_targets.device)
        return self.loss_of(self.train_inputs[indices], self.train_targets[indices])

    def sample_indices(self, generator: torch.Generator) -> torch.Tensor:
        """`batch_size` training indices, uniform with replacement, from `generator` only."""
        return torch.randint(self.n_train, (self.batch_size,), generator=generator,
                             device=generator.device)

    # --- the interface ---------------------------------------------------------------------
    def stochastic_loss(self, generator: torch.Generator) -> torch.Tensor:
        loss = self.batch_loss(self.sample_indices(generator))
        loss.backward()
        return loss.detach()

    def minibatch_gradient(self, generator: torch.Generator):
        """(loss, g) on a fresh minibatch like stochastic_loss, without touching p.grad."""
        loss = self.batch_loss(self.sample_indices(generator))
        return loss.detach(), list(torch.autograd.grad(loss, self.params))

    def full_gradient(self):
        n = self.n_train
        total = torch.zeros((), device=self.device, dtype=self.dtype)
        grads = [torch.zeros_like(p) for p in self.params]
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        for start in range(0, n, self.eval_batch_size):
            stop = min(start + self.eval_batch_size, n)
            outputs = self.model(self.prepare_inputs(self.train_inputs[start:stop]))
            targets = self.train_targets[start:stop]
            chunk = self.criterion(outputs, targets) * ((stop - start) / n)
            torch._foreach_add_(grads, torch.autograd.grad(chunk, self.params))
            total += chunk.detach()
            if self.task != "regression":
                correct += (outputs.detach().argmax(-1) == targets).sum()
        # The same forward pass gives the training accuracy: evaluate() reuses it while x is
        # unchanged instead of a second pass over the training set.
        self._train_correct = (self._param_versions(), correct)
        return total, grads

    @torch.no_grad()
    def _sums(self, inputs, targets):
        """(summed loss, number correct) over a data set, chunked; tensors, no sync."""
        loss = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        for start in range(0, targets.shape[0], self.eval_batch_size):
            x = self.prepare_inputs(inputs[start:start + self.eval_batch_size])
            y = targets[start:start + self.eval_batch_size]
            out = self.model(x)
            loss += self.criterion(out, y, reduction="sum").double()
            if self.task != "regression":
                correct += (out.argmax(-1) == y).sum()
        return loss, correct

    def evaluate(self) -> dict[str, float]:
        """test_loss (mean), then val_loss with a validation split, and for classifiers
        test_acc (val_acc) and train_acc; one host sync."""
        splits = [(name, inputs, targets, n) for name, inputs, targets, n in (
            ("test", self.test_inputs, self.test_targets, self.n_test),
            ("val", self.val_inputs, self.val_targets, self.n_val)) if targets is not None]
        if not splits:
            return {}
        names, values = [], []
        for name, inputs, targets, n in splits:
            loss, correct = self._sums(inputs, targets)
            names.append(f"{name}_loss")
            values.append(loss / n)
            if self.task != "regression":
                names.append(f"{name}_acc")
                values.append(correct.double() / n)
        if self.task != "regression":
            if self._train_correct is not None and self._train_correct[0] == self._param_versions():
                train_correct = self._train_correct[1]
            else:
                _, train_correct = self._sums(self.train_inputs, self.train_targets)
            names.append("train_acc")
            values.append(train_correct.double() / self.n_train)
        return dict(zip(names, torch.stack(values).tolist()))

    @contextmanager
    def at_initial_point(self) -> Iterator[None]:
        """Temporarily puts the parameters back at x_0 (restored on exit)."""
        with torch.no_grad():
            current = [p.detach().clone() for p in self.params]
            torch._foreach_copy_(self.params, self._x0)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, current)

    def constants(self) -> dict:
        if not self.estimate_constants:
            return {"Delta": None, "L": None, "sigma": None, "f_low": 0.0, "kind": "estimated"}
        if self._constants is None:
            from .estimate import estimate_network_constants

            with self.at_initial_point():
                self._constants = estimate_network_constants(self)
        return dict(self._constants)

    def state_dict(self) -> dict:
        """The cached constants (so a resumed run reports the same ones without re-estimating)."""
        return {"constants": None if self._constants is None else dict(self._constants)}

    def load_state_dict(self, state: Mapping) -> None:
        unknown = set(state) - {"constants"}
        if unknown:
            raise ValueError(f"{self.name}: unexpected state keys {sorted(unknown)}")
        constants = state.get("constants")
        self._constants = None if constants is None else dict(constants)
