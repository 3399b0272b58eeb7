"""The run folder's files, their columns and keys: written once, here.

The trainer orders its tables by these lists, the loader reads its columns from them, the tests
check a real run's files against them, and docs/RUN_LAYOUT.md's tables are rendered from them
(`python -m lionconv.schema --write docs/RUN_LAYOUT.md` refreshes the generated blocks; a test
fails when the page and this module differ).
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence


@dataclass(frozen=True)
class Field:
    """One column of a table or one key of summary.json."""

    name: str
    type: str      # int | float | str | bool | dict | list | null-able variants written "float|null"
    meaning: str
    when: str = "always"  # which runs have it


# THEORY §2–§5 notation: f the objective, g the minibatch gradient, c Lion's interpolation,
# λ the weight decay of the KKT residual (0 for SGD, whose decay is an ℓ2 term), d = numel.
TEST_SPLIT = "problems with a test split"
CLASSIFIER = "classifiers"
VALIDATION = "network problems with val_fraction > 0"
BOX = "Lion-family runs with λ > 0"
ZERO_CHAIN = "problem=zero_chain (its Problem.extra_metrics)"
CLION = "CLion"
LION_FAMILY = "Lion, CLion, SignSGD"

# Whole-model metrics of x_k on the full gradient ∇f(x_k): metrics.parquet rows and summary.final.
WHOLE_MODEL = (
    Field("grad_l1", "float", "‖∇f(x_k)‖₁ (float64 accumulation)"),
    Field("grad_l2", "float", "‖∇f(x_k)‖₂"),
    Field("l1_l2", "float", "‖∇f‖₁/‖∇f‖₂ (THEORY §5)"),
    Field("ratio_r", "float", "r = ‖∇f‖₁/(√d·‖∇f‖₂) ∈ [1/√d, 1] (THEORY §5)"),
    Field("kkt_residual", "float", "G_λ = ‖∇f‖₁ + λ·⟨∇f, x⟩ (THEORY §3)"),
    Field("feasibility", "float", "max(0, λ‖x‖∞ − 1) (THEORY §3)"),
    Field("x_linf", "float", "‖x_k‖∞"),
    Field("d", "int", "number of trainable scalars"),
    Field("loss", "float", "f(x_k), the full training loss"),
    Field("test_loss", "float", "mean loss on the test split", TEST_SPLIT),
    Field("test_acc", "float", "accuracy on the test split", CLASSIFIER),
    Field("train_acc", "float", "accuracy on the training set", CLASSIFIER),
    Field("val_loss", "float", "mean loss on the validation split carved from the training set", VALIDATION),
    Field("val_acc", "float", "accuracy on the validation split", VALIDATION),
    Field("face_fraction", "float", "fraction of coordinates with λ|x_i| ≥ 1 − 0.01, on the box's faces "
          "(THEORY §3)", BOX),
    Field("prog_1_4", "float", "prog_{1/4}(x/λ): last coordinate with |x_i| > λ/4 (THEORY §9)", ZERO_CHAIN),
    Field("prog_1", "float", "prog_1(x/λ): last coordinate with |x_i| > λ", ZERO_CHAIN),
    Field("prog_0", "float", "last non-zero coordinate (the support of x)", ZERO_CHAIN),
    Field("grad_mean", "float", "(1/d)·Σ_i ∂_i f(x_k), signed: mean θ on quadratic (THEORY §8)", "problem=quadratic"),
)

METRICS = WHOLE_MODEL + (
    Field("mb_grad_l1", "float", "‖g_k‖₁ of the minibatch gradient the step uses"),
    Field("mb_grad_l2", "float", "‖g_k‖₂"),
    Field("mb_l1_l2", "float", "‖g_k‖₁/‖g_k‖₂"),
    Field("mb_ratio_r", "float", "‖g_k‖₁/(√d·‖g_k‖₂)"),
    Field("step", "int", "k, 0 ≤ k < K (the row measures x_k, before step k)"),
    Field("batch_loss", "float", "minibatch loss at x_k"),
    Field("avg_grad_l1", "float", "running (1/n)Σ‖∇f‖₁ over the logged steps so far"),
    Field("avg_kkt_residual", "float", "running (1/n)Σ G_λ over the logged steps so far"),
    Field("tau", "float", "τ_k = min over c_j ≠ 0 of |c_j| (THEORY §7); NaN where not recorded"),
    Field("sign_fraction", "float", "CLion: fraction of coordinates on the sign branch; NaN otherwise"),
    Field("wall_time", "float", "seconds since the run started (resumes included)"),
    Field("lr", "float", "η of step k"),
    Field("beta1", "float", "β1 (SignSGD 0; SGD: its momentum)"),
    Field("beta2", "float", "β2 (SignSGD 0; NaN for SGD)"),
    Field("weight_decay", "float", "λ"),
    Field("nu", "float", "CLion's ν as used (given, or calibrated by optimizer.nu_quantile)", CLION),
)

TAU_STEPS = (
    Field("step", "int", "k, every step of the run (0 ≤ k < steps done)"),
    Field("tau", "float", "τ_k = min over c_j ≠ 0 of |c_j| at step k (THEORY §7)"),
    Field("sign_fraction", "float", "CLion: fraction of coordinates on the sign branch at step k; NaN otherwise"),
)

TENSOR_METRICS = (
    Field("tensor", "str", "parameter name"),
    Field("numel", "int", "its number of scalars (the d of its ratio_r)"),
    Field("grad_l1", "float", "‖∇f‖₁ restricted to the tensor"),
    Field("grad_l2", "float", "‖∇f‖₂ restricted to the tensor"),
    Field("l1_l2", "float", "‖∇f‖₁/‖∇f‖₂ of the tensor"),
    Field("ratio_r", "float", "‖∇f‖₁/(√numel·‖∇f‖₂)"),
    Field("kkt_residual", "float", "the tensor's share of G_λ"),
    Field("feasibility", "float", "max(0, λ‖x‖∞ − 1) on the tensor"),
    Field("step", "int", "k"),
)

AVERAGES = (
    Field("grad_l1", "float|null", "(1/n)Σ‖∇f(x_k)‖₁ over the logged steps: the theorems' (1/K)Σ"),
    Field("kkt_residual", "float|null", "(1/n)Σ G_λ(x_k)"),
    Field("kind", "str", "`exact` when every step was logged (n = K), else `logged_steps`"),
    Field("n", "int", "number of logged steps"),
)

CONSTANTS = (
    Field("Delta", "float|null", "Δ = f(x_0) − inf f (closed form or estimated)"),
    Field("L", "float|null", "ℓ2 smoothness constant"),
    Field("sigma", "float|null", "total noise level, E‖g − ∇f‖₂² ≤ σ²"),
    Field("f_low", "float|null", "inf f, or the lower bound used for Δ"),
    Field("kind", "str", "`closed_form` or `estimated`"),
    Field("T", "int", "chain length", ZERO_CHAIN),
    Field("p", "float", "reveal probability of the oracle", ZERO_CHAIN),
    Field("scale", "float", "λ of f(x) = (Lλ²/152)·F_T(x/λ)", ZERO_CHAIN),
    Field("epsilon", "float", "the accuracy ε the instance is scaled to", ZERO_CHAIN),
    Field("Delta_seen", "float", "f(x_0) − the lowest loss logged", "runs with a logged row"),
)

PROVENANCE = (
    Field("git_commit", "str|null", "commit of the code"),
    Field("git_dirty", "bool|null", "uncommitted changes present"),
    Field("python", "str", "Python version"),
    Field("torch", "str", "torch version"),
    Field("numpy", "str", "NumPy version"),
    Field("pandas", "str", "pandas version"),
    Field("platform", "str", "OS and architecture"),
    Field("cpu", "str", "CPU model"),
    Field("cpu_count", "int", "logical CPUs"),
    Field("torch_threads", "int", "torch threads of the run"),
    Field("hostname", "str", "machine"),
    Field("time", "str", "UTC time, ISO 8601"),
    Field("argv", "list", "the command line"),
    Field("hydra", "str", "Hydra version", "Hydra installed"),
    Field("gpu", "str", "GPU model", "device=cuda"),
    Field("cuda", "str", "CUDA version", "device=cuda"),
)

SUMMARY = (
    Field("status", "str", "`running`, `finished`, `diverged` or `failed`"),
    Field("error", "str", "the one-line message of the exception that ended the run", "failed runs"),
    Field("diverged_step", "int|null", "first step with a non-finite loss or gradient"),
    Field("run_id", "str", "hash of the resolved config (the folder's suffix)"),
    Field("optimizer", "str", "optimizer name"),
    Field("problem", "str", "problem name"),
    Field("d", "int", "number of trainable scalars"),
    Field("K", "int", "steps (the horizon)"),
    Field("seed", "int", "seed"),
    Field("lr", "float", "η"),
    Field("beta1", "float", "β1"),
    Field("beta2", "float", "β2"),
    Field("weight_decay", "float", "λ"),
    Field("schedule", "str", "schedule name"),
    Field("steps_done", "int", "steps taken"),
    Field("averages", "dict", "see *summary.json: averages*"),
    Field("final", "dict|null", "the whole-model metrics at x_K (the metrics.parquet columns "
          "grad_l1 … train_acc); null unless finished"),
    Field("constants", "dict", "see *summary.json: constants*"),
    Field("min_tau", "float|null", "min over the run of τ_k"),
    Field("mean_sign_fraction", "float|null", "CLion: mean fraction on the sign branch"),
    Field("lr_schedule", "dict", "the lr schedule (name, warmup_steps, final_fraction) that multiplies lr"),
    Field("nu", "float", "CLion's ν as used", CLION),
    Field("nu_calibration", "dict|null", "CLion with optimizer.nu_quantile: the pilot (q, steps, ν); else null"),
    Field("tau_quantiles", "dict|null", "quantiles 0, .01, .1, .5, .9, .99, 1 of τ_k over all steps; "
          "null where τ is not recorded"),
    Field("training_set", "dict|null", "network problems with a training subset: n_train, the subset "
          "seed used, replace_index; else null"),
    Field("training", "dict", "initial_loss f(x_0), final_loss f(x_K), distance_from_start ‖x_K − x_0‖₂ "
          "(the inputs of theory.did_train)"),
    Field("wall_time_s", "float", "seconds of training"),
    Field("provenance", "dict", "see *summary.json: provenance*"),
)

TABLES: dict[str, Sequence[Field]] = {
    "metrics": METRICS, "tensor_metrics": TENSOR_METRICS, "tau_steps": TAU_STEPS, "summary": SUMMARY,
    "summary.averages": AVERAGES, "summary.final": WHOLE_MODEL, "summary.constants": CONSTANTS,
    "summary.provenance": PROVENANCE,
}


def names(fields: Sequence[Field], *wanted: str) -> list[str]:
    """Field names in schema order; with `wanted`, exactly those (KeyError for one not in it)."""
    known = [f.name for f in fields]
    missing = [w for w in wanted if w not in known]
    if missing:
        raise KeyError(f"not in the run layout: {', '.join(missing)}")
    return list(wanted) if wanted else known


def ordered(columns: Iterable[str], fields: Sequence[Field]) -> list[str]:
    """`columns` in schema order; any the schema does not know at the end (a test flags them)."""
    columns = list(columns)
    known = [f.name for f in fields if f.name in columns]
    return known + [c for c in columns if c not in known]


def expected(fields: Sequence[Field], present: Mapping[str, bool] | None = None) -> list[str]:
    """The names a file must have: the `always` ones plus those whose condition is in `present`."""
    present = present or {}
    return [f.name for f in fields if f.when == "always" or present.get(f.when, False)]


def render(fields: Sequence[Field]) -> str:
    """A markdown table: name, type, meaning, when."""
    lines = ["| name | type | meaning | present in |", "|---|---|---|---|"]
    lines += [f"| `{f.name}` | {f.type} | {f.meaning} | {f.when} |" for f in fields]
    return "\n".join(lines)


# A generated block: its opening marker, the table (no HTML comment inside), the closing marker.
_BLOCK = re.compile(r"<!-- schema:(?P<key>[\w.]+) -->\n(?P<body>(?:(?!<!--).)*?)\n?<!-- /schema -->", re.S)


def blocks(text: str) -> dict[str, str]:
    """The generated blocks of a page: {table key: its text}."""
    return {m["key"]: m["body"] for m in _BLOCK.finditer(text)}


def refresh(text: str) -> str:
    """The page with every generated block re-rendered from this module."""
    return _BLOCK.sub(lambda m: f"<!-- schema:{m['key']} -->\n{render(TABLES[m['key']])}\n<!-- /schema -->",
                      text)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--write":
        sys.exit("usage: python -m lionconv.schema --write docs/RUN_LAYOUT.md")
    page = Path(sys.argv[2])
    page.write_text(refresh(page.read_text()))
    print(f"refreshed {page}")
