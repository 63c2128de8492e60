"""``Sensor``: sample a reading every ``interval``, summarise it, report only what matters.

Called by the reconciler through the ``Kind`` interface, on every pass; the sensor
asks for the pass of its next sample with ``ctx.request_wakeup``, and the daemon
runs ``Agent.reconcile_pass`` when ``Agent.next_wakeup()`` is due.

Samples are summarised in memory (a ``_Sampler`` in ``ctx.devices``, per resource),
never committed one by one. What the status says - last value and time, min, max,
mean and count over the report window, threshold conditions - changes only when

- the value left its ``deadband`` around the last reported value,
- a threshold condition (``AboveThreshold``, ``BelowThreshold``) flipped, or
- a report-interval boundary (``Agent`` kind / ``[agent] report_interval``) passed,

so the status tree, and with it the status history, changes only then. Interval
reports fall on the clock's multiples of the interval, not on each sensor's own
schedule: every sensor reports in the same pass, and one status commit carries them
all. Thresholds use the deadband as hysteresis, so a value hovering at the threshold
does not flap.
Sources are in ``kinds.sensor_sources``.
"""

from __future__ import annotations

import math
from typing import Any

from giter_agent.core.errors import ResourceError
from giter_agent.kinds.base import (
    Condition,
    Context,
    Done,
    Failed,
    Kind,
    Outcome,
    Retry,
    applied_before,
    fingerprint,
    rfc3339,
)
from giter_agent.kinds.fields import Field, by_name, check_declared, value
from giter_agent.kinds.sensor_sources import ADC_CHIPS, INPUTS, SensorReadError, open_source

SOURCES = {
    "cpu-temperature": ({"zone"}, "°C"),
    "ds18b20": ({"device"}, "°C"),
    "digital": ({"pin", "input", "pullUp"}, ""),
    "adc": ({"chip", "channel", "spiDevice", "scale", "offset"}, ""),
}
_COMMON_FIELDS = {"source", "interval", "deadband", "thresholds", "unit"}


def _round(value: float) -> float:
    # sysfs and ADCs resolve to a thousandth at best; more digits would be noise in git.
    return round(value, 3)


class _Sampler:
    """One sensor's live source and the summary of its samples since the last report."""

    def __init__(self, fp: str, source: Any) -> None:
        self.fp = fp
        self.source = source
        self.next_sample = -math.inf
        self._reset_window()
        self.flags: dict[str, bool] = {}
        self.reported: dict[str, Any] | None = None
        self.reported_value: float | None = None
        self.reported_at = -math.inf
        self.reported_flags: dict[str, bool] = {}
        self.activations_at_report = 0
        self.activations_at_sample = 0

    def _reset_window(self) -> None:
        self.count = 0
        self.total = 0.0
        self.low = math.inf
        self.high = -math.inf
        self.since: float | None = None
        self.value: float | None = None
        self.at: float | None = None

    def close(self) -> None:
        self.source.close()

    @property
    def activations(self) -> int:
        return getattr(self.source, "activations", 0)

    def add(self, value: float, now: float, spec: dict[str, Any]) -> None:
        self.count += 1
        self.total += value
        self.low, self.high = min(self.low, value), max(self.high, value)
        if self.since is None:
            self.since = now
        self.value, self.at = value, now
        hysteresis = spec["deadband"] or 0.0
        if spec["above"] is not None:
            was = self.flags.get("AboveThreshold", False)
            self.flags["AboveThreshold"] = (value >= spec["above"] - hysteresis if was
                                            else value > spec["above"])
        if spec["below"] is not None:
            was = self.flags.get("BelowThreshold", False)
            self.flags["BelowThreshold"] = (value <= spec["below"] + hysteresis if was
                                            else value < spec["below"])

    def next_report(self, report_interval: float) -> float:
        """The first interval boundary after the last report (-inf: never reported)."""
        return (self.reported_at // report_interval + 1) * report_interval

    def due(self, now: float, spec: dict[str, Any], report_interval: float) -> bool:
        """Is a report due after the sample just added?"""
        if self.reported is None or self.reported_value is None or self.value is None:
            return True
        if self.flags != self.reported_flags or now >= self.next_report(report_interval):
            return True
        deadband = spec["deadband"]
        if deadband is None:
            return False
        if abs(self.value - self.reported_value) > deadband:
            return True
        # A press between two samples is a change the level alone would hide.
        return spec["source"] == "digital" and self.activations != self.activations_at_sample

    def report(self, spec: dict[str, Any]) -> None:
        # Called only after a sample was added: the window holds at least one reading.
        assert self.value is not None and self.at is not None and self.since is not None
        observed: dict[str, Any] = {"source": spec["source"], "value": _round(self.value)}
        if spec["unit"]:
            observed["unit"] = spec["unit"]
        observed["time"] = rfc3339(self.at)
        observed["window"] = {"since": rfc3339(self.since), "samples": self.count,
                              "min": _round(self.low), "max": _round(self.high),
                              "mean": _round(self.total / self.count)}
        if spec["source"] == "digital":
            observed["activations"] = self.activations - self.activations_at_report
            self.activations_at_report = self.activations
        self.reported = observed
        self.reported_value = self.value
        self.reported_at = self.at
        self.reported_flags = dict(self.flags)
        self._reset_window()

    def memory(self) -> dict[str, Any]:
        return {"fingerprint": self.fp, "reportedAt": self.reported_at,
                "reportedValue": self.reported_value, "flags": self.reported_flags}

    def restore(self, memory: dict[str, Any], observed: dict[str, Any] | None) -> None:
        """Carry the last report over a restart, so a restart alone makes no commit."""
        if memory.get("fingerprint") != self.fp or not observed:
            return
        self.reported = observed
        self.reported_at = float(memory.get("reportedAt", -math.inf))
        self.reported_value = memory.get("reportedValue")
        self.reported_flags = dict(memory.get("flags") or {})
        self.flags = dict(self.reported_flags)


def _what(spec: dict[str, Any]) -> str:
    source = spec["source"]
    if source == "cpu-temperature":
        return f"CPU temperature (thermal zone {spec['zone']})"
    if source == "ds18b20":
        return f"DS18B20 {spec['device']}"
    if source == "digital":
        return f"{spec['input']} on {spec['pin']}"
    return f"{spec['chip']} channel {spec['channel']}"


class SensorKind(Kind):
    kind = "Sensor"
    ACTS = False  # it only reads, so observe-only changes nothing

    DESCRIPTION = ("A reading (CPU temperature, DS18B20, a digital input, an ADC channel) "
                   "summarised into status.")
    FIELDS = (
        Field("source", "string", "where the reading comes from", required=True,
              enum=tuple(SOURCES)),
        Field("interval", "number", "seconds between samples", default=60, minimum=1,
              maximum=86400),
        Field("deadband", "number", "report only when the value moves this much (also "
              "the thresholds' hysteresis)", minimum=0, maximum=1e9),
        Field("thresholds", "object", "conditions AboveThreshold/BelowThreshold",
              properties=(Field("above", "number", "report AboveThreshold over this"),
                          Field("below", "number", "report BelowThreshold under this")),
              message="may hold above and below"),
        Field("unit", "string", "the unit shown in status (default per source)",
              max_length=16, message="must be a short string"),
        Field("zone", "integer", "cpu-temperature: the thermal zone", default=0, minimum=0,
              maximum=63),
        Field("device", "string", "ds18b20: the 1-wire id, like 28-0316a279f3ff",
              pattern=r"28-[0-9a-f-]{0,17}",
              message="must be a DS18B20 id like 28-0316a279f3ff"),
        Field("pin", "string", "digital: the board's logical pin name",
              message="must be a logical pin name"),
        Field("input", "string", "digital: what is wired to the pin", default="digital",
              enum=INPUTS),
        Field("pullUp", "boolean", "digital: use the internal pull-up (default: true for "
              "a button)"),
        Field("chip", "string", "adc: the MCP3xxx chip", enum=tuple(ADC_CHIPS)),
        Field("channel", "integer", "adc: the chip's channel", default=0, minimum=0,
              maximum=max(ADC_CHIPS.values()) - 1),
        Field("spiDevice", "integer", "adc: SPI chip select", default=0, minimum=0,
              maximum=1),
        Field("scale", "number", "adc: value = reading * scale + offset", default=1,
              minimum=-1e9, maximum=1e9),
        Field("offset", "number", "adc: value = reading * scale + offset", default=0,
              minimum=-1e9, maximum=1e9),
    )

    @staticmethod
    def _required(source: str) -> set[str]:
        return {"source", *({"digital": {"pin"}, "ds18b20": {"device"},
                             "adc": {"chip"}}.get(source, set()))}

    @classmethod
    def source_fields(cls, source: str) -> tuple[Field, ...]:
        """The fields one source accepts, each marked required or not for it."""
        allowed = _COMMON_FIELDS | SOURCES[source][0]
        required = cls._required(source)
        return tuple(f._replace(required=f.name in required) for f in cls.FIELDS
                     if f.name in allowed)

    @classmethod
    def spec_schema(cls) -> dict[str, Any]:
        """Every field, and per source (``if``/``then``) what it requires and forbids."""
        out = super().spec_schema()
        everything = {f.name for f in cls.FIELDS}
        out["allOf"] = [{
            "if": {"properties": {"source": {"const": source}}, "required": ["source"]},
            "then": {"required": sorted(cls._required(source)),
                     "not": {"anyOf": [{"required": [name]} for name in
                                       sorted(everything - _COMMON_FIELDS - fields)]}},
        } for source, (fields, _unit) in SOURCES.items()]
        return out

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        by = by_name(self.FIELDS)
        source = spec.get("source")
        if not isinstance(source, str) or source not in SOURCES:  # a list is unhashable
            by["source"].validate(source)
            raise AssertionError("unreachable: the declaration refuses it")
        check_declared(spec, self.source_fields(source))
        out: dict[str, Any] = {
            "source": source,
            "interval": float(value(spec, by["interval"])),
            "deadband": float(spec["deadband"]) if "deadband" in spec else None,
            "above": None, "below": None,
            "prune": spec.get("prune", True),
        }
        out["unit"] = spec.get("unit", SOURCES[source][1])
        thresholds = spec.get("thresholds", {})
        for name in ("above", "below"):
            if name in thresholds:
                out[name] = float(thresholds[name])
        if out["above"] is not None and out["below"] is not None \
                and out["below"] >= out["above"]:
            raise ResourceError("spec.thresholds.below must be lower than above",
                                reason="InvalidSpec")
        if source == "cpu-temperature":
            out["zone"] = value(spec, by["zone"])
        elif source == "ds18b20":
            out["device"] = spec["device"]
        elif source == "digital":
            kind = value(spec, by["input"])
            out.update(pin=spec["pin"], input=kind, pullUp=spec.get("pullUp", kind == "button"))
        else:
            chip = spec["chip"]
            channel = value(spec, by["channel"])
            if channel > ADC_CHIPS[chip] - 1:
                raise ResourceError(f"spec.channel must be a whole number from 0 to "
                                    f"{ADC_CHIPS[chip] - 1} on a {chip}, got {channel!r}",
                                    reason="InvalidSpec")
            out.update(chip=chip, channel=channel, spiDevice=value(spec, by["spiDevice"]),
                       scale=float(value(spec, by["scale"])),
                       offset=float(value(spec, by["offset"])))
        return out

    def _open(self, key: str, spec: dict[str, Any], fp: str, ctx: Context
              ) -> _Sampler | Outcome:
        pin = None
        if spec["source"] == "digital":
            logical = spec["pin"]
            if logical not in ctx.board.pins:
                return Failed("PinUnknown",
                              f"board {ctx.board.name} has no pin named {logical!r}")
            if logical == ctx.board.status_led:
                return Failed("PinReserved", f"{logical} is the agent's status LED")
            pin = ctx.board.pin(logical)
        if spec["source"] in ("digital", "adc"):
            from gpiozero.exc import GPIOZeroError

            try:
                source = open_source(spec, ctx.sysfs, pin, ctx.pin_factory)
            except GPIOZeroError as exc:
                return Retry("PinUnavailable", f"{_what(spec)}: {exc}", spec["interval"])
        else:
            # sysfs sources: no gpiozero import (it costs RAM on a 512 MB board).
            source = open_source(spec, ctx.sysfs, None, None)
        sampler = _Sampler(fp, source)
        record = ctx.records.get(key)
        sampler.restore(ctx.memory(key), record.status.get("observed") if record else None)
        return sampler

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        fp = fingerprint(spec)
        sampler = ctx.devices.get(key)
        if sampler is not None and sampler.fp != fp:
            sampler.close()
            del ctx.devices[key]
            sampler = None
        if sampler is None:
            opened = self._open(key, spec, fp, ctx)
            if not isinstance(opened, _Sampler):
                return opened
            sampler = ctx.devices[key] = opened
        now = ctx.clock()
        report_interval = ctx.effective_settings().report_interval
        # A sample is due on the sensor's own cadence, and also at the report boundary,
        # so that the report is made in the same pass as every other sensor's.
        if now >= sampler.next_sample or now >= sampler.next_report(report_interval):
            sampler.next_sample = now + spec["interval"]
            try:
                value = sampler.source.read()
            except SensorReadError as exc:
                return Retry(exc.reason, str(exc), spec["interval"])
            except Exception as exc:  # a bus error from gpiozero: say what, try later
                return Retry("ReadFailed", f"{_what(spec)}: {type(exc).__name__}: {exc}",
                             spec["interval"])
            if not math.isfinite(value):
                return Retry("ReadFailed", f"{_what(spec)} read {value}", spec["interval"])
            sampler.add(value, now, spec)
            if sampler.due(now, spec, report_interval):
                sampler.report(spec)
            sampler.activations_at_sample = sampler.activations
        ctx.request_wakeup(min(sampler.next_sample, sampler.next_report(report_interval)))
        if sampler.reported is None:
            return Retry("NoSample", f"{_what(spec)}: no sample yet", spec["interval"])
        return Done("Sampling", f"{_what(spec)} sampled every {spec['interval']:g} s",
                    sampler.reported, conditions=self._conditions(spec, sampler),
                    memory=sampler.memory())

    @staticmethod
    def _conditions(spec: dict[str, Any], sampler: _Sampler) -> tuple[Condition, ...]:
        unit = f" {spec['unit']}" if spec["unit"] else ""
        out = []
        if spec["above"] is not None:
            above = sampler.reported_flags.get("AboveThreshold", False)
            out.append(Condition(
                "AboveThreshold", above,
                "ValueAboveThreshold" if above else "ValueWithinThreshold",
                f"{'above' if above else 'not above'} {spec['above']:g}{unit}"))
        if spec["below"] is not None:
            below = sampler.reported_flags.get("BelowThreshold", False)
            out.append(Condition(
                "BelowThreshold", below,
                "ValueBelowThreshold" if below else "ValueWithinThreshold",
                f"{'below' if below else 'not below'} {spec['below']:g}{unit}"))
        return tuple(out)

    def plan(self, key: str, spec: dict[str, Any], ctx: Context) -> str | None:
        if applied_before(key, spec, ctx):
            return None
        return f"would sample {_what(spec)} every {spec['interval']:g} s"

    def plan_prune(self, key: str, spec: dict[str, Any], ctx: Context) -> str:
        return f"would stop sampling {_what(spec)}"

    def prune(self, key: str, spec: dict[str, Any], ctx: Context) -> None:
        sampler = ctx.devices.pop(key, None)
        if sampler is not None:
            sampler.close()
