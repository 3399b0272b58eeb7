"""Problem families: closed forms, constants vs d (THEORY §6), unbiasedness, determinism, options."""

import math
import pickle

import numpy as np
import pytest
import torch

from lionconv.problems import PROBLEMS, build_problem, problem_options
from lionconv.problems.cifar10 import ResNetGN, Cifar10
from lionconv.problems.digits import DigitsCNN, DigitsMLP
from lionconv.problems.estimate import hessian_spectral_norm
from lionconv.problems.teacher_student import TeacherStudent

F64 = torch.float64
SMALL = {
    "scaled_separable": {"d": 20},
    "naive_separable": {"d": 20},
    "rotated_separable": {"d": 16},
    "quadratic": {"d": 3, "sigma": 0.5},
    "teacher_student": {"width": 5, "n_in": 4, "n_train": 50, "n_test": 20, "batch_size": 8},
    "digits_mlp": {"width": 8, "depth": 2, "n_train": 200, "batch_size": 16},
    "digits_cnn": {"width": 3, "n_train": 200, "batch_size": 16},
}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def stochastic_grads(problem, generator):
    """g of one stochastic_loss call, with p.grad reset before."""
    for p in problem.params:
        p.grad = None
    problem.stochastic_loss(generator)
    return flat([p.grad for p in problem.params]).clone()


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    """A tiny folder in the CIFAR-10 python format: 5 train batches of 8 images, 12 test images."""
    root = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 8) for i in range(1, 6)] + [("test_batch", 12)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist(), b"batch_label": name.encode()}
        with open(root / name, "wb") as handle:
            pickle.dump(batch, handle)
    return root


# ------------------------------------------------------------------------------------------------
# separable families (THEORY §6)


@pytest.mark.parametrize("name", ["scaled_separable", "naive_separable"])
@pytest.mark.parametrize("d", [10, 1000])
def test_separable_gradient_matches_closed_form_and_autograd(name, d):
    problem = build_problem({"name": name, "d": d, "alpha": 0.7, "omega": 1.5}, seed=3, dtype=F64)
    loss, (grad,) = problem.full_gradient()
    x = problem.x.detach().clone().requires_grad_(True)
    auto_loss = problem.objective(x)
    (auto_grad,) = torch.autograd.grad(auto_loss, x)
    a = math.sqrt(d) if name == "scaled_separable" else 1.0
    b = 1.0 / d if name == "scaled_separable" else 1.0
    u = a * x.detach()
    closed = b * a * (u + 0.7 * 1.5 * torch.sin(1.5 * u))
    closed_f = b * (0.5 * u * u - 0.7 * torch.cos(1.5 * u)).sum()
    torch.testing.assert_close(grad, closed)
    torch.testing.assert_close(grad, auto_grad)
    torch.testing.assert_close(loss, closed_f)
    assert problem.x.grad is None  # full_gradient does not touch p.grad


@pytest.mark.parametrize("name", ["scaled_separable", "naive_separable"])
def test_separable_smoothness_does_not_change_with_d(name):
    for d in (10, 100, 1000):
        problem = build_problem({"name": name, "d": d}, seed=0, dtype=F64)
        L = problem.constants()["L"]
        assert L == pytest.approx(1 + 0.5 * 2.0 ** 2)
        # at x = 0 the Hessian is L·I: power iteration must find exactly L
        x = torch.zeros(d, dtype=F64, requires_grad=True)
        assert hessian_spectral_norm(problem.objective(x), [x], iters=5,
                                     generator=gen()) == pytest.approx(L, rel=1e-9)
        # at random points the Hessian norm is max_i |φ''(u_i)| <= L, and close to it near 0
        x = (0.05 * torch.randn(d, generator=gen(d), dtype=F64)).requires_grad_(True)
        measured = hessian_spectral_norm(problem.objective(x), [x], iters=300, generator=gen())
        exact = problem.hessian_diagonal(x.detach()).abs().max().item()
        assert measured == pytest.approx(exact, rel=1e-3)
        assert exact <= L and exact > 0.9 * L
    u = torch.linspace(-20, 20, 200_001, dtype=F64)
    phi2 = 1 + 0.5 * 4 * torch.cos(2 * u)
    assert phi2.abs().max().item() == pytest.approx(3.0, rel=1e-9)


@pytest.mark.parametrize("name", ["scaled_separable", "naive_separable"])
def test_separable_noise_variance(name):
    sigma = 0.7
    for d in (10, 100, 10_000):
        problem = build_problem({"name": name, "d": d, "sigma": sigma}, seed=1, dtype=F64)
        _, (grad,) = problem.full_gradient()
        generator = gen(d)
        draws = 4000 if d < 1000 else 40
        noise = torch.stack([stochastic_grads(problem, generator) - grad for _ in range(draws)])
        total = noise.pow(2).sum(1).mean().item()
        expected = sigma ** 2 if name == "scaled_separable" else d * sigma ** 2
        assert total == pytest.approx(expected, rel=0.03)
        assert problem.constants()["sigma"] == pytest.approx(math.sqrt(expected))
        # per coordinate: N(0, σ²/d) (scaled) or N(0, σ²) (naive), and unbiased
        assert noise.mean(0).abs().max().item() < 5 * math.sqrt(expected / d / draws)


def test_scaled_delta_is_fixed_in_d_and_naive_delta_grows():
    # E Δ per coordinate = s²/2 + α(1 − exp(−ω²s²/2)) for u0 ~ s·N(0,1)
    per_coordinate = 2.0 ** 2 / 2 + 0.5 * (1 - math.exp(-(2.0 * 2.0) ** 2 / 2))
    scaled = [build_problem({"name": "scaled_separable", "d": d}, seed=s).constants()["Delta"]
              for d in (100, 1000, 10_000) for s in (0, 1)]
    assert max(abs(v - per_coordinate) for v in scaled) < 0.15 * per_coordinate
    assert np.std(scaled) < 0.1 * np.mean(scaled)
    for d in (100, 1000, 10_000):
        naive = build_problem({"name": "naive_separable", "d": d}, seed=0).constants()["Delta"]
        assert naive / d == pytest.approx(per_coordinate, rel=0.15)


@pytest.mark.parametrize("init_dist", ["normal", "uniform"])
def test_separable_delta_and_f_low_exact(init_dist):
    for name, d in [("scaled_separable", 50), ("naive_separable", 50)]:
        problem = build_problem({"name": name, "d": d, "alpha": 0.3, "init_dist": init_dist},
                                seed=2, dtype=F64)
        c = problem.constants()
        assert c["kind"] == "closed_form"
        f0, _ = problem.full_gradient()
        assert c["Delta"] == pytest.approx(f0.item() - c["f_low"], rel=1e-12)
        assert c["f_low"] == pytest.approx(-0.3 if name == "scaled_separable" else -0.3 * d)
        zero = problem.objective(torch.zeros(d, dtype=F64)).item()
        assert zero == pytest.approx(c["f_low"], rel=1e-12)
        x = torch.randn(10_000, d, generator=gen(), dtype=F64)
        values = torch.stack([problem.objective(row) for row in x[:200]])
        assert (values >= c["f_low"]).all()
    uniform = build_problem({"name": "scaled_separable", "d": 1000, "init_dist": "uniform",
                             "init_scale": 1.5}, seed=0)
    u0 = uniform.x.detach() * math.sqrt(1000)
    assert u0.abs().max() <= 1.5 and u0.abs().max() > 1.4


def test_scaled_stochastic_loss_is_f_and_gradient_accumulates_like_backward():
    problem = build_problem({"name": "scaled_separable", "d": 30}, seed=0, dtype=F64)
    f, (grad,) = problem.full_gradient()
    g1 = stochastic_grads(problem, gen(5))
    loss = problem.stochastic_loss(gen(5))  # p.grad now holds g1 + g1
    assert loss.item() == f.item() and loss.dim() == 0 and not loss.requires_grad
    torch.testing.assert_close(problem.x.grad, 2 * g1)
    assert not torch.equal(g1, grad)


def test_scaled_stochastic_gradient_unbiased():
    problem = build_problem({"name": "scaled_separable", "d": 50, "sigma": 2.0}, seed=0, dtype=F64)
    _, (grad,) = problem.full_gradient()
    generator = gen()
    mean = torch.stack([stochastic_grads(problem, generator) for _ in range(2000)]).mean(0)
    # ‖mean − ∇f‖² ≈ σ²/M = 4/2000
    assert (mean - grad).pow(2).sum().item() < 3 * 4.0 / 2000


# ------------------------------------------------------------------------------------------------
# quadratic (THEORY §8)


def test_quadratic_gradient_is_theta():
    problem = build_problem({"name": "quadratic"}, seed=0)
    assert problem.d == 1 and problem.theta.item() == 1.0
    with torch.no_grad():
        problem.theta.fill_(-0.25)
    f, (grad,) = problem.full_gradient()
    assert f.item() == pytest.approx(0.03125) and grad.item() == -0.25
    generator = gen()
    state = generator.get_state()
    assert torch.equal(stochastic_grads(problem, generator), torch.tensor([-0.25]))
    assert torch.equal(generator.get_state(), state)  # σ = 0: exact, no randomness used
    c = build_problem({"name": "quadratic", "d": 4, "init": 3.0}, seed=0).constants()
    assert c == {"Delta": 18.0, "L": 1.0, "sigma": 0.0, "f_low": 0.0, "kind": "closed_form"}


def test_quadratic_noise():
    problem = build_problem({"name": "quadratic", "d": 100, "sigma": 0.5}, seed=0, dtype=F64)
    generator = gen()
    noise = torch.stack([stochastic_grads(problem, generator) - 1.0 for _ in range(2000)])
    assert noise.pow(2).sum(1).mean().item() == pytest.approx(0.25, rel=0.03)


# ------------------------------------------------------------------------------------------------
# every problem


@pytest.mark.parametrize("name", sorted(SMALL))
def test_builds_with_small_sizes(name):
    problem = build_problem({"name": name, **SMALL[name]}, seed=0)
    assert problem.name == name
    assert len(problem.params) == len(problem.param_names) > 0
    assert all(p.is_leaf and p.requires_grad and p.dtype == torch.float32 for p in problem.params)
    loss, grads = problem.full_gradient()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert [g.shape for g in grads] == [p.shape for p in problem.params]
    assert all(p.grad is None for p in problem.params)
    batch_loss = problem.stochastic_loss(gen())
    assert batch_loss.dim() == 0 and not batch_loss.requires_grad
    assert all(p.grad is not None and p.grad.shape == p.shape for p in problem.params)
    assert set(problem.constants()) == {"Delta", "L", "sigma", "f_low", "kind"}
    metrics = problem.evaluate()
    assert all(isinstance(v, float) for v in metrics.values())


def test_d_formulas():
    for width, n_in in [(5, 4), (32, 20)]:
        problem = build_problem({"name": "teacher_student", "width": width, "n_in": n_in,
                                 "n_train": 10, "n_test": 5}, seed=0)
        assert problem.d == TeacherStudent.d_formula(width, n_in) == width * (n_in + 2) + 1
    for width, depth in [(8, 1), (8, 2), (64, 2), (10, 3)]:
        problem = build_problem({"name": "digits_mlp", "width": width, "depth": depth}, seed=0)
        assert problem.d == DigitsMLP.d_formula(width, depth)
    assert build_problem({"name": "digits_mlp"}, seed=0).d == 8970
    for width in (1, 3, 16):
        problem = build_problem({"name": "digits_cnn", "width": width}, seed=0)
        assert problem.d == DigitsCNN.d_formula(width)
    for width, blocks in [(1, 1), (4, 1), (8, 2), (16, 1), (6, 3)]:
        d = sum(p.numel() for p in ResNetGN(width, blocks).parameters())
        assert d == Cifar10.d_formula(width, blocks)
    for name, d in [("scaled_separable", 77), ("naive_separable", 5), ("quadratic", 9)]:
        assert build_problem({"name": name, "d": d}, seed=0).d == d


@pytest.mark.parametrize("name", ["teacher_student", "digits_mlp", "digits_cnn"])
def test_network_stochastic_gradient_unbiased(name):
    problem = build_problem({"name": name, **SMALL[name]}, seed=0, dtype=F64)
    _, full = problem.full_gradient()
    full = flat(full)
    generator = gen()
    draws = torch.stack([stochastic_grads(problem, generator) for _ in range(400)])
    spread = (draws - full).pow(2).sum(1).mean().item()  # E‖g − ∇f‖²
    error = (draws.mean(0) - full).pow(2).sum().item()  # ≈ spread / M if unbiased
    assert error < 3 * spread / len(draws)
    assert spread > 0


@pytest.mark.parametrize("name", ["teacher_student", "digits_cnn"])
def test_full_gradient_chunking_matches_one_pass(name):
    whole = build_problem({"name": name, **SMALL[name], "eval_batch_size": 10_000}, seed=4,
                          dtype=F64)
    chunked = build_problem({"name": name, **SMALL[name], "eval_batch_size": 7}, seed=4,
                            dtype=F64)
    loss_a, grads_a = whole.full_gradient()
    loss_b, grads_b = chunked.full_gradient()
    torch.testing.assert_close(loss_a, loss_b)
    torch.testing.assert_close(flat(grads_a), flat(grads_b))
    # and equals the plain mean over all examples
    all_loss = whole.batch_loss(torch.arange(whole.n_train))
    torch.testing.assert_close(flat(torch.autograd.grad(all_loss, whole.params)), flat(grads_a))
    assert whole.evaluate() == pytest.approx(chunked.evaluate())


# ------------------------------------------------------------------------------------------------
# determinism


@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_same_problem_and_gradients(name):
    cfg = {"name": name, **SMALL[name]}
    rng_state = torch.get_rng_state()
    a, b, c = (build_problem(cfg, seed=s) for s in (7, 7, 8))
    assert torch.equal(torch.get_rng_state(), rng_state)  # the global RNG is untouched
    assert torch.equal(flat(a.params).detach(), flat(b.params).detach())
    if name != "quadratic":  # θ_0 = init for every seed
        assert not torch.equal(flat(a.params).detach(), flat(c.params).detach())
    ga, gb = gen(11), gen(11)
    for _ in range(3):
        assert torch.equal(stochastic_grads(a, ga), stochastic_grads(b, gb))
    # save / restore of the generator state reproduces the next sample bit for bit
    state = ga.get_state()
    first = stochastic_grads(a, ga)
    ga.set_state(state)
    assert torch.equal(stochastic_grads(a, ga), first)


def test_teacher_student_options():
    cfg = {"name": "teacher_student", **SMALL["teacher_student"], "n_train": 400}
    clean = build_problem(cfg, seed=0, dtype=F64)
    noisy = build_problem({**cfg, "label_noise": 0.5}, seed=0, dtype=F64)
    residual = noisy.train_targets - clean.train_targets
    assert torch.equal(noisy.train_inputs, clean.train_inputs)
    assert residual.std().item() == pytest.approx(0.5, rel=0.15)
    relu = build_problem({**cfg, "activation": "relu"}, seed=0)
    assert isinstance(relu.model[1], torch.nn.ReLU) and relu.d == clean.d
    assert set(clean.evaluate()) == {"test_loss"}  # regression: no accuracies
    assert build_problem({**cfg, "width": np.int64(6)}, seed=np.int64(1)).d == 6 * 6 + 1


def test_network_data_fixed_independent_of_run_seed():
    a = build_problem({"name": "teacher_student", **SMALL["teacher_student"]}, seed=0)
    b = build_problem({"name": "teacher_student", **SMALL["teacher_student"]}, seed=1)
    c = build_problem({"name": "teacher_student", **SMALL["teacher_student"], "data_seed": 1},
                      seed=0)
    assert torch.equal(a.train_inputs, b.train_inputs) and torch.equal(a.test_targets, b.test_targets)
    assert not torch.equal(a.train_targets, c.train_targets)


# ------------------------------------------------------------------------------------------------
# digits data


def test_digits_split_subsets_and_drop_index():
    full = build_problem({"name": "digits_mlp", "width": 4}, seed=0)
    assert (full.n_train, full.n_test) == (1347, 450)
    from sklearn.datasets import load_digits

    per_class = np.bincount(load_digits().target)
    stratified = np.abs(torch.bincount(full.test_targets).numpy() - 0.25 * per_class)
    assert stratified.max() <= 1
    mean = full.train_inputs.double().mean(0)
    assert mean.abs().max() < 1e-6  # standardised with train statistics
    small = build_problem({"name": "digits_mlp", "width": 4, "n_train": 100}, seed=0)
    bigger = build_problem({"name": "digits_mlp", "width": 4, "n_train": 300}, seed=0)
    assert small.n_train == 100 and torch.equal(small.train_inputs, bigger.train_inputs[:100])
    assert torch.equal(small.train_inputs, full.train_inputs[:100])  # nested subsets
    assert torch.equal(small.test_inputs, full.test_inputs)
    dropped = build_problem({"name": "digits_mlp", "width": 4, "n_train": 100,
                             "drop_index": 17}, seed=0)
    assert dropped.n_train == 100
    differ = (dropped.train_inputs != small.train_inputs).any(1)
    assert differ.nonzero().flatten().tolist() == [17]
    assert torch.equal(dropped.train_inputs[17], bigger.train_inputs[100])  # the spare example
    # same seed: same initial point and same minibatch indices
    assert torch.equal(flat(dropped.params).detach(), flat(small.params).detach())
    assert torch.equal(dropped.sample_indices(gen(3)), small.sample_indices(gen(3)))
    cnn = build_problem({"name": "digits_cnn", "width": 2, "n_train": 100}, seed=0)
    assert cnn.train_inputs.shape == (100, 1, 8, 8)
    assert torch.equal(cnn.train_inputs.reshape(100, 64), small.train_inputs)


def test_training_subset_follows_the_run_seed_and_replace_index_makes_a_neighbour():
    """THEORY §7: E_S over training sets needs subsets that change with the seed; the stability
    probe needs a neighbouring set: same N, one example replaced by one from outside the set,
    same initial point and minibatch order."""
    from lionconv.problems.base import derive_seed
    from lionconv.problems.digits import select_training_set

    def indices(seed, **options):
        return build_problem({"name": "digits_mlp", "width": 4, "n_train": 100,
                              "estimate_constants": False, **options}, seed=seed).train_indices

    a, b = indices(0), indices(1)
    assert len(set(a.tolist()) ^ set(b.tolist())) > 100  # two draws of 100 of 1347: mostly apart
    # the permutation is torch.randperm(1347) under derive_seed(seed, "training_subset")
    expected = torch.randperm(1347, generator=torch.Generator().manual_seed(
        derive_seed(1, "training_subset")))[:100]
    assert torch.equal(b, expected)
    assert torch.equal(indices(0, subset_seed=5), indices(1, subset_seed=5))  # explicit: fixed
    assert torch.equal(indices(0, subset_seed=0), select_training_set(1347, 100, 0))  # as before
    base = build_problem({"name": "digits_mlp", "width": 4, "n_train": 100,
                          "estimate_constants": False}, seed=3)
    twin = build_problem({"name": "digits_mlp", "width": 4, "n_train": 100,
                          "estimate_constants": False, "replace_index": 42}, seed=3)
    assert twin.n_train == base.n_train == 100
    changed = (twin.train_indices != base.train_indices).nonzero().flatten().tolist()
    assert changed == [42] and twin.train_indices[42].item() not in set(base.train_indices.tolist())
    assert ((twin.train_inputs != base.train_inputs).any(1).nonzero().flatten().tolist() == [42])
    assert torch.equal(flat(twin.params).detach(), flat(base.params).detach())
    assert torch.equal(twin.sample_indices(gen(7)), base.sample_indices(gen(7)))
    assert base.training_set() == {"n_train": 100, "subset_seed": derive_seed(3, "training_subset"),
                                   "replace_index": None}
    assert twin.training_set()["replace_index"] == 42
    # drop_index is the older name of the same replacement
    old = build_problem({"name": "digits_mlp", "width": 4, "n_train": 100,
                         "estimate_constants": False, "drop_index": 42}, seed=3)
    assert torch.equal(old.train_indices, twin.train_indices)


def test_network_constants_estimated_at_x0():
    problem = build_problem({"name": "digits_mlp"}, seed=0)
    c = problem.constants()
    assert c["kind"] == "estimated" and c["f_low"] == 0.0
    assert c["Delta"] > 2.0 and c["L"] > 0 and c["sigma"] > 0  # CE at init ≈ log 10
    # the cache, the state dict, and re-estimation after the parameters moved
    generator = gen()
    state = generator.get_state()
    with torch.no_grad():
        for p in problem.params:
            p.add_(0.1)
    moved = flat(problem.params).detach().clone()
    fresh = build_problem({"name": "digits_mlp"}, seed=0)
    with torch.no_grad():
        for p in fresh.params:
            p.add_(0.1)
    assert fresh.constants() == c  # estimated at x_0, not where the parameters are
    assert torch.equal(flat(fresh.params).detach(), moved)  # parameters restored
    assert torch.equal(generator.get_state(), state)
    other = build_problem({"name": "digits_mlp"}, seed=0)
    other.load_state_dict(problem.state_dict())
    assert other.constants() == c
    off = build_problem({"name": "digits_mlp", "estimate_constants": False}, seed=0).constants()
    assert off["L"] is None and off["kind"] == "estimated"


def test_hessian_power_iteration_on_known_matrix():
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen(), dtype=F64))
    a = q @ torch.diag(torch.tensor([1.0, -4.0, 2.0, 0.5, -1.0, 3.0], dtype=F64)) @ q.T
    x = torch.randn(6, dtype=F64, generator=gen(1), requires_grad=True)
    loss = 0.5 * x @ a @ x
    assert hessian_spectral_norm(loss, [x], iters=200, generator=gen()) == pytest.approx(4.0)


def test_float64_and_a_few_training_steps():
    problem = build_problem({"name": "digits_mlp", "width": 16}, seed=0, dtype="float64")
    assert all(p.dtype == F64 for p in problem.params)
    assert problem.train_inputs.dtype == F64
    before, _ = problem.full_gradient()
    optimizer = torch.optim.SGD(problem.params, lr=0.1, momentum=0.9)
    generator = gen()
    for _ in range(60):
        optimizer.zero_grad()
        problem.stochastic_loss(generator)
        optimizer.step()
    after, _ = problem.full_gradient()
    assert after < before
    assert problem.evaluate()["train_acc"] > 0.5


# ------------------------------------------------------------------------------------------------
# cifar10


def test_cifar10_on_a_tiny_folder(cifar_dir):
    for data_dir in (cifar_dir, cifar_dir.parent):  # the batches folder or its parent
        problem = build_problem({"name": "cifar10", "data_dir": str(data_dir), "width": 4,
                                 "batch_size": 4, "eval_batch_size": 16}, seed=0)
        assert (problem.n_train, problem.n_test) == (40, 12)
        assert problem.d == Cifar10.d_formula(4)
        assert problem.train_inputs.dtype == torch.uint8
    x = problem.prepare_inputs(problem.train_inputs).double()
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert (x.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-4
    loss0, grads = problem.full_gradient()
    assert [g.shape for g in grads] == [p.shape for p in problem.params]
    optimizer = torch.optim.SGD(problem.params, lr=0.05)
    generator = gen()
    for _ in range(3):
        optimizer.zero_grad()
        assert torch.isfinite(problem.stochastic_loss(generator))
        optimizer.step()
    metrics = problem.evaluate()
    assert set(metrics) == {"test_loss", "test_acc", "train_acc"}
    sub = build_problem({"name": "cifar10", "data_dir": str(cifar_dir), "width": 2,
                         "n_train": 10, "n_test": 5, "power_iters": 3, "variance_batches": 2},
                        seed=0)
    assert (sub.n_train, sub.n_test) == (10, 5)
    c = sub.constants()
    assert c["kind"] == "estimated" and c["L"] > 0 and c["sigma"] > 0


def test_cifar10_missing_data(tmp_path, cifar_dir):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*data_batch_1"):
        build_problem({"name": "cifar10", "data_dir": str(missing)}, seed=0)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "data_batch_1").write_bytes((cifar_dir / "data_batch_1").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"partial.*lacks data_batch_2.*test_batch"):
        build_problem({"name": "cifar10", "data_dir": str(partial)}, seed=0)
    with pytest.raises(ValueError, match="data_dir=None"):
        build_problem({"name": "cifar10"}, seed=0)
    with pytest.raises(ValueError, match="n_train=1000"):
        build_problem({"name": "cifar10", "data_dir": str(cifar_dir), "n_train": 1000}, seed=0)


# ------------------------------------------------------------------------------------------------
# options


@pytest.mark.parametrize("cfg, message", [
    ({"name": "scaled_separable", "d": 0}, "d=0"),
    ({"name": "scaled_separable", "d": 2.5}, "d=2.5"),
    ({"name": "scaled_separable", "d": True}, "d=True"),
    ({"name": "scaled_separable", "sigma": -1.0}, "sigma=-1.0"),
    ({"name": "naive_separable", "alpha": float("nan")}, "alpha=nan"),
    ({"name": "naive_separable", "omega": -2}, "omega=-2"),
    ({"name": "scaled_separable", "init_scale": -1}, "init_scale=-1"),
    ({"name": "scaled_separable", "init_dist": "cauchy"}, "init_dist='cauchy'"),
    ({"name": "quadratic", "d": -3}, "d=-3"),
    ({"name": "quadratic", "init": float("inf")}, "init=inf"),
    ({"name": "quadratic", "sigma": -0.1}, "sigma=-0.1"),
    ({"name": "teacher_student", "width": 0}, "width=0"),
    ({"name": "teacher_student", "batch_size": 0}, "batch_size=0"),
    ({"name": "teacher_student", "activation": "gelu"}, "activation='gelu'"),
    ({"name": "teacher_student", "label_noise": -1.0}, "label_noise=-1.0"),
    ({"name": "teacher_student", "n_train": 0}, "n_train=0"),
    ({"name": "digits_mlp", "width": -4}, "width=-4"),
    ({"name": "digits_mlp", "depth": 0}, "depth=0"),
    ({"name": "digits_mlp", "batch_size": -1}, "batch_size=-1"),
    ({"name": "digits_mlp", "n_train": 5000}, "n_train=5000"),
    ({"name": "digits_mlp", "test_fraction": 1.0}, "test_fraction=1.0"),
    ({"name": "digits_mlp", "drop_index": 3}, "drop_index=3"),
    ({"name": "digits_mlp", "n_train": 10, "drop_index": 10}, "drop_index=10"),
    ({"name": "digits_mlp", "n_train": 10, "replace_index": 10}, "replace_index=10"),
    ({"name": "digits_mlp", "replace_index": 3}, "replace_index=3"),
    ({"name": "digits_mlp", "n_train": 10, "replace_index": 1, "drop_index": 1}, "both set"),
    ({"name": "digits_mlp", "subset_seed": -1}, "subset_seed=-1"),
    ({"name": "digits_mlp", "estimate_constants": "yes"}, "estimate_constants='yes'"),
    ({"name": "digits_mlp", "power_iters": 0}, "power_iters=0"),
    ({"name": "digits_cnn", "width": 0}, "width=0"),
    ({"name": "digits_cnn", "eval_batch_size": 0}, "eval_batch_size=0"),
    ({"name": "cifar10", "width": 0}, "width=0"),
    ({"name": "nope"}, "name='nope'"),
    ({"d": 3}, "name=None"),
    ({"name": "quadratic", "width": 3}, r"unknown option\(s\) \['width'\]"),
])
def test_bad_options_raise_naming_the_value(cfg, message):
    with pytest.raises(ValueError, match=message):
        build_problem(cfg, seed=0)


def test_bad_build_arguments():
    with pytest.raises(ValueError, match="dtype='float16'"):
        build_problem({"name": "quadratic"}, seed=0, dtype="float16")
    with pytest.raises(ValueError, match="device='tpu'"):
        build_problem({"name": "quadratic"}, seed=0, device="tpu")
    with pytest.raises(ValueError, match="seed=-1"):
        build_problem({"name": "quadratic"}, seed=-1)


def test_registry_and_options_listing():
    assert set(PROBLEMS) == {"scaled_separable", "naive_separable", "rotated_separable",
                             "quadratic", "teacher_student", "digits_mlp", "digits_cnn",
                             "mnist1d", "mnist1d_cnn", "cifar10", "zero_chain"}
    assert problem_options("scaled_separable") == {
        "d": 1000, "sigma": 1.0, "alpha": 0.5, "omega": 2.0, "init_scale": 2.0,
        "init_dist": "normal", "shift": 0.0, "noise": "gaussian", "noise_a": 1.0,
        "noise_b": 1.0}
    assert problem_options("cifar10")["data_dir"] is None


def test_omegaconf_config_is_accepted():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"name": "scaled_separable", "d": 12, "sigma": 0.5})
    assert build_problem(cfg, seed=0).d == 12


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(SMALL))
def test_cuda_matches_cpu(name):
    cfg = {"name": name, **SMALL[name]}
    cpu = build_problem(cfg, seed=0, dtype=F64)
    gpu = build_problem(cfg, seed=0, dtype=F64, device="cuda")
    assert torch.equal(flat(cpu.params).detach(), flat(gpu.params).detach().cpu())
    torch.testing.assert_close(stochastic_grads(cpu, gen(1)), stochastic_grads(gpu, gen(1)).cpu())
    torch.testing.assert_close(flat(cpu.full_gradient()[1]), flat(gpu.full_gradient()[1]).cpu())


def test_evaluate_reuses_the_full_gradient_forward_pass_only_while_x_is_unchanged(monkeypatch):
    fresh = build_problem({"name": "digits_mlp", "width": 8, "estimate_constants": False}, seed=0)
    expected = fresh.evaluate()  # no full gradient yet: its own pass over the training set
    problem = build_problem({"name": "digits_mlp", "width": 8, "estimate_constants": False}, seed=0)
    problem.full_gradient()
    passes = []
    original = type(problem)._sums
    monkeypatch.setattr(type(problem), "_sums", lambda self, *a: passes.append(1) or original(self, *a))
    assert problem.evaluate() == expected
    assert len(passes) == 1  # the test set only: train accuracy came from full_gradient
    with torch.no_grad():
        for p in problem.params:
            p.mul_(0.5)
    for p in fresh.params:
        with torch.no_grad():
            p.mul_(0.5)
    passes.clear()
    assert problem.evaluate() == fresh.evaluate()
    assert len(passes) == 4  # x moved: both problems recount the training set (2 passes each)
