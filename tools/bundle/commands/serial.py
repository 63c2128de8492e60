"""``giter-bundle serial``: sync a device over a serial cable, from the technician's laptop.

Sends the bundle the device lacks (if it already holds the bundle's spec, nothing),
shows progress with the bytes and time left, waits while the device verifies and
applies it, and writes the device's status bundle and receipt to the outbox as
``<device-id>.bundle`` and ``<device-id>.txt``. A pulled cable is waited for and the
transfer resumes where it stopped; running the command again resumes too. Exit code:
the device's sync result (0 in sync, 1 refused, 3 applied but not every resource
Ready), or 1 when no answer came back.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

HELP = "sync a device over a serial cable (send a bundle, fetch its status)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", required=True, metavar="PORT",
                   help="serial port, e.g. /dev/ttyUSB0 or COM3")
    p.add_argument("--baud", type=int, default=115200, help="line speed (default 115200)")
    p.add_argument("--bundle", type=Path, metavar="FILE",
                   help="the bundle to send (without it, only fetch the device's status)")
    p.add_argument("--outbox", type=Path, default=Path("."), metavar="DIR",
                   help="where the status bundle and receipt go (default: this folder)")
    p.add_argument("--device", metavar="ID",
                   help="refuse to talk to any other device than this one")
    p.add_argument("--cache", type=Path, metavar="DIR",
                   help="partial transfers kept for resuming "
                   "(default ~/.cache/giter-bundle/serial)")
    p.add_argument("--hub", type=Path, metavar="REPO",
                   help="the exchange repository whose status branches the device's status "
                   "bundle may leave out (as a stick's hub-status.txt does); default: send "
                   "the whole status history")
    p.add_argument("--give-up-after", type=float, default=300.0, metavar="SECONDS",
                   help="how long to wait for a lost line to come back (default 300)")


def run(args: argparse.Namespace) -> int:
    from giter_bundle.errors import UsageError
    from giter_bundle.serial_peer import SerialPeer, default_cache

    if args.bundle is not None and not args.bundle.is_file():
        raise UsageError(f"{args.bundle}: no such bundle file")
    if not 50 <= args.baud <= 4_000_000:
        raise UsageError(f"--baud {args.baud}: not a serial line speed")
    hub_status: dict[str, str] = {}
    if args.hub is not None:
        from giter_bundle.exchange import Exchange

        with Exchange.open(args.hub, getattr(args, "branch", "main")) as exchange:
            hub_status = {d: sha.decode() for d, sha in exchange.status_tips().items()}
    display = ProgressDisplay(sys.stderr)
    peer = SerialPeer(args.port, args.baud, bundle=args.bundle, outbox=args.outbox,
                      cache=args.cache or default_cache(),
                      branch=getattr(args, "branch", "main"), expect_device=args.device,
                      give_up_after=args.give_up_after, on_event=display,
                      hub_status=hub_status)
    result = peer.run()
    display.finish()
    r = result.result
    print(f"device {result.device}: {r.get('outcome')}: {r.get('reason')}: {r.get('message')}")
    if r.get("health"):
        print(f"state         {r['health']}")
    for kind, label in (("status", "status bundle"), ("receipt", "receipt")):
        if kind in result.files:
            print(f"{label:<13} {result.files[kind]}")
    if "status" not in result.files:
        print("status bundle none (the device has no status commit yet)")
    return result.exit_code


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def human_time(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}:" if hours else "") + f"{rest // 60:02d}:{rest % 60:02d}"


class ProgressDisplay:
    """Turn ``PeerEvent``s into a progress bar on a terminal, or sparse lines in a log.

    On a terminal the bar is one line rewritten in place: it fits the terminal's width
    (``columns()``, read each time: a window can be resized), the bar itself shrinks
    first, and a shorter line blanks what the longer one before it left behind.
    """

    WIDTH = 28  # the bar's width on a terminal wide enough
    MIN_WIDTH = 8

    def __init__(self, stream: TextIO, *, clock: Any = time.monotonic,
                 columns: Callable[[], int] | None = None) -> None:
        self.stream = stream
        self.clock = clock
        self.tty = stream.isatty()
        self.columns = columns or _terminal_columns
        self._bar_open = False
        self._shown = 0  # characters of the bar line now on screen
        self._last_line = ""
        self._last_log = float("-inf")

    def __call__(self, event: Any) -> None:
        progress = event.progress
        if progress is None:
            if event.message and event.message != self._last_line:
                self._last_line = event.message
                self._line(event.message)
            return
        if self.tty:
            # One column short of the edge: a line that fills it wraps on some terminals,
            # and "\r" then returns to the wrong row.
            room = max(20, self.columns() - 1)
            text = self.bar(progress, room)[:room]
            self.stream.write("\r" + text.ljust(min(self._shown, room)))
            self._shown = len(text)
            self._bar_open = True
        elif self.clock() - self._last_log >= 5 or progress.done >= progress.total:
            self._last_log = self.clock()
            self.stream.write(self.bar(progress) + "\n")
        self.stream.flush()

    def bar(self, p: Any, room: int | None = None) -> str:
        """The progress line; with ``room``, the bar narrows so the line fits in it."""
        fraction = p.done / p.total if p.total else 1.0
        label = {"spec": "sending", "status": "status", "receipt": "receipt"}.get(p.kind, p.kind)
        rate = f"{human_bytes(p.rate)}/s" if p.rate else "-"
        tail = (f" {fraction:4.0%} {human_bytes(p.left)} left, {human_time(p.eta)} left, "
                f"{rate}")
        width = self.WIDTH
        if room is not None:
            width = max(self.MIN_WIDTH, min(width, room - len(tail) - 10))
        filled = int(width * fraction)
        return f"{label:<8}[{'#' * filled}{'.' * (width - filled)}]{tail}"

    def _line(self, text: str) -> None:
        if self._bar_open:
            self.stream.write("\n")
            self._bar_open = False
            self._shown = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self._bar_open:
            self.stream.write("\n")
            self._bar_open = False
            self._shown = 0
            self.stream.flush()


def _terminal_columns() -> int:
    import shutil

    return shutil.get_terminal_size((80, 24)).columns
