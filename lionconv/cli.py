"""The `lionconv` command: `train` (the Hydra app), `analyze`, `reproduce`, `list`.

    lionconv train -m experiment=rate_in_K            # every Hydra override and flag
    lionconv analyze results/runs/rate_in_K --out results/rate_in_K
    lionconv reproduce --only kkt_constrained         # results go to ./results unless --results
    lionconv list                                     # the presets and their claims

`analyze`, `reproduce` and `list` run scripts/analyze.py and scripts/reproduce.py (shipped inside
the wheel), so the command and the scripts are one code path.
"""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

from lionconv.resources import script

COMMANDS = {
    "train": "one run, or a sweep with -m (Hydra overrides; `lionconv train --help`)",
    "analyze": "verdicts, figures and REPORT.md of a sweep folder (scripts/analyze.py)",
    "reproduce": "run and analyse the presets, write REPORT.md (scripts/reproduce.py)",
    "list": "the presets and the claims each one tests (scripts/reproduce.py --list)",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: lionconv COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def _run_script(name: str, args: list[str], prog: str) -> int:
    path = script(name)
    sys.argv = [prog, *args]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as done:
        code = done.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, args = argv[0], argv[1:]
    if command == "train":
        sys.argv = ["lionconv train", *args]
        from lionconv.app import run as train

        train(args)
        return 0
    if command == "analyze":
        return _run_script("analyze", args, "lionconv analyze")
    if command == "reproduce":
        if not any(a == "--results" or a.startswith("--results=") for a in args):
            args = [*args, "--results", str(Path.cwd() / "results")]
        return _run_script("reproduce", args, "lionconv reproduce")
    if command == "list":
        return _run_script("reproduce", ["--list", *args], "lionconv list")
    print(f"lionconv: error: unknown command {command!r}; choose one of {', '.join(COMMANDS)}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
