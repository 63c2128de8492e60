"""``Output``: a digital or PWM output on a logical pin (LED, relay, buzzer).

Called by the reconciler through the ``Kind`` interface. ``state`` is ``on``, ``off``,
``blink`` (``onTime``/``offTime``, optionally ``count`` times, with ``fadeInTime``/
``fadeOutTime`` on PWM) or ``pwm`` (hold ``value`` 0..1). Driven through gpiozero
(``LED``, or ``PWMLED`` when the spec needs PWM) with the pin factory the board
config names, so a laptop (mock pins) and a Raspberry Pi run the same code.

The kind decides; ``ctx.outputs`` (``device.outputs``) drives. The gpiozero device is
held there between passes: a blink runs in gpiozero's background thread for as long
as the agent process lives (the daemon), and a changed spec reuses or replaces it.
In the daemon's pass worker ``ctx.outputs`` writes the same calls down and the daemon
makes them, so the blink lives in the daemon while the worker exits. A one-shot ``giter-agent sync``
(``Context.lasting`` false) reports what is true once it has exited: a counted blink
short enough (``ONE_SHOT_BLINK_S``) runs to its end before it returns (``Blinked``);
an endless blink or a PWM level between 0 and 1 (software PWM, a thread of this
process) cannot outlive it, so the pin is driven off and the resource is not Ready
(``NeedsDaemon``: the service will hold it). A pin found at another level than the spec
says (flipped by hand or by another program) is set back and reported as drift.
"""

from __future__ import annotations

from typing import Any

from giter_agent.core.errors import ResourceError
from giter_agent.kinds.base import (
    Context,
    Done,
    Failed,
    Kind,
    Outcome,
    Retry,
    applied_before,
    would_fail,
)
from giter_agent.kinds.fields import Field, by_name, check_declared, value

STATES = ("on", "off", "blink", "pwm")
# The longest counted blink a one-shot sync runs to the end before it exits.
ONE_SHOT_BLINK_S = 30.0


def _level(value: float) -> str:
    if value == 1.0:
        return "on"
    if value == 0.0:
        return "off"
    return f"{value:.0%}"


def _desired(spec: dict[str, Any]) -> float:
    return {"on": 1.0, "off": 0.0}.get(spec["state"], spec["value"] or 0.0)


def _pattern(spec: dict[str, Any]) -> tuple[float, float, float, float, int | None]:
    return (spec["onTime"], spec["offTime"], spec["fadeInTime"], spec["fadeOutTime"],
            spec["count"])


def _describe(spec: dict[str, Any], logical: str, pin: str) -> str:
    if spec["state"] == "blink":
        on, off, fade_in, fade_out, count = _pattern(spec)
        text = f"{logical} ({pin}) blinking {on:g}s on, {off:g}s off"
        if fade_in or fade_out:
            text += f", fading in {fade_in:g}s and out {fade_out:g}s"
        return text + (f", {count} times" if count else "")
    return f"{logical} ({pin}) is {_level(_desired(spec))}"


class OutputKind(Kind):
    kind = "Output"

    DESCRIPTION = "A digital or PWM output on a logical pin (LED, relay, buzzer)."
    FIELDS = (
        Field("pin", "string", "the board's logical pin name (led1, relay1, ...)",
              required=True, message="must be a logical pin name"),
        Field("state", "string", "on, off, blink, or pwm (hold value)", required=True,
              enum=STATES),
        Field("onTime", "number", "blink: seconds on", default=1.0, minimum=0.01,
              maximum=3600),
        Field("offTime", "number", "blink: seconds off", default=1.0, minimum=0.01,
              maximum=3600),
        Field("count", "integer", "blink: this many times, then off (default: forever)",
              minimum=1, maximum=1_000_000),
        Field("fadeInTime", "number", "blink: seconds to fade in (PWM)", default=0,
              minimum=0, maximum=3600),
        Field("fadeOutTime", "number", "blink: seconds to fade out (PWM)", default=0,
              minimum=0, maximum=3600),
        Field("value", "number", "pwm: duty cycle, 0 to 1 (required with state: pwm)",
              minimum=0, maximum=1),
        Field("frequency", "number", "PWM frequency in Hz", default=100, minimum=1,
              maximum=10_000),
        Field("activeHigh", "boolean", "false when the pin is on at low level",
              default=True),
    )

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        check_declared(spec, self.FIELDS)
        f = by_name(self.FIELDS)
        state = spec["state"]
        if state == "pwm" and "value" not in spec:
            raise ResourceError("spec.value (0 to 1) is required with state: pwm",
                                reason="InvalidSpec")
        for name, only in (("value", "pwm"), ("count", "blink"), ("fadeInTime", "blink"),
                           ("fadeOutTime", "blink")):
            if name in spec and state != only:
                raise ResourceError(f"spec.{name} applies only to state: {only}",
                                    reason="InvalidSpec")
        fade_in = float(value(spec, f["fadeInTime"]))
        fade_out = float(value(spec, f["fadeOutTime"]))
        pwm = state == "pwm" or bool(fade_in or fade_out)
        if "frequency" in spec and not pwm:
            raise ResourceError("spec.frequency applies only to PWM (state: pwm, or fades)",
                                reason="InvalidSpec")
        return {
            "pin": spec["pin"],
            "state": state,
            "value": float(spec["value"]) if state == "pwm" else None,
            "onTime": float(value(spec, f["onTime"])),
            "offTime": float(value(spec, f["offTime"])),
            "count": spec.get("count"),
            "fadeInTime": fade_in,
            "fadeOutTime": fade_out,
            "pwm": pwm,
            "frequency": float(value(spec, f["frequency"])),
            "activeHigh": value(spec, f["activeHigh"]),
            "prune": spec.get("prune", True),
        }

    @staticmethod
    def _pin(spec: dict[str, Any], ctx: Context) -> str | Failed:
        logical = spec["pin"]
        if logical not in ctx.board.pins:
            return Failed("PinUnknown", f"board {ctx.board.name} has no pin named {logical!r}")
        if logical == ctx.board.status_led:
            return Failed("PinReserved", f"{logical} is the agent's status LED")
        return ctx.board.pin(logical)

    @staticmethod
    def _want(spec: dict[str, Any], pin: str) -> tuple[str, bool, bool, float]:
        return (pin, spec["activeHigh"], spec["pwm"], spec["frequency"])

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        pin = self._pin(spec, ctx)
        if isinstance(pin, Failed):
            return pin
        logical = spec["pin"]
        observed: dict[str, Any] = {"pin": pin, "state": spec["state"]}
        want = self._want(spec, pin)
        outputs = ctx.outputs
        held = outputs.held(key)
        if held is not None and held.want != want:
            outputs.close(key)
            held = None
        found_live = held is not None
        if held is None:
            why = outputs.claim(key, want)
            if why is not None:
                return Retry("PinUnavailable", why, 30, observed)
        message = _describe(spec, logical, pin)
        if not ctx.lasting:
            outcome = self._one_shot(key, spec, ctx, message, observed)
            if outcome is not None:
                return outcome
        if spec["state"] == "blink":
            pattern = _pattern(spec)
            if held is None or held.pattern != pattern:
                outputs.blink(key, pattern)
            return Done("Blinking", message, observed)
        desired = _desired(spec)
        changes: tuple[str, ...] = ()
        if held is not None and found_live and held.pattern is None:
            current = held.value
            if abs(current - desired) > 1e-6:
                # Ours, set by an earlier pass, yet no longer where we left it.
                changes = (f"{logical} ({pin}) was {_level(current)}, "
                           f"spec says {_level(desired)}",)
        outputs.set(key, desired)  # also stops a running blink
        now = outputs.held(key)
        observed["value"] = round(now.value if now is not None else desired, 4)
        return Done("Set", message, observed, changes=changes)

    def _one_shot(self, key: str, spec: dict[str, Any], ctx: Context, message: str,
                  observed: dict[str, Any]) -> Outcome | None:
        """What a process about to exit can truly do; None: the same as a daemon."""
        on, off, fade_in, fade_out, count = pattern = _pattern(spec)
        if spec["state"] == "blink":
            if count and count * (on + off + fade_in + fade_out) <= ONE_SHOT_BLINK_S:
                ctx.outputs.blink(key, pattern, wait=True)
                return Done("Blinked", f"{message}: done, now off", observed)
        elif not (spec["state"] == "pwm" and 0.0 < _desired(spec) < 1.0):
            return None
        ctx.outputs.set(key, 0.0)
        observed["value"] = 0.0
        return Failed("NeedsDaemon", f"{message} only while giter-agent runs as a service: "
                      "this one-shot sync exits, so the pin is left off; the running "
                      "service (systemctl start giter-agent) holds it", observed)

    def plan(self, key: str, spec: dict[str, Any], ctx: Context) -> str | None:
        pin = self._pin(spec, ctx)
        if isinstance(pin, Failed):
            return would_fail(pin)
        held = ctx.outputs.held(key)
        target = _describe(spec, spec["pin"], pin)
        if held is not None and held.want == self._want(spec, pin):
            if spec["state"] == "blink":
                return None if held.pattern == _pattern(spec) else f"would set {target}"
            if held.pattern is None and abs(held.value - _desired(spec)) <= 1e-6:
                return None
            return f"would set {target} (now {_level(held.value)})"
        # A pin this process does not drive cannot be read without claiming it: trust
        # what the last pass recorded.
        if applied_before(key, spec, ctx):
            return None
        return f"would set {target}"

    def plan_prune(self, key: str, spec: dict[str, Any], ctx: Context) -> str:
        return f"would turn {spec['pin']} off and release it"

    def prune(self, key: str, spec: dict[str, Any], ctx: Context) -> None:
        held = ctx.outputs.held(key)
        if held is not None:
            ctx.outputs.release(key, held.want[0], held.want[1])
            return
        # Not driven by this process (a one-shot sync after a restart): the pin is
        # claimed just long enough to drive it off, so "pruned" means "off" on every
        # factory.
        pin = self._pin(spec, ctx)
        if not isinstance(pin, Failed):
            ctx.outputs.release(key, pin, spec["activeHigh"])
