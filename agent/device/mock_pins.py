"""The ``mock`` pin factory's pins, with a bounded memory of what they did.

gpiozero's ``MockPin`` records every state change in ``states`` for tests to read, and
keeps every one: a daemon blinking an Output on the ``generic-mock`` board grows by a
record per toggle for as long as it runs, which would hide (or fake) a real leak in a
long run. These pins keep the newest ``HISTORY`` changes and drop the older ones.
"""

from __future__ import annotations

from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin

HISTORY = 1000  # state changes kept per pin: far more than any test reads


class BoundedMockPWMPin(MockPWMPin):
    """A PWM-capable mock pin whose ``states`` holds the newest ``HISTORY`` changes."""

    def _change_state(self, value: Any) -> bool:
        changed: bool = super()._change_state(value)
        if changed and len(self.states) > HISTORY:
            del self.states[:len(self.states) - HISTORY]
        return changed


def mock_factory() -> Any:
    """A ``MockFactory`` of PWM-capable pins (PWM outputs behave as on a board)."""
    return MockFactory(pin_class=BoundedMockPWMPin)
