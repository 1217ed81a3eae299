"""``python -m portico.cli``: the ``portico`` command, for an environment without its script."""

import sys

from portico.cli import main

sys.exit(main())
