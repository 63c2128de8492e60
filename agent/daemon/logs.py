"""Structured log lines on stderr, one event per line, for journald and for people.

Every line is ``key=value`` pairs (logfmt): ``level``, ``device``, ``spec`` (the spec
commit the line concerns, or the applied one), ``event`` and ``reason`` when the code
gave them (every refusal does), ``commit`` for the commit a refusal names, and ``msg``.
Under systemd (``$JOURNAL_STREAM`` names our stderr) each line starts with a
``<priority>`` prefix so journald files it at the right level, and carries no
timestamp (journald adds one); elsewhere it starts with the UTC time.

``setup`` is called once by long-running commands (``giter-agent run``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

# sd-daemon(3) priority prefixes.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}
_EXTRA = ("event", "reason", "commit", "worker_peak_mib")


def _quote(value: object) -> str:
    text = " ".join(str(value).splitlines())
    if text and not any(c in text for c in ' "=\\'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class LogfmtFormatter(logging.Formatter):
    def __init__(self, device_id: str, spec: Callable[[], str | None], journal: bool) -> None:
        super().__init__()
        self.device_id = device_id
        self.spec = spec
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        fields: list[tuple[str, object]] = []
        if not self.journal:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            fields.append(("time", f"{stamp}.{int(record.msecs):03d}Z"))
        fields += [("level", record.levelname.lower()), ("device", self.device_id)]
        spec = getattr(record, "spec", None) or self.spec()
        if spec:
            fields.append(("spec", spec))
        for key in _EXTRA:
            value = getattr(record, key, None)
            if value:
                fields.append((key, value.decode() if isinstance(value, bytes) else value))
        fields += [("logger", record.name), ("msg", record.getMessage())]
        if record.exc_info:
            fields.append(("error", self.formatException(record.exc_info)))
        line = " ".join(f"{k}={_quote(v)}" for k, v in fields)
        if self.journal:
            line = f"<{_PRIORITY.get(record.levelno, 6)}>{line}"
        return line


def journal_stream(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is systemd's journal stream (``$JOURNAL_STREAM`` = dev:ino)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (int(dev), int(ino)) == (st.st_dev, st.st_ino)
    except (ValueError, OSError):
        return False


def setup(device_id: str, spec: Callable[[], str | None], *, level: int = logging.INFO,
          stream: TextIO | None = None) -> None:
    """Send every log record of the process to ``stream`` (stderr) as logfmt lines."""
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    handler.setFormatter(LogfmtFormatter(device_id, spec, journal_stream(out)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # dulwich logs every pkt-line at DEBUG; that is for debugging dulwich, not us.
    logging.getLogger("dulwich").setLevel(max(level, logging.INFO))
