"""``Output``: a digital output on a logical pin — on, off, or blinking (LED, relay, buzzer).

Driven through gpiozero with the pin factory the board config names, so a laptop
(mock pins) and a Raspberry Pi run the same code. The gpiozero device is kept in the
context between passes: a blink runs in gpiozero's background thread for as long as
the agent process lives (the daemon), and a changed spec reuses or replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.errors import ResourceError
from agent.kinds.base import Context, Done, Failed, Kind, Outcome, Retry, check_fields, number

STATES = ("on", "off", "blink")


@dataclass
class _Driven:
    """A live gpiozero LED and what it was set up for (gpiozero devices take no extras)."""

    led: Any
    want: tuple[str, bool]
    blink: tuple[float, float] | None = None

    def close(self) -> None:
        self.led.close()


class OutputKind(Kind):
    kind = "Output"

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        check_fields(spec, {"pin", "state"}, {"onTime", "offTime", "activeHigh"})
        if not isinstance(spec["pin"], str):
            raise ResourceError("spec.pin must be a logical pin name", reason="InvalidSpec")
        if spec["state"] not in STATES:
            raise ResourceError(f"spec.state must be one of {', '.join(STATES)}, "
                                f"got {spec['state']!r}", reason="InvalidSpec")
        active_high = spec.get("activeHigh", True)
        if not isinstance(active_high, bool):
            raise ResourceError("spec.activeHigh must be true or false", reason="InvalidSpec")
        return {
            "pin": spec["pin"],
            "state": spec["state"],
            "onTime": number(spec, "onTime", 1.0, 0.01, 3600),
            "offTime": number(spec, "offTime", 1.0, 0.01, 3600),
            "activeHigh": active_high,
            "prune": spec.get("prune", True),
        }

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        logical = spec["pin"]
        if logical not in ctx.board.pins:
            return Failed("PinUnknown", f"board {ctx.board.name} has no pin named {logical!r}")
        if logical == ctx.board.status_led:
            return Failed("PinReserved", f"{logical} is the agent's status LED")
        pin = ctx.board.pin(logical)
        observed = {"pin": pin, "state": spec["state"]}
        want = (pin, spec["activeHigh"])
        dev = ctx.devices.get(key)
        if dev is not None and dev.want != want:
            dev.close()
            del ctx.devices[key]
            dev = None
        if dev is None:
            from gpiozero import LED
            from gpiozero.exc import GPIOZeroError

            try:
                led = LED(pin, active_high=spec["activeHigh"], pin_factory=ctx.pin_factory)
            except GPIOZeroError as exc:
                return Retry("PinUnavailable", f"{pin}: {exc}", 30, observed)
            dev = ctx.devices[key] = _Driven(led, want)
        state = spec["state"]
        if state == "blink":
            times = (spec["onTime"], spec["offTime"])
            if dev.blink != times:
                dev.led.blink(on_time=times[0], off_time=times[1], background=True)
                dev.blink = times
            return Done("Blinking", f"{logical} ({pin}) blinking {times[0]:g}s on, "
                        f"{times[1]:g}s off", observed)
        dev.blink = None
        if state == "on":
            dev.led.on()
        else:
            dev.led.off()
        observed["value"] = int(dev.led.value)
        return Done("Set", f"{logical} ({pin}) is {state}", observed)

    def prune(self, key: str, spec: dict[str, Any], ctx: Context) -> None:
        dev = ctx.devices.pop(key, None)
        if dev is not None:
            dev.led.off()
            dev.close()
