"""The package list, found rather than written: every package under the three source folders
that pyproject.toml's ``package-dir`` maps into the ``vtcompress`` namespace, so that no folder (a
new host, say) can be left out of the wheel. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

# Keep in step with [tool.setuptools] package-dir in pyproject.toml (tests/core/test_host_declarations.py).
PACKAGE_DIR = {
    "vtcompress": "vtcompress",
    "vtcompress.integrations": "integrations",
    "vtcompress.kernels": "kernels",
}

setup(
    packages=[
        f"{package}.{sub}" if sub else package
        for package, folder in PACKAGE_DIR.items()
        for sub in ["", *find_packages(folder)]
    ]
)
