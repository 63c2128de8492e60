"""The device's serial port: a console for people, the sync protocol for laptops.

``SerialEndpoint`` owns the open port. Everything read goes through a preamble
scanner: ordinary bytes are keystrokes for ``transport.serial.console``; the laptop's
preamble (``giter_agent.transport.serial.link.PREAMBLE``, bytes no keyboard sends) switches the port
to a protocol session (``transport.serial.session``) until it ends, then back to the
console. A session that fails (a pulled cable, garbage, a protocol error) is logged
and shown on the console; a partial transfer is kept for the next session.

Run it in the foreground (``giter-agent serve-serial``: ``serve_forever``), in a
thread of the daemon (``SerialService``: ``giter-agent run`` with ``[serial] port``),
or from any select loop with ``fileno``, ``next_timeout``, ``handle_readable`` and
``handle_timeout``. Other threads hand it lines for the console (``post``: the USB
stick's progress, ``SAFE TO REMOVE``) and news of a changed state (``refresh``); it
prints them between sessions, never inside one.
A session blocks its caller while it runs (at most ``idle_timeout`` of silence, and
the sync itself); ``heartbeat`` is called at least once a second meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from giter_agent.core.errors import GiterError
from giter_agent.core.log import DEBUG, WARNING, get_logger
from giter_agent.transport.device import SyncingDevice
from giter_agent.transport.serial.console import Console
from giter_agent.transport.serial.link import (
    HELLO,
    PREAMBLE,
    Link,
    LinkLost,
    Port,
    ProtocolError,
    Restarted,
    SerialError,
    error,
)
from giter_agent.transport.serial.port import open_port
from giter_agent.transport.serial.session import DeviceSession, SessionOutcome
from giter_agent.transport.serial.transfer import WINDOW

log = get_logger("giter.serial")


def configured_port(agent: SyncingDevice) -> str | None:
    """The port to serve: ``[serial] port``, else the board config's ``serial_port``."""
    return agent.config.serial_port or agent.board.serial_port


class PreambleScanner:
    """Split input into keystrokes and, once the preamble is seen, protocol bytes."""

    def __init__(self) -> None:
        self._held = b""  # a tail that may be the start of the preamble

    def feed(self, data: bytes) -> tuple[bytes, bytes | None]:
        """(bytes for the console, None) or (console bytes before it, bytes after it)."""
        buf = self._held + data
        self._held = b""
        at = buf.find(PREAMBLE)
        if at >= 0:
            return buf[:at], buf[at + len(PREAMBLE):]
        for keep in range(min(len(PREAMBLE) - 1, len(buf)), 0, -1):
            if buf.endswith(PREAMBLE[:keep]):
                self._held = buf[-keep:]
                return buf[:-keep], None
        return buf, None


class SerialEndpoint:
    """One serial port served for one ``Agent``; see the module docstring."""

    def __init__(self, port: str, baud: int, agent: SyncingDevice, *,
                 opener: Callable[[str, int], Port] = open_port,
                 clock: Callable[[], float] = time.monotonic,
                 status_interval: float | None = 5.0, idle_timeout: float = 10.0,
                 window: int = WINDOW, heartbeat: Callable[[], None] | None = None) -> None:
        self.port_name = port
        self.baud = baud
        self.agent = agent
        self.opener = opener
        self.clock = clock
        self.status_interval = status_interval
        self.idle_timeout = idle_timeout
        self.window = window
        self.heartbeat = heartbeat
        self.port: Any = None
        self.console: Console | None = None
        self.scanner = PreambleScanner()
        self.last_session: SessionOutcome | None = None
        self.last_error: GiterError | None = None
        self.sessions = 0  # sessions served (ended, well or not), for tests and the log
        # Lines from other threads, printed by the serving thread; the pipe wakes it.
        self._mail: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._last_failure = ""  # the last reason the port could not be served, logged once
        self.on_busy: Callable[[], None] | None = None  # a session or sync starts or ends

    @property
    def line_rate(self) -> float:
        return self.baud / 10  # 8N1: ten bits on the wire per byte

    # -- the port -----------------------------------------------------------------------
    def open(self) -> None:
        """Open the port (``SerialPortError`` if it cannot be) and greet the console."""
        self.port = self.opener(self.port_name, self.baud)
        self.scanner = PreambleScanner()
        self.console = Console(self.agent, self._write, clock=self.clock,
                               status_interval=self.status_interval, on_busy=self.on_busy)
        log.info("serving %s at %d baud", self.port_name, self.baud)

    def close(self) -> None:
        if self.port is not None:
            try:
                self.port.close()
            finally:
                self.port = None

    def __enter__(self) -> SerialEndpoint:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self.port.fileno()

    # -- from other threads -------------------------------------------------------------
    def post(self, line: str) -> None:
        """Print ``line`` on the console soon (thread-safe; dropped while the port is shut)."""
        self._mail.put(line)
        self.wake()

    def refresh(self) -> None:
        """The state may have changed: look at the status line soon (thread-safe)."""
        self._mail.put(None)
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"w")

    def _deliver(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._wake_r, 512):
                pass
        console = self.console
        while True:
            try:
                item = self._mail.get_nowait()
            except queue.Empty:
                return
            if console is None:
                continue
            if item is None:
                console.refresh()
            else:
                console.notice(item[:200])

    def _write(self, data: bytes) -> None:
        """Console output: best effort. A USB gadget port with no host reading it blocks
        writes; the console then drops its line rather than stall the port."""
        try:
            self.port.write(data)
        except OSError as exc:
            from serial import SerialTimeoutException

            if not isinstance(exc, SerialTimeoutException):
                raise
            log.debug("console output to %s dropped: nobody is reading", self.port_name)

    # -- the select-loop interface ------------------------------------------------------
    def next_timeout(self) -> float:
        """Seconds until ``handle_timeout`` has something to do (the status line)."""
        assert self.console is not None, "open() first"
        return max(0.0, self.console.due() - self.clock())

    def handle_timeout(self) -> None:
        assert self.console is not None, "open() first"
        self.console.tick()

    def handle_readable(self) -> None:
        """Read what has arrived; keystrokes are answered, a preamble starts a session."""
        assert self.console is not None, "open() first"
        self.port.timeout = 0
        data = self.port.read(max(1, self.port.in_waiting))
        typed, rest = self.scanner.feed(data)
        if typed:
            self.console.feed(typed)
        if rest is not None:
            self.serve_session(rest)

    def serve_once(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` (default: until the status line is due, or a line is
        posted) and handle what came."""
        wait = self.next_timeout() if timeout is None else min(timeout, self.next_timeout())
        ready, _, _ = select.select([self.fileno(), self._wake_r], [], [],
                                    None if wait == float("inf") else wait)
        if self._wake_r in ready:
            self._deliver()
        if self.fileno() in ready:
            self.handle_readable()
        self.handle_timeout()

    def serve_forever(self, stop: threading.Event | None = None, *,
                      reopen_s: float = 5.0) -> None:
        """Serve until ``stop`` is set; a port that vanishes is reopened every ``reopen_s``."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                if self.port is None:
                    self.open()
                    self._last_failure = ""
                # Sleeps until a key, a posted line, the status line or ``stop`` (``wake``).
                self.serve_once()
            except (OSError, GiterError) as exc:
                # A USB serial adapter pulled out, or the port not there yet: said once,
                # not every few seconds for as long as it stays away.
                failure = str(exc)
                log.log(DEBUG if failure == self._last_failure else WARNING,
                        "serial port %s: %s; trying again every %.0f s", self.port_name, exc,
                        reopen_s)
                self._last_failure = failure
                self.close()
                stop.wait(reopen_s)
            except Exception:
                # A bug must not take the console away from the technician for good.
                log.exception("serial port %s: unexpected error; reopening in %.0f s",
                              self.port_name, reopen_s)
                self.close()
                stop.wait(reopen_s)
        self.close()

    def shut(self) -> None:
        """Release the wake-up pipe (after ``serve_forever`` has returned)."""
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- a protocol session -------------------------------------------------------------
    def serve_session(self, initial: bytes = b"") -> SessionOutcome | None:
        """Run one protocol session on the port (the preamble has been seen)."""
        console = self.console
        assert console is not None, "open() first"
        console.busy = "serial"
        link = Link(self.port, clock=self.clock, idle_timeout=self.idle_timeout,
                    restart_on_hello=True, heartbeat=self.heartbeat)
        outcome: SessionOutcome | None = None
        try:
            link.feed(initial)  # what followed the preamble in the same read
            hello = self._await_hello(link)
            while True:
                try:
                    session = DeviceSession(link, self.agent, port_name=self.port_name,
                                            window=self.window, line_rate=self.line_rate)
                    outcome = session.run(hello)
                    break
                except Restarted as restart:
                    log.info("serial: the peer reconnected; starting over")
                    hello = restart.hello
            self.last_session, self.last_error = outcome, None
            log.info("serial session: %s", outcome.summary())
            note = f"serial sync from a laptop: {outcome.summary()}"
        except ProtocolError as exc:
            self._fail(link, exc)
            with contextlib.suppress(SerialError, OSError):
                link.send(error(exc.reason, str(exc)))
            note = f"serial session refused: {exc.reason}: {exc}"
        except SerialError as exc:  # LinkLost, PeerError, TransferError
            failure = self._fail(link, exc)
            note = f"serial session ended: {failure.reason}: {failure}"
        except GiterError as exc:  # the agent's side: a state file, a key, the config
            self.last_error = exc
            log.error("serial session failed: %s: %s", exc.reason, exc)
            with contextlib.suppress(SerialError, OSError):
                link.send(error(exc.reason, str(exc)))
            note = f"serial session failed: {exc.reason}: {exc}"
        finally:
            console.busy = None
            self.scanner = PreambleScanner()
            self.sessions += 1
        console.notice(note[:200])
        return outcome

    def _await_hello(self, link: Link) -> Any:
        give_up = self.clock() + self.idle_timeout
        while self.clock() < give_up:
            msg = link.recv(1.0)
            if msg is not None and msg.kind == HELLO:
                return msg
        if not link.decoder.stats.frames:
            raise LinkLost("no frame after the preamble")  # reworded by _fail
        raise ProtocolError(f"the peer sent frames but no HELLO in {self.idle_timeout:g} s")

    def _fail(self, link: Link, exc: SerialError) -> SerialError:
        stats = link.decoder.stats
        if isinstance(exc, LinkLost) and not stats.frames:
            count, _ = link.decoder.unframed()
            exc = ProtocolError(
                f"a peer announced itself but sent no valid frame ({count} bytes of garbage, "
                f"{stats.bad_frames} bad frames): wrong baud rate, or not a giter-bundle peer")
        self.last_error = exc
        log.warning("serial session failed: %s: %s", exc.reason, exc)
        return exc



class SerialService:
    """The serial port served by the daemon (``giter-agent run`` with ``[serial] port``).

    The endpoint runs in a thread of its own, in the process that owns the pins and the
    LED: a serial sync uses the daemon's ``Agent`` and takes the state lock like any
    pass (a pass waits for it, and it for a pass). The daemon sees it as a trigger with
    no descriptors and no jobs of its own; what it adds:

    - ``start()``/``close()``: the thread, from the daemon's start and shutdown;
    - ``busy()``: a session or a console sync is running (the LED says ``syncing``);
    - ``notice(line)``: news for the console (the USB stick's progress, SAFE TO REMOVE);
    - ``status_changed()``: the daemon's health changed, so the status line may have.

    ``on_change`` is called (from the serial thread) when ``busy()`` flips or a session
    ends, so the daemon can show it at once.
    """

    name = "serial"

    def __init__(self, endpoint: SerialEndpoint, *, reopen_s: float = 5.0,
                 on_change: Callable[[], None] | None = None) -> None:
        self.endpoint = endpoint
        self.reopen_s = reopen_s
        self.on_change = on_change
        endpoint.on_busy = on_change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sessions = 0

    def start(self) -> None:
        log.info("serving the serial port %s at %d baud", self.endpoint.port_name,
                 self.endpoint.baud, extra={"event": "serial"})
        self._thread = threading.Thread(target=self._serve, name="giter-serial", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.endpoint.serve_forever(self._stop, reopen_s=self.reopen_s)

    def busy(self) -> bool:
        console = self.endpoint.console
        return console is not None and console.busy is not None

    def notice(self, line: str) -> None:
        self.endpoint.post(line)

    def status_changed(self) -> None:
        self.endpoint.refresh()

    # The trigger interface (agent.triggers): no descriptors, never due, no jobs.
    def fds(self) -> list[tuple[int, int]]:
        return []

    def next_due(self, now: float) -> float | None:
        return None

    def fire(self, now: float, ready: set[int]) -> list[Any]:
        return []

    def finished(self, job: Any, report: Any, now: float) -> None:
        """Nothing: a serial session is not one of the daemon's jobs."""

    def close(self) -> None:
        self._stop.set()
        self.endpoint.wake()
        if self._thread is not None:
            # A session mid-sync is abandoned like any pass at shutdown (the thread is a
            # daemon thread); every step of a sync survives that.
            self._thread.join(2.0)
        if self._thread is None or not self._thread.is_alive():
            self.endpoint.shut()
