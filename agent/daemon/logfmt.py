"""The daemon's log line: one event per line, ``key=value`` pairs (logfmt).

``daemon.logs.setup`` installs ``install``'s handler on the root logger when
``logging`` is loaded: at once in the daemon, and in a pass worker only when the pass
emits something (this module imports ``logging``; ``daemon.logs`` does not).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
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


def install(device_id: str, spec: Callable[[], str | None], level: int, out: TextIO,
            journal: bool) -> None:
    """Make ``out`` the root logger's one handler, writing ``LogfmtFormatter`` lines."""
    handler = logging.StreamHandler(out)
    handler.setFormatter(LogfmtFormatter(device_id, spec, journal))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # dulwich logs every pkt-line at DEBUG; that is for debugging dulwich, not us.
    logging.getLogger("dulwich").setLevel(max(level, logging.INFO))
