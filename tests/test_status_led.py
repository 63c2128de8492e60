"""The status LED on gpiozero's mock pins: each code's pattern, as the pin records it."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from giter_agent.device.board import load_board
from giter_agent.device.status_led import LEGEND, PATTERNS, StatusLed, StatusLedError, legend
from giter_agent.state.health import ERROR, IN_SYNC, OFFLINE, REFUSED, STALE, STATES, SYNCING


@pytest.fixture
def board():
    return load_board("generic-mock")


@pytest.fixture
def factory():
    f = MockFactory(pin_class=MockPWMPin)
    yield f
    f.close()


class Stepper:
    """A ``wait`` that never sleeps: records each step's duration, parks after ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waits: list[float] = []
        self.parked = threading.Event()

    def __call__(self, stop: threading.Event, seconds: float) -> bool:
        self.waits.append(seconds)
        if len(self.waits) >= self.limit:
            self.parked.set()
            stop.wait()  # until show() or close() ends the pattern
            return True
        return stop.is_set()


def values(factory, board) -> list[int]:
    pin = factory.pin(board.pin(board.status_led))
    return [int(s.state) for s in pin.states]


def collapse(pattern) -> list[tuple[bool, float]]:
    """Merge neighbouring steps with the same level: what an eye (or a pin) sees."""
    out: list[tuple[bool, float]] = []
    for on, secs in list(pattern) * 2:
        if out and out[-1][0] == on:
            out[-1] = (on, out[-1][1] + secs)
        else:
            out.append((on, secs))
    return out


@pytest.mark.parametrize("code", STATES)
def test_each_code_plays_its_pattern_on_the_pin(code, board, factory):
    steps = len(PATTERNS[code]) * 2  # two whole cycles
    stepper = Stepper(steps)
    led = StatusLed(board, factory, wait=stepper)
    led.show(code)
    assert stepper.parked.wait(5)
    try:
        cycle = [int(on) for on, _ in PATTERNS[code]] * 2
        # The pin records only changes, starting from its initial low state.
        expected = [0]
        for v in cycle:
            if v != expected[-1]:
                expected.append(v)
        assert values(factory, board) == expected
        assert stepper.waits == [secs for _, secs in PATTERNS[code]] * 2
    finally:
        led.close()


def test_patterns_cannot_be_mistaken_for_each_other():
    def signature(code):
        seen = collapse(PATTERNS[code])[: len(collapse(PATTERNS[code])) // 2 or 1]
        pulses = sum(1 for on, _ in seen if on)
        period = sum(secs for _, secs in PATTERNS[code])
        lit = sum(secs for on, secs in PATTERNS[code] if on)
        return pulses, round(period, 2), round(lit / period, 2)

    # Every code has a rhythm of its own: offline (the hub is away) and stale (the spec
    # expired) too, since a technician acts differently on each.
    groups = {}
    for code in STATES:
        groups.setdefault(signature(code), set()).add(code)
    assert sorted(map(sorted, groups.values())) == sorted([[c] for c in STATES])
    assert LEGEND[OFFLINE] != LEGEND[STALE]
    # Not just a different speed: the share of time lit differs clearly too.
    assert abs(signature(OFFLINE)[2] - signature(STALE)[2]) >= 0.25
    # Refused is the only pattern with a countable burst: three blinks per period.
    assert signature(REFUSED)[0] == 3
    assert all(signature(c)[0] <= 1 for c in STATES if c != REFUSED)
    # In sync is a calm blip, syncing a flicker, error a steady light.
    assert signature(IN_SYNC)[2] < 0.1 and signature(IN_SYNC)[1] >= 2
    assert signature(SYNCING)[1] <= 0.2
    assert signature(ERROR)[2] == 1.0


def test_a_new_code_replaces_the_running_pattern(board, factory):
    stepper = Stepper(3)
    led = StatusLed(board, factory, wait=stepper)
    led.show(SYNCING)
    assert stepper.parked.wait(5)
    led.show(SYNCING)  # the same code again: no restart, no new pin changes
    before = values(factory, board)
    assert led.code == SYNCING
    second = Stepper(1)
    led._wait = second
    led.show(ERROR)
    assert second.parked.wait(5)
    assert led.code == ERROR
    assert values(factory, board)[: len(before)] == before
    assert values(factory, board)[-1] == 1  # steady on
    led.close()


def test_the_real_clock_paces_the_flicker(board, factory):
    led = StatusLed(board, factory)
    led.show(SYNCING)
    time.sleep(0.6)
    led.close()
    pin = factory.pin(board.pin(board.status_led))
    states = pin.states[1:]
    assert sum(1 for s in states if s.state) >= 2
    # Levels alternate, and no step is shorter than the pattern asks (a slow machine may
    # stretch them; nothing may shorten them).
    assert all(a.state != b.state for a, b in itertools.pairwise(states))
    assert all(s.timestamp >= 0.045 for s in states[1:-1])


def test_close_switches_off_and_releases_the_pin(board, factory):
    led = StatusLed(board, factory, wait=Stepper(1))
    led.show(ERROR)
    led.close()
    pin = factory.pin(board.pin(board.status_led))
    assert pin.state == 0
    assert pin.function == "input"
    assert led.code is None


def test_unknown_code_is_a_typed_error(board, factory):
    led = StatusLed(board, factory)
    with pytest.raises(StatusLedError) as exc:
        led.show("purple")
    assert isinstance(exc.value, ValueError)
    assert exc.value.reason == "UnknownStatusCode"
    led.close()


def test_a_board_without_status_led_accepts_codes_and_drives_nothing(factory, tmp_path):
    path = tmp_path / "bare.toml"
    path.write_text('name = "bare"\npin_factory = "mock"\n[pins]\nled1 = "GPIO17"\n')
    led = StatusLed(load_board(str(path)), factory)
    led.show(REFUSED)
    assert led.code == REFUSED and not led.available
    assert factory.pins == {}
    led.close()


def test_legend_names_every_code_once():
    lines = legend()
    for code in STATES:
        assert sum(line.startswith(code + " ") for line in lines) == 1
    assert set(LEGEND) == set(STATES) == set(PATTERNS)
