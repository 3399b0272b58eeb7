"""Train one problem with one optimizer and log the theory metrics (see README).

    python experiments/train.py optimizer=clion problem=digits_mlp steps=2000
    python experiments/train.py -m optimizer=lion,clion,sgd problem.d=100,1000,10000 seed=0,1,2

The same app as `lionconv train ...` (lionconv/app.py).
"""
import sys

from lionconv.app import run

if __name__ == "__main__":
    run(sys.argv[1:])
