"""``python -m vtcompress.integrations.cli``: the ``vtcompress`` command."""

import sys

from vtcompress.integrations.cli import main

sys.exit(main())
