"""``python -m evals.bench``: see :mod:`evals.bench.run`."""

from evals.bench.run import main

main()
