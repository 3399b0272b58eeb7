"""Cost of the full-gradient metrics next to the full-gradient pass they follow.

For digits_mlp at several widths it times, each right after a fresh gradient pass (as in a run:
the pass evicts the interpreter from the caches, which doubles the cost of small calls), round-
robin so that load from other processes hits all alike, and prints medians:
  (a) the full-gradient pass (forward + backward over the whole training set),
  (b) every metric as the trainer computes it: `GradientSums` (per-tensor sums, one host sync)
      + `whole_model_metrics` per logged step, plus the per-tensor formulas
      (`per_tensor_metrics`, run once on the stacked tables of 30 logged steps) divided by 30,
  (c) `gradient_metrics`, the one-call API returning per-tensor rows as dicts,
  (d) a naive reference: per-tensor float64 copies and one .item() per value.
Bar: (b) <= 10% of (a). Then (c) and (d) alone on 1e7 parameters (one tensor; 200 tensors).
Threads default to 1, the trainer's default (`threads=1`).

    .venv/bin/python scripts/bench_metrics.py [--widths 64 256 1024] [--repeats 40]
                                              [--threads N] [--device cpu] [--weight-decay λ]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from lionconv.metrics import (GradientSums, gradient_metrics, per_tensor_metrics,
                              whole_model_metrics)

DEFAULT_WEIGHT_DECAY = 0.1
BAR = 0.10
LOGGED_STEPS = 30  # the default log grid of a network problem


def digits_mlp(width: int, device):
    """(full_gradient, params, names) of lionconv's digits_mlp, or of the same MLP built here
    (64 -> width -> width -> 10, ReLU, cross-entropy on load_digits' 1347-example train split)
    if lionconv.problems is not importable."""
    try:
        from lionconv.problems import build_problem

        problem = build_problem({"name": "digits_mlp", "width": width,
                                 "estimate_constants": False}, seed=0, device=device)
        return (lambda: problem.full_gradient()[1]), problem.params, problem.param_names, \
            "lionconv.problems digits_mlp"
    except ImportError:
        pass
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x, _, y, _ = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    inputs = torch.tensor(x / 16.0, dtype=torch.float32, device=device)
    targets = torch.tensor(y, device=device)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.ReLU(),
                                torch.nn.Linear(width, width), torch.nn.ReLU(),
                                torch.nn.Linear(width, 10)).to(device)
    params = list(model.parameters())

    def full_gradient():
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        return list(torch.autograd.grad(loss, params))
    return full_gradient, params, [n for n, _ in model.named_parameters()], "local MLP"


@torch.no_grad()
def naive_metrics(params, grads, weight_decay):
    """Reference: per tensor float64 copies and one .item() (host sync) per value."""
    rows = []
    for x, g in zip(params, grads):
        g64, x64 = g.double(), x.double()
        a = g64.abs()
        l1, l2 = a.sum().item(), g64.norm().item()
        dot = (g64 * x64).sum().item()
        x_max = x64.abs().max().item() if x.numel() else 0.0
        nonzero = a[a != 0]
        tau = nonzero.min().item() if nonzero.numel() else float("inf")
        rows.append((l1, l2, l1 + weight_decay * dot, x_max, tau))
    return rows


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_after_gradient(full_gradient, functions: dict, repeats: int, device) -> dict[str, float]:
    """Median seconds of the gradient pass ("a") and of each function, each function called
    right after its own gradient pass, in turn, `repeats` times after one warm-up."""
    times = {"a": [], **{name: [] for name in functions}}
    for f in functions.values():
        f()
    for _ in range(repeats):
        for name, f in functions.items():
            start = time.perf_counter()
            full_gradient()
            sync(device)
            middle = time.perf_counter()
            f()
            sync(device)
            times["a"].append(middle - start)
            times[name].append(time.perf_counter() - middle)
    return {name: statistics.median(ts) for name, ts in times.items()}


def time_round_robin(functions: dict, repeats: int, device) -> dict[str, float]:
    """Median seconds of each function, called in turn `repeats` times after one warm-up."""
    times = {name: [] for name in functions}
    for f in functions.values():
        f()
    sync(device)
    for _ in range(repeats):
        for name, f in functions.items():
            start = time.perf_counter()
            f()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--large-repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (default 1, as the trainer)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--weight-decay", type=float, default=DEFAULT_WEIGHT_DECAY,
                        help="λ of the KKT residual (0: the digits_mlp default, no ⟨g, x⟩ needed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, {platform.processor() or platform.machine()}, "
          f"load avg {load:.2f}, weight decay {args.weight_decay}")

    print(f"\n{'width':>6} {'d':>9} {'tensors':>7} {'(a) grad ms':>12} {'(b) trainer ms':>15} "
          f"{'(c) one call ms':>16} {'(d) naive ms':>13} {'(b)/(a)':>8} {'(c)/(a)':>8} "
          f"{'(d)/(a)':>8}  bar (b)<=10%")
    source = None
    for width in args.widths:
        full_gradient, params, names, source = digits_mlp(width, args.device)
        grads = full_gradient()
        ours = gradient_metrics(params, grads, args.weight_decay, names=names)[1]
        ref = naive_metrics(params, grads, args.weight_decay)
        for row, (l1, l2, kkt, _, _) in zip(ours, ref):  # same numbers, or the timing is moot
            assert abs(row["grad_l1"] - l1) <= 1e-9 * l1 and abs(row["grad_l2"] - l2) <= 1e-9 * l2
            assert abs(row["kkt_residual"] - kkt) <= 1e-9 * max(l1, 1e-300)
        numels, d = [p.numel() for p in params], sum(p.numel() for p in params)
        sums = GradientSums(params, args.weight_decay)
        logged = np.stack([sums(grads)] * LOGGED_STEPS)

        def trainer_step():
            whole_model_metrics(sums(grads), d, args.weight_decay)

        t = time_after_gradient(full_gradient, {
            "b": trainer_step,
            "c": lambda: gradient_metrics(params, grads, args.weight_decay, names=names,
                                          tau_grad=False),
            "d": lambda: naive_metrics(params, grads, args.weight_decay),
        }, args.repeats, args.device)
        per_tensor = time_round_robin(
            {"rows": lambda: per_tensor_metrics(logged, numels, args.weight_decay)},
            args.repeats, args.device)["rows"]
        t["b"] += per_tensor / LOGGED_STEPS
        print(f"{width:>6} {d:>9} {len(params):>7} {t['a'] * 1e3:>12.3f} {t['b'] * 1e3:>15.3f} "
              f"{t['c'] * 1e3:>16.3f} {t['d'] * 1e3:>13.3f} {t['b'] / t['a']:>8.1%} "
              f"{t['c'] / t['a']:>8.1%} {t['d'] / t['a']:>8.1%}  "
              f"{'PASS' if t['b'] <= BAR * t['a'] else 'FAIL'}")
    print(f"(model: {source}; {args.repeats} repeats, each call right after a gradient pass, "
          f"medians; (b) includes 1/{LOGGED_STEPS} of the per-tensor formulas of "
          f"{LOGGED_STEPS} steps)")

    if args.skip_large:
        return
    print(f"\n{'1e7 parameters':>22} {'(c) metrics ms':>15} {'(d) naive ms':>13} {'(d)/(c)':>8}")
    gen = torch.Generator().manual_seed(0)
    for count in (1, 200):
        size = 10_000_000 // count
        grads = [torch.randn(size, generator=gen).to(args.device) for _ in range(count)]
        params = [torch.randn(size, generator=gen).to(args.device) for _ in range(count)]
        t = time_round_robin({
            "b": lambda: gradient_metrics(params, grads, args.weight_decay, tau_grad=False),
            "c": lambda: naive_metrics(params, grads, args.weight_decay),
        }, args.large_repeats, args.device)
        label = f"{count} x {size}"
        print(f"{label:>22} {t['b'] * 1e3:>15.1f} {t['c'] * 1e3:>13.1f} {t['c'] / t['b']:>8.1f}")


if __name__ == "__main__":
    main()
