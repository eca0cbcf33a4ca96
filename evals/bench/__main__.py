"""``python -m evals.bench``: see :mod:`evals.bench.run`."""

from .run import main

main()
