"""The status LED: one blink pattern per human-state code, for a technician at the board.

The board config names the LED (``status_led``, a logical pin); the pin factory is
passed in, so the same driver runs on lgpio on a Pi and on gpiozero's mock pins in
tests. The daemon owns the LED and calls ``StatusLed.show(code)`` whenever
``state.health.health`` gives a new state; a pattern runs in a background thread until
the next ``show`` or ``close``.

The patterns differ in rhythm, not only in speed, so that none can be mistaken for
another across a room: a lone blip (in sync), a flicker (syncing), an even blink
(offline), a long glow with a short dark gap (stale), three quick blinks then dark
(refused), steady light (error).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from giter_agent.core.errors import StatusLedError
from giter_agent.core.log import get_logger
from giter_agent.device.board import Board
from giter_agent.state.health import ERROR, IN_SYNC, OFFLINE, REFUSED, STALE, STATES, SYNCING

log = get_logger("giter.status_led")

Pattern = tuple[tuple[bool, float], ...]  # (LED on?, for how many seconds), repeated

PATTERNS: dict[str, Pattern] = {
    IN_SYNC: ((True, 0.1), (False, 2.9)),
    SYNCING: ((True, 0.05), (False, 0.05)),
    OFFLINE: ((True, 1.0), (False, 1.0)),
    STALE: ((True, 2.5), (False, 0.5)),
    REFUSED: ((True, 0.2), (False, 0.2), (True, 0.2), (False, 0.2), (True, 0.2),
              (False, 1.6)),
    ERROR: ((True, 60.0),),
}

LEGEND: dict[str, str] = {
    IN_SYNC: "one short blink every 3 s (heartbeat)",
    SYNCING: "fast flicker: a sync is running, leave the stick in",
    OFFLINE: "slow even blink, 1 s on / 1 s off",
    STALE: "mostly on: 2.5 s on, a 0.5 s dark gap, repeating",
    REFUSED: "3 quick blinks, then 1.6 s dark, repeating",
    ERROR: "steady on",
}
DARK = "dark: the agent is not running (or the board has no status LED)"


def legend() -> list[str]:
    """The LED codes as lines ``"code     pattern"``, for the receipt and the docs."""
    order = (IN_SYNC, SYNCING, OFFLINE, STALE, REFUSED, ERROR)
    return [f"{code:<8} {LEGEND[code]}" for code in order] + [f"{'(off)':<8} {DARK}"]


def _wait(stop: threading.Event, seconds: float) -> bool:
    return stop.wait(seconds)


class StatusLed:
    """Drive the board's status LED with the pattern of a human-state code.

    ``wait(stop, seconds) -> bool`` sleeps between steps and returns True when the
    pattern must end; tests pass their own to step through a pattern without sleeping.
    A board without a status LED, or an LED pin that cannot be claimed, makes every
    call a no-op (logged once): the agent must never stop working over a light.
    """

    def __init__(self, board: Board, pin_factory: Any, *,
                 wait: Callable[[threading.Event, float], bool] = _wait) -> None:
        self.board = board
        self.code: str | None = None
        self._wait = wait
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._led: Any = None
        if board.status_led is None:
            log.info("board %s has no status_led: LED codes are not shown", board.name)
            return
        from gpiozero.exc import GPIOZeroError
        from gpiozero.output_devices import LED

        pin = board.pin(board.status_led)
        try:
            self._led = LED(pin, pin_factory=pin_factory)
        except GPIOZeroError as exc:
            log.warning("status LED %s (%s) unavailable: %s", board.status_led, pin, exc)

    @property
    def available(self) -> bool:
        """True when an LED is being driven."""
        return self._led is not None

    def show(self, code: str) -> None:
        """Show ``code``'s pattern from now on; showing the current code again is a no-op."""
        if code not in STATES:
            raise StatusLedError(f"{code!r} is not a status code ({', '.join(STATES)})")
        with self._lock:
            if code == self.code:
                return
            self._halt()
            self.code = code
            if self._led is None:
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, name=f"status-led-{code}",
                                            args=(PATTERNS[code], self._stop), daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the pattern, switch the LED off and release its pin."""
        with self._lock:
            self._halt()
            self.code = None
            if self._led is not None:
                self._led.off()
                self._led.close()
                self._led = None

    def _halt(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _run(self, pattern: Pattern, stop: threading.Event) -> None:
        led = self._led
        while not stop.is_set():
            for on, seconds in pattern:
                if on:
                    led.on()
                else:
                    led.off()
                if self._wait(stop, seconds):
                    return
