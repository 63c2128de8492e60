"""The outputs a process holds (LEDs, relays, buzzers), and a plan of them for another.

The ``Output`` kind decides what each pin should do; this module does it. Its calls
are few and plain - claim a pin for a resource, blink it, set a level, close it,
release it - so they can be made here (``HeldOutputs``: gpiozero ``LED``/``PWMLED``,
with the board's pin factory) or written down (``PlannedOutputs``) and made later by
another process. That is how the daemon's pass worker, which exits when its pass
ends, leaves a blink running: it plans, and the long-lived daemon replays the plan on
its own ``HeldOutputs`` (``daemon.worker_passes``). The rules stay in one place, the
kind; the worker sees what the daemon holds (``snapshot``), as if it held it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from giter_agent.core.log import get_logger

log = get_logger("giter.device")

Want = tuple[str, bool, bool, float]  # pin, activeHigh, pwm, frequency
Pattern = tuple[float, float, float, float, "int | None"]  # on, off, fade in, out, count


class Held:
    """What a held output was set up for, the blink it runs, and its level now."""

    __slots__ = ("pattern", "value", "want")

    def __init__(self, want: Want, pattern: Pattern | None = None,
                 value: float = 0.0) -> None:
        self.want = want
        self.pattern = pattern
        self.value = value


class _Driven:
    __slots__ = ("led", "pattern", "want")

    def __init__(self, led: Any, want: Want, pattern: Pattern | None = None) -> None:
        self.led = led  # gpiozero LED or PWMLED
        self.want = want
        self.pattern = pattern


class HeldOutputs:
    """Outputs driven by this process with gpiozero, by resource key."""

    def __init__(self, pin_factory: Callable[[], Any]) -> None:
        self.pin_factory = pin_factory
        self._driven: dict[str, _Driven] = {}
        self.failures: dict[str, str] = {}  # key -> why the last claim failed (a plan's)

    def held(self, key: str) -> Held | None:
        dev = self._driven.get(key)
        if dev is None:
            return None
        return Held(dev.want, dev.pattern, float(dev.led.value))

    def snapshot(self) -> dict[str, Held]:
        return {key: held for key in self._driven if (held := self.held(key)) is not None}

    def claim(self, key: str, want: Want) -> str | None:
        """Drive ``want[0]`` for ``key`` (off); the reason it cannot, or None."""
        from gpiozero.exc import GPIOZeroError
        from gpiozero.output_devices import LED, PWMLED

        self.close(key)
        pin, active_high, pwm, frequency = want
        try:
            if pwm:
                led = PWMLED(pin, active_high=active_high, frequency=frequency,
                             pin_factory=self.pin_factory())
            else:
                led = LED(pin, active_high=active_high, pin_factory=self.pin_factory())
        except GPIOZeroError as exc:
            self.failures[key] = f"{pin}: {exc}"
            return self.failures[key]
        self.failures.pop(key, None)
        self._driven[key] = _Driven(led, want)
        return None

    def blink(self, key: str, pattern: Pattern, *, wait: bool = False) -> None:
        """Blink (in gpiozero's thread; ``wait``: to the end of a counted blink, here)."""
        dev = self._driven[key]
        on, off, fade_in, fade_out, count = pattern
        if dev.want[2]:
            dev.led.blink(on_time=on, off_time=off, fade_in_time=fade_in,
                          fade_out_time=fade_out, n=count, background=not wait)
        else:
            dev.led.blink(on_time=on, off_time=off, n=count, background=not wait)
        dev.pattern = None if wait else pattern

    def set(self, key: str, value: float) -> None:
        """Hold a level (stops a running blink)."""
        dev = self._driven[key]
        dev.pattern = None
        if dev.want[2]:
            dev.led.value = value
        elif value:
            dev.led.on()
        else:
            dev.led.off()

    def close(self, key: str) -> None:
        """Let the pin go as it is (the spec changed how it is driven)."""
        dev = self._driven.pop(key, None)
        if dev is not None:
            dev.led.close()

    def release(self, key: str, pin: str, active_high: bool) -> None:
        """Drive the pin off and let it go; a pin this process does not hold is claimed
        just long enough for that, so "released" means "off" on every factory."""
        self.failures.pop(key, None)
        dev = self._driven.pop(key, None)
        if dev is not None:
            dev.led.off()
            dev.led.close()
            return
        from gpiozero.exc import GPIOZeroError
        from gpiozero.output_devices import LED

        with contextlib.suppress(GPIOZeroError):  # busy or gone: nothing we can undo
            LED(pin, active_high=active_high, initial_value=False,
                pin_factory=self.pin_factory()).close()

    def replay(self, plan: list[list[Any]]) -> None:
        """Make the calls a ``PlannedOutputs`` wrote down, in order. A pin that cannot
        be claimed is logged and remembered (``failures``): the next plan's claim of it
        reports why, and tries again."""
        broken: set[str] = set()
        for op, key, *args in plan:
            if key in broken:
                continue
            if op == "claim":
                why = self.claim(key, _want(args[0]))
                if why is not None:
                    broken.add(key)
                    log.warning("cannot drive %s: %s", key, why,
                                extra={"event": "pin-unavailable"})
            elif op == "blink":
                self.blink(key, _pattern(args[0]))
            elif op == "set":
                self.set(key, float(args[0]))
            elif op == "close":
                self.close(key)
            elif op == "release":
                self.release(key, str(args[0]), bool(args[1]))

    def keys(self) -> list[str]:
        return sorted(self._driven)

    def close_all(self) -> None:
        for key in list(self._driven):
            self.close(key)


class PlannedOutputs:
    """The same calls, written down for the process that holds the pins.

    ``snapshot`` is what that process holds now and ``failures`` the claims it could
    not make; the answers follow the plan as it grows, so a kind sees what it did.
    """

    def __init__(self, snapshot: dict[str, Held] | None = None,
                 failures: dict[str, str] | None = None) -> None:
        self._held = dict(snapshot or {})
        self.failures = dict(failures or {})
        self.plan: list[list[Any]] = []

    def held(self, key: str) -> Held | None:
        return self._held.get(key)

    def claim(self, key: str, want: Want) -> str | None:
        self.plan.append(["claim", key, list(want)])
        self._held[key] = Held(want)
        why = self.failures.get(key)
        if why is not None:  # the holder could not last time: say so, it tries again
            del self._held[key]
        return why

    def blink(self, key: str, pattern: Pattern, *, wait: bool = False) -> None:
        self.plan.append(["blink", key, list(pattern)])
        self._held[key].pattern = None if wait else pattern

    def set(self, key: str, value: float) -> None:
        self.plan.append(["set", key, value])
        held = self._held[key]
        held.pattern, held.value = None, value

    def close(self, key: str) -> None:
        self.plan.append(["close", key])
        self._held.pop(key, None)

    def release(self, key: str, pin: str, active_high: bool) -> None:
        self.plan.append(["release", key, pin, active_high])
        self._held.pop(key, None)

    def keys(self) -> list[str]:
        return sorted(self._held)

    def close_all(self) -> None:
        """Nothing is held here."""


def held_to_plain(held: dict[str, Held]) -> dict[str, Any]:
    return {key: {"want": list(h.want), "pattern": list(h.pattern) if h.pattern else None,
                  "value": h.value} for key, h in held.items()}


def held_from_plain(raw: dict[str, Any]) -> dict[str, Held]:
    return {key: Held(_want(h["want"]), _pattern(h["pattern"]) if h["pattern"] else None,
                      float(h["value"])) for key, h in raw.items()}


def _want(raw: Any) -> Want:
    pin, active_high, pwm, frequency = raw
    return (str(pin), bool(active_high), bool(pwm), float(frequency))


def _pattern(raw: Any) -> Pattern:
    on, off, fade_in, fade_out, count = raw
    return (float(on), float(off), float(fade_in), float(fade_out),
            None if count is None else int(count))
