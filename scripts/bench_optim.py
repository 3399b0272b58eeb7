"""Time one optimizer ``step()`` per parameter against the memory-traffic floor.

A Lion step must at least read x, m, g and write x, m: 20 bytes per float32 parameter. The
machine's bandwidth is measured on a large ``torch.add(a, b, out=c)`` (12 bytes moved per
element), so floor = 20 bytes / bandwidth per parameter. Two shapes of model: (a) one tensor of
``--numel`` parameters, (b) ``--tensors`` tensors totalling ``--many-numel`` (half weight
matrices, half bias-sized vectors, like a network). Each optimizer gets fresh parameters and
gradients, ``--warmup`` steps, then the median of ``--repeats`` timed steps. The bandwidth is
the mean of the ``torch.add`` medians taken before and after the optimizers (a shared machine
drifts); the step of a 1e7 tensor touches 160 MB, the add 120 MB, so cache size matters.

    .venv/bin/python scripts/bench_optim.py [--device cuda] [--numel 1e7] [--tensors 200]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from lion_pytorch import Lion as LionPytorch

from lionconv.optim import CLion, Lion


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device, warmup: int, repeats: int) -> float:
    """Median wall time of fn() over `repeats` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bandwidth_bytes_per_s(numel: int, device, warmup: int, repeats: int) -> float:
    """Memory bandwidth of c = a + b: reads a and b, writes c, 12 bytes per float32 element."""
    a, b = torch.randn(numel, device=device), torch.randn(numel, device=device)
    c = torch.empty_like(a)
    seconds = median_seconds(lambda: torch.add(a, b, out=c), device, warmup, repeats)
    return 12 * numel / seconds


def model_shapes(kind: str, numel: int, tensors: int) -> list[tuple[int, ...]]:
    if kind == "one":
        return [(numel,)]
    # `tensors` tensors: pairs of (rows, cols) weight + (cols,) bias, totalling ~numel
    pairs = tensors // 2
    per_pair = numel // pairs
    cols = max(1, round(per_pair**0.5))
    rows = max(1, per_pair // cols - 1)
    return [(rows, cols), (cols,)] * pairs


OPTIMIZERS = {
    "Lion foreach": lambda ps, hp: Lion(ps, foreach=True, **hp),
    "Lion single": lambda ps, hp: Lion(ps, foreach=False, **hp),
    "CLion foreach": lambda ps, hp: CLion(ps, foreach=True, **hp),
    "CLion single": lambda ps, hp: CLion(ps, foreach=False, **hp),
    "lion-pytorch": lambda ps, hp: LionPytorch(ps, **hp),
    "AdamW foreach": lambda ps, hp: torch.optim.AdamW(ps, lr=hp["lr"], weight_decay=hp["weight_decay"], foreach=True),
}


def time_step(make, shapes, device, hparams, warmup, repeats) -> float:
    generator = torch.Generator(device="cpu").manual_seed(0)
    params = []
    for shape in shapes:
        p = torch.randn(shape, generator=generator).to(device).requires_grad_()
        p.grad = torch.randn(shape, generator=generator).to(device)
        params.append(p)
    optimizer = make(params, hparams)
    return median_seconds(optimizer.step, device, warmup, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--numel", type=float, default=1e7, help="size of the one-tensor model")
    parser.add_argument("--tensors", type=int, default=200, help="tensors in the many-tensor model")
    parser.add_argument("--many-numel", type=float, default=1e6, help="total size of the many-tensor model")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    args = parser.parse_args()

    device = torch.device(args.device)
    numel, many = int(args.numel), int(args.many_numel)
    hparams = dict(lr=1e-4, weight_decay=args.weight_decay)
    # measured before and after the optimizers (the machine's state drifts), the mean is used
    bandwidth_before = bandwidth_bytes_per_s(max(numel, many), device, args.warmup, 2 * args.repeats)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads, float32, "
          f"weight_decay {args.weight_decay}, load average {os.getloadavg()[0]:.2f} (other work skews CPU timings)")
    header = f"{'model':<28} {'optimizer':<14} {'ms/step':>9} {'ns/param':>9} {'x floor':>8} {'vs lion-pytorch':>16}"
    rows = []
    for kind, label in (("one", f"1 tensor x {numel:.0e}"), ("many", f"{args.tensors} tensors, {many:.0e} total")):
        shapes = model_shapes(kind, numel if kind == "one" else many, args.tensors)
        count = sum(torch.Size(s).numel() for s in shapes)
        seconds = {name: time_step(make, shapes, device, hparams, args.warmup, args.repeats)
                   for name, make in OPTIMIZERS.items()}
        rows += [(label, name, t, t / count * 1e9, seconds["lion-pytorch"] / t) for name, t in seconds.items()]
    bandwidth_after = bandwidth_bytes_per_s(max(numel, many), device, args.warmup, 2 * args.repeats)
    bandwidth = (bandwidth_before + bandwidth_after) / 2
    floor_ns = 20 / bandwidth * 1e9
    print(f"bandwidth of torch.add: {bandwidth / 1e9:.1f} GB/s (before {bandwidth_before / 1e9:.1f}, after "
          f"{bandwidth_after / 1e9:.1f}) -> floor {floor_ns:.3f} ns/param (20 B/param)")
    print(header)
    print("-" * len(header))
    for label, name, t, ns, speedup in rows:
        print(f"{label:<28} {name:<14} {t * 1e3:>9.3f} {ns:>9.3f} {ns / floor_ns:>8.2f} {speedup:>15.2f}x")


if __name__ == "__main__":
    main()
