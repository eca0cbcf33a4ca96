"""Built-in compression methods, one module each.

Each module registers its method when imported. They are declared in the ``vtcompress.methods``
entry-point group of ``pyproject.toml`` (see :mod:`vtcompress.registry`), as a third-party
package declares its own, so nothing here imports them.
"""
