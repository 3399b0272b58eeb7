"""lionconv: experiments that check the convergence theorems of Lion and CLion by running them."""

__version__ = "0.1.0"
