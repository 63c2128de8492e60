"""The device's side of one serial session: handshake, take the bundle, sync, answer.

After the laptop's preamble and HELLO (``transport.serial.endpoint`` notices them), the
device says who it is and which spec it holds; the laptop offers the bundle the device
lacks (or nothing); the device takes it in with ``transport.serial.transfer`` (resuming a
partial copy kept under ``<state_dir>/serial/partial``), imports the verified file with
``Agent.sync`` like any other transport, then sends back its status bundle and a
receipt and ends with the sync's result. A laptop that reconnects after a pulled
cable gets the same answer again without a second sync: the answer is kept in
``<state_dir>/serial/outbox`` until the device's state moves on.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from giter_agent import __version__
from giter_agent.core.durable import atomic_write
from giter_agent.core.errors import GiterError, LockedError
from giter_agent.core.log import get_logger
from giter_agent.status.report import SyncReport
from giter_agent.transport.device import SyncingDevice
from giter_agent.transport.serial.link import (
    END,
    HELLO,
    NOTHING,
    OFFER,
    PROTOCOL,
    RECEIPT,
    SPEC,
    STATUS,
    WANT,
    X_RECEIPT,
    X_STATUS,
    Link,
    LinkLost,
    Message,
    ProtocolError,
    control,
)
from giter_agent.transport.serial.offer import MAX_CHUNK, Offer
from giter_agent.transport.serial.partial import PartialStore
from giter_agent.transport.serial.transfer import MAX_WINDOW, WINDOW, Received, Receiver, Sender

log = get_logger("giter.serial")

_META = "outbox.msgpack"
_SPARE_BYTES = 4 * 2**20  # leave this much disk free beside a received bundle


@dataclass
class SessionOutcome:
    """How a session ended, for the console and the log."""

    result: dict[str, Any]  # what END carried
    received: Received | None = None  # the laptop's bundle, when one came

    def summary(self) -> str:
        r = self.result
        return f"{r['outcome']}: {r['reason']}: {r['message']}"


def check_hello(hello: Message) -> None:
    """A laptop's HELLO this device can talk to, or ``ProtocolError``."""
    if hello.get("role") != "peer":
        raise ProtocolError("HELLO from something that is not a giter-bundle peer")
    if hello.body["proto"] != PROTOCOL:
        raise ProtocolError(f"the peer speaks giter-serial {hello.body['proto']}, this "
                            f"device speaks {PROTOCOL}: update giter-bundle or the agent",
                            reason="UnsupportedVersion")


_SHA = re.compile(r"[0-9a-f]{40}")


class DeviceSession:
    """One session on an open ``Link``; ``run(hello)`` returns when it is over."""

    def __init__(self, link: Link, agent: SyncingDevice, *, port_name: str, window: int = WINDOW,
                 line_rate: float = 11520.0, lock_wait_s: float | None = None) -> None:
        self.link = link
        self.agent = agent
        self.port_name = port_name
        self.window = window
        self.line_rate = line_rate
        limits = agent.config.limits
        self.lock_wait_s = lock_wait_s if lock_wait_s is not None else limits.time_budget_s + 60
        self.dir = agent.config.state_dir / "serial"
        self.store = PartialStore(self.dir / "partial")
        self.outbox = self.dir / "outbox"
        self.hub_has: str | None = None  # the peer's hub's copy of status/<device>

    def run(self, hello: Message) -> SessionOutcome:
        link, agent = self.link, self.agent
        check_hello(hello)
        link.session_nonce = hello.body["nonce"]
        link.forget()
        state = agent.state_store.load()
        link.answer(hello, control(
            HELLO, proto=PROTOCOL, role="device", nonce=hello.body["nonce"],
            device=agent.config.device_id, spec=state.accepted, applied=state.applied,
            status=state.status_tip, software=f"giter-agent {__version__}",
            max_chunk=MAX_CHUNK, max_window=MAX_WINDOW))
        log.info("serial: %s connected on %s", hello.get("software", "a peer"), self.port_name)
        offer = self._wait_for_offer()
        result, received = self._take(offer)
        for x, kind, path in self._answer_files():
            sent = Sender(link, path, Offer.of_file(path, x, kind), window=self.window,
                          line_rate=self.line_rate).run()
            log.info("serial: sent %s (%s, %d chunks resent)", path.name, sent.outcome,
                     sent.resent)
        try:
            link.request(control(END, **result), lambda m: m.kind == END)
        except LinkLost:
            # Everything was delivered and acknowledged; only the goodbye went missing.
            log.info("serial: the peer left without answering END")
        return SessionOutcome(result, received)

    def _wait_for_offer(self) -> Message:
        while True:
            msg = self.link.recv(1.0)
            if msg is not None and msg.kind == OFFER:
                return msg

    # -- the laptop's bundle ------------------------------------------------------------
    def _take(self, offer_msg: Message) -> tuple[dict[str, Any], Received | None]:
        link = self.link
        kind = offer_msg.body["kind"]
        # What the laptop's hub already holds of this device's status (giter-bundle serial
        # --hub): the status bundle leaves it out, as a stick's hub-status.txt does.
        hub_has = offer_msg.body.get("hub_has")
        self.hub_has = hub_has if isinstance(hub_has, str) and _SHA.fullmatch(hub_has) else None
        if kind == NOTHING:
            link.answer(offer_msg, control(WANT, x=offer_msg.body["x"], have=True,
                                           message="nothing offered"))
            return self._standing_result(), None
        if kind != SPEC:
            raise ProtocolError(f"the peer offered a {kind!r}; a device takes only a spec")
        offer = Offer.from_message(offer_msg)
        receiver = Receiver(link, self.store, offer_msg)
        state = self.agent.state_store.load()
        meta = self._meta()
        cap = self.agent.config.limits.max_bundle_mib * 2**20
        if offer.tip is not None and offer.tip == state.accepted:
            link.answer(offer_msg, control(WANT, x=offer.x, have=True,
                                           message=f"spec {offer.tip[:12]} is already accepted"))
            return self._standing_result(), None
        if meta.get("bundle") == offer.hex and self._outbox_current(meta):
            link.answer(offer_msg, control(WANT, x=offer.x, have=True,
                                           message="this bundle was synced already"))
            return dict(meta["result"]), None
        if offer.size > cap:
            msg = (f"the bundle is {offer.size} bytes, over limits.max_bundle_mib="
                   f"{self.agent.config.limits.max_bundle_mib}")
            receiver.refuse("TooLarge", msg)
            return self._failed("TooLarge", msg), None
        if self.store.free_bytes() < offer.size + _SPARE_BYTES:
            msg = f"not enough free space on the device for {offer.size} bytes"
            receiver.refuse("NoSpace", msg)
            return self._failed("NoSpace", msg), None
        received = receiver.run()
        if received.path is None:
            log.warning("serial: %s: %s", received.reason, received.message)
            return self._failed(received.reason, received.message), received
        try:
            report = self._sync(received.path, offer.name)
        except GiterError as exc:
            log.error("serial: sync failed: %s: %s", exc.reason, exc)
            return self._failed(exc.reason, str(exc), outcome="error"), received
        if report is None:
            return self._failed("Busy", "another sync kept the device busy; the verified "
                                "bundle is kept: connect again to sync it"), received
        self.store.discard(offer.hex)  # imported (or refused for good): no longer needed
        result = self._result(report)
        self._write_outbox(report, result, bundle=offer.hex)
        return result, received

    def _sync(self, path: Path, name: str) -> SyncReport | None:
        """``Agent.sync`` the verified file, waiting (with keepalives) for the state lock.

        The file is synced under the name the laptop gave it (a hard link in
        ``serial/inbox``), so the receipt and ``status`` name the bundle a person knows.
        """
        inbox = self.dir / "inbox"
        shutil.rmtree(inbox, ignore_errors=True)
        inbox.mkdir(parents=True, mode=0o700)
        view = inbox / bundle_name(name)
        try:
            os.link(path, view)
        except OSError:
            view = path  # a filesystem without hard links: the hash is a fine name too
        started = time.monotonic()
        try:
            with self.link.keepalive("syncing"):
                while True:
                    try:
                        return self.agent.sync([view], source=f"serial:{self.port_name}")
                    except LockedError:
                        if time.monotonic() - started > self.lock_wait_s:
                            return None
                        time.sleep(1.0)
        finally:
            if view != path:
                view.unlink(missing_ok=True)

    # -- the device's answer ------------------------------------------------------------
    def _result(self, report: SyncReport) -> dict[str, Any]:
        from giter_agent.state.health import health

        try:
            words = health(self.agent.state_store.load()).line()
        except GiterError as exc:
            words = f"error: {exc.reason}: {exc}"
        return {"outcome": report.outcome, "reason": report.reason, "message": report.message,
                "exit": report.exit_code, "device": self.agent.config.device_id,
                "accepted": report.accepted, "applied": report.applied,
                "status_commit": report.status_commit, "stale": report.stale,
                "not_ready": list(report.not_ready), "health": words}

    def _failed(self, reason: str, message: str, outcome: str = "refused") -> dict[str, Any]:
        """The answer when the laptop's bundle never reached a sync (or the sync failed)."""
        result = self._standing_result()
        result.update(outcome=outcome, reason=reason, message=message, exit=1)
        return result

    def _standing_result(self) -> dict[str, Any]:
        """No new bundle: describe the device as it stands (and keep the answer ready)."""
        meta = self._meta()
        if self._outbox_current(meta):
            return dict(meta["result"])
        report = report_from_state(self.agent)
        result = self._result(report)
        self._write_outbox(report, result, bundle=None)
        return result

    def _meta(self) -> dict[str, Any]:
        import msgpack

        try:
            raw = msgpack.unpackb((self.dir / _META).read_bytes(), raw=False)
        except (OSError, ValueError, msgpack.UnpackException):
            return {}
        return raw if isinstance(raw, dict) and isinstance(raw.get("result"), dict) else {}

    def _outbox_current(self, meta: dict[str, Any]) -> bool:
        # The kept answer still says what the device would say now: same status commit,
        # same last sync. Sending the same bytes also lets the laptop resume them.
        if not meta:
            return False
        state = self.agent.state_store.load()
        return (meta.get("status_tip") == state.status_tip
                and meta.get("last_sync") == state.last_sync.get("time")
                and meta.get("hub_has") == self.hub_has
                and (self.outbox / f"{self.agent.config.device_id}.txt").is_file())

    def _write_outbox(self, report: SyncReport, result: dict[str, Any],
                      bundle: str | None) -> None:
        import msgpack

        from giter_agent.transport.usb import write_outbox

        with contextlib.suppress(FileNotFoundError):
            (self.dir / _META).unlink()
        shutil.rmtree(self.outbox, ignore_errors=True)
        self.outbox.mkdir(parents=True, mode=0o700)
        write_outbox(self.agent, self.outbox, report, hub_has=self.hub_has)
        state = self.agent.state_store.load()
        meta = {"bundle": bundle, "status_tip": state.status_tip,
                "last_sync": state.last_sync.get("time"), "hub_has": self.hub_has,
                "result": result}
        atomic_write(self.dir / _META, msgpack.packb(meta, use_bin_type=True), mode=0o600)

    def _answer_files(self) -> list[tuple[int, str, Path]]:
        device = self.agent.config.device_id
        files = [(X_STATUS, STATUS, self.outbox / f"{device}.bundle"),
                 (X_RECEIPT, RECEIPT, self.outbox / f"{device}.txt")]
        return [f for f in files if f[2].is_file()]


def bundle_name(offered: str) -> str:
    """A safe local name for a bundle the laptop named ``offered``."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", offered)[-60:].lstrip(".")
    return name if name.endswith(".bundle") and len(name) > len(".bundle") else "serial.bundle"


def report_from_state(agent: SyncingDevice) -> SyncReport:
    """A ``SyncReport`` for a session that synced nothing: the device as it stands."""
    state = agent.state_store.load()
    last = state.last_sync or {}
    not_ready = sorted(k for k, rec in state.resources.items() if not rec.ready)
    stale = next((c.get("message") for c in state.conditions
                  if c.get("type") == "Stale" and c.get("status") == "True"), None)
    if state.applied:
        message = f"spec {state.applied[:12]} already applied"
        outcome, reason = "up-to-date", "UpToDate"
    else:
        message, outcome, reason = "no spec has been applied yet", "no-bundles", "NoSpec"
    if last:
        message += (f"; last sync {last.get('time')} from {last.get('source')}: "
                    f"{last.get('outcome')}")
    return SyncReport(outcome, reason, message, accepted=state.accepted, applied=state.applied,
                      status_commit=state.status_tip, not_ready=not_ready,
                      resources=dict(state.resources), stale=stale,
                      network=state.network)
