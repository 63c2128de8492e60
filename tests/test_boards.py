"""The shipped board configs: the boards people own, each loading and usable."""

from __future__ import annotations

import pytest

from giter_agent.core.errors import ConfigError
from giter_agent.device.board import load_board, make_pin_factory, shipped_boards

EXPECTED = {  # board -> (pin factory, serial console)
    "generic-mock": ("mock", None),
    "qemu-virt": ("mock", "/dev/ttyAMA0"),
    "rpi-zero-2w": ("lgpio", "/dev/serial0"),
    "rpi-3b-plus": ("lgpio", "/dev/serial0"),
    "rpi-4b": ("lgpio", "/dev/serial0"),
    "rpi-5": ("lgpio", "/dev/ttyAMA0"),  # RP1: lgpio only; serial0 is the debug header
    "rpi-cm4": ("lgpio", "/dev/serial0"),
}
# What a spec written for one board relies on finding on every other.
LOGICAL = {"led1", "led2", "relay1", "relay2", "buzzer", "button1", "motion"}


def test_every_board_people_own_is_shipped():
    assert set(shipped_boards()) >= set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_board_config(name):
    board = load_board(name)
    assert (board.pin_factory, board.serial_port) == EXPECTED[name]
    assert board.name == name
    assert set(board.pins) >= LOGICAL
    assert board.status_led in board.pins and board.status_led not in LOGICAL
    assert [str(r) for r in board.usb_roots] == ["/media/giter"]
    if name.startswith("rpi-"):
        # The 1-wire bus (GPIO4), SPI0 (GPIO7-11), I2C (GPIO2/3) and the serial console
        # (GPIO14/15) stay free for sensors and the technician.
        taken = {int(p.removeprefix("GPIO")) for p in board.pins.values()}
        assert not taken & {2, 3, 4, 7, 8, 9, 10, 11, 14, 15}


def test_qemu_virt_drives_mock_pins():
    board = load_board("qemu-virt")
    factory = make_pin_factory(board)
    try:
        from gpiozero import LED

        led = LED(board.pin("led1"), pin_factory=factory)
        led.on()
        assert factory.pin("GPIO17").state == 1
        led.close()
    finally:
        factory.close()


def test_mock_pins_keep_a_bounded_history_of_their_states():
    """A daemon blinking on mock pins for days must not grow by one record per toggle
    (it would hide a real leak in the memory bench): the newest changes are kept."""
    from gpiozero import LED

    from giter_agent.device.mock_pins import HISTORY

    board = load_board("generic-mock")
    factory = make_pin_factory(board)
    try:
        led = LED(board.pin("led1"), pin_factory=factory)
        for _ in range(HISTORY + 500):
            led.toggle()
        pin = factory.pin("GPIO17")
        assert len(pin.states) == HISTORY
        assert pin.states[-1].state == pin.state  # the newest change is the one kept
        led.close()
    finally:
        factory.close()


def test_a_real_board_factory_off_the_board_names_file_and_key():
    board = load_board("rpi-5")
    try:
        factory = make_pin_factory(board)
    except ConfigError as exc:
        assert "rpi-5.toml: pin_factory: cannot start 'lgpio'" in str(exc)
    else:  # on a Raspberry Pi 5 itself
        factory.close()
