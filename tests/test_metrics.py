"""lionconv.metrics against hand-computed values, THEORY §3 (KKT residual) and §5 (ℓ1/ℓ2 ratio),
float64 accuracy at d = 1e7, and the one-sync-per-call rule."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lionconv import metrics
from lionconv.metrics import (feasibility_violation, gradient_metrics, kkt_residual,
                              minibatch_metrics, reduce_per_tensor)

WHOLE_KEYS = {"grad_l1", "grad_l2", "l1_l2", "ratio_r", "kkt_residual", "feasibility", "x_linf",
              "tau_grad", "d"}
ROW_KEYS = {"tensor", "numel", "grad_l1", "grad_l2", "l1_l2", "ratio_r", "kkt_residual",
            "feasibility"}


def split_like(values, sizes, dtype=torch.float32):
    """`values` (a list) cut into consecutive 1-D tensors of the given sizes."""
    flat = torch.tensor(values, dtype=dtype)
    return list(flat.split(sizes))


# g = [3, −4, 0], x = [1, 2, −1], λ = 0.5 (power of two: every value below is exact)
G, X, LAM = [3.0, -4.0, 0.0], [1.0, 2.0, -1.0], 0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_hand_computed_values_whole_model(dtype):
    sizes = [2, 0, 1]  # includes a zero-size tensor
    grads, params = split_like(G, sizes, dtype), split_like(X, sizes, dtype)
    whole, rows = gradient_metrics(params, grads, LAM)
    assert set(whole) == WHOLE_KEYS
    assert whole["grad_l1"] == 7.0
    assert whole["grad_l2"] == 5.0
    assert whole["l1_l2"] == pytest.approx(7 / 5, rel=1e-15)
    assert whole["ratio_r"] == pytest.approx(7 / (math.sqrt(3) * 5), rel=1e-15)
    assert whole["kkt_residual"] == 4.5               # 7 + 0.5·(3 − 8 + 0)
    assert whole["feasibility"] == 0.0                # max(0, 0.5·2 − 1)
    assert whole["x_linf"] == 2.0
    assert whole["tau_grad"] == 3.0                   # smallest non-zero |g_j|
    assert whole["d"] == 3 and isinstance(whole["d"], int)
    assert len(rows) == 3 and all(set(r) == ROW_KEYS for r in rows)


def test_hand_computed_values_per_tensor():
    sizes = [2, 0, 1]
    whole, rows = gradient_metrics(split_like(X, sizes), split_like(G, sizes), LAM,
                                   names=["w", "empty", "b"])
    w, empty, b = rows
    assert [r["tensor"] for r in rows] == ["w", "empty", "b"]
    assert [r["numel"] for r in rows] == [2, 0, 1]
    # w: g = [3, −4], x = [1, 2]
    assert (w["grad_l1"], w["grad_l2"], w["kkt_residual"], w["feasibility"]) == (7, 5, 4.5, 0)
    assert w["ratio_r"] == pytest.approx(7 / (math.sqrt(2) * 5), rel=1e-15)
    assert w["l1_l2"] == pytest.approx(1.4, rel=1e-15)
    # zero-size: contributes 0, ratios undefined
    assert (empty["grad_l1"], empty["grad_l2"], empty["kkt_residual"], empty["feasibility"]) \
        == (0, 0, 0, 0)
    assert math.isnan(empty["ratio_r"]) and math.isnan(empty["l1_l2"])
    # b: g = [0], x = [−1]: zero gradient -> NaN ratios, no KKT violation, inside the box
    assert (b["grad_l1"], b["grad_l2"], b["kkt_residual"], b["feasibility"]) == (0, 0, 0, 0)
    assert math.isnan(b["ratio_r"])
    # whole-model sums of the per-tensor values
    assert whole["grad_l1"] == sum(r["grad_l1"] for r in rows)
    assert whole["kkt_residual"] == sum(r["kkt_residual"] for r in rows)


def test_default_names_and_per_tensor_off():
    grads, params = split_like(G, [1, 2]), split_like(X, [1, 2])
    _, rows = gradient_metrics(params, grads, 0.0)
    assert [r["tensor"] for r in rows] == ["param0", "param1"]
    whole, rows = gradient_metrics(params, grads, 0.0, per_tensor=False)
    assert rows == [] and whole["grad_l1"] == 7.0


def test_shaped_tensors_and_a_single_tensor_agree():
    torch.manual_seed(0)
    shapes = [(5, 7), (7,), (3, 4, 2), (0, 3), (1,)]
    grads = [torch.randn(s) for s in shapes]
    params = [torch.randn(s) for s in shapes]
    whole, _ = gradient_metrics(params, grads, 0.3)
    flat, _ = gradient_metrics([torch.cat([x.reshape(-1) for x in params])],
                               [torch.cat([g.reshape(-1) for g in grads])], 0.3)
    for key in WHOLE_KEYS:
        assert whole[key] == pytest.approx(flat[key], rel=1e-13), key


@pytest.mark.parametrize("block_size", [1, 3, 7, 64, metrics.BLOCK_SIZE])
def test_blocking_does_not_change_the_values(block_size):
    """Tensors cut into several blocks, several tensors sharing one block, zeros, empties."""
    gen = torch.Generator().manual_seed(1)
    sizes = [17, 0, 5, 1, 40]
    grads = [torch.randn(n, generator=gen) for n in sizes]
    grads[2][1:4] = 0
    grads[3].zero_()
    params = [torch.randn(n, generator=gen) for n in sizes]
    table = reduce_per_tensor(grads, params, block_size=block_size).numpy()
    for i, (g, x) in enumerate(zip(grads, params)):
        g64, x64 = g.double().numpy(), x.double().numpy()
        nonzero = np.abs(g64[g64 != 0])
        expected = [np.abs(g64).sum(), (g64 ** 2).sum(), (g64 * x64).sum(),
                    np.abs(x64).max(initial=0.0), nonzero.min(initial=np.inf)]
        np.testing.assert_allclose(table[:, i], expected, rtol=1e-13, atol=1e-14)


def test_inputs_are_not_modified():
    grads = [torch.tensor([0.0, -2.0, 3.0]), torch.tensor([[0.0, 1.0]])]
    params = [torch.tensor([1.0, -5.0, 0.5]), torch.tensor([[-1.0, 0.0]])]
    before = [t.clone() for t in grads + params]
    gradient_metrics(params, grads, 0.5)
    minibatch_metrics(grads)
    assert all(torch.equal(a, b) for a, b in zip(before, grads + params))


def test_parameters_that_require_grad_are_accepted():
    model = torch.nn.Linear(3, 2)
    loss = model(torch.ones(4, 3)).square().sum()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    whole, rows = gradient_metrics(list(model.parameters()), grads, 0.1,
                                   names=[n for n, _ in model.named_parameters()])
    assert [r["tensor"] for r in rows] == ["weight", "bias"]
    assert whole["d"] == 8 and whole["grad_l1"] > 0


# ----------------------------------------------------------------------------- THEORY §3

def kkt_point(g: torch.Tensor, lam: float, gen) -> torch.Tensor:
    """x on the box ‖x‖∞ ≤ 1/λ satisfying KKT for gradient g: x_i = −sign(g_i)/λ on the
    boundary where g_i ≠ 0, anywhere strictly inside where g_i = 0."""
    inside = (2 * torch.rand(g.shape, generator=gen, dtype=g.dtype) - 1) * (0.9 / lam)
    return torch.where(g != 0, -torch.sign(g) / lam, inside)


def test_kkt_residual_is_zero_at_a_kkt_point_and_positive_off_it():
    lam = 0.25                                         # box radius 4, all arithmetic exact
    gen = torch.Generator().manual_seed(2)
    g = torch.randn(1000, generator=gen, dtype=torch.float64)
    g[::7] = 0                                          # zero gradient -> interior coordinates
    x = kkt_point(g, lam, gen)
    grads, params = list(g.split([600, 400])), list(x.split([600, 400]))
    whole, rows = gradient_metrics(params, grads, lam)
    assert whole["kkt_residual"] == 0.0
    assert all(r["kkt_residual"] == 0.0 for r in rows)
    assert whole["feasibility"] == 0.0 and whole["x_linf"] == 1 / lam

    k = 1                                               # g_k ≠ 0
    interior = x.clone()
    interior[k] = 0.0                                   # inside the box but ∂_k f ≠ 0
    whole, _ = gradient_metrics(list(interior.split([600, 400])), grads, lam)
    assert whole["kkt_residual"] == pytest.approx(abs(g[k].item()), rel=1e-12)

    wrong_side = x.clone()
    wrong_side[k] = torch.sign(g[k]) / lam              # on the boundary with the wrong sign
    whole, _ = gradient_metrics(list(wrong_side.split([600, 400])), grads, lam)
    assert whole["kkt_residual"] == pytest.approx(2 * abs(g[k].item()), rel=1e-12)


def test_kkt_residual_is_lambda_times_the_frank_wolfe_gap():
    """G_λ(x) = λ·max_{‖y‖∞≤1/λ} ⟨g, x − y⟩, the max attained at y = −sign(g)/λ."""
    rng = np.random.default_rng(3)
    for lam in [0.1, 0.7, 3.0]:
        g = rng.standard_normal(500)
        x = rng.uniform(-1 / lam, 1 / lam, 500)
        whole, _ = gradient_metrics([torch.from_numpy(x)], [torch.from_numpy(g)], lam)
        y_star = -np.sign(g) / lam
        gap = lam * np.dot(g, x - y_star)
        assert whole["kkt_residual"] == pytest.approx(gap, rel=1e-12)
        assert whole["kkt_residual"] >= 0.0             # on the box
        # no other feasible y does better (vertices of the box and interior points)
        for _ in range(20):
            y = rng.choice([-1.0, 1.0], 500) / lam * rng.uniform(0, 1, 500) ** 0.1
            assert lam * np.dot(g, x - y) <= gap + 1e-9


def test_without_weight_decay_the_residual_is_the_l1_norm():
    gen = torch.Generator().manual_seed(4)
    grads = [torch.randn(30, generator=gen), torch.randn(4, 5, generator=gen)]
    params = [100 * torch.randn(30, generator=gen), 100 * torch.randn(4, 5, generator=gen)]
    whole, rows = gradient_metrics(params, grads, 0.0)
    assert whole["kkt_residual"] == whole["grad_l1"]
    assert whole["feasibility"] == 0.0                  # no box without decay
    assert all(r["kkt_residual"] == r["grad_l1"] and r["feasibility"] == 0.0 for r in rows)


def test_feasibility_outside_the_box():
    lam = 0.5                                           # box radius 2
    params = [torch.tensor([1.0, -3.0]), torch.tensor([0.5]), torch.tensor([2.0])]
    grads = [torch.zeros(2), torch.zeros(1), torch.zeros(1)]
    whole, rows = gradient_metrics(params, grads, lam)
    assert whole["feasibility"] == 0.5                  # 0.5·3 − 1
    assert [r["feasibility"] for r in rows] == [0.5, 0.0, 0.0]  # |x| = 2 is on the boundary
    assert whole["x_linf"] == 3.0
    assert whole["tau_grad"] == math.inf                # g = 0
    assert math.isnan(whole["ratio_r"]) and whole["grad_l1"] == 0.0


def test_tensor_building_blocks_match_and_do_not_sync():
    grads, params = split_like(G, [2, 0, 1]), split_like(X, [2, 0, 1])
    residual = kkt_residual(grads, params, LAM)
    violation = feasibility_violation([torch.tensor([1.0, -3.0])], LAM)
    assert residual.dtype == violation.dtype == torch.float64
    assert residual.dim() == violation.dim() == 0
    assert residual.item() == 4.5 and violation.item() == 0.5
    assert feasibility_violation([], LAM).item() == 0.0


# ----------------------------------------------------------------------------- accuracy

def test_float64_accumulation_on_1e7_float32_entries():
    gen = torch.Generator().manual_seed(5)
    n = 10_000_000
    # Same-magnitude entries: a float32 accumulator drifts once the sum is ~1e7 times larger.
    g = (1 + torch.rand(n, generator=gen)) * torch.sign(torch.rand(n, generator=gen) - 0.5)
    x = torch.rand(n, generator=gen) - 0.5
    sizes = [4_000_000, 3_000_000, 2_999_999, 1]
    lam = 0.1
    whole, rows = gradient_metrics(list(x.split(sizes)), list(g.split(sizes)), lam)

    g64, x64 = g.numpy().astype(np.float64), x.numpy().astype(np.float64)
    l1, l2 = np.abs(g64).sum(), np.sqrt(np.dot(g64, g64))
    kkt = l1 + lam * np.dot(g64, x64)
    for key, ref in [("grad_l1", l1), ("grad_l2", l2), ("kkt_residual", kkt)]:
        assert abs(whole[key] - ref) <= 1e-6 * abs(ref), key
    big = rows[0]
    assert abs(big["grad_l1"] - np.abs(g64[:4_000_000]).sum()) <= 1e-6 * big["grad_l1"]

    # Plain float32 reductions, for the record (their error varies by build; not asserted).
    err_l1 = abs(torch.linalg.vector_norm(g, 1).item() - l1) / l1
    err_l2 = abs(torch.linalg.vector_norm(g, 2).item() - l2) / l2
    ours = max(abs(whole["grad_l1"] - l1) / l1, abs(whole["grad_l2"] - l2) / l2)
    print(f"\nrelative error at d=1e7: float32 vector_norm l1 {err_l1:.1e}, l2 {err_l2:.1e}; "
          f"gradient_metrics {ours:.1e}")


# ----------------------------------------------------------------------------- THEORY §5

D_LARGE = 1_000_000


@pytest.mark.parametrize("name, draw, expected", [
    ("gaussian", lambda gen: torch.randn(D_LARGE, generator=gen, dtype=torch.float64),
     math.sqrt(2 / math.pi)),
    ("uniform", lambda gen: 2 * torch.rand(D_LARGE, generator=gen, dtype=torch.float64) - 1,
     math.sqrt(3) / 2),
    ("laplace", lambda gen: torch.log(torch.rand(D_LARGE, generator=gen, dtype=torch.float64))
     * torch.sign(torch.rand(D_LARGE, generator=gen, dtype=torch.float64) - 0.5),
     1 / math.sqrt(2)),
    ("equal magnitudes", lambda gen: torch.sign(
        torch.rand(D_LARGE, generator=gen, dtype=torch.float64) - 0.5), 1.0),
])
def test_ratio_reference_values(name, draw, expected):
    gen = torch.Generator().manual_seed(6)
    g = draw(gen)
    sizes = [D_LARGE // 2, D_LARGE // 4, D_LARGE - D_LARGE // 2 - D_LARGE // 4]
    whole, rows = gradient_metrics([torch.zeros(n) for n in sizes], list(g.split(sizes)), 0.0)
    assert whole["ratio_r"] == pytest.approx(expected, abs=5e-3), name
    assert all(r["ratio_r"] == pytest.approx(expected, abs=1e-2) for r in rows)
    assert whole["l1_l2"] == pytest.approx(expected * math.sqrt(D_LARGE), rel=5e-3)
    mb = minibatch_metrics(list(g.split(sizes)))
    assert mb["mb_ratio_r"] == pytest.approx(whole["ratio_r"], rel=1e-12)


@pytest.mark.parametrize("s", [1, 100, 10_000])
def test_sparse_vectors_have_small_ratio(s):
    gen = torch.Generator().manual_seed(7)
    g = torch.zeros(D_LARGE, dtype=torch.float64)
    support = torch.randperm(D_LARGE, generator=gen)[:s]
    g[support] = torch.randn(s, generator=gen, dtype=torch.float64)
    whole, _ = gradient_metrics([torch.zeros(D_LARGE)], [g], 0.0)
    assert 1 / math.sqrt(D_LARGE) <= whole["ratio_r"] <= math.sqrt(s / D_LARGE) * (1 + 1e-12)


# ----------------------------------------------------------------------------- minibatch

def test_minibatch_metrics_are_the_same_norms():
    grads = split_like(G, [2, 0, 1])
    assert minibatch_metrics(grads) == pytest.approx(
        {"mb_grad_l1": 7.0, "mb_grad_l2": 5.0, "mb_l1_l2": 1.4,
         "mb_ratio_r": 7 / (math.sqrt(3) * 5)}, rel=1e-15)
    zero = minibatch_metrics([torch.zeros(3)])
    assert zero["mb_grad_l1"] == 0.0 and math.isnan(zero["mb_ratio_r"])


# ----------------------------------------------------------------------------- one sync

@pytest.fixture
def count_syncs(monkeypatch):
    """Counts metrics._to_host calls and fails on any other device-to-host read."""
    calls = {"to_host": 0}
    inside = {"flag": False}
    original = metrics._to_host

    def counting_to_host(table):
        calls["to_host"] += 1
        inside["flag"] = True
        try:
            return original(table)
        finally:
            inside["flag"] = False

    def forbid(name):
        real = getattr(torch.Tensor, name)

        def guarded(self, *args, **kwargs):
            if not inside["flag"]:
                raise AssertionError(f"Tensor.{name} (a host sync) outside metrics._to_host")
            return real(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, guarded)

    for name in ["item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"]:
        forbid(name)
    monkeypatch.setattr(metrics, "_to_host", counting_to_host)
    return calls


@pytest.mark.parametrize("block_size", [3, metrics.BLOCK_SIZE])
def test_exactly_one_host_sync_per_call(count_syncs, monkeypatch, block_size):
    # The device path (the NumPy path of small CPU models has no device to synchronise with).
    monkeypatch.setattr(metrics, "SMALL_MODEL", 0)
    monkeypatch.setattr(metrics, "BLOCK_SIZE", block_size)
    gen = torch.Generator().manual_seed(8)
    shapes = [(4, 5), (5,), (0,), (3, 3)]
    grads = [torch.randn(s, generator=gen) for s in shapes]
    params = [torch.randn(s, generator=gen) for s in shapes]
    whole, rows = gradient_metrics(params, grads, 0.1)
    assert count_syncs["to_host"] == 1 and len(rows) == 4
    minibatch_metrics(grads)
    assert count_syncs["to_host"] == 2
    kkt_residual(grads, params, 0.1)
    feasibility_violation(params, 0.1)
    reduce_per_tensor(grads, params, block_size=block_size)
    assert count_syncs["to_host"] == 2                  # building blocks stay on the device


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "x", None])
def test_bad_weight_decay(bad):
    with pytest.raises(ValueError, match="weight_decay"):
        gradient_metrics([torch.zeros(2)], [torch.zeros(2)], bad)
    with pytest.raises(ValueError, match="weight_decay"):
        kkt_residual([torch.zeros(2)], [torch.zeros(2)], bad)


def test_bad_tensor_lists():
    x, g = [torch.zeros(2), torch.zeros(3)], [torch.zeros(2)]
    with pytest.raises(ValueError, match="len"):
        gradient_metrics(x, g, 0.0)
    with pytest.raises(ValueError, match="shape"):
        gradient_metrics([torch.zeros(2)], [torch.zeros(3)], 0.0)
    with pytest.raises(ValueError, match="names"):
        gradient_metrics([torch.zeros(2)], [torch.zeros(2)], 0.0, names=["a", "b"])
    with pytest.raises(ValueError, match=r"grads\[0\]"):
        gradient_metrics([torch.zeros(2)], [None], 0.0)
    with pytest.raises(ValueError, match=r"grads\[0\]"):
        minibatch_metrics([None])


def test_no_tensors_at_all():
    whole, rows = gradient_metrics([], [], 0.5)
    assert rows == [] and whole["d"] == 0 and whole["grad_l1"] == 0.0
    assert math.isnan(whole["ratio_r"]) and whole["tau_grad"] == math.inf
    whole, rows = gradient_metrics([torch.empty(0), torch.empty(2, 0)],
                                   [torch.empty(0), torch.empty(2, 0)], 0.5)
    assert whole["d"] == 0 and whole["kkt_residual"] == 0.0 and len(rows) == 2


def test_bad_block_size():
    with pytest.raises(ValueError, match="block_size"):
        reduce_per_tensor([torch.zeros(2)], block_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    sizes = [2, 0, 1]
    cpu = gradient_metrics(split_like(X, sizes), split_like(G, sizes), LAM)
    cuda = gradient_metrics([t.cuda() for t in split_like(X, sizes)],
                            [t.cuda() for t in split_like(G, sizes)], LAM)
    assert cpu[0] == pytest.approx(cuda[0], nan_ok=True)


def numpy_path(grads, params):
    return metrics._takes_numpy_path(grads, params, sum(g.numel() for g in grads))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_small_model_numpy_path_matches_the_blocked_path(monkeypatch, dtype):
    """Small CPU models take a NumPy path; it must give the blocked table, for every option."""
    gen = torch.Generator().manual_seed(3)
    shapes = [(7, 5), (0,), (13,), (2, 3, 4), (0, 2)]
    grads = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    grads[2][::3] = 0.0                   # zeros for the min-non-zero row
    grads[0] = grads[0].T                 # not contiguous
    params = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    params[0] = params[0].T.requires_grad_()
    options = [dict(params=params), dict(params=params, dot_with_x=False),
               dict(params=params, min_nonzero=False), dict(params=None)]
    assert numpy_path(grads, params)
    small = [torch.from_numpy(metrics._reduce_to_host(
        grads, kw["params"], dot_with_x=kw.get("dot_with_x", True),
        min_nonzero=kw.get("min_nonzero", True))) for kw in options]
    blocked = [metrics.reduce_per_tensor(grads, **kw) for kw in options]
    monkeypatch.setattr(metrics, "SMALL_MODEL", 0)
    assert not numpy_path(grads, params)
    for kw, a, b in zip(options, small, blocked):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=0, msg=str(kw))
    assert not small[1][2].any() and not small[3][2:4].any()   # rows left at 0
    assert torch.isinf(small[2][4]).all()


def test_numpy_path_only_for_small_cpu_float_models():
    small = [torch.zeros(3), torch.zeros(2, dtype=torch.float64)]
    assert numpy_path(small, None)
    assert not numpy_path([torch.zeros(3, dtype=torch.bfloat16)], None)
    assert not numpy_path(small, [torch.zeros(3, dtype=torch.float16),
                                                 torch.zeros(2)])
    assert not numpy_path([torch.zeros(metrics.SMALL_MODEL + 1)], None)
    if torch.cuda.is_available():
        assert not numpy_path([torch.zeros(3, device="cuda")], None)


def test_nan_propagates_on_both_paths(monkeypatch):
    grads, params = [torch.tensor([1.0, math.nan])], [torch.tensor([math.nan, 0.0])]
    for small_model in (metrics.SMALL_MODEL, 0):
        monkeypatch.setattr(metrics, "SMALL_MODEL", small_model)
        whole, _ = gradient_metrics(params, grads, 0.1)
        assert math.isnan(whole["grad_l1"]) and math.isnan(whole["x_linf"])


def test_per_tensor_metrics_of_stacked_steps_equal_one_call_per_step():
    gen = torch.Generator().manual_seed(4)
    shapes, names = [(3, 2), (0,), (4,)], ["a", "b", "c"]
    steps = [([torch.randn(s, generator=gen) for s in shapes],
              [torch.randn(s, generator=gen) for s in shapes]) for _ in range(3)]
    stacked = np.stack([metrics.gradient_sums(x, g, 0.2) for x, g in steps])
    columns = metrics.per_tensor_metrics(stacked, [6, 0, 4], 0.2)
    expected = [row for x, g in steps for row in gradient_metrics(x, g, 0.2, names=names)[1]]
    assert len(columns["numel"]) == len(expected) == 9
    for i, row in enumerate(expected):
        for key in metrics.METRIC_KEYS + ("numel",):
            np.testing.assert_equal(columns[key][i], row[key])


@pytest.mark.parametrize("where", [0, 1])
def test_nan_in_any_tensor_reaches_the_whole_model(where):
    params = [torch.ones(2), torch.ones(3)]
    grads = [torch.ones(2), torch.ones(3)]
    params[where][0] = math.nan
    grads[where][1] = math.nan
    whole, _ = gradient_metrics(params, grads, 0.1)
    assert math.isnan(whole["x_linf"]) and math.isnan(whole["tau_grad"])
    assert math.isnan(whole["grad_l1"]) and math.isnan(whole["feasibility"])


def test_gradient_sums_object_equals_the_function_and_checks_each_call():
    gen = torch.Generator().manual_seed(9)
    params = [torch.randn(4, 3, generator=gen), torch.randn(5, generator=gen)]
    grads = [torch.randn(4, 3, generator=gen), torch.randn(5, generator=gen)]
    sums = metrics.GradientSums(params, 0.3, tau_grad=True)
    np.testing.assert_array_equal(sums(grads), metrics.gradient_sums(params, grads, 0.3,
                                                                     tau_grad=True))
    with pytest.raises(ValueError, match=r"grads\[1\].shape"):
        sums([grads[0], torch.zeros(4)])
    with pytest.raises(ValueError, match=r"grads\[0\]"):
        sums([None, grads[1]])
    with pytest.raises(ValueError, match="len"):
        sums(grads[:1])
    # a gradient in a dtype NumPy lacks takes the device path, with the same result
    bf16 = sums([g.bfloat16() for g in grads])
    np.testing.assert_allclose(bf16, sums([g.bfloat16().float() for g in grads]), rtol=1e-15)
