"""Models of the original LLaVA codebase (PyPI ``llava-torch``, import ``llava``): host, layout,
tiny offline checkpoint. Importing this package imports nothing from ``llava`` or transformers."""
