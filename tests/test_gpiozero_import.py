"""The agent imports the parts of gpiozero it drives (``device.gpiozero_import``).

Each test runs in a fresh interpreter: what a process has loaded is the point. The
pin factory (mock, and a real factory's module) comes without gpiozero's entry-point
and font machinery or its unused devices, and gpiozero still does everything it does
when imported whole: an entry point named in the environment is found, a font is
read, ``from gpiozero import X`` works.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit

# What ``import gpiozero`` loads and a process that drives LEDs does not need.
NOT_NEEDED = ("importlib.metadata", "importlib.resources", "email", "zipfile", "csv",
              "tempfile", "gpiozero.boards",
              "gpiozero.internal_devices", "gpiozero.spi_devices")
STAND_INS = ("importlib_metadata", "importlib_resources")


def fresh(code: str, **env: str) -> dict:
    """Run ``code`` in a new interpreter; it prints one JSON document."""
    import os

    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


LOADED = """
    def loaded(names):
        import sys
        return sorted(n for n in names if n in sys.modules)
"""


def test_the_mock_factory_drives_a_blink_without_what_gpiozero_would_load(tmp_path):
    out = fresh(LOADED + f"""
    import json, time
    from giter_agent.device.board import load_board, make_pin_factory
    from giter_agent.device.outputs import HeldOutputs
    factory = make_pin_factory(load_board("generic-mock"))
    held = HeldOutputs(lambda: factory)
    assert held.claim("Output/led", ("GPIO17", True, False, 100.0)) is None
    held.blink("Output/led", (0.001, 0.001, 0.0, 0.0, 3), wait=True)
    states = [s.state for s in factory.pin("GPIO17").states]
    print(json.dumps({{"loaded": loaded({NOT_NEEDED + STAND_INS!r}), "states": states}}))
    """)
    assert out["loaded"] == []
    assert out["states"][1:] == [1, 0] * 3


def test_gpiozero_still_does_all_it_does_when_asked():
    out = fresh(LOADED + f"""
    import json
    from giter_agent.device.board import load_board, make_pin_factory
    factory = make_pin_factory(load_board("generic-mock"))
    before = loaded({NOT_NEEDED!r})
    import gpiozero
    from gpiozero import Button, LEDCharDisplay  # the package's __init__ runs now
    button = Button("GPIO4", pin_factory=factory)
    factory.pin("GPIO4").drive_low()
    pressed = button.is_pressed
    # A font, read through importlib.resources on first use.
    display = LEDCharDisplay(*[f"GPIO{{n}}" for n in range(5, 12)], pin_factory=factory)
    display.value = "7"
    # Entry points, looked up by name through importlib.metadata on first use.
    found = type(gpiozero.Device._default_pin_factory()).__name__
    from gpiozero.pins.mock import MockFactory
    pin_class = MockFactory(pin_class="mockpwmpin").pin_class.__name__
    print(json.dumps({{"before": before, "pressed": pressed, "display": display.value,
                      "found": found, "pin_class": pin_class,
                      "stand_ins": loaded({STAND_INS!r}),
                      "after": loaded(["gpiozero.boards", "importlib.metadata"])}}))
    """, GPIOZERO_PIN_FACTORY="mock")
    assert out["before"] == []
    assert out["pressed"] is True and out["display"] == "7"
    assert out["found"] == "MockFactory" and out["pin_class"] == "MockPWMPin"
    assert out["stand_ins"] == []  # never visible to anyone else
    assert out["after"] == ["gpiozero.boards", "importlib.metadata"]


def test_a_real_factorys_module_is_imported_the_same_way(tmp_path):
    """The ``native`` factory (pure Python): its module comes through the same door,
    whether or not this machine has GPIO for it to open."""
    board = tmp_path / "native.toml"
    board.write_text('name = "native-test"\npin_factory = "native"\n'
                     '[pins]\nled1 = "GPIO17"\n')
    out = fresh(LOADED + f"""
    import json
    from giter_agent.core.errors import ConfigError
    from giter_agent.device.board import load_board, make_pin_factory
    try:
        factory = type(make_pin_factory(load_board({str(board)!r}))).__name__
    except ConfigError as exc:
        factory = "ConfigError"
    print(json.dumps({{"factory": factory, "loaded": loaded({NOT_NEEDED + STAND_INS!r}),
                      "native": loaded(["gpiozero.pins.native"])}}))
    """)
    assert out["factory"] in ("NativeFactory", "ConfigError")
    assert out["native"] == ["gpiozero.pins.native"]
    assert out["loaded"] == []


def test_a_gpiozero_already_imported_is_used_as_it_is():
    out = fresh(LOADED + """
    import json
    import gpiozero
    from giter_agent.device.gpiozero_import import import_gpiozero
    import_gpiozero("gpiozero.pins.mock")
    import sys
    print(json.dumps({"same": sys.modules["gpiozero"] is gpiozero,
                      "mock": loaded(["gpiozero.pins.mock"])}))
    """)
    assert out == {"same": True, "mock": ["gpiozero.pins.mock"]}
