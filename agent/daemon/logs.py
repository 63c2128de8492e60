"""Structured log lines on stderr, one event per line, for journald and for people.

Every line is ``key=value`` pairs (logfmt): ``level``, ``device``, ``spec`` (the spec
commit the line concerns, or the applied one), ``event`` and ``reason`` when the code
gave them (every refusal does), ``commit`` for the commit a refusal names, and ``msg``.
Under systemd (``$JOURNAL_STREAM`` names our stderr) each line starts with a
``<priority>`` prefix so journald files it at the right level, and carries no
timestamp (journald adds one); elsewhere it starts with the UTC time.

``setup`` is called once by long-running commands (``giter-agent run``) and by each
pass worker. It does not import ``logging``: the handler (``daemon.logfmt``) is
installed when ``logging`` is loaded (``core.log.on_load``), which in a worker whose
pass logs nothing is never (docs/decisions.md, "Logging loaded when something is
logged").
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TextIO

from giter_agent.core import log


def journal_stream(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is systemd's journal stream (``$JOURNAL_STREAM`` = dev:ino)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (int(dev), int(ino)) == (st.st_dev, st.st_ino)
    except (ValueError, OSError):
        return False


def setup(device_id: str, spec: Callable[[], str | None], *, level: int = log.INFO,
          stream: TextIO | None = None) -> None:
    """Send every log record of the process to ``stream`` (stderr) as logfmt lines: now
    if ``logging`` is loaded, else as it is loaded (until then ``level`` decides which
    calls of ``core.log``'s loggers load it)."""
    out = stream or sys.stderr
    journal = journal_stream(out)

    def install(_logging: ModuleType) -> None:
        from giter_agent.daemon import logfmt

        logfmt.install(device_id, spec, level, out, journal)

    log.on_load(level, install)
