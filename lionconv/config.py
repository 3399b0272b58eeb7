"""Typed schemas for the Hydra configs in `conf/`.

Each YAML file in `conf/<group>/` starts from one of these dataclasses (its `defaults` list names
`<name>_schema`), so a misspelt key or a value of the wrong type fails when Hydra composes the
config, with Hydra's own message, before anything runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


# --- optimizer/ -------------------------------------------------------------------------------
@dataclass
class LionConf:
    name: str = "lion"
    lr: float = 1e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    foreach: Optional[bool] = None


@dataclass
class CLionConf(LionConf):
    name: str = "clion"
    nu: Optional[float] = None  # null: 1e-6 unless nu_quantile is set (calibrate.DEFAULT_NU)
    nu_quantile: Optional[float] = None  # ν = this quantile of |c_j| on a pilot (calibrate.py)
    gate: str = "global"


@dataclass
class SignSGDConf:
    name: str = "signsgd"
    lr: float = 1e-4
    weight_decay: float = 0.0
    foreach: Optional[bool] = None


@dataclass
class SGDConf:
    name: str = "sgd"
    lr: float = 1e-2
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    foreach: Optional[bool] = None


@dataclass
class SGDMomentumConf(SGDConf):
    """torch.optim.SGD with heavy-ball momentum 0.9 (the Lion papers' SGD baseline)."""

    name: str = "sgd_momentum"
    momentum: float = 0.9


@dataclass
class AdamWConf:
    """torch.optim.AdamW: decoupled decay x ← x − lr·λ·x (THEORY §2's η·λ·x), no sign."""

    name: str = "adamw"
    lr: float = 1e-3
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    foreach: Optional[bool] = None


# --- schedule/ --------------------------------------------------------------------------------
@dataclass
class ConstantScheduleConf:
    """Hyperparameters exactly as the optimizer config gives them, constant over the run."""

    name: str = "constant"


@dataclass
class HorizonScheduleConf:
    """THEORY §4: β1 = 1 − c1/√K, β2 = 1 − c2/√K, η = c3/(√d·K^{3/4}), from the run's own d, K.

    c2 or c3 null: the optimal constants of THEORY §4 from the problem's Δ, L, σ.
    SGD has no β and no √d in its rate: it gets η = sgd_c/√K, the classic non-convex SGD step.
    `beta1` set: β1 is held at that value (THEORY §8's constant-β1 control).
    """

    name: str = "horizon"
    c1: float = 1.0
    c2: Optional[float] = 1.0
    c3: Optional[float] = 1.0
    sgd_c: float = 1.0
    beta1: Optional[float] = None  # fixed β1 instead of 1 − c1/√K (THEORY §8's noise-floor control)


# --- lr_schedule/ -----------------------------------------------------------------------------
@dataclass
class LrScheduleConf:
    """Multiplies the base lr (the optimizer's, or the one THEORY §4's horizon schedule gives)
    at step k: linear warmup (k+1)/W for k < W, then 1 (constant) or the cosine
    f + (1−f)·½(1 + cos(π(k−W)/(K−W))) (the Lion papers' protocol); see schedules.lr_multiplier."""

    name: str = "constant"      # constant | cosine
    warmup_steps: int = 0       # W
    final_fraction: float = 0.0  # f: cosine ends at f·lr


# --- problem/ ---------------------------------------------------------------------------------
# Keys and defaults mirror the problem classes' keyword arguments (`problem_options(name)`);
# tests/test_config.py keeps the two in step.
@dataclass
class SeparableConf:
    name: str = "scaled_separable"
    d: int = 1000
    sigma: float = 1.0
    alpha: float = 0.5
    omega: float = 2.0
    init_scale: float = 2.0
    init_dist: str = "normal"
    shift: float = 0.0          # μ: f = (1/d)Σφ(√d·x_i − μ), THEORY §3's active constraint
    noise: str = "gaussian"     # gaussian | two_point (THEORY §8's skewed noise; sigma unused)
    noise_a: float = 1.0        # two_point atoms: +a w.p. b/(a+b), −b otherwise
    noise_b: float = 1.0


@dataclass
class RotatedSeparableConf(SeparableConf):
    """THEORY §6's rotated family: the scaled family in coordinates Qx, Q = H·D/√d."""

    name: str = "rotated_separable"
    d: int = 1024  # a power of two


@dataclass
class QuadraticConf:
    name: str = "quadratic"
    d: int = 1
    init: float = 1.0
    sigma: float = 0.0
    noise: str = "gaussian"     # gaussian | two_point (THEORY §8's skewed control; sigma unused)
    noise_a: float = 1.0        # two_point atoms per coordinate: +a w.p. b/(a+b), −b otherwise
    noise_b: float = 1.0


@dataclass
class NetworkConf:
    name: str = MISSING
    width: int = 64
    batch_size: int = 64
    eval_batch_size: int = 4096
    estimate_constants: bool = True
    power_iters: int = 20
    variance_batches: int = 16
    hessian_batch_size: int = 512
    # > 0: that fraction of the training set is held out as a validation set (val_loss, val_acc
    # columns): hyperparameters selected on validation, reported on test (the protocol of the
    # Lion-vs-baselines comparison, THEORY §2)
    val_fraction: float = 0.0


@dataclass
class TeacherStudentConf(NetworkConf):
    name: str = "teacher_student"
    width: int = 32
    n_in: int = 20
    teacher_width: int = 16
    activation: str = "tanh"
    n_train: int = 2000
    n_test: int = 1000
    label_noise: float = 0.0
    data_seed: int = 0


@dataclass
class DigitsCNNConf(NetworkConf):
    name: str = "digits_cnn"
    width: int = 16
    n_train: Optional[int] = None
    drop_index: Optional[int] = None  # the older name of replace_index
    replace_index: Optional[int] = None  # THEORY §7: example i replaced by one from outside
    test_fraction: float = 0.25
    split_seed: int = 0
    subset_seed: Optional[int] = None  # null: derived from the run seed (sets vary with it)


@dataclass
class DigitsMLPConf(DigitsCNNConf):
    name: str = "digits_mlp"
    width: int = 64
    depth: int = 2


@dataclass
class Mnist1dCNNConf(NetworkConf):
    """MNIST-1D generated locally by the `mnist1d` package (4000 train / 1000 test, length 40)."""

    name: str = "mnist1d_cnn"
    width: int = 32
    n_train: Optional[int] = None
    drop_index: Optional[int] = None  # the older name of replace_index
    replace_index: Optional[int] = None  # THEORY §7: example i replaced by one from outside
    data_seed: int = 42            # the published data set's generation seed
    cache_dir: str = "data/mnist1d"
    subset_seed: Optional[int] = None  # null: derived from the run seed (sets vary with it)
    batch_size: int = 100


@dataclass
class Mnist1dConf(Mnist1dCNNConf):
    name: str = "mnist1d"
    width: int = 100
    depth: int = 2


@dataclass
class Cifar10Conf(NetworkConf):
    name: str = "cifar10"
    data_dir: str = "data/cifar-10-batches-py"
    width: int = 16
    blocks_per_stage: int = 1
    n_train: Optional[int] = None
    n_test: Optional[int] = None
    subset_seed: int = 0
    batch_size: int = 128
    eval_batch_size: int = 1000
    hessian_batch_size: int = 256


@dataclass
class ZeroChainConf:
    """THEORY §9's lower-bound instance: T or Delta, p or sigma (one of each pair null)."""

    name: str = "zero_chain"
    T: Optional[int] = 20
    p: Optional[float] = 0.05
    Delta: Optional[float] = None
    L: float = 152.0
    sigma: Optional[float] = None
    epsilon: float = 0.5
    d: Optional[int] = None


PROBLEM_SCHEMAS = {"scaled_separable": SeparableConf, "naive_separable": SeparableConf,
                   "rotated_separable": RotatedSeparableConf,
                   "quadratic": QuadraticConf, "teacher_student": TeacherStudentConf,
                   "digits_mlp": DigitsMLPConf, "digits_cnn": DigitsCNNConf,
                   "mnist1d": Mnist1dConf, "mnist1d_cnn": Mnist1dCNNConf,
                   "cifar10": Cifar10Conf, "zero_chain": ZeroChainConf}


# --- top level --------------------------------------------------------------------------------
@dataclass
class LogConf:
    """When the full-gradient metrics are computed.

    grid=linear: every `every` steps; grid=geometric: `points` steps spaced geometrically;
    grid=auto: every step on problems with a closed-form gradient, else geometric.
    Step 0 and step K−1 are always logged.
    """

    grid: str = "auto"
    every: int = 1
    points: int = 30
    per_tensor: bool = True
    tau: bool = True
    snapshots: bool = False  # keep x at every logged step (snapshots.npz), for stability probes


@dataclass
class TrainConf:
    optimizer: Any = MISSING
    problem: Any = MISSING
    schedule: Any = MISSING
    lr_schedule: LrScheduleConf = field(default_factory=LrScheduleConf)
    seed: int = 0
    steps: int = 1000
    lr_scale: float = 1.0  # multiplies the learning rate: one grid for optimizers of different scale
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1
    log: LogConf = field(default_factory=LogConf)
    checkpoint_every: int = 0
    checkpoint_seconds: float = 60.0
    restart: bool = False
    out_dir: str = "results/runs"
    sweep_name: str = "default"
    preset: Optional[str] = None  # the conf/experiment preset that made the run (its claims analyse it)
    progress: str = "auto"
    name: Optional[str] = None
    tags: List[str] = field(default_factory=list)


def lookup(key: str, *pairs) -> float | int:
    """`${lookup:${problem.name}_${optimizer.name},digits_mlp_lion,1e-3,digits_mlp_sgd,0.9}`: the value listed
    after `key`, so that one product sweep can give every optimizer (and problem) its own lr grid
    (Hydra's sweeper has no per-option grids; the resolved value is what the run's config.yaml records).
    A value keeps the type the grammar parsed (300 an int, for `steps`; 1e-3 a float)."""
    if len(pairs) % 2:
        raise ValueError(f"lookup needs KEY,VALUE pairs after the key, got {list(pairs)}")
    table = {str(k): v if isinstance(v, (int, float)) and not isinstance(v, bool) else float(v)
             for k, v in zip(pairs[::2], pairs[1::2])}
    if key not in table:
        raise ValueError(f"lookup has no value for {key!r}; listed: {', '.join(table)}")
    return table[key]


def register_configs() -> None:
    if not OmegaConf.has_resolver("lookup"):
        OmegaConf.register_new_resolver("lookup", lookup)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConf)
    for name, node in [("lion", LionConf), ("clion", CLionConf), ("signsgd", SignSGDConf),
                       ("sgd", SGDConf), ("sgd_momentum", SGDMomentumConf), ("adamw", AdamWConf)]:
        cs.store(group="optimizer", name=f"{name}_schema", node=node)
    cs.store(group="schedule", name="constant_schema", node=ConstantScheduleConf)
    cs.store(group="schedule", name="horizon_schema", node=HorizonScheduleConf)
    cs.store(group="lr_schedule", name="lr_schedule_schema", node=LrScheduleConf)
    for name, node in PROBLEM_SCHEMAS.items():
        cs.store(group="problem", name=f"{name}_schema", node=node)
