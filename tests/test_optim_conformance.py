"""The generic behaviours PyTorch's own test_optim.py checks of every torch.optim optimizer, run on
every lionconv optimizer (Lion, CLion × 3 gates, SignSGD), in float64.

(torch.testing._internal.common_optimizers is not used: importing it needs the `expecttest`
test-only package, and its OptimizerInfo machinery is more than these few behaviours need.)
"""
from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

from lionconv.optim import CLion, Lion, SignSGD

LR, WD, BETAS, NU = 0.01, 0.1, (0.9, 0.99), 1e-3
VARIANTS = {
    "lion": lambda params, **kw: Lion(params, **{"lr": LR, "betas": BETAS, "weight_decay": WD, **kw}),
    "clion-global": lambda params, **kw: CLion(params, **{"lr": LR, "betas": BETAS, "weight_decay": WD,
                                                          "nu": NU, "gate": "global", **kw}),
    "clion-tensor": lambda params, **kw: CLion(params, **{"lr": LR, "betas": BETAS, "weight_decay": WD,
                                                          "nu": NU, "gate": "tensor", **kw}),
    "clion-coordinate": lambda params, **kw: CLion(params, **{"lr": LR, "betas": BETAS, "weight_decay": WD,
                                                              "nu": NU, "gate": "coordinate", **kw}),
    "signsgd": lambda params, **kw: SignSGD(params, **{"lr": LR, "weight_decay": WD, **kw}),
}
variants = pytest.mark.parametrize("variant", sorted(VARIANTS))


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, generator=g, dtype=torch.float64).requires_grad_(),
            torch.randn(5, generator=g, dtype=torch.float64).requires_grad_()]


def _grads(step, params):
    """Deterministic gradients per step whose magnitudes span 1e-4..1 (both CLion branches)."""
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) * 10.0 ** -torch.randint(0, 5, p.shape, generator=g)
            for p in params]


def _run(opt, params, steps, start=0):
    for k in range(start, start + steps):
        for p, g in zip(params, _grads(k, params)):
            p.grad = g.clone()
        opt.step()
    return [p.detach().clone() for p in params]


def _equal(a, b):
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@variants
def test_tensor_and_numpy_lr_give_the_float_lr_step(variant):
    reference = _run(VARIANTS[variant](ps := _params()), ps, 3)
    for lr in (torch.tensor(LR, dtype=torch.float64), torch.tensor([LR], dtype=torch.float64), np.float64(LR)):
        _equal(_run(VARIANTS[variant](ps := _params(), lr=lr), ps, 3), reference)
    lr32 = np.float32(LR)  # a NumPy float32 is its exact value, as a Python float of it would be
    _equal(_run(VARIANTS[variant](ps := _params(), lr=lr32), ps, 3),
           _run(VARIANTS[variant](ps := _params(), lr=float(lr32)), ps, 3))
    with pytest.raises(ValueError, match="Invalid learning rate"):
        VARIANTS[variant](_params(), lr=torch.tensor([LR, LR]))


@variants
def test_state_dict_resume_is_bit_identical(variant):
    params = _params()
    opt = VARIANTS[variant](params)
    _run(opt, params, 2)
    saved, copies = copy.deepcopy(opt.state_dict()), [p.detach().clone().requires_grad_() for p in params]
    expected = _run(opt, params, 3, start=2)
    fresh = VARIANTS[variant](copies)
    fresh.load_state_dict(saved)
    _equal(_run(fresh, copies, 3, start=2), expected)
    assert opt.state_dict()["param_groups"] == fresh.state_dict()["param_groups"]


@variants
def test_state_dict_survives_weights_only_save_and_load(variant):
    params = _params()
    opt = VARIANTS[variant](params, lr=torch.tensor(LR, dtype=torch.float64))
    _run(opt, params, 2)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    copies = [p.detach().clone().requires_grad_() for p in params]
    fresh = VARIANTS[variant](copies)
    fresh.load_state_dict(loaded)
    _equal(_run(fresh, copies, 2, start=2), _run(opt, params, 2, start=2))


@pytest.mark.parametrize("variant", ["lion", "clion-global", "signsgd"])
def test_a_state_dict_without_foreach_loads_and_steps(variant):
    """An older state_dict, or lion-pytorch's (same exp_avg state), has no `foreach` key."""
    params = _params()
    opt = VARIANTS[variant](params)
    _run(opt, params, 1)
    old = copy.deepcopy(opt.state_dict())
    for group in old["param_groups"]:
        del group["foreach"]
        group.pop("nu", None), group.pop("gate", None)
    copies = [p.detach().clone().requires_grad_() for p in params]
    fresh = VARIANTS[variant](copies)
    fresh.load_state_dict(old)
    _equal(_run(fresh, copies, 2, start=1), _run(opt, params, 2, start=1))
    assert fresh.param_groups[0]["foreach"] is None


@variants
def test_deepcopy_continues_identically(variant):
    params = _params()
    opt = VARIANTS[variant](params)
    _run(opt, params, 2)
    twin_params, twin = copy.deepcopy((params, opt))  # one memo: the state follows the params
    _equal(_run(twin, twin_params, 2, start=2), _run(opt, params, 2, start=2))


@variants
def test_foreach_and_for_loop_agree_bit_for_bit(variant):
    a = _run(VARIANTS[variant](ps := _params(), foreach=True), ps, 4)
    b = _run(VARIANTS[variant](ps := _params(), foreach=False), ps, 4)
    _equal(a, b)


@variants
def test_step_and_state_dict_hooks_are_called(variant):
    params = _params()
    opt = VARIANTS[variant](params)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    opt.register_state_dict_pre_hook(lambda o: calls.append("sd_pre"))
    opt.register_state_dict_post_hook(lambda o, sd: calls.append("sd_post") or sd)
    opt.register_load_state_dict_pre_hook(lambda o, sd: calls.append("load_pre") or sd)
    opt.register_load_state_dict_post_hook(lambda o: calls.append("load_post"))
    _run(opt, params, 1)
    opt.load_state_dict(opt.state_dict())
    assert calls == ["pre", "post", "sd_pre", "sd_post", "load_pre", "load_post"]


@variants
def test_none_and_zero_grads(variant):
    """A param whose grad is None is untouched and gets no state; a zero grad moves x only by
    the decay: x ← x − η·(sign(0) + λx) = (1 − ηλ)·x (sign(0) = 0, and c = 0 with m = 0)."""
    x, skipped = _params()
    x0, s0 = x.detach().clone(), skipped.detach().clone()
    opt = VARIANTS[variant]([x, skipped])
    x.grad = torch.zeros_like(x)
    opt.step()
    torch.testing.assert_close(x.detach(), x0 - LR * WD * x0, rtol=0, atol=1e-15)
    assert torch.equal(skipped.detach(), s0) and skipped not in opt.state
    opt.zero_grad()
    assert x.grad is None  # set_to_none by default, as torch's optimizers


@variants
def test_param_groups_use_their_own_lr_and_weight_decay(variant):
    """One step from m = 0 with |g| ≥ ν everywhere: c = (1−β1)·g (SignSGD: c = g), so every
    variant takes the sign branch and x1 = x0 − η_group·(sign(g) + λ_group·x0)."""
    a, b = _params()
    a0, b0 = a.detach().clone(), b.detach().clone()
    opt = VARIANTS[variant]([{"params": [a]}, {"params": [b], "lr": 0.5, "weight_decay": 0.2}])
    a.grad, b.grad = torch.full_like(a, -2.0), torch.linspace(1, 3, 5, dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(a.detach(), a0 - LR * (-1.0 + WD * a0), rtol=0, atol=1e-15)
    torch.testing.assert_close(b.detach(), b0 - 0.5 * (1.0 + 0.2 * b0), rtol=0, atol=1e-15)


def test_signsgd_takes_lr_from_the_groups_alone():
    """Like torch.optim.SGD: an lr per param group, none at the top level."""
    a, b = _params()
    opt = SignSGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.2}])
    a0 = a.detach().clone()
    a.grad, b.grad = torch.ones_like(a), torch.ones_like(b)
    opt.step()
    torch.testing.assert_close(a.detach(), a0 - 0.1, rtol=0, atol=1e-15)


@variants
def test_no_empty_state_entries(variant):
    params = _params()
    opt = VARIANTS[variant](params)
    _run(opt, params, 2)
    if variant == "signsgd":
        assert len(opt.state) == 0 and opt.state_dict()["state"] == {}
    else:
        assert all(set(opt.state[p]) == {"exp_avg"} for p in params)


@variants
def test_complex_params_are_refused_at_construction(variant):
    z = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    with pytest.raises(ValueError, match="complex"):
        VARIANTS[variant]([z])
    opt = VARIANTS[variant](_params())
    with pytest.raises(ValueError, match="complex"):
        opt.add_param_group({"params": [z]})


@variants
def test_closure_loss_is_returned_with_grad_enabled(variant):
    params = _params()
    opt = VARIANTS[variant](params)

    def closure():
        opt.zero_grad()
        loss = sum((p ** 2).sum() for p in params)
        loss.backward()
        return loss

    assert torch.is_tensor(opt.step(closure))
