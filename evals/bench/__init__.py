"""Cost benchmark of the compression methods: ``python -m evals.bench --help``."""
