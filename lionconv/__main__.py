"""`python -m lionconv ...` is the `lionconv` command."""
import sys

from lionconv.cli import main

sys.exit(main())
