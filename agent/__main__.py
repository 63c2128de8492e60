"""``python -m agent`` runs the ``giter-agent`` command line."""

import sys

from agent.cli import main

sys.exit(main())
