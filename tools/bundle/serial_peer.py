"""The laptop's side of a serial sync (``giter-bundle serial``).

Opens the port, announces itself with the preamble and a HELLO until the device
answers with its id and the spec it holds, offers the bundle if the device lacks
that spec, streams it (``transport.serial.transfer``), waits while the device syncs, takes
in the device's status bundle and receipt (partial copies are kept under a cache
folder, keyed by their SHA-256, so a pulled cable costs nothing already received),
writes them to the outbox atomically, and returns the device's result.

A line that goes silent mid-session is not the end: the peer keeps announcing itself
until the device answers again (a cable plugged back in, a device rebooted), then
resumes where both sides stopped, until ``give_up_after`` seconds have passed.
The protocol is written up in docs/serial.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from giter_agent import __version__
from giter_agent.config.agent_toml import NAME_RE
from giter_agent.core.durable import atomic_writer
from giter_agent.core.errors import NoDeviceError, WrongDeviceError
from giter_agent.transport.serial.link import (
    BUSY,
    END,
    HELLO,
    NOTHING,
    OFFER,
    PREAMBLE,
    PROTOCOL,
    RECEIPT,
    SPEC,
    STATUS,
    WANT,
    X_SPEC,
    Link,
    LinkLost,
    Message,
    Port,
    ProtocolError,
    SerialError,
    control,
    error,
)
from giter_agent.transport.serial.offer import CHUNK, Offer
from giter_agent.transport.serial.partial import PartialStore
from giter_agent.transport.serial.port import SerialPortError, open_port
from giter_agent.transport.serial.transfer import WINDOW, Progress, Receiver, Sender, Sent

log = logging.getLogger("giter.serial")

_MAX_ANSWER = {STATUS: 256 * 2**20, RECEIPT: 2**20}  # what a device may send back
_SUFFIX = {STATUS: ".bundle", RECEIPT: ".txt"}
_HELLO_EVERY_S = 0.5


@dataclass
class PeerEvent:
    """Something for the technician to see: a phase change or transfer progress."""

    phase: str  # connecting | sending | verifying | syncing | receiving | waiting | done
    message: str = ""
    progress: Progress | None = None


@dataclass
class Attempt:
    """One connection (there are several when the cable is pulled and plugged back)."""

    sent_seqs: list[int] = field(default_factory=list)  # the bundle's chunks sent
    spec_sent: Sent | None = None


@dataclass
class PeerResult:
    """The device's answer."""

    device: str
    device_spec: str | None  # what it held when we connected
    result: dict[str, Any]  # the device's END: outcome, reason, message, exit, ...
    files: dict[str, Path]  # status / receipt -> where they were written
    attempts: list[Attempt]

    @property
    def exit_code(self) -> int:
        code = self.result.get("exit")
        return code if type(code) is int and 0 <= code <= 9 else 1


def bundle_tip(path: Path, branch: str = "main") -> str | None:
    """The spec commit a bundle brings (its ``refs/heads/<branch>``), if it names one."""
    from giter_agent.history.bundle import read_header

    with open(path, "rb") as fh:
        header = read_header(fh)
    tip = header.refs.get(f"refs/heads/{branch}".encode())
    return tip.decode() if tip else None


def default_cache() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "giter-bundle" / "serial"


class SerialPeer:
    """One ``giter-bundle serial`` run; ``run()`` returns the device's answer."""

    def __init__(self, port: str, baud: int, *, bundle: Path | None, outbox: Path,
                 cache: Path, branch: str = "main", expect_device: str | None = None,
                 opener: Callable[[str, int], Port] = open_port,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 chunk: int = CHUNK, window: int = WINDOW, connect_timeout: float = 10.0,
                 idle_timeout: float = 10.0, give_up_after: float = 300.0,
                 on_event: Callable[[PeerEvent], None] | None = None,
                 hub_status: dict[str, str] | None = None) -> None:
        self.port_name = port
        # device id -> the status commit the hub holds (--hub): sent with the offer, so
        # the device's status bundle carries only what the hub lacks.
        self.hub_status = hub_status or {}
        self.baud = baud
        self.bundle = Path(bundle) if bundle is not None else None
        self.outbox = Path(outbox)
        self.cache = Path(cache)
        self.branch = branch
        self.expect_device = expect_device
        self.opener = opener
        self.clock = clock
        self.sleep = sleep
        self.chunk = chunk
        self.window = window
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.give_up_after = give_up_after
        self.on_event = on_event
        self.attempts: list[Attempt] = []
        self._connected_once = False

    def _event(self, phase: str, message: str = "", progress: Progress | None = None) -> None:
        if self.on_event is not None:
            self.on_event(PeerEvent(phase, message, progress))

    def run(self) -> PeerResult:
        offer = None
        if self.bundle is not None:
            offer = Offer.of_file(self.bundle, X_SPEC, SPEC, chunk=self.chunk,
                                  tip=bundle_tip(self.bundle, self.branch))
        lost_since: float | None = None
        while True:
            attempt = Attempt()
            self.attempts.append(attempt)
            try:
                return self._attempt(offer, attempt)
            except (LinkLost, SerialPortError) as exc:
                if not self._connected_once:
                    raise
                now = self.clock()
                lost_since = lost_since if lost_since is not None else now
                if now - lost_since > self.give_up_after:
                    raise LinkLost(f"the device has not answered for {now - lost_since:.0f} s "
                                   f"({exc}); run the same command again to resume") from None
                self._event("waiting", f"line lost ({exc}); waiting for the device: check "
                            "the cable")
                self.sleep(1.0)

    # -- one connection -----------------------------------------------------------------
    def _attempt(self, offer: Offer | None, attempt: Attempt) -> PeerResult:
        port = self.opener(self.port_name, self.baud)
        link = Link(port, clock=self.clock, idle_timeout=self.idle_timeout)
        try:
            hello = self._connect(link, offer)
            self._connected_once = True
            device = hello.get("device")
            spec = hello.get("spec")
            self._event("connected", f"device {device} holds spec "
                        f"{spec[:12] if isinstance(spec, str) else 'none'}")
            hub_has = self.hub_status.get(device) if isinstance(device, str) else None
            if offer is not None:
                offer = dataclasses.replace(offer, hub_has=hub_has)
            self._offer(link, offer, spec, attempt, hub_has)
            return self._answers(link, device, spec if isinstance(spec, str) else None)
        except (ProtocolError, WrongDeviceError) as exc:
            # Tell the device, so it goes back to its console now rather than time out.
            with contextlib.suppress(SerialError, OSError):
                link.send(error(exc.reason, str(exc)))
            raise
        finally:
            port.close()

    def _connect(self, link: Link, offer: Offer | None) -> Message:
        nonce = random.SystemRandom().randrange(1, 2**31)
        hello = control(HELLO, proto=PROTOCOL, role="peer", nonce=nonce,
                        software=f"giter-bundle {__version__}",
                        spec=offer.tip if offer else None, device=self.expect_device)
        self._event("connecting", f"calling the device on {self.port_name} at {self.baud} baud")
        give_up = self.clock() + self.connect_timeout
        while True:
            link.write_raw(PREAMBLE)
            link.send(hello)
            until = min(self.clock() + _HELLO_EVERY_S, give_up)
            while self.clock() < until:
                link.last_rx = self.clock()  # silence is expected until the device answers
                msg = link.recv(until - self.clock())
                if msg is not None and msg.kind == HELLO and msg.get("nonce") == nonce \
                        and msg.get("role") == "device":
                    return self._check_device(msg)
            if self.clock() >= give_up:
                raise self._nobody(link)

    def _nobody(self, link: Link) -> SerialError:
        count, sample = link.decoder.unframed()
        heard = (f"heard {count} bytes that were no giter frame, starting {sample[:40]!r}"
                 if count else "heard nothing at all")
        message = (f"no giter device answered on {self.port_name} at {self.baud} baud within "
                   f"{self.connect_timeout:g} s ({heard}): check the port, the baud rate, "
                   "and that giter-agent serve-serial (or the daemon) runs on the device")
        if self._connected_once:
            return LinkLost(message)
        return NoDeviceError(message)

    def _check_device(self, hello: Message) -> Message:
        device = hello.get("device")
        if hello.get("proto") != PROTOCOL:
            raise ProtocolError(f"the device speaks giter-serial {hello.get('proto')}, this "
                                f"tool {PROTOCOL}: update one of them",
                                reason="UnsupportedVersion")
        if not isinstance(device, str) or not NAME_RE.fullmatch(device):
            raise ProtocolError(f"the device sent an unusable device id {device!r}")
        spec = hello.get("spec")
        if spec is not None and not isinstance(spec, str):
            raise ProtocolError("the device's HELLO: spec must be a commit id")
        if self.expect_device and device != self.expect_device:
            raise WrongDeviceError(f"this cable leads to {device}, not {self.expect_device}; "
                                   "nothing was sent")
        return hello

    def _offer(self, link: Link, offer: Offer | None, device_spec: Any,
               attempt: Attempt, hub_has: str | None = None) -> None:
        if offer is not None and offer.tip is not None and offer.tip == device_spec:
            self._event("sending", f"the device already holds spec {offer.tip[:12]}: "
                        "nothing to send")
            offer = None
        if offer is None or self.bundle is None:
            extra = {"hub_has": hub_has} if hub_has else {}
            link.request(control(OFFER, x=0, kind=NOTHING, **extra),
                         lambda m: m.kind == WANT and m.body["x"] == 0)
            return
        sender = Sender(link, self.bundle, offer, window=self.window,
                        line_rate=self.baud / 10,
                        progress=lambda p: self._event("sending", "", p))
        attempt.sent_seqs = sender.sent_seqs
        sent = sender.run()
        attempt.spec_sent = sent
        if sent.outcome == "have":
            self._event("sending", f"the device already has it: {sent.message}")
        elif sent.outcome == "refused":
            self._event("sending", f"the device refused the bundle: {sent.reason}: "
                        f"{sent.message}")
        elif sent.outcome == "failed":
            self._event("sending", f"the transfer failed its end-to-end check: {sent.reason}")
        else:
            self._event("syncing", "bundle delivered and verified; the device is syncing")

    def _answers(self, link: Link, device: str, device_spec: str | None) -> PeerResult:
        store = PartialStore(self.cache / device)
        files: dict[str, Path] = {}
        while True:
            msg = link.recv(1.0)
            if msg is None:
                continue
            if msg.kind == BUSY:
                self._event(str(msg.get("what", "busy")),
                            f"the device is {msg.get('what', 'busy')} "
                            f"({msg.get('elapsed', 0)} s)")
            elif msg.kind == OFFER:
                kind = msg.body["kind"]
                offer = Offer.from_message(msg)
                if kind not in _SUFFIX:
                    raise ProtocolError(f"the device offered a {kind!r}")
                receiver = Receiver(link, store, msg,
                                    progress=lambda p: self._event("receiving", "", p))
                if offer.size > _MAX_ANSWER[kind]:
                    receiver.refuse("TooLarge", f"a {kind} of {offer.size} bytes is not "
                                    "plausible")
                    continue
                received = receiver.run()
                if received.path is not None:
                    files[kind] = self._deliver(received.path, device + _SUFFIX[kind])
                    store.discard(offer.hex)
            elif msg.kind == END:
                link.answer(msg, control(END))
                self._event("done")
                return PeerResult(device, device_spec, dict(msg.body), files, self.attempts)

    def _deliver(self, path: Path, name: str) -> Path:
        """Copy a verified file into the outbox atomically (the cache may be elsewhere)."""
        self.outbox.mkdir(parents=True, exist_ok=True)
        dest = self.outbox / name
        with open(path, "rb") as src, atomic_writer(dest) as out:
            shutil.copyfileobj(src, out)
        return dest
