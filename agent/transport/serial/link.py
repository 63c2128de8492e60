"""Messages over a serial line: msgpack inside checked frames, requests that are resent.

Both ends of the serial protocol (the device's ``transport.serial.session`` and the
laptop's ``giter_bundle.serial_peer``) talk through a ``Link``: it frames and sends a
message, decodes what arrives (bad frames are dropped and counted, see
``transport.serial.frames``), validates every message before anyone acts on it, and
notices a silent line. The protocol is written up in ``docs/serial.md``.

Reliability without a connection layer: the line is a FIFO, so a message is either
delivered in order or lost. Every control message that needs an answer is a
*request*: ``Link.request`` resends it until the answer comes, and the answering side
remembers its answer (``Link.answer``) so a repeated request, which means the answer
was lost, is answered again from memory whatever phase the session is in. Bulk data
has its own acknowledgements (``transport.serial.transfer``).

The port is anything with pyserial's ``read``/``write``/``in_waiting``/``timeout``; only
those are used, so the laptop side runs wherever pyserial does.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from giter_agent.core.errors import (
    LinkLost,
    PeerError,
    ProtocolError,
    Restarted,
    SerialError,
)
from giter_agent.transport.serial.frames import DELIMITER, FrameDecoder, encode_frame

PROTOCOL = 1
# Sent by the laptop before its HELLO. The device's console looks for it in what a
# person types: NUL, then 0xFF and 0xFE, which no keyboard sends and UTF-8 never
# contains, around a name. The zeros also flush any half frame in a decoder.
PREAMBLE = b"\x00\xffGITER-SERIAL\xfe\x00"

HELLO, OFFER, WANT, DATA, ACK, FIN, DONE, BUSY, END, ERROR = range(1, 11)
NAMES = {HELLO: "HELLO", OFFER: "OFFER", WANT: "WANT", DATA: "DATA", ACK: "ACK", FIN: "FIN",
         DONE: "DONE", BUSY: "BUSY", END: "END", ERROR: "ERROR"}
CONTROL = {HELLO, OFFER, WANT, FIN, DONE, BUSY, END, ERROR}
# A frame that starts a burst after a pause is led by an extra delimiter, so whatever
# the other side's decoder holds (console text, noise) ends there and then.
_LEAD_AFTER_IDLE_S = 0.1
MAX_MESSAGE_TEXT = 600

# What a session's transfers carry, and their numbers within a session: the laptop's
# bundle, then the device's two files (``session``, ``giter_bundle.serial_peer``).
SPEC, STATUS, RECEIPT, NOTHING = "spec", "status", "receipt", "none"
X_SPEC, X_STATUS, X_RECEIPT = 1, 2, 3


class Port(Protocol):
    """The part of ``serial.Serial`` the link uses."""

    timeout: float | None

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Message:
    """One decoded message: its type and body (a dict for control, a tuple for data)."""

    kind: int
    body: Any

    def get(self, key: str, default: Any = None) -> Any:
        return self.body.get(key, default) if isinstance(self.body, dict) else default

    @property
    def name(self) -> str:
        return NAMES.get(self.kind, str(self.kind))


def control(msg_type: int, /, **body: Any) -> Message:
    return Message(msg_type, body)


def data(x: int, seq: int, payload: bytes) -> Message:
    return Message(DATA, (x, seq, payload))


def ack(x: int, next_seq: int, sack: int, probe: int = 0) -> Message:
    """``next_seq``: every chunk below has arrived; bit i of ``sack``: chunk next+1+i has."""
    return Message(ACK, (x, next_seq, sack, probe))


def error(reason: str, message: str) -> Message:
    return control(ERROR, reason=reason, message=message[:MAX_MESSAGE_TEXT])


def pack(msg: Message) -> bytes:
    import msgpack

    if msg.kind in CONTROL:
        return msgpack.packb([msg.kind, msg.body], use_bin_type=True)
    return msgpack.packb([msg.kind, *msg.body], use_bin_type=True)


# What each control message must carry (key -> type); other keys are optional.
_REQUIRED: dict[int, dict[str, type | tuple[type, ...]]] = {
    HELLO: {"proto": int, "role": str, "nonce": int},
    OFFER: {"x": int, "kind": str},
    WANT: {"x": int},
    FIN: {"x": int, "probe": int},
    DONE: {"x": int, "ok": bool},
    BUSY: {},
    END: {},
    ERROR: {"reason": str, "message": str},
}


def unpack(payload: bytes) -> Message:
    """Decode and shape-check one frame's payload, or raise ``ProtocolError``."""
    import msgpack

    try:
        raw = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:
        raise ProtocolError(f"a frame's payload is not msgpack ({type(exc).__name__}: "
                            f"{exc})") from None
    if not isinstance(raw, list) or not raw or type(raw[0]) is not int:
        raise ProtocolError("a message is not [type, ...]")
    kind = raw[0]
    if kind == DATA:
        if (len(raw) != 4 or not all(type(v) is int and v >= 0 for v in raw[1:3])
                or not isinstance(raw[3], bytes)):
            raise ProtocolError("malformed DATA message")
        return Message(DATA, (raw[1], raw[2], raw[3]))
    if kind == ACK:
        if len(raw) != 5 or not all(type(v) is int and v >= 0 for v in raw[1:]):
            raise ProtocolError("malformed ACK message")
        return Message(ACK, tuple(raw[1:]))
    if kind not in _REQUIRED:
        raise ProtocolError(f"unknown message type {kind}")
    if len(raw) != 2 or not isinstance(raw[1], dict):
        raise ProtocolError(f"malformed {NAMES[kind]} message")
    body = raw[1]
    for key, typ in _REQUIRED[kind].items():
        value = body.get(key)
        # bool is an int in Python; a protocol field is one or the other.
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ProtocolError(f"{NAMES[kind]} message: {key!r} missing or not "
                                f"{getattr(typ, '__name__', typ)}")
    return Message(kind, body)


def request_key(msg: Message) -> tuple[Any, ...] | None:
    """What identifies a request, so a repeat of it can be answered from memory."""
    if msg.kind == HELLO:
        return (HELLO, msg.body["nonce"])
    if msg.kind in (OFFER, FIN):
        return (msg.kind, msg.body["x"])
    if msg.kind == END:
        return (END,)
    return None


@dataclass
class LinkStats:
    """Counters for tests, benchmarks and the log."""

    frames_sent: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


class Link:
    """Messages over one open port. Used by one thread, plus ``send`` from a keepalive."""

    def __init__(self, port: Port, *, clock: Callable[[], float] = time.monotonic,
                 idle_timeout: float = 10.0, restart_on_hello: bool = False,
                 heartbeat: Callable[[], None] | None = None) -> None:
        self.port = port
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.restart_on_hello = restart_on_hello
        self.heartbeat = heartbeat
        self.decoder = FrameDecoder()
        self.stats = LinkStats()
        self.session_nonce: int | None = None  # the HELLO this session answers
        self._inbox: deque[Message] = deque()
        self._answers: dict[tuple[Any, ...], Message] = {}
        self._write_lock = threading.Lock()
        self._last_send = float("-inf")
        self._last_beat = float("-inf")
        self.last_rx = clock()

    # -- sending ------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        frame = encode_frame(pack(msg))
        with self._write_lock:
            now = self.clock()
            if now - self._last_send > _LEAD_AFTER_IDLE_S:
                frame = DELIMITER + frame
            self.write_raw(frame)
            self._last_send = self.clock()
            self.stats.frames_sent += 1

    def write_raw(self, data: bytes) -> None:
        """Bytes straight onto the line (the preamble); a failed port is a lost link."""
        try:
            self.port.write(data)
        except OSError as exc:  # serial.SerialException and SerialTimeoutException are
            raise LinkLost(f"cannot write to the port: {exc}") from None
        self.stats.bytes_sent += len(data)

    def answer(self, req: Message, reply: Message) -> None:
        """Send ``reply`` to ``req`` and remember it for repeats of ``req``."""
        self.remember(req, reply)
        self.send(reply)

    def remember(self, req: Message, reply: Message) -> None:
        key = request_key(req)
        if key is not None:
            self._answers[key] = reply

    def forget(self) -> None:
        """Drop remembered answers: a new session starts."""
        self._answers.clear()

    # -- receiving ----------------------------------------------------------------------
    def recv(self, timeout: float) -> Message | None:
        """The next message, waiting at most ``timeout`` s; None if none came.

        Raises ``LinkLost`` when no valid frame has arrived for ``idle_timeout``,
        ``PeerError`` on an ERROR message, ``ProtocolError`` on a malformed one and, on
        the device, ``Restarted`` when the laptop begins a new session.
        """
        deadline = self.clock() + max(0.0, timeout)
        polled = False  # look at the port at least once, even with no time to wait
        while True:
            while self._inbox:
                msg = self._inbox.popleft()
                if self._filter(msg):
                    return msg
            now = self.clock()
            if now - self.last_rx > self.idle_timeout:
                raise LinkLost(f"nothing valid received for {now - self.last_rx:.1f} s")
            if now >= deadline and polled:
                return None
            wait = min(deadline - now, self.last_rx + self.idle_timeout - now + 0.01, 1.0)
            self._fill(max(wait, 0.0))
            polled = True

    def unread(self, msg: Message) -> None:
        """Put ``msg`` back: the caller's phase is over and the next phase reads it."""
        self._inbox.appendleft(msg)

    def _filter(self, msg: Message) -> bool:
        if msg.kind == ERROR:
            raise PeerError(str(msg.body["reason"])[:80], str(msg.body["message"]))
        if (msg.kind == HELLO and self.restart_on_hello and msg.get("role") == "peer"
                and self.session_nonce is not None and msg.body["nonce"] != self.session_nonce):
            raise Restarted(msg)
        key = request_key(msg)
        if key is not None and key in self._answers:
            self.send(self._answers[key])  # our answer was lost: say it again
            return False
        return True

    def _fill(self, wait: float) -> None:
        if self.heartbeat is not None and self.clock() - self._last_beat >= 1.0:
            self._last_beat = self.clock()
            self.heartbeat()
        try:
            self.port.timeout = wait
            chunk = self.port.read(max(1, self.port.in_waiting))
        except OSError as exc:
            raise LinkLost(f"cannot read from the port: {exc}") from None
        if chunk:
            self.feed(chunk)

    def feed(self, chunk: bytes) -> None:
        """Take bytes read elsewhere (after the preamble) as if they came from the port."""
        self.stats.bytes_received += len(chunk)
        for payload in self.decoder.feed(chunk):
            msg = unpack(payload)  # a CRC-valid frame that is not a message: ProtocolError
            self.last_rx = self.clock()
            self._inbox.append(msg)

    # -- requests -----------------------------------------------------------------------
    def request(self, msg: Message, match: Callable[[Message], bool], *,
                retry_s: float = 1.0) -> Message:
        """Send ``msg`` until a message satisfying ``match`` arrives, and return that.

        Anything else that arrives meanwhile is stale (a late ACK, a repeated answer)
        and is dropped; a silent line ends in ``LinkLost``.
        """
        self.send(msg)
        resend_at = self.clock() + retry_s
        while True:
            reply = self.recv(max(0.0, resend_at - self.clock()))
            if reply is None:
                self.send(msg)
                resend_at = self.clock() + retry_s
            elif match(reply):
                return reply

    @contextmanager
    def keepalive(self, what: str, interval: float = 1.0) -> Iterator[None]:
        """Send BUSY every ``interval`` s from a thread while the caller blocks."""
        stop = threading.Event()

        def beat() -> None:
            started = self.clock()
            while True:
                try:
                    self.send(control(BUSY, what=what, elapsed=round(self.clock() - started, 1)))
                except SerialError:
                    return
                if self.heartbeat is not None:
                    self.heartbeat()
                if stop.wait(interval):
                    return

        thread = threading.Thread(target=beat, name=f"serial-busy-{what}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.last_rx = self.clock()  # we were not listening: do not call that silence
