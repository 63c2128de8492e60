"""The serial port as a console for a person with ``screen`` or ``minicom``.

While no protocol peer talks, the device prints a status line (device id, applied
spec, the one-word state from ``giter_agent.state.health``, last sync) when it changes, and a
prompt; it echoes what is typed, and answers ``status``, ``sync`` (from a stick
mounted under the USB roots), ``key`` and ``help``. Ctrl-L prints the status line
again. The line is looked at every ``status_interval`` seconds (``None``: only when
``refresh`` is called, as the daemon does when its health changes). Lines end in
CRLF, backspace and Ctrl-U/Ctrl-C edit the line, arrow keys are ignored, and a status
line never lands in the middle of a line being typed. Output is plain ASCII: a serial
terminal's character set is anybody's guess.

``giter_agent.transport.serial.endpoint`` feeds it the bytes it reads (minus a peer's preamble) and
asks it for the status line; it writes through the ``write`` it is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from giter_agent.core.errors import GiterError, LockedError
from giter_agent.core.log import get_logger
from giter_agent.status.rows import resource_rows
from giter_agent.transport.device import SyncingDevice

log = get_logger("giter.serial")

PROMPT = "giter> "
MAX_LINE = 120  # longer input is not a command; the excess is not echoed
HELP = (
    "commands:",
    "  status   the applied spec, the last sync and every resource",
    "  sync     sync from a USB stick mounted under the USB roots",
    "  key      this device's public key, to enrol it (allowed_signers line)",
    "  help     this list",
    "A laptop syncs over this cable with: giter-bundle serial --port PORT --bundle FILE",
)
_BS, _DEL, _CTRL_C, _CTRL_L, _CTRL_U, _ESC = 0x08, 0x7F, 0x03, 0x0C, 0x15, 0x1B


def find_sticks(roots: Iterable[Path]) -> list[Path]:
    """Mounted giter sticks: a root, or a folder right under one, holding giter/inbox."""
    found: list[Path] = []
    for root in roots:
        candidates = [Path(root)]
        try:
            candidates += sorted(p for p in Path(root).iterdir() if p.is_dir())
        except OSError:
            continue
        found += [c for c in candidates if (c / "giter" / "inbox").is_dir()]
    return found


class Console:
    """Line editing, commands and the status line; see the module docstring."""

    def __init__(self, agent: SyncingDevice, write: Callable[[bytes], object], *,
                 clock: Callable[[], float] = time.monotonic,
                 status_interval: float | None = 5.0, typing_pause: float = 5.0,
                 on_busy: Callable[[], None] | None = None) -> None:
        self.agent = agent
        self.write = write
        self.clock = clock
        self.status_interval = status_interval
        self.typing_pause = typing_pause  # a status line waits this long after a keystroke
        self.on_busy = on_busy  # called when ``busy`` changes
        self._busy: str | None = None
        self._line = bytearray()
        self._esc = 0  # 1: after ESC, 2: inside an ESC [ ... sequence
        self._after_cr = False
        self._typed_at = float("-inf")
        self._next_status = clock()  # the first look is at once
        self._shown: str | None = None  # the status line last printed

    @property
    def busy(self) -> str | None:
        """What this port is doing (``serial``, ``usb``), shown as ``syncing``; or None."""
        return self._busy

    @busy.setter
    def busy(self, what: str | None) -> None:
        self._busy = what
        if self.on_busy is not None:
            self.on_busy()

    # -- output -------------------------------------------------------------------------
    def _emit(self, text: str) -> None:
        self.write(text.encode("ascii", "replace"))

    def _lines(self, lines: Iterable[str]) -> None:
        self._emit("".join(f"{line}\r\n" for line in lines))

    def notice(self, text: str) -> None:
        """Print a line of news (a session's outcome) without losing what is typed."""
        typed = self._line.decode("ascii", "replace")
        self._emit("\r" + text.ljust(len(PROMPT) + len(typed)) + "\r\n" + PROMPT + typed)

    # -- the status line -----------------------------------------------------------------
    def due(self) -> float:
        """When (``clock`` time) the status line is next looked at (inf: not until
        ``refresh``)."""
        return self._next_status

    def refresh(self) -> None:
        """Look at the status line at the next ``tick`` (something may have changed)."""
        self._next_status = min(self._next_status, self.clock())

    def tick(self) -> None:
        """Print the status line if it is due, it changed since it was last printed, and
        nobody is halfway through a line (then it waits for a pause in the typing)."""
        now = self.clock()
        if now < self._next_status:
            return
        if self._line and now - self._typed_at < self.typing_pause:
            self._next_status = self._typed_at + self.typing_pause
            return
        interval = self.status_interval
        self._next_status = now + interval if interval is not None else float("inf")
        line = self.status_line()
        if line != self._shown:
            self._shown = line
            self.notice(line)

    def _syncing(self) -> bool:
        from giter_agent.state.lock_table import sync_in_progress

        # This port's own work, or any process (the daemon, a USB trigger) holding the lock.
        return self.busy is not None or sync_in_progress(self.agent.config.state_dir)

    def status_line(self) -> str:
        from giter_agent.state.health import health

        device = self.agent.config.device_id
        try:
            state = self.agent.state_store.load()
        except GiterError as exc:
            return f"giter {device} | ERROR ({exc.reason}: state file) | type help"
        word = health(state, syncing=self._syncing()).state
        last = state.last_sync
        when = (f"last sync {last.get('time')} {_source_kind(last.get('source'))} "
                f"{last.get('outcome')}" if last else "never synced")
        spec = state.applied[:12] if state.applied else "none"
        return f"giter {device} | spec {spec} | {word.upper()} | {when} | type help"

    # -- input --------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Bytes a person typed (or a terminal sent)."""
        for byte in data:
            self._key(byte)

    def _key(self, byte: int) -> None:
        if self._esc:
            # Arrow and function keys arrive as ESC [ ... letter: swallow them whole.
            if self._esc == 1:
                self._esc = 2 if byte in (0x5B, 0x4F) else 0
            elif 0x40 <= byte <= 0x7E:
                self._esc = 0
            return
        after_cr, self._after_cr = self._after_cr, False
        if byte == _ESC:
            self._esc = 1
        elif byte in (0x0D, 0x0A):
            if byte == 0x0A and after_cr:
                return  # the LF of a CRLF
            self._after_cr = byte == 0x0D
            self._enter()
        elif byte in (_BS, _DEL):
            if self._line:
                self._line.pop()
                self._emit("\b \b")
        elif byte in (_CTRL_C, _CTRL_U):
            self._line.clear()
            self._emit("^C\r\n" + PROMPT if byte == _CTRL_C else "\r\n" + PROMPT)
        elif byte == _CTRL_L:
            self._shown = self.status_line()
            self.notice(self._shown)
        elif 0x20 <= byte < 0x7F and len(self._line) < MAX_LINE:
            self._line.append(byte)
            self._typed_at = self.clock()
            self._emit(chr(byte))

    def _enter(self) -> None:
        command = self._line.decode("ascii").strip()
        self._line.clear()
        self._emit("\r\n")
        if command:
            log.info("serial console: %r", command[:40])
            self._lines(self.run(command))
        self._emit(PROMPT)

    def run(self, command: str) -> list[str]:
        """The reply to one typed command, as lines."""
        word = command.split()[0].lower()
        if word in ("help", "?"):
            return list(HELP)
        if word == "status":
            return self.status_text()
        if word == "sync":
            return self.sync_usb()
        if word == "key":
            return self.key_text()
        return [f"unknown command {command[:30]!r}: type help"]

    # -- commands -----------------------------------------------------------------------
    def status_text(self) -> list[str]:
        from giter_agent.state.health import health

        cfg = self.agent.config
        try:
            state = self.agent.state_store.load()
        except GiterError as exc:
            return [f"device        {cfg.device_id}", f"state         error: {exc.reason}: {exc}"]
        words = health(state, syncing=self._syncing())
        last = state.last_sync
        lines = [
            f"device        {cfg.device_id}",
            f"state         {words.line()}",
            f"spec applied  {state.applied or 'none yet'}",
        ]
        if state.accepted != state.applied:
            lines.append(f"spec accepted {state.accepted or 'none yet'} (not applied)")
        lines.append(f"last sync     {last['time']} from {last['source']}: {last['outcome']} "
                     f"({last['reason']}: {last['message']})" if last else "last sync     never")
        lines.append(f"status commit {state.status_tip or 'none yet'}")
        if not state.resources:
            lines.append("resources     none")
        lines += resource_rows(state.resources)
        return lines

    def key_text(self) -> list[str]:
        """The device's public key as its ``allowed_signers`` line, for enrolment."""
        try:
            line = self.agent.public_key_line()
        except GiterError as exc:
            return [f"no device key: {exc.reason}: {exc}"]
        return ["this device's public key (its allowed_signers line; the publisher enrols",
                "it with: giter-bundle enroll DEVICE-ID 'LINE'):",
                line]

    def sync_usb(self) -> list[str]:
        from giter_agent.transport.usb import sync_stick

        roots = self.agent.config.usb_roots or self.agent.board.usb_roots
        if not roots:
            return ["no USB roots are configured ([usb] roots in agent.toml), so there is",
                    "no stick to sync from. Connect a laptop instead: giter-bundle serial"]
        sticks = find_sticks(roots)
        if not sticks:
            where = ", ".join(str(r) for r in roots)
            return [f"no giter stick is mounted under {where}",
                    "(a stick holds a giter/inbox folder). Plug one in and type sync again,",
                    "or connect a laptop with: giter-bundle serial --port PORT --bundle FILE"]
        stick = sticks[0]
        self._lines([f"syncing from {stick} ..."])
        self.busy = "usb"
        try:
            report = sync_stick(self.agent, stick)
        except LockedError:
            return ["busy: another sync is running right now; try again in a moment"]
        except GiterError as exc:
            return [f"sync failed: {exc.reason}: {exc}"]
        finally:
            self.busy = None
        lines = [f"{report.outcome}: {report.message}"]
        if report.not_ready:
            lines.append(f"not Ready: {', '.join(report.not_ready)}")
        lines.append(f"status bundle and receipt written to {stick / 'giter' / 'outbox'}")
        return lines


def _source_kind(source: object) -> str:
    """``usb:/media/x`` -> ``via usb``: the line must stay short."""
    return f"via {str(source).split(':', 1)[0]}" if source else ""
