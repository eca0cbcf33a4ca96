"""``python -m vtcompress``: the installed ``vtcompress`` command.

The command is an application, a layer above this core package, so the core finds it the way it
finds hosts: through the distribution's entry points (its console script), not by importing it.
"""

import sys
from importlib.metadata import entry_points

found = [
    ep
    for ep in entry_points(group="console_scripts", name="vtcompress")
    if ep.dist is None or ep.dist.name == "vtcompress"
]
if not found:
    sys.exit(
        "python -m vtcompress: the vtcompress command is not installed; reinstall vtcompress "
        "(pip install -e . in a checkout), or run python -m vtcompress.integrations.cli"
    )
sys.exit(found[0].load()())
