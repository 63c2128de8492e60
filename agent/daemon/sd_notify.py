"""systemd's notify protocol (sd_notify(3)) over ``$NOTIFY_SOCKET``, with plain sockets.

``READY=1`` once the daemon serves, ``STATUS=<one line>`` for ``systemctl status``,
``WATCHDOG=1`` every half of ``$WATCHDOG_USEC`` (when ``$WATCHDOG_PID`` is unset or
ours), ``STOPPING=1`` on the way out. Each message is one AF_UNIX datagram of
``KEY=value`` lines; a socket name starting with ``@`` is in the abstract namespace.
Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing and returns False. No
dependency on libsystemd: the protocol is one ``sendto``.

Used by the daemon (``daemon.loop``); other long-running parts may use it too.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from giter_agent.core.log import get_logger

log = get_logger("giter.sd_notify")


class Notifier:
    """Sends notify messages to systemd, or nothing when not run by it."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._sock: socket.socket | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None,
                     pid: int | None = None) -> Notifier:
        """A notifier for this process from ``$NOTIFY_SOCKET`` and ``$WATCHDOG_*``."""
        env = os.environ if environ is None else environ
        usec: int | None = None
        watchdog_pid = env.get("WATCHDOG_PID")
        # The watchdog is ours only if systemd named our pid, or named none (sd_watchdog_enabled).
        if not watchdog_pid or watchdog_pid == str(pid if pid is not None else os.getpid()):
            try:
                usec = int(env.get("WATCHDOG_USEC", "0"))
            except ValueError:
                usec = None
        return cls(env.get("NOTIFY_SOCKET"), usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half the timeout), or None: no watchdog."""
        if not self.enabled or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1e6

    def notify(self, **fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; False when not sent."""
        if self.address is None or not fields:
            return False
        lines = []
        for key, value in fields.items():
            # One line per field: a newline in a value would start a bogus field.
            lines.append(f"{key}={' '.join(str(value).splitlines())}")
        target = ("\0" + self.address[1:]) if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode("utf-8", "replace"), target)
        except OSError as exc:
            # systemd going away must not take the agent with it; the watchdog will tell.
            log.debug("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        fields = {"READY": "1"}
        if status:
            fields["STATUS"] = status
        return self.notify(**fields)

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG="1")

    def stopping(self, status: str | None = None) -> bool:
        fields = {"STOPPING": "1"}
        if status:
            fields["STATUS"] = status
        return self.notify(**fields)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
