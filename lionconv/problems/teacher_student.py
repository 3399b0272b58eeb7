"""Teacher–student regression: a fixed random two-layer teacher labels Gaussian inputs.

Data (fixed by `data_seed`, independent of the run seed, so seeds differ only in the student's
initial point and the minibatch order):
    a ~ N(0, I_{n_in}),   y = v·act(W a + c) + label_noise·N(0, 1)
with teacher W ~ N(0, 1/n_in), c ~ N(0, 1/n_in), v ~ N(0, 1/teacher_width) (so y = O(1)); train
and test targets carry the same label noise, so test_loss estimates the expected risk.
Student: Linear(n_in, width) -> act -> Linear(width, 1) with PyTorch's default init (seeded).
Loss: mean squared error (1/B)·Σ (ŷ − y)² (F.mse_loss), minibatches with replacement.
d = width·(n_in + 2) + 1.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import NetworkProblem, build_model, check_choice, check_float, check_int, make_generator

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class TeacherStudent(NetworkProblem):
    """Two-layer student fitting a two-layer teacher with MSE (module docstring)."""

    name = "teacher_student"
    task = "regression"

    def __init__(self, *, width: int = 32, n_in: int = 20, teacher_width: int = 16,
                 activation: str = "tanh", n_train: int = 2000, n_test: int = 1000,
                 label_noise: float = 0.0, data_seed: int = 0, batch_size: int = 64,
                 eval_batch_size: int = 4096, estimate_constants: bool = True,
                 power_iters: int = 20, variance_batches: int = 16,
                 hessian_batch_size: int = 512, val_fraction: float = 0.0, seed: int, device,
                 dtype):
        width = check_int("width", width)
        n_in = check_int("n_in", n_in)
        teacher_width = check_int("teacher_width", teacher_width)
        activation = check_choice("activation", activation, _ACTIVATIONS)
        n_train = check_int("n_train", n_train)
        n_test = check_int("n_test", n_test)
        label_noise = check_float("label_noise", label_noise)
        data_seed = check_int("data_seed", data_seed, minimum=0)
        act = _ACTIVATIONS[activation]

        gen = make_generator(data_seed, "teacher_student_data")
        W = torch.randn(teacher_width, n_in, generator=gen, dtype=torch.float64) / n_in ** 0.5
        c = torch.randn(teacher_width, generator=gen, dtype=torch.float64) / n_in ** 0.5
        v = torch.randn(teacher_width, generator=gen, dtype=torch.float64) / teacher_width ** 0.5

        def sample(n):
            a = torch.randn(n, n_in, generator=gen, dtype=torch.float64)
            y = act()(a @ W.T + c) @ v + label_noise * torch.randn(n, generator=gen,
                                                                    dtype=torch.float64)
            return a.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)

        train_inputs, train_targets = sample(n_train)
        test_inputs, test_targets = sample(n_test)
        model = build_model(lambda: nn.Sequential(nn.Linear(n_in, width), act(),
                                                  nn.Linear(width, 1)),
                            seed=seed, device=device, dtype=dtype)
        self.width, self.n_in, self.teacher_width = width, n_in, teacher_width
        self.activation, self.label_noise = activation, label_noise
        super().__init__(model=model, train_inputs=train_inputs, train_targets=train_targets,
                         test_inputs=test_inputs, test_targets=test_targets,
                         batch_size=batch_size, eval_batch_size=eval_batch_size,
                         estimate_constants=estimate_constants, power_iters=power_iters,
                         variance_batches=variance_batches,
                         hessian_batch_size=hessian_batch_size, seed=seed, device=device,
                         dtype=dtype, val_fraction=val_fraction)

    @staticmethod
    def d_formula(width: int, n_in: int = 20) -> int:
        return width * (n_in + 2) + 1
