#!/usr/bin/env python
"""Reproduce every claim: run each experiment preset, analyse it, write results/REPORT.md.

    python scripts/reproduce.py                       # small scale, every preset (make demo)
    python scripts/reproduce.py --only rate_in_K      # one preset
    python scripts/reproduce.py --scale paper --jobs 16
    python scripts/reproduce.py --analysis-only       # re-analyse the runs already on disk
    python scripts/reproduce.py --list                # the presets and their claims

Runs go to results/runs/<preset>/ (resumable: a second call skips finished runs), the analysis of
each preset to results/<preset>/, and the verdicts of all presets to results/REPORT.md.
The code is lionconv/reproduce.py (also the Python API: `lionconv.run_preset`).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from lionconv.reproduce import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
