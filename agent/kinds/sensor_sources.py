"""Where a ``Sensor`` reading comes from: sysfs files and gpiozero input devices.

Called by ``kinds.sensor`` only. Each source is a small object with ``read()
-> float`` and ``close()``:
- ``cpu-temperature``: ``<sysfs>/class/thermal/thermal_zone<N>/temp`` (millidegrees);
- ``ds18b20``: a 1-wire thermometer at ``<sysfs>/bus/w1/devices/<id>/w1_slave``
  (the kernel's w1-therm driver, CRC checked);
- ``digital``: a gpiozero ``DigitalInputDevice``, ``Button`` or ``MotionSensor``,
  which also counts activations between reads (a press shorter than the interval
  still counts);
- ``adc``: a channel of an MCP3xxx ADC on SPI through gpiozero, scaled.
``sysfs`` and the pin factory come from the ``Context``, so tests use a temp folder
and mock pins; gpiozero is imported only when a pin source is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from giter_agent.core.errors import SensorReadError

# gpiozero's MCP3xxx classes and how many channels each has.
ADC_CHIPS = {"MCP3001": 1, "MCP3002": 2, "MCP3004": 4, "MCP3008": 8, "MCP3201": 1,
             "MCP3202": 2, "MCP3204": 4, "MCP3208": 8, "MCP3301": 1, "MCP3302": 4,
             "MCP3304": 8}
INPUTS = ("digital", "button", "motion")
# What a DS18B20 reports before its first conversion finished: never a real reading.
_DS18B20_POWER_ON = 85000


class SysfsNumber:
    """A sysfs file holding one integer, scaled (``temp`` in millidegrees)."""

    def __init__(self, path: Path, scale: float) -> None:
        self.path = path
        self.scale = scale

    def read(self) -> float:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            raise SensorReadError(f"{self.path} does not exist",
                                  reason="SensorNotFound") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SensorReadError(f"cannot read {self.path}: {exc}") from None
        try:
            return int(text) * self.scale
        except ValueError:
            raise SensorReadError(f"{self.path} holds {text[:40]!r}, not a number") from None

    def close(self) -> None:
        """Nothing held open between reads."""


class DS18B20:
    """A 1-wire DS18B20 through the kernel's w1-therm driver."""

    def __init__(self, device_dir: Path) -> None:
        self.dir = device_dir

    def read(self) -> float:
        path = self.dir / "w1_slave"
        try:
            lines = path.read_text(encoding="ascii").splitlines()
        except FileNotFoundError:
            raise SensorReadError(f"no 1-wire device at {self.dir} (is w1-gpio enabled and "
                                  "the sensor wired?)", reason="SensorNotFound") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SensorReadError(f"cannot read {path}: {exc}") from None
        # Line 1 ends in "crc=xx YES" when the scratchpad's CRC matched; line 2 "t=23125".
        if len(lines) < 2 or not lines[0].rstrip().endswith("YES"):
            raise SensorReadError(f"{path}: CRC check failed (noise on the 1-wire bus?)")
        _, sep, raw = lines[1].rpartition("t=")
        try:
            milli = int(raw) if sep else None
        except ValueError:
            milli = None
        if milli is None:
            raise SensorReadError(f"{path}: no temperature in {lines[1][:60]!r}")
        if milli == _DS18B20_POWER_ON:
            raise SensorReadError(f"{path}: 85 °C is the power-on value (read before the "
                                  "first conversion, or a power glitch)")
        return milli / 1000.0

    def close(self) -> None:
        """Nothing held open between reads."""


class DigitalInput:
    """A gpiozero input device: its level, and activations counted between reads."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.activations = 0
        device.when_activated = self._activated

    def _activated(self) -> None:
        # Runs in gpiozero's callback thread; a lost increment under a race would
        # undercount one press, and the GIL makes even that unlikely.
        self.activations += 1

    def read(self) -> float:
        return 1.0 if self.device.is_active else 0.0

    def close(self) -> None:
        self.device.when_activated = None
        self.device.close()


class ScaledADC:
    """An MCP3xxx channel: gpiozero's 0..1 reading times ``scale`` plus ``offset``."""

    def __init__(self, device: Any, scale: float, offset: float) -> None:
        self.device = device
        self.scale = scale
        self.offset = offset

    def read(self) -> float:
        return float(self.device.value) * self.scale + self.offset

    def close(self) -> None:
        self.device.close()


def open_source(spec: dict[str, Any], sysfs: Path, pin: str | None, pin_factory: Any) -> Any:
    """Make the source ``spec`` names. Raises ``SensorReadError`` or gpiozero's errors."""
    source = spec["source"]
    if source == "cpu-temperature":
        return SysfsNumber(sysfs / "class" / "thermal" / f"thermal_zone{spec['zone']}" / "temp",
                           scale=0.001)
    if source == "ds18b20":
        return DS18B20(sysfs / "bus" / "w1" / "devices" / spec["device"])
    if source == "digital":
        import gpiozero

        kind = spec["input"]
        if kind == "button":
            dev = gpiozero.Button(pin, pull_up=spec["pullUp"], pin_factory=pin_factory)
        elif kind == "motion":
            dev = gpiozero.MotionSensor(pin, pull_up=spec["pullUp"], queue_len=1,
                                        pin_factory=pin_factory)
        else:
            dev = gpiozero.DigitalInputDevice(pin, pull_up=spec["pullUp"],
                                              pin_factory=pin_factory)
        return DigitalInput(dev)
    if source == "adc":
        import gpiozero

        cls = getattr(gpiozero, spec["chip"])
        kwargs: dict[str, Any] = {"device": spec["spiDevice"], "pin_factory": pin_factory}
        if ADC_CHIPS[spec["chip"]] > 1:
            kwargs["channel"] = spec["channel"]
        return ScaledADC(cls(**kwargs), spec["scale"], spec["offset"])
    raise ValueError(f"unknown sensor source {source!r}")
