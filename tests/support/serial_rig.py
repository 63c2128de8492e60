"""A device serving one end of a ``SerialLine`` and a laptop on the other, for the tests.

``ServedDevice`` runs ``SerialEndpoint.serve_forever`` in a thread on ``line.a`` for a
``SimDevice`` (its own config, state and files root); ``peer(...)`` builds the
laptop's ``SerialPeer`` on ``line.b``. Timeouts are short so a cut line is noticed
in about a second.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from giter_agent.transport.serial.endpoint import SerialEndpoint
from giter_bundle.serial_peer import SerialPeer
from support.devices import SimDevice
from support.serial_line import SerialLine

IDLE_S = 1.5


class ServedDevice:
    def __init__(self, device: SimDevice, line: SerialLine, *, status_interval: float = 30.0,
                 idle_timeout: float = IDLE_S) -> None:
        self.device = device
        self.agent = device.agent()
        self.endpoint = SerialEndpoint(line.a, 115200, self.agent,
                                       status_interval=status_interval,
                                       idle_timeout=idle_timeout)
        self.endpoint.open()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.endpoint.serve_forever, args=(self._stop,),
                                        name="serial-device", daemon=True)
        self._thread.start()

    def wait_sessions(self, count: int, timeout: float = 20.0) -> None:
        """Until ``count`` sessions have ended (or raise)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.endpoint.sessions >= count:
                return
            time.sleep(0.02)
        raise AssertionError(f"only {self.endpoint.sessions} serial sessions ended")

    def close(self) -> None:
        self._stop.set()
        self.endpoint.wake()
        self._thread.join(10)
        self.endpoint.shut()
        self.agent.close()


def peer(line: SerialLine, tmp: Path, bundle: Path | None, **kwargs) -> SerialPeer:
    options = {"connect_timeout": 3.0, "idle_timeout": IDLE_S, "give_up_after": 20.0,
               "sleep": lambda s: time.sleep(min(s, 0.2))}
    options.update(kwargs)
    return SerialPeer(line.b, 115200, bundle=bundle, outbox=tmp / "outbox",
                      cache=tmp / "cache", **options)
