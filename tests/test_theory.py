"""lionconv.theory against hand-computed numbers and its own identities (THEORY §3–§8)."""
import math

import numpy as np
import pytest

from lionconv import theory as th


def test_horizon_schedule_by_hand():
    # K=16, d=4: √K=4, K^{3/4}=8, √d=2 -> β1 = 1 − 1/4, β2 = 1 − 2/4, η = 1/(2·8)
    b1, b2, lr = th.horizon_schedule(16, 4, 1.0, 2.0, 1.0)
    assert (b1, b2, lr) == pytest.approx((0.75, 0.5, 0.0625))


def test_bound_template_by_hand():
    # K=16, d=4, Δ=2, L=3, σ=0.5, λ=0 (D=1), c=(1,1,1) -> β1=β2=0.75, η=1/16, e0=0
    #   Δ/(ηK)            = 2/(1/16·16)            = 2
    #   Lη d D²/2         = 3·(1/16)·4·1/2         = 0.375
    #   bracket: LηD√d/(1−β2) = 3·(1/16)·2/0.25    = 1.5
    #            σ√(1−β2)     = 0.5·0.5            = 0.25
    #            (1−β1)σ      = 0.25·0.5           = 0.125   -> 1.875, times 2√d = 4 -> 7.5
    #   total = 2 + 0.375 + 7.5 = 9.875
    assert th.bound_template(16, 4, 2, 3, 0.5, 1 / 16, 0.75, 0.75) == pytest.approx(9.875)
    # same with λ=0.1 (D=2) and ‖e0‖₂ = 1:
    #   2 + 3·(1/16)·4·4/2 = 2 + 1.5 ; bracket: 1/(16·0.25) = 0.25, 3·(1/16)·2·2/0.25 = 3,
    #   0.25, 0.125 -> 3.625·4 = 14.5 ; total = 18.0
    assert th.bound_template(16, 4, 2, 3, 0.5, 1 / 16, 0.75, 0.75, 0.1, 1.0) == pytest.approx(18.0)


def test_bound_with_schedule_by_hand():
    # same case through the K-expansion:
    #   √d K^{-1/4} = 1 ; [Δ/c3 + 2LDc3/c2 + 2σ√c2] = 2 + 6 + 1 = 9
    #   √d K^{-1/2} = 0.5 ; [2σc1 + 0] = 1 -> 0.5
    #   L D² c3 √d/(2K^{3/4}) = 3·2/16 = 0.375 ; total 9.875
    assert th.bound_with_schedule(16, 4, 2, 3, 0.5, 1, 1, 1) == pytest.approx(9.875)


def test_template_equals_schedule_expansion_random():
    rng = np.random.default_rng(0)
    for _ in range(200):
        K = float(rng.integers(16, 10**6))
        d = float(rng.integers(1, 10**7))
        Delta, L, sigma, e0 = rng.uniform(0.01, 10, size=4)
        c1, c2 = rng.uniform(0.01, 3.9, size=2)
        c3 = rng.uniform(0.01, 10)
        wd = float(rng.choice([0.0, 0.1, 1.0]))
        b1, b2, lr = th.horizon_schedule(K, d, c1, c2, c3)
        a = th.bound_template(K, d, Delta, L, sigma, lr, b1, b2, wd, e0)
        b = th.bound_with_schedule(K, d, Delta, L, sigma, c1, c2, c3, wd, e0)
        assert a == pytest.approx(b, rel=1e-10)


def test_vectorised_over_K():
    K = np.array([16.0, 256.0, 4096.0])
    b = th.bound_with_schedule(K, 4, 2, 3, 0.5, 1, 1, 1)
    assert b.shape == (3,) and b[0] == pytest.approx(9.875) and np.all(np.diff(b) < 0)


@pytest.mark.parametrize("wd", [0.0, 0.5])
def test_optimal_constants_minimise_bracket(wd):
    Delta, L, sigma = 2.0, 3.0, 0.5
    D = th.box_factor(wd)

    def bracket(c2, c3):
        return Delta / c3 + 2 * L * D * c3 / c2 + 2 * sigma * math.sqrt(c2)

    c2, c3 = th.optimal_constants(Delta, L, sigma, wd)
    # by hand for λ=0: c2 = √(2·2·3·1)/0.5 = √12/0.5 = 6.928, c3 = √(2·6.928/6) = 1.5197
    if wd == 0:
        assert (c2, c3) == pytest.approx((math.sqrt(12) / 0.5, math.sqrt(2 * math.sqrt(12) / 0.5 / 6)))
    best = bracket(c2, c3)
    assert best == pytest.approx(4 * (2 * Delta * L * D * sigma**2) ** 0.25)
    for f2, f3 in [(1.1, 1), (0.9, 1), (1, 1.1), (1, 0.9), (1.2, 0.8), (0.7, 1.3)]:
        assert bracket(c2 * f2, c3 * f3) > best
    # leading term = √d K^{-1/4} · best bracket
    assert th.leading_term(16, 4, Delta, L, sigma, wd) == pytest.approx(2 / 2 * best)


def test_small_functions_by_hand():
    assert th.box_factor(0.0) == 1.0 and th.box_factor(1e-3) == 2.0
    # (ΔLσ²/K)^{1/4} with Δ=2, L=8, σ=1, K=1 -> 16^{1/4} = 2
    assert th.lower_bound_l2(1, 2, 8, 1) == pytest.approx(2.0)
    assert th.RATIO_REFERENCE["gaussian"] == pytest.approx(0.7978845608)
    assert th.RATIO_REFERENCE["uniform"] == pytest.approx(0.8660254038)
    assert th.RATIO_REFERENCE["laplace"] == pytest.approx(0.7071067812)
    assert th.RATIO_REFERENCE["student_t3"] == pytest.approx(0.6366197724)
    assert th.RATIO_REFERENCE["equal"] == 1.0
    assert th.sparse_ratio_bound(4, 100) == pytest.approx(0.2)
    # λ=1, η=0.1, ‖x0‖∞=3: k=0 -> 3 ; k=1 -> 1 + 0.9·2 = 2.8 ; k=∞ -> 1 ; λ=0: 3 + 0.1·5
    assert th.box_envelope(3.0, 0.1, 1.0, 0) == pytest.approx(3.0)
    assert th.box_envelope(3.0, 0.1, 1.0, 1) == pytest.approx(2.8)
    assert th.box_envelope(3.0, 0.1, 1.0, 10**6) == pytest.approx(1.0)
    assert th.box_envelope(3.0, 0.1, 0.0, 5) == pytest.approx(3.5)
    assert th.two_cycle_amplitude(0.02) == pytest.approx(0.01)
    # 2·√100·(1−0.9)·0.5 = 2·10·0.1·0.5 = 1
    assert th.noise_floor(100, 0.9, 0.5) == pytest.approx(1.0)
    # −log10(1000) − 10·log10(0.1) = −3 + 10 = 7
    assert th.lion_generalization_log10_term(1000, 10, 0.1) == pytest.approx(7.0)


def test_box_envelope_dominates_recursion():
    # iterate the worst case of the recursion: equality x_{k+1} = (1−ηλ)x_k + η
    x, lr, lam = 5.0, 0.01, 2.0
    for k in range(1, 300):
        x = (1 - lr * lam) * x + lr
        assert th.box_envelope(5.0, lr, lam, k) == pytest.approx(x)


@pytest.mark.parametrize("call, name", [
    (lambda: th.horizon_schedule(0, 4, 1, 1, 1), "K"),
    (lambda: th.horizon_schedule(16, 0, 1, 1, 1), "d"),
    (lambda: th.horizon_schedule(16, 4, 5, 1, 1), "beta1"),   # β1 = −0.25
    (lambda: th.horizon_schedule(16, 4, 1, 5, 1), "beta2"),   # β2 = −0.25
    (lambda: th.horizon_schedule(16, 4, 0, 1, 1), "beta1"),   # β1 = 1 is not in [0, 1)
    (lambda: th.bound_template(16, 4, 2, 3, 0.5, 0.0, 0.75, 0.75), "lr"),
    (lambda: th.bound_template(16, 4, 2, 3, 0.5, 0.1, 0.75, 1.0), "beta2"),
    (lambda: th.bound_template(16, 4, -1, 3, 0.5, 0.1, 0.75, 0.5), "Delta"),
    (lambda: th.bound_template(16, 4, 1, 3, 0.5, 0.1, 0.75, 0.5, weight_decay=-1), "weight_decay"),
    (lambda: th.optimal_constants(1, 1, 0), "sigma"),
    (lambda: th.sparse_ratio_bound(5, 4), "s"),
    (lambda: th.box_envelope(1, 1.0, 2.0, 3), "lr*weight_decay"),
    (lambda: th.lion_generalization_log10_term(10, 5, 0.0), "tau"),
    (lambda: th.bound_template(float("nan"), 4, 2, 3, 0.5, 0.1, 0.75, 0.5), "K"),
])
def test_validation_errors(call, name):
    with pytest.raises(ValueError, match=name.replace("*", r"\*")):
        call()


def test_boundary_values_allowed():
    assert th.horizon_schedule(16, 4, 4, 1, 1)[0] == 0.0  # β1 = 0 (SignSGD-like) is in [0, 1)
    assert th.box_envelope(1.0, 0.5, 2.0, 3) == pytest.approx(0.5)  # ηλ = 1 jumps onto the box
