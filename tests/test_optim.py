"""lionconv.optim against THEORY §2 transcribed in NumPy, lion-pytorch, and hand-computed steps."""
from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch

from lionconv.optim import CLion, Lion, OPTIMIZERS, SignSGD, build_optimizer

SHAPES = [(3, 4), (5,), (0,), (2, 3, 2), ()]
TOL = {torch.float32: dict(rtol=1e-6, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-12)}
TOL_TAU = {torch.float32: dict(rtol=1e-6, atol=3e-7), torch.float64: dict(rtol=1e-12, atol=1e-15)}

# name -> (class, kwargs); every Lion-family variant the tests sweep
VARIANTS = {
    "lion": (Lion, {}),
    "clion-global": (CLion, dict(gate="global", nu=0.02)),
    "clion-tensor": (CLion, dict(gate="tensor", nu=0.02)),
    "clion-coordinate": (CLion, dict(gate="coordinate", nu=0.02)),
    "signsgd": (SignSGD, {}),
}


def make_optimizer(variant, params, lr=0.01, weight_decay=0.1, **extra):
    cls, kwargs = VARIANTS[variant]
    if cls is not SignSGD:
        kwargs = dict(betas=(0.9, 0.99), **kwargs)
    return cls(params, lr=lr, weight_decay=weight_decay, **kwargs, **extra)


# ---------------------------------------------------------------------------------------------
# THEORY §2 in plain NumPy, written from the formulas (not from the implementation)
# ---------------------------------------------------------------------------------------------
def numpy_reference(variant, x0s, grad_steps, lr, weight_decay, betas=(0.9, 0.99), nu=None):
    """Run the update on NumPy arrays; returns final xs and per-step (min non-zero |c|, sign fraction)."""
    b1, b2 = (0.0, 0.0) if variant == "signsgd" else betas
    xs = [x.copy() for x in x0s]
    ms = [np.zeros_like(x) for x in x0s]
    records = []
    for gs in grad_steps:
        cs = [b1 * m + (1 - b1) * g for m, g in zip(ms, gs)]
        flat = np.concatenate([c.ravel() for c in cs])
        nonzero = np.abs(flat[flat != 0])
        min_abs = nonzero.min() if nonzero.size else np.inf
        n = flat.size
        if variant in ("lion", "signsgd"):
            hs, frac = [np.sign(c) for c in cs], None
        elif variant == "clion-global":
            take = min_abs >= nu
            hs, frac = [np.sign(c) if take else c for c in cs], float(take)
        elif variant == "clion-tensor":
            hs, count = [], 0
            for c in cs:
                nz = np.abs(c[c != 0])
                take = (nz.min() if nz.size else np.inf) >= nu
                hs.append(np.sign(c) if take else c)
                count += take * c.size
            frac = count / n
        elif variant == "clion-coordinate":
            hs = [np.where(np.abs(c) >= nu, np.sign(c), c) for c in cs]
            frac = sum(int((np.abs(c) >= nu).sum()) for c in cs) / n
        xs = [x - lr * (h + weight_decay * x) for x, h in zip(xs, hs)]
        ms = [b2 * m + (1 - b2) * g for m, g in zip(ms, gs)]
        records.append((min_abs, frac))
    return xs, records


def random_steps(n_steps, dtype, seed=0):
    """Gradients with magnitudes spread over 3 decades, so CLion's gates take both branches."""
    rng = np.random.default_rng(seed)
    steps = []
    for _ in range(n_steps):
        scale = 10.0 ** rng.uniform(-2.5, 0.5)
        steps.append([(scale * rng.standard_normal(s)).astype(dtype) for s in SHAPES])
    return steps


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_numpy_transcription_of_theory(variant, dtype, foreach):
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    rng = np.random.default_rng(1)
    x0s = [rng.standard_normal(s).astype(np_dtype) for s in SHAPES]
    steps = random_steps(60, np_dtype)
    lr, wd = 0.01, 0.1
    nu = VARIANTS[variant][1].get("nu")
    ref_xs, records = numpy_reference(variant, x0s, steps, lr, wd, nu=nu)

    params = [torch.tensor(x, requires_grad=True) for x in x0s]
    opt = make_optimizer(variant, params, lr=lr, weight_decay=wd, foreach=foreach, record_tau=True)
    fractions = []
    for gs, (min_abs, frac) in zip(steps, records):
        for p, g in zip(params, gs):
            p.grad = torch.tensor(g)
        opt.step()
        # c = β1·m + (1−β1)·g can cancel, so its smallest entry carries the rounding of |m| ~ 1
        torch.testing.assert_close(opt.last_tau.double(), torch.tensor(float(min_abs), dtype=torch.float64),
                                   **TOL_TAU[dtype])
        if frac is not None:
            assert opt.last_sign_fraction.item() == pytest.approx(frac, abs=1e-7)
            assert opt.last_min_abs_c is opt.last_tau
            fractions.append(frac)
    for p, x in zip(params, ref_xs):
        assert p.dtype == dtype and p.shape == x.shape
        torch.testing.assert_close(p.detach(), torch.tensor(x), **TOL[dtype])
    if variant.startswith("clion"):  # the data must exercise both branches of the gate
        assert min(fractions) < 1.0 and max(fractions) > 0.0


# ---------------------------------------------------------------------------------------------
# Lion against the independent lion-pytorch package
# ---------------------------------------------------------------------------------------------
def test_lion_matches_lion_pytorch_on_an_mlp():
    # lion-pytorch 0.2.5 (decoupled_weight_decay=False) does p.mul_(1 - lr*wd) then
    # p.add_(sign(β1·m + (1−β1)·g), alpha=-lr), then m ← β2·m + (1−β2)·g: the same update.
    from lion_pytorch import Lion as RefLion

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    ref_model = copy.deepcopy(model)
    start = [p.detach().clone() for p in model.parameters()]
    inputs, targets = torch.randn(64, 6, dtype=torch.float64), torch.randint(0, 3, (64,))
    hp = dict(lr=3e-3, betas=(0.9, 0.99), weight_decay=0.5)
    opt, ref_opt = Lion(model.parameters(), **hp), RefLion(ref_model.parameters(), **hp)

    def closure_for(net, optimizer):
        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(inputs), targets)
            loss.backward()
            return loss
        return closure

    for _ in range(30):
        loss = opt.step(closure_for(model, opt))
        ref_loss = ref_opt.step(closure_for(ref_model, ref_opt))
        assert loss.grad_fn is not None  # the closure ran with grad enabled inside step()
        torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-12)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)
    assert all((p - p0).abs().max() > 0.02 for p, p0 in zip(model.parameters(), start))


# ---------------------------------------------------------------------------------------------
# foreach vs single tensor; awkward parameter sets; dtypes
# ---------------------------------------------------------------------------------------------
def awkward_params(dtype=torch.float64, seed=0):
    """Two groups: tensors of several shapes, one zero-size, one frozen, one whose grad stays None."""
    g = torch.Generator().manual_seed(seed)
    def leaf(*shape, requires_grad=True):
        return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(requires_grad)
    first = [leaf(4, 3), leaf(0, 5), leaf(7), leaf(3, requires_grad=False)]
    second = [leaf(2, 2, 2), leaf(5), leaf(())]  # second[1] never gets a grad
    return first, second


def feed_grads(first, second, step, dtype=torch.float64):
    g = torch.Generator().manual_seed(1000 + step)
    for p in first + second:
        if p.requires_grad and p is not second[1]:
            p.grad = torch.randn(p.shape, generator=g, dtype=dtype) * 0.1


def grouped(variant, first, second, foreach, **extra):
    extra_second = {} if VARIANTS[variant][0] is SignSGD else dict(betas=(0.8, 0.95))
    groups = [{"params": first}, {"params": second, "lr": 0.03, "weight_decay": 0.0, **extra_second}]
    return make_optimizer(variant, groups, foreach=foreach, **extra)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_foreach_and_single_tensor_paths_agree_bitwise(variant):
    runs = []
    for foreach in (False, True):
        first, second = awkward_params()
        untouched = [second[1].detach().clone(), first[3].detach().clone()]
        opt = grouped(variant, first, second, foreach, record_tau=True)
        for step in range(20):
            feed_grads(first, second, step)
            opt.step()
        assert torch.equal(second[1], untouched[0]) and torch.equal(first[3], untouched[1])
        assert second[1] not in opt.state and first[3] not in opt.state  # state untouched
        runs.append((first + second, opt))
    (params_a, opt_a), (params_b, opt_b) = runs
    for p, q in zip(params_a, params_b):
        assert torch.equal(p, q)
    for p, q in zip(params_a, params_b):
        assert opt_a.state[p].keys() == opt_b.state[q].keys()
        for key in opt_a.state[p]:
            assert torch.equal(opt_a.state[p][key], opt_b.state[q][key])
    assert torch.equal(opt_a.last_tau, opt_b.last_tau)


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "clion-global"])  # global couples tensors
def test_mixed_dtypes_and_strides_in_one_group_match_separate_optimizers(variant, foreach):
    # float32 + float64 in one group (two buckets) and a transposed (non-contiguous) leaf with a
    # non-contiguous grad: each follows exactly what its own optimizer does on contiguous copies
    torch.manual_seed(0)
    values = [torch.randn(4, 3), torch.randn(5, dtype=torch.float64), torch.randn(3, 6).t()]
    together = [v.clone().requires_grad_() for v in values]  # clone keeps the transposed strides
    alone = [v.contiguous().requires_grad_() for v in values]
    assert not together[2].is_contiguous() and alone[2].is_contiguous()
    opt = make_optimizer(variant, together, foreach=foreach, record_tau=True)
    singles = [make_optimizer(variant, [p], foreach=foreach, record_tau=True) for p in alone]
    for _ in range(10):
        grads = [torch.randn(4, 3), torch.randn(5, dtype=torch.float64), torch.randn(3, 6).t()]
        for p, q, g in zip(together, alone, grads):
            p.grad, q.grad = g, g.contiguous()
        opt.step()
        for single in singles:
            single.step()
    assert together[0].dtype == torch.float32 and together[1].dtype == torch.float64
    for p, q in zip(together, alone):
        assert torch.equal(p, q)
    assert opt.last_tau.item() == min(single.last_tau.item() for single in singles)


def test_foreach_default_and_explicit_choices():
    class Marked(torch.Tensor):
        pass

    plain = [torch.zeros(2, requires_grad=True)]
    plain[0].grad = torch.ones(2)
    assert Lion(plain)._gather()[0][0].path.__name__ == "MultiTensor"
    assert Lion(plain, foreach=False)._gather()[0][0].path.__name__ == "SingleTensor"
    odd = torch.zeros(2).as_subclass(Marked).requires_grad_()
    odd.grad = torch.ones(2)
    assert Lion([odd])._gather()[0][0].path.__name__ == "SingleTensor"


def test_params_added_and_grads_appearing_mid_run_follow_an_all_along_optimizer():
    # the direction buffer grows and its cached views are rebuilt; a param whose grad was None
    # for a while starts from m = 0 exactly like one that was there all along
    torch.manual_seed(0)
    a0, b0 = torch.randn(4, 3), torch.randn(50)
    a, b = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    ra, rb = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = Lion([a], lr=0.01, weight_decay=0.1, record_tau=True)
    ref = Lion([{"params": [ra]}, {"params": [rb]}], lr=0.01, weight_decay=0.1)
    for step in range(8):
        if step == 3:
            opt.add_param_group({"params": [b]})
        ga, gb = torch.randn(4, 3), torch.randn(50)
        a.grad, ra.grad = ga, ga.clone()
        if step >= 3:
            b.grad, rb.grad = gb, gb.clone()
        opt.step()
        ref.step()
    assert torch.equal(a, ra) and torch.equal(b, rb)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_zero_size_params_get_state_and_stay_empty(variant):
    p = torch.zeros(0, 3, requires_grad=True)
    q = torch.ones(2, requires_grad=True)
    opt = make_optimizer(variant, [p, q], record_tau=True)
    p.grad, q.grad = torch.zeros(0, 3), torch.tensor([0.5, -0.25])
    opt.step()
    assert p.shape == (0, 3)
    if VARIANTS[variant][0] is not SignSGD:
        assert opt.state[p]["exp_avg"].shape == (0, 3)
    assert opt.last_tau.item() == pytest.approx(0.25 if variant == "signsgd" else 0.025)


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bfloat16_params_stay_bfloat16_and_track_float32(variant, foreach):
    # same bf16 grads for both runs; a steady drift (base) so x moves ~η per step, and x0 small
    # so bf16's spacing (2^-8 relative) stays well below the step η
    torch.manual_seed(0)
    x0 = (0.1 * torch.randn(64)).to(torch.bfloat16).float()  # exactly representable in bf16
    base = torch.randn(64)
    low = x0.to(torch.bfloat16).requires_grad_()
    high = x0.clone().requires_grad_()
    opt_low = make_optimizer(variant, [low], lr=0.02, foreach=foreach)
    opt_high = make_optimizer(variant, [high], lr=0.02, foreach=foreach)
    for _ in range(20):
        g = (base + 0.3 * torch.randn(64)).to(torch.bfloat16)
        low.grad, high.grad = g, g.float()
        opt_low.step()
        opt_high.step()
    assert low.dtype == torch.bfloat16
    if VARIANTS[variant][0] is not SignSGD:
        assert opt_low.state[low]["exp_avg"].dtype == torch.bfloat16
    moved = (high - x0).detach()
    err = (low.float() - high).detach()
    assert moved.norm() > 0.5  # CLion's identity branch moves least (~0.07 per coordinate)
    assert err.norm() < 0.1 * moved.norm() and err.abs().max() < 0.02


# ---------------------------------------------------------------------------------------------
# state_dict round trip
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_state_dict_round_trip_resumes_bit_identically(variant):
    n_before, n_after = 7, 8
    first, second = awkward_params()
    opt = grouped(variant, first, second, None)
    for step in range(n_before + n_after):
        feed_grads(first, second, step)
        opt.step()
    uninterrupted = [p.detach().clone() for p in first + second]

    first, second = awkward_params()
    opt = grouped(variant, first, second, None)
    for step in range(n_before):
        feed_grads(first, second, step)
        opt.step()
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in first + second], "opt": opt.state_dict()}, buffer)
    del opt
    buffer.seek(0)
    saved = torch.load(buffer)
    first, second = awkward_params(seed=123)  # different values, overwritten below
    with torch.no_grad():
        for p, value in zip(first + second, saved["params"]):
            p.copy_(value)
    resumed = grouped(variant, first, second, None)
    resumed.load_state_dict(saved["opt"])
    for step in range(n_before, n_before + n_after):
        feed_grads(first, second, step)
        resumed.step()
    for p, q in zip(first + second, uninterrupted):
        assert torch.equal(p, q)


def test_load_state_dict_casts_state_to_param_dtype():
    p = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = Lion([p], lr=0.1)
    p.grad = torch.full((3,), 0.5, dtype=torch.float64)
    opt.step()
    q = torch.ones(3, dtype=torch.float32, requires_grad=True)
    fresh = Lion([q], lr=0.1)
    fresh.load_state_dict(opt.state_dict())
    assert fresh.state[q]["exp_avg"].dtype == torch.float32


def test_deepcopy_keeps_record_tau():
    p = torch.ones(2, requires_grad=True)
    opt = copy.deepcopy(Lion([p], record_tau=True))
    assert opt.record_tau
    opt.param_groups[0]["params"][0].grad = torch.tensor([0.3, 0.0])
    opt.step()
    assert opt.last_tau.item() == pytest.approx(0.03)


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _p():
    return [torch.zeros(2, requires_grad=True)]


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Lion(_p(), lr=-0.1), r"Invalid learning rate: -0\.1 \(must be a finite number >= 0"),
        (lambda: Lion(_p(), lr=float("nan")), r"Invalid learning rate: nan"),
        (lambda: Lion(_p(), betas=(1.2, 0.99)), r"Invalid beta1: 1\.2 \(must be in \[0, 1\)\)"),
        (lambda: Lion(_p(), betas=(0.9, 1.0)), r"Invalid beta2: 1\.0 \(must be in \[0, 1\)\)"),
        (lambda: Lion(_p(), betas=(-0.1, 0.5)), r"Invalid beta1: -0\.1"),
        (lambda: Lion(_p(), betas=(0.9,)), r"Invalid betas: \(0\.9,\)"),
        (lambda: Lion(_p(), weight_decay=-1e-3), r"Invalid weight_decay: -0\.001 \(must be a finite number >= 0\)"),
        (lambda: Lion(_p(), foreach="yes"), r"Invalid foreach: 'yes'"),
        (lambda: CLion(_p(), nu=0.0), r"Invalid nu: 0\.0 \(must be a finite number > 0\)"),
        (lambda: CLion(_p(), nu=-1e-6), r"Invalid nu: -1e-06"),
        (lambda: CLion(_p(), gate="layer"), r"Invalid gate: 'layer' \(must be one of 'global', 'tensor', 'coordinate'\)"),
        (lambda: CLion(_p(), betas=(0.9, 7)), r"Invalid beta2: 7"),
        (lambda: CLion(_p(), lr=-1), r"Invalid learning rate: -1"),
        (lambda: CLion(_p(), weight_decay=-2.0), r"Invalid weight_decay: -2\.0"),
        (lambda: SignSGD(_p(), lr=-0.5), r"Invalid learning rate: -0\.5"),
        (lambda: SignSGD(_p(), lr=0.1, weight_decay=-0.5), r"Invalid weight_decay: -0\.5"),
        (lambda: Lion([{"params": _p()}, {"params": _p(), "lr": -3.0}]), r"Invalid learning rate: -3\.0"),
        (lambda: CLion([{"params": _p()}, {"params": _p(), "nu": 1e-3}]),
         r"Invalid nu: 0\.001 \(gate='global' takes one decision over all param groups, so they must share nu"),
        (lambda: CLion([{"params": _p()}, {"params": _p(), "gate": "tensor"}], gate="coordinate"),
         r"Invalid gate: 'tensor' \(every param group must use the same gate"),
        (lambda: build_optimizer("adam", _p()), r"Unknown optimizer: 'adam' \(must be one of adamw, clion, lion, sgd, sgd_momentum, signsgd\)"),
    ],
)
def test_bad_hyperparameters_raise_naming_the_value(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_sparse_gradients_are_rejected():
    p = torch.zeros(3, requires_grad=True)
    opt = Lion([p])
    p.grad = torch.zeros(3).to_sparse()
    with pytest.raises(ValueError, match="sparse"):
        opt.step()


def test_clion_groups_edited_after_construction_are_checked_at_step():
    opt = CLion([{"params": _p()}, {"params": _p()}], nu=1e-3)
    opt.param_groups[1]["nu"] = 1e-2
    for group in opt.param_groups:
        group["params"][0].grad = torch.ones(2)
    with pytest.raises(ValueError, match=r"Invalid nu: 0\.01"):
        opt.step()


def test_clion_tensor_gate_allows_a_nu_per_group():
    opt = CLion([{"params": _p()}, {"params": _p(), "nu": 1e-2}], gate="tensor", nu=1e-3)
    assert [g["nu"] for g in opt.param_groups] == [1e-3, 1e-2]


# ---------------------------------------------------------------------------------------------
# CLion by hand
# ---------------------------------------------------------------------------------------------
def test_clion_with_tiny_nu_is_lion_exactly():
    runs = []
    for cls, extra in ((Lion, {}), (CLion, dict(nu=1e-30))):
        first, second = awkward_params()
        opt = cls([{"params": first}, {"params": second}], lr=0.01, weight_decay=0.1, **extra)
        for step in range(15):
            feed_grads(first, second, step)
            opt.step()
            if cls is CLion:
                assert opt.last_sign_fraction.item() == 1.0
        runs.append(first + second)
    for p, q in zip(*runs):
        assert torch.equal(p, q)


@pytest.mark.parametrize("gate", ["global", "tensor", "coordinate"])
def test_clion_with_huge_nu_is_the_identity_branch(gate):
    lr, wd, (b1, b2) = 0.05, 0.2, (0.9, 0.99)
    torch.manual_seed(0)
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    ref, m = x.detach().clone(), torch.zeros(6, dtype=torch.float64)
    opt = CLion([x], lr=lr, betas=(b1, b2), weight_decay=wd, nu=1e30, gate=gate)
    for _ in range(10):
        g = torch.randn(6, dtype=torch.float64)
        x.grad = g
        opt.step()
        c = b1 * m + (1 - b1) * g
        ref = ref - lr * (c + wd * ref)
        m = b2 * m + (1 - b2) * g
        assert opt.last_sign_fraction.item() == 0.0
    torch.testing.assert_close(x.detach(), ref, rtol=0, atol=1e-14)


# β1 = 0 makes c = g, so the hand computation is short. ν = 0.3, η = 0.5, λ = 0, x0 = 0:
#   c_A = [2, 0.5]  (min 0.5 ≥ ν)      c_B = [0.1, -3, 0]  (min non-zero 0.1 < ν; the 0 is ignored)
#   global:     min 0.1 < ν  -> h = c everywhere          fraction 0/5
#   tensor:     A sign, B identity -> [1, 1], [0.1, -3, 0]   fraction 2/5
#   coordinate: [1, 1], [0.1, -1, 0]    fraction 4/5 (c_j = 0 counts as the sign branch, as the
#               empty-min convention does for the other gates: h(0) = 0 either way)
HAND_GA, HAND_GB, HAND_NU, HAND_LR = [2.0, 0.5], [0.1, -3.0, 0.0], 0.3, 0.5
HAND_CASES = {
    "global": ([2.0, 0.5], [0.1, -3.0, 0.0], 0.0),
    "tensor": ([1.0, 1.0], [0.1, -3.0, 0.0], 2 / 5),
    "coordinate": ([1.0, 1.0], [0.1, -1.0, 0.0], 4 / 5),
}


def hand_step(gate, split_groups=False, lr_b=HAND_LR):
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    params = [{"params": [a]}, {"params": [b], "lr": lr_b}] if split_groups else [a, b]
    opt = CLion(params, lr=HAND_LR, betas=(0.0, 0.5), nu=HAND_NU, gate=gate, record_tau=True)
    a.grad = torch.tensor(HAND_GA, dtype=torch.float64)
    b.grad = torch.tensor(HAND_GB, dtype=torch.float64)
    opt.step()
    return a.detach(), b.detach(), opt


@pytest.mark.parametrize("gate", list(HAND_CASES))
def test_clion_gates_by_hand(gate):
    a, b, opt = hand_step(gate)
    h_a, h_b, fraction = HAND_CASES[gate]
    assert torch.equal(a, -HAND_LR * torch.tensor(h_a, dtype=torch.float64))
    assert torch.equal(b, -HAND_LR * torch.tensor(h_b, dtype=torch.float64))
    assert opt.last_sign_fraction.item() == pytest.approx(fraction, abs=1e-7)
    assert opt.last_min_abs_c.item() == 0.1 and opt.last_tau.item() == 0.1


def test_clion_three_gates_give_three_different_updates():
    updates = [torch.cat(hand_step(gate)[:2]) for gate in HAND_CASES]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.equal(updates[i], updates[j])


def test_clion_global_decision_spans_param_groups():
    # alone, A (min |c| = 0.5 ≥ ν) would take the sign; B in the other group pulls the min to 0.1
    a, b, opt = hand_step("global", split_groups=True, lr_b=0.25)
    assert torch.equal(a, -HAND_LR * torch.tensor(HAND_GA, dtype=torch.float64))
    assert torch.equal(b, -0.25 * torch.tensor(HAND_GB, dtype=torch.float64))
    assert opt.last_sign_fraction.item() == 0.0
    a_alone = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    alone = CLion([a_alone], lr=HAND_LR, betas=(0.0, 0.5), nu=HAND_NU)
    a_alone.grad = torch.tensor(HAND_GA, dtype=torch.float64)
    alone.step()
    assert torch.equal(a_alone.detach(), torch.full((2,), -HAND_LR, dtype=torch.float64))
    assert alone.last_sign_fraction.item() == 1.0


@pytest.mark.parametrize("gate", list(HAND_CASES))
def test_clion_all_zero_c_takes_the_sign_branch_and_only_decays(gate):
    x = torch.ones(3, requires_grad=True)
    opt = CLion([x], lr=0.1, weight_decay=0.5, gate=gate)
    x.grad = torch.zeros(3)
    opt.step()
    assert math.isinf(opt.last_min_abs_c.item())
    assert opt.last_sign_fraction.item() == 1.0
    torch.testing.assert_close(x.detach(), torch.full((3,), 1 - 0.1 * 0.5))


def test_no_grads_at_all():
    x = torch.ones(3, requires_grad=True)
    opt = CLion([x], record_tau=True)
    opt.step()
    assert math.isinf(opt.last_min_abs_c.item()) and math.isnan(opt.last_sign_fraction.item())
    assert torch.equal(x, torch.ones(3)) and not opt.state


# ---------------------------------------------------------------------------------------------
# record_tau by hand
# ---------------------------------------------------------------------------------------------
def test_record_tau_by_hand():
    # β = (0.5, 0.5). Step 1: m = 0, c = 0.5·g1. Step 2: m = 0.5·g1, c = 0.25·g1 + 0.5·g2.
    g1 = [torch.tensor([[4.0, -0.2], [0.0, 1.0]]), torch.tensor([3.0])]
    g2 = [torch.tensor([[0.0, 0.1], [0.0, -2.0]]), torch.tensor([-1.5])]
    # step 1: |c| = [[2, .1], [0, .5]], [1.5]          -> τ = 0.1
    # step 2: c = [[1, -.05+.05], [0, .25-1]], [.75-.75] = [[1, 0], [0, -.75]], [0] -> τ = 0.75
    params = [torch.zeros(2, 2, requires_grad=True), torch.zeros(1, requires_grad=True)]
    opt = Lion(params, betas=(0.5, 0.5), record_tau=True)
    expected = []
    for grads in (g1, g2):
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        expected.append(opt.last_tau)
    assert [t.item() for t in expected] == [pytest.approx(0.1), pytest.approx(0.75)]
    assert expected[0].dim() == 0 and expected[0].device == params[0].device

    sign_sgd = SignSGD([torch.zeros(2, 2, requires_grad=True)], lr=0.1, record_tau=True)
    sign_sgd.param_groups[0]["params"][0].grad = g1[0]
    sign_sgd.step()
    assert sign_sgd.last_tau.item() == pytest.approx(0.2)


def test_statistics_are_not_synced_tensors():
    x = torch.ones(3, requires_grad=True)
    opt = CLion([x], record_tau=True)
    x.grad = torch.tensor([1.0, -2.0, 0.0])
    opt.step()
    for value in (opt.last_tau, opt.last_min_abs_c, opt.last_sign_fraction):
        assert isinstance(value, torch.Tensor) and value.dim() == 0


# ---------------------------------------------------------------------------------------------
# THEORY §8 negative control: constant η never converges on f(θ) = θ²/2
# ---------------------------------------------------------------------------------------------
def run_quadratic(theta0, lrs):
    theta = torch.tensor([theta0], dtype=torch.float64, requires_grad=True)
    opt = Lion([theta], lr=lrs[0], betas=(0.9, 0.99), weight_decay=0.0)
    path = []
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        theta.grad = theta.detach().clone()  # ∇(θ²/2) = θ, exact
        opt.step()
        path.append(theta.item())
    return np.array(path)


def test_constant_lr_lion_ends_in_an_exact_two_cycle():
    # dyadic η and θ0 ≡ η/2 (mod η): every iterate is exact, and the tail is θ = ±η/2 exactly
    lr = 2.0**-7
    path = run_quadratic(1.0 + lr / 2, [lr] * 1000)
    tail = path[-100:]
    assert np.all(np.abs(tail) == lr / 2)  # |f'(θ)| = |θ| = η/2 forever
    assert np.all(tail[1:] == -tail[:-1])  # a 2-cycle ±η/2


def test_constant_lr_lion_does_not_converge_from_theta_one():
    # θ0 = 1.0 = 100η lies on the grid ηZ, not on η/2 + ηZ: the tail is a cycle through
    # {η, ~0, −η, ~0}, so |f'| keeps hitting η and its mean stays η/2 instead of shrinking
    lr = 0.01
    tail = np.abs(run_quadratic(1.0, [lr] * 1000)[-100:])
    assert tail.max() == pytest.approx(lr, rel=1e-9)
    assert tail.mean() == pytest.approx(lr / 2, rel=1e-6)


def test_annealed_lr_lion_converges_below_the_constant_lr_floor():
    lr0, steps = 0.01, 10_000
    path = run_quadratic(1.0, [lr0 / math.sqrt(k + 1) for k in range(steps)])
    assert np.abs(path[-100:]).max() < 0.1 * lr0 / 2


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, hparams, cls", [
    ("lion", dict(lr=1e-3), Lion),
    ("clion", dict(lr=1e-3, nu=1e-4, gate="tensor"), CLion),
    ("signsgd", dict(lr=1e-3), SignSGD),
    ("sgd", dict(lr=1e-3, momentum=0.9), torch.optim.SGD),
])
def test_build_optimizer(name, hparams, cls):
    assert set(OPTIMIZERS) == {"lion", "clion", "signsgd", "sgd", "sgd_momentum", "adamw"}
    x = torch.ones(2, requires_grad=True)
    opt = build_optimizer(name, [x], **hparams)
    assert type(opt) is cls
    for key, value in hparams.items():
        assert opt.param_groups[0][key] == value
    x.grad = torch.ones(2)
    opt.step()
    assert torch.all(x < 1)


def test_unhooked_step_skips_only_a_wrapper_that_would_do_nothing():
    from lionconv.optim import unhooked_step

    p = torch.nn.Parameter(torch.ones(3))
    opt = Lion([p], lr=0.1)
    wrapped = type(opt).step
    plain = unhooked_step(opt)
    assert plain.__func__ is not wrapped
    p.grad = torch.ones(3)
    plain()  # the optimizer's own step (under its no_grad)
    assert torch.equal(p.detach(), torch.full((3,), 0.9))
    calls = []
    handle = opt.register_step_pre_hook(lambda *args: calls.append(1))
    step = unhooked_step(opt)
    assert step.__func__ is wrapped
    p.grad = torch.ones(3)
    step()
    assert calls == [1] and torch.equal(p.detach(), torch.full((3,), 0.9) - 0.1)
    handle.remove()
    with torch.profiler.profile():
        assert unhooked_step(opt).__func__ is wrapped  # the profiler sees Optimizer.step
