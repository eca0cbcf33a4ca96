"""``python -m vtcompress``: the ``vtcompress`` command."""

import sys

from vtcompress.cli import main

sys.exit(main())
