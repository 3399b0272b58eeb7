"""Train one problem with one optimizer and log the theory metrics (see README).

    python experiments/train.py optimizer=clion problem=digits_mlp steps=2000
    python experiments/train.py -m optimizer=lion,clion,sgd problem.d=100,1000,10000 seed=0,1,2

The same app as `lionconv train ...` (lionconv/app.py).
"""
import sys
from pathlib import Path

# From a clone without install: the repo root holds `lionconv` and the `hydra_plugins` launcher.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lionconv.app import run

if __name__ == "__main__":
    run(sys.argv[1:])
