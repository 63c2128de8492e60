"""Board configurations: logical pin names, the pin factory, status LED, serial port, USB roots.

A board config is a TOML file in ``board-configs/`` (shipped inside the package as
``giter_boards``) or any path. The pin factory is created here and passed down to
every GPIO action, the way gpiozero wants it: with no GPIO hardware the ``mock``
factory serves, so the same code path runs on a laptop, in CI, and on a board.
gpiozero is imported only when a factory is actually made (it costs RAM).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from giter_agent.core.errors import ConfigError
from giter_agent.core.named_tuple import NamedTuple

FACTORIES = ("mock", "lgpio", "rpigpio", "pigpio", "native")
PIN_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
# gpiozero pin specs we accept: "GPIO17", "BCM17", "BOARD11", "J8:11", or a bare number.
PIN_SPEC_RE = re.compile(r"(GPIO|BCM|BOARD|WPI)?\d{1,3}|J8:\d{1,2}")

_KEYS = {"name", "description", "models", "pin_factory", "status_led", "serial_port",
         "usb_roots", "pins"}
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")  # see device.models


class Board(NamedTuple):
    """A validated board description (built by ``load_board``)."""

    name: str
    pin_factory: str
    pins: dict[str, str]  # logical name -> gpiozero pin spec; read, never changed
    status_led: str | None = None
    serial_port: str | None = None
    usb_roots: tuple[Path, ...] = ()
    description: str = ""
    source: Path | None = None
    # What /proc/device-tree/model says on this board (up to its " Rev ..." suffix).
    models: tuple[str, ...] = ()

    def pin(self, logical: str) -> str:
        """The gpiozero pin spec for a logical name; KeyError if the board has none."""
        return self.pins[logical]


def _shipped_folder() -> Path:
    """The folder of the shipped board configs (the ``giter_boards`` package: a plain
    folder, installed as files; not ``importlib.resources``, whose import alone costs a
    one-shot sync several milliseconds)."""
    import giter_boards

    return Path(giter_boards.__file__).parent


def shipped_boards() -> list[str]:
    """Names of the board configs that ship with the agent."""
    folder = _shipped_folder()
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_board(name_or_path: str, base: Path | None = None) -> Board:
    """Load a shipped board by name (``generic-mock``) or a TOML file by path."""
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        path = Path(name_or_path)
        if not path.is_absolute() and base is not None:
            path = base / path
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"board: cannot read {path}: {exc.strerror or exc}") from None
        source = path
    else:
        if name_or_path not in shipped_boards():
            raise ConfigError(
                f"board: unknown board {name_or_path!r}; shipped boards: "
                + ", ".join(shipped_boards())
            )
        source = _shipped_folder() / f"{name_or_path}.toml"
        text = source.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return _from_dict(raw, source)


def _from_dict(raw: dict[str, Any], source: Path) -> Board:
    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {problem}")

    for key in raw:
        if key not in _KEYS:
            raise fail(key, "unknown key")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise fail("name", "missing or not a string")
    factory = raw.get("pin_factory", "mock")
    if factory not in FACTORIES:
        raise fail("pin_factory", f"{factory!r} is not one of {', '.join(FACTORIES)}")
    pins_raw = raw.get("pins", {})
    if not isinstance(pins_raw, dict):
        raise fail("pins", "must be a table of logical-name = \"GPIO17\"")
    pins: dict[str, str] = {}
    for logical, spec in pins_raw.items():
        if not PIN_NAME_RE.fullmatch(logical):
            raise fail(f"pins.{logical}", "logical names are lower-case [a-z0-9_-], max 32")
        if not isinstance(spec, str | int) or not PIN_SPEC_RE.fullmatch(str(spec)):
            raise fail(f"pins.{logical}", f"{spec!r} is not a pin (e.g. \"GPIO17\")")
        pins[logical] = str(spec)
    physical = list(pins.values())
    for spec in physical:
        if physical.count(spec) > 1:
            raise fail("pins", f"{spec} is mapped to more than one logical name")
    status_led = raw.get("status_led")
    if status_led is not None and status_led not in pins:
        raise fail("status_led", f"{status_led!r} is not a logical name under [pins]")
    serial_port = raw.get("serial_port")
    if serial_port is not None and (not isinstance(serial_port, str) or not serial_port):
        raise fail("serial_port", "must be a device path such as /dev/ttyAMA0")
    roots = raw.get("usb_roots", [])
    if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
        raise fail("usb_roots", "must be a list of folder paths")
    models = raw.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise fail("models", "must be a list of device-tree model names")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise fail("description", "must be a string")
    return Board(
        name=name,
        pin_factory=factory,
        pins=pins,
        status_led=status_led,
        serial_port=serial_port,
        usb_roots=tuple(Path(r) for r in roots),
        description=description,
        source=source,
        models=tuple(models),
    )


def detect_board(model_file: Path = DEVICE_TREE_MODEL) -> tuple[str | None, str]:
    """(the shipped board that fits this machine's device-tree model, or None; the model
    text): ``giter_agent.device.models``, over the shipped board configs."""
    from giter_agent.device.models import detect

    return detect(_shipped_folder(), model_file)


def make_pin_factory(board: Board) -> Any:
    """Create the gpiozero pin factory the board names (imports gpiozero lazily,
    without what it loads for entry points: ``device.gpiozero_import``)."""
    from giter_agent.device.gpiozero_import import import_gpiozero

    if board.pin_factory == "mock":
        import_gpiozero("gpiozero.output_devices", "gpiozero.pins.mock")
        from giter_agent.device.mock_pins import mock_factory

        return mock_factory()
    modules = {
        "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
        "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
        "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
        "native": ("gpiozero.pins.native", "NativeFactory"),
    }
    module_name, class_name = modules[board.pin_factory]
    import importlib

    try:
        import_gpiozero("gpiozero.output_devices", module_name)
        cls = getattr(importlib.import_module(module_name), class_name)
        return cls()
    except Exception as exc:  # a missing library or no /dev/gpiochip: say which
        raise ConfigError(
            f"{board.source}: pin_factory: cannot start {board.pin_factory!r}: {exc}"
        ) from None

