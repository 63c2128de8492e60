"""One file across the serial line: chunks in a sliding window, resumable, SHA-256 checked.

The sender offers a file (size, SHA-256, chunk size); the receiver answers with what it
already holds of that exact file (keyed by its hash, so a pulled cable costs nothing
already received), then the sender streams the missing chunks. Up to ``window``
chunks are unacknowledged at a time so the line never idles waiting for an answer.
Acknowledgements are cumulative plus a 64-bit selective map, sent for every chunk
received; because the line is a FIFO, a chunk not acknowledged when a later one is
was lost and is resent at once. A ``FIN`` probe after the last chunk flushes out a
lost tail without waiting for a timeout. The receiver writes chunks straight to disk
at their offset, checkpoints what it holds (data fsynced first, then the state file),
and checks the SHA-256 of the whole file before anything else may read it.

Used on both ends: the device receives bundles and sends its status, the laptop does
the opposite (``transport.serial.session``, ``giter_bundle.serial_peer``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from giter_agent.core.errors import TransferError
from giter_agent.transport.serial.link import (
    ACK,
    DATA,
    DONE,
    END,
    FIN,
    OFFER,
    WANT,
    Link,
    Message,
    ProtocolError,
    ack,
    control,
    data,
)
from giter_agent.transport.serial.offer import MAX_CHUNK, Offer, chunks_in
from giter_agent.transport.serial.partial import SACK_BITS, Partial, PartialStore

WINDOW = 12  # chunks in flight: 1.1 s of line time at 115200 baud
MAX_WINDOW = SACK_BITS
# Every frame costs about this much beside the chunk (msgpack header, CRC, COBS, zero).
FRAME_OVERHEAD = 22


# -- progress ---------------------------------------------------------------------------

@dataclass
class Progress:
    """Where a transfer is, for a progress bar: bytes held by the receiver, of total."""

    kind: str
    done: int
    total: int
    rate: float | None = None  # bytes/s over the last few seconds
    resumed: int = 0  # bytes the receiver already held when this session began

    @property
    def left(self) -> int:
        return max(0, self.total - self.done)

    @property
    def eta(self) -> float | None:
        return self.left / self.rate if self.rate else None


class _Rate:
    """Bytes per second over a sliding window of samples."""

    def __init__(self, span: float = 5.0) -> None:
        self.span = span
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, t: float, total: int) -> float | None:
        self.samples.append((t, total))
        while len(self.samples) > 2 and t - self.samples[0][0] > self.span:
            self.samples.popleft()
        t0, n0 = self.samples[0]
        return (total - n0) / (t - t0) if t - t0 > 0.2 else None


# -- the two ends -----------------------------------------------------------------------

@dataclass
class Received:
    """What a receiver ended with: the verified file, or why there is none."""

    offer: Offer
    path: Path | None
    reason: str = "Verified"
    message: str = ""
    resumed_bytes: int = 0


class Receiver:
    """Answer one OFFER and take in its file; ``run`` returns once DONE has been sent."""

    def __init__(self, link: Link, store: PartialStore, offer_msg: Message, *,
                 checkpoint_s: float = 1.0,
                 progress: Callable[[Progress], None] | None = None) -> None:
        self.link = link
        self.store = store
        self.offer_msg = offer_msg
        self.offer = Offer.from_message(offer_msg)
        self.checkpoint_s = checkpoint_s
        self.progress = progress
        self.received_seqs: list[int] = []  # chunks that arrived in this session (tests)

    def refuse(self, reason: str, message: str) -> Received:
        self.link.answer(self.offer_msg, control(WANT, x=self.offer.x, refuse=reason,
                                                 message=message))
        return Received(self.offer, None, reason, message)

    def run(self) -> Received:
        link, offer = self.link, self.offer
        partial = self.store.open(offer)
        resumed = partial.held_bytes
        link.answer(self.offer_msg, control(WANT, x=offer.x, chunk=partial.chunk,
                                            next=partial.next, extra=sorted(partial.extra)))
        rate = _Rate()
        checkpoint_at = link.clock() + self.checkpoint_s
        last_report = 0.0
        try:
            while True:
                msg = link.recv(0.5)
                now = link.clock()
                if msg is not None and msg.kind == DATA and msg.body[0] == offer.x:
                    _, seq, payload = msg.body
                    if partial.write(seq, payload):
                        self.received_seqs.append(seq)
                    link.send(ack(offer.x, partial.next, partial.sack()))
                elif msg is not None and msg.kind == FIN and msg.body["x"] == offer.x:
                    link.send(ack(offer.x, partial.next, partial.sack(), msg.body["probe"]))
                    if partial.complete:
                        return self._finish(partial, resumed, msg)
                if now >= checkpoint_at:
                    partial.checkpoint()
                    checkpoint_at = now + self.checkpoint_s
                if self.progress is not None and now - last_report >= 0.2:
                    last_report = now
                    held = partial.held_bytes
                    self.progress(Progress(offer.kind, held, offer.size,
                                           rate.add(now, held), resumed))
        finally:
            partial.close()

    def _finish(self, partial: Partial, resumed: int, fin: Message) -> Received:
        offer = self.offer
        try:
            with self.link.keepalive("verifying"):
                path = partial.finish()
        except TransferError as exc:
            done = control(DONE, x=offer.x, ok=False, reason=exc.reason, message=str(exc))
            self.link.answer(fin, done)
            return Received(offer, None, exc.reason, str(exc), resumed)
        self.link.answer(fin, control(DONE, x=offer.x, ok=True, reason="Verified",
                                      message=f"{offer.size} bytes, SHA-256 verified"))
        if self.progress is not None:
            self.progress(Progress(offer.kind, offer.size, offer.size, None, resumed))
        return Received(offer, path, "Verified", "", resumed)


@dataclass
class Sent:
    """What a sender ended with."""

    offer: Offer
    outcome: str  # delivered | have | refused | failed
    reason: str
    message: str
    sent_seqs: list[int] = field(default_factory=list)  # every DATA sent, resends included
    resent: int = 0
    skipped_bytes: int = 0  # what the receiver already held
    seconds: float = 0.0


class Sender:
    """Offer one file and send what the receiver lacks; ``run`` returns on DONE."""

    def __init__(self, link: Link, path: Path, offer: Offer, *, window: int = WINDOW,
                 line_rate: float = 11520.0, retry_s: float = 1.0,
                 progress: Callable[[Progress], None] | None = None) -> None:
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be 1..{MAX_WINDOW}")
        self.link = link
        self.path = Path(path)
        self.offer = offer
        self.window = window
        self.line_rate = line_rate
        self.retry_s = retry_s
        self.progress = progress
        self.sent_seqs: list[int] = []  # every DATA sent so far, resends included (tests)

    def run(self) -> Sent:
        link, offer = self.link, self.offer
        started = link.clock()
        want = link.request(offer.message(),
                            lambda m: m.kind == WANT and m.body["x"] == offer.x,
                            retry_s=self.retry_s)
        if "refuse" in want.body or want.get("have"):
            outcome = "refused" if "refuse" in want.body else "have"
            return Sent(offer, outcome, str(want.get("refuse") or "AlreadyHeld"),
                        str(want.get("message", "")))
        chunk, next_seq, extra = want.get("chunk"), want.get("next"), want.get("extra")
        if (type(chunk) is not int or not 1 <= chunk <= MAX_CHUNK or type(next_seq) is not int
                or not isinstance(extra, list) or not all(type(s) is int for s in extra)):
            raise ProtocolError("WANT: chunk, next and extra are required")
        with open(self.path, "rb") as fh:
            result = _Window(self, fh, chunk, next_seq, set(extra)).run()
        result.seconds = link.clock() - started
        return result


class _Window:
    """The sending loop of one transfer (selective repeat over a FIFO line)."""

    def __init__(self, sender: Sender, fh: BinaryIO, chunk: int, next_seq: int,
                 extra: set[int]) -> None:
        self.s = sender
        self.link = sender.link
        self.fh = fh
        self.chunk = chunk
        self.total = chunks_in(sender.offer.size, chunk)
        self.peer_next = min(next_seq, self.total)
        self.sacked = {q for q in extra if q >= self.peer_next}
        self.queue = deque(q for q in range(self.peer_next, self.total) if q not in self.sacked)
        self.outstanding: dict[int, tuple[int, float, bool]] = {}  # seq -> order, sent, resent
        self.resent: set[int] = set()
        self.ever_sent: set[int] = set()
        self.order = 1  # 0 in an ACK means "not an answer to a probe"
        self.last_data_order = 0
        self.last_probe_order = 0
        self.probes: dict[int, float] = {}  # probe order -> sent at, until answered
        self.srtt: float | None = None
        self.rttvar = 0.0
        frame_time = (chunk + FRAME_OVERHEAD) / sender.line_rate
        # Before any measurement, allow a full window to drain through the port.
        self.rto = 2.0 * sender.window * frame_time + 0.5
        self.result = Sent(sender.offer, "delivered", "Verified", "",
                           sent_seqs=sender.sent_seqs, skipped_bytes=self.held_bytes())
        self.rate = _Rate()
        self.resumed = self.result.skipped_bytes
        self.last_report = 0.0

    def held_bytes(self) -> int:
        size = self.s.offer.size
        held = min(self.peer_next * self.chunk, size)
        return held + sum(min(self.chunk, size - q * self.chunk) for q in self.sacked
                          if q < self.total)

    def acked(self, seq: int) -> bool:
        return seq < self.peer_next or seq in self.sacked

    def run(self) -> Sent:
        link = self.link
        x = self.s.offer.x
        while self.peer_next < self.total:
            self.drain()
            self.report()
            if self.peer_next >= self.total:
                break
            now = link.clock()
            self.expire(now)
            if self.can_send():
                # A write can block while the UART drains, so acknowledgements are
                # often waiting by the time it returns: the window rarely has to wait.
                self.send_next()
                continue
            if not self.queue and self.outstanding and self.probe_due(now):
                self.probe()
            self.wait(self.next_event(now) - now)
        self.report(force=True)
        # Everything is acknowledged: ask for the verdict until it comes. If the other
        # side has moved on (its next request arrives first), the verdict was lost and
        # the session's END carries it.
        self.probes.clear()
        while True:
            self.probe()
            deadline = link.clock() + self.s.retry_s
            while link.clock() < deadline:
                msg = link.recv(deadline - link.clock())
                if msg is None:
                    continue
                if msg.kind == DONE and msg.body["x"] == x:
                    if not msg.body["ok"]:
                        self.result.outcome = "failed"
                    self.result.reason = str(msg.get("reason", ""))
                    self.result.message = str(msg.get("message", ""))
                    self.result.resent = len(self.resent)
                    return self.result
                if msg.kind in (OFFER, WANT, END):  # the other side's next phase began
                    link.unread(msg)
                    self.result.reason, self.result.message = "Delivered", "all acknowledged"
                    self.result.resent = len(self.resent)
                    return self.result

    def can_send(self) -> bool:
        while self.queue and self.acked(self.queue[0]):
            self.queue.popleft()
        return (bool(self.queue) and len(self.outstanding) < self.s.window
                and self.queue[0] < self.peer_next + 1 + SACK_BITS)

    def send_next(self) -> None:
        seq = self.queue.popleft()
        self.fh.seek(seq * self.chunk)
        payload = self.fh.read(self.chunk)
        retry = seq in self.ever_sent
        self.link.send(data(self.s.offer.x, seq, payload))
        self.outstanding[seq] = (self.order, self.link.clock(), retry)
        self.last_data_order = self.order
        self.order += 1
        self.result.sent_seqs.append(seq)
        self.ever_sent.add(seq)

    def probe(self) -> None:
        self.probes[self.order] = self.link.clock()
        self.last_probe_order = self.order
        self.link.send(control(FIN, x=self.s.offer.x, probe=self.order))
        self.order += 1

    def probe_due(self, now: float) -> bool:
        # One probe after the last chunk reveals every loss before it; repeat it only
        # when it went unanswered (it can be lost too).
        if self.last_probe_order < self.last_data_order:
            return True
        return bool(self.probes) and now - max(self.probes.values()) > self.rto

    def expire(self, now: float) -> None:
        late = [q for q, (_, sent, _) in self.outstanding.items() if now - sent > self.rto]
        if late:
            self.lose(late)
            self.rto = min(self.rto * 2, 30.0)  # back off: the line may be slower than thought

    def lose(self, seqs: list[int]) -> None:
        for q in sorted(seqs, reverse=True):
            del self.outstanding[q]
            self.resent.add(q)
            self.queue.appendleft(q)

    def next_event(self, now: float) -> float:
        times = [sent + self.rto for _, sent, _ in self.outstanding.values()]
        if self.probes:
            times.append(max(self.probes.values()) + self.rto)
        return min(times, default=now + self.s.retry_s)

    def wait(self, timeout: float) -> None:
        msg = self.link.recv(max(0.0, min(timeout, 0.5)))
        if msg is not None:
            self.handle(msg)

    def drain(self) -> None:
        while (msg := self.link.recv(0)) is not None:
            self.handle(msg)

    def handle(self, msg: Message) -> None:
        if msg.kind != ACK or msg.body[0] != self.s.offer.x:
            return  # stale or unrelated: a repeated WANT, an old transfer's ACK
        _, next_seq, sack, probe = msg.body
        now = self.link.clock()
        newest = -1
        if next_seq > self.peer_next:
            self.peer_next = min(next_seq, self.total)
            self.sacked = {q for q in self.sacked if q >= self.peer_next}
        for i in range(SACK_BITS):
            if sack >> i == 0:
                break
            if sack >> i & 1:
                self.sacked.add(self.peer_next + 1 + i)
        for q in [q for q in self.outstanding if self.acked(q)]:
            order, sent, retry = self.outstanding.pop(q)
            newest = max(newest, order)
            if not retry:
                self.sample(now - sent)
        if probe and probe in self.probes:
            newest = max(newest, probe)
            for p in [p for p in self.probes if p <= probe]:
                del self.probes[p]
        # FIFO line: whatever went out before something that arrived, and has not
        # arrived itself, was lost on the way.
        lost = [q for q, (order, _, _) in self.outstanding.items() if order < newest]
        if lost:
            self.lose(lost)

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        # Twice the smoothed RTT, not RFC 6298's one: a round trip here is mostly the
        # frames queued ahead in the port, and a busy board or a USB adapter can hold a
        # batch back for a while. A late timer costs little: losses in the middle of a
        # transfer are repaired from the acknowledgements, the tail by the FIN probe.
        self.rto = min(max(2 * self.srtt + 4 * self.rttvar, 0.2), 30.0)

    def report(self, force: bool = False) -> None:
        if self.s.progress is None:
            return
        now = self.link.clock()
        if not force and now - self.last_report < 0.2:
            return
        self.last_report = now
        held = self.held_bytes()
        self.s.progress(Progress(self.s.offer.kind, held, self.s.offer.size,
                                 self.rate.add(now, held), self.resumed))
