"""``python -m giter_agent`` runs the ``giter-agent`` command line."""

import sys

from giter_agent.cli.main import entry

sys.exit(entry())
