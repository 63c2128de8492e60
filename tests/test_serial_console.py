"""The serial console, as a technician with ``screen`` sees it on a real pseudo-terminal.

The device serves ``line.a``; the test types on ``line.b`` byte by byte, the way a
terminal sends keystrokes, and reads what comes back.
"""

from __future__ import annotations

import time

import pytest
import serial
from support.devices import SimDevice
from support.serial_line import SerialLine
from support.serial_rig import ServedDevice

from giter_agent.transport.serial.console import Console, find_sticks
from giter_agent.transport.serial.endpoint import PreambleScanner
from giter_agent.transport.serial.link import PREAMBLE


def read_until(port, marker: bytes, timeout: float = 60.0) -> bytes:
    got = b""
    end = time.monotonic() + timeout
    while marker not in got and time.monotonic() < end:
        got += port.read(max(1, port.in_waiting))
    assert marker in got, f"no {marker!r} in {got!r}"
    return got


def type_keys(port, text: bytes) -> None:
    for byte in text:
        port.write(bytes([byte]))
        time.sleep(0.002)


@pytest.fixture
def media(tmp_path):
    path = tmp_path / "media"
    path.mkdir()
    return path


@pytest.fixture
def device(tmp_path, publisher, media):
    return SimDevice(tmp_path, "pi-01", publisher.allowed_signers, usb_roots=[media])


@pytest.fixture
def console(device):
    """A served device and the technician's terminal on the other end."""
    with SerialLine() as line:
        served = ServedDevice(device, line, status_interval=0.3)
        term = serial.Serial(line.b, 115200, timeout=0.1)
        # The line printed at start may have gone out before this end was open: Ctrl-L
        # asks for it again, as a technician plugging in late would.
        term.write(b"\x0c")
        try:
            yield term
        finally:
            term.close()
            served.close()


def test_status_line_on_change_only_and_typed_status_answers(console):
    first = read_until(console, b"type help")
    assert b"giter pi-01 | spec none | OFFLINE | never synced" in first
    # Looked at every 0.3 s, printed only when it changes: nothing changed, nothing more
    # scrolls command output off a 24-line screen. (First take what is on its way: the
    # start-up line and the fixture's Ctrl-L may both be.)
    time.sleep(0.3)
    console.read(4096)
    time.sleep(1.0)
    assert b"giter pi-01 |" not in console.read(4096)
    type_keys(console, b"\x0c")  # Ctrl-L: show it again
    assert b"giter pi-01 | spec none | OFFLINE" in read_until(console, b"type help")
    type_keys(console, b"status\r")
    reply = read_until(console, b"resources     none")
    assert b"status\r\n" in reply  # echoed as typed, then CRLF
    assert b"device        pi-01\r\n" in reply
    assert b"state         offline: NoSpec" in reply
    assert b"last sync     never\r\n" in reply
    assert b"\n" not in reply.replace(b"\r\n", b"")  # every line ends in CRLF


def test_editing_help_and_unknown_commands(console):
    read_until(console, b"type help")
    type_keys(console, b"hlep\x7f\x7f\x7felp\r")  # a typo, rubbed out
    reply = read_until(console, b"giter-bundle serial --port")
    assert b"\b \b" in reply and b"status   the applied spec" in reply
    type_keys(console, b"\x1b[Aselfdestruct\r\n")  # an arrow key, then CRLF
    reply = read_until(console, b"type help\r\n")
    assert b"unknown command 'selfdestruct'" in reply and b"[A" not in reply


def test_sync_from_a_stick_or_an_explanation(console, publisher, device, media):
    read_until(console, b"type help")
    type_keys(console, b"sync\r")
    reply = read_until(console, b"giter-bundle serial --port PORT --bundle FILE")
    assert b"no giter stick is mounted under" in reply
    inbox = media / "STICK" / "giter" / "inbox"
    inbox.mkdir(parents=True)
    tip = publisher.commit("spec", files=device.spec_files("from the stick\n"))
    publisher.bundle(inbox / "fleet.bundle")
    type_keys(console, b"sync\r")
    reply = read_until(console, b"status bundle and receipt written to", timeout=60)
    assert b"syncing from" in reply and b"applied:" in reply
    assert device.motd() == "from the stick\n" and device.state().accepted == tip
    assert (media / "STICK/giter/outbox/pi-01.txt").is_file()
    type_keys(console, b"status\r")
    reply = read_until(console, b"File/motd", timeout=60)
    assert tip.encode() in reply and b"in-sync" in reply


class _Screen:
    """Collects what the console writes (unit tests of its timing, no port)."""

    def __init__(self) -> None:
        self.out = b""

    def __call__(self, data: bytes) -> None:
        self.out += data


def test_status_line_waits_while_someone_types(device):
    now = [100.0]
    screen = _Screen()
    agent = device.agent()
    try:
        con = Console(agent, screen, clock=lambda: now[0], status_interval=5.0)
        con.tick()
        assert screen.out.count(b"giter pi-01 |") == 1
        now[0] += 5
        con.tick()  # due, but unchanged: not printed again
        assert screen.out.count(b"giter pi-01 |") == 1
        now[0] += 4
        con.feed(b"sta")
        con.busy = "usb"  # the state changes: SYNCING
        now[0] += 1.5
        con.tick()  # due, but a line is being typed: wait
        assert screen.out.count(b"giter pi-01 |") == 1
        now[0] += 4
        con.tick()  # the typist paused: show it, then the line typed so far
        assert screen.out.count(b"giter pi-01 |") == 2
        assert b"| SYNCING |" in screen.out
        assert screen.out.endswith(b"giter> sta")
    finally:
        agent.close()


def test_preamble_is_split_from_keystrokes_across_reads():
    scanner = PreambleScanner()
    assert scanner.feed(b"stat") == (b"stat", None)
    assert scanner.feed(b"us\r" + PREAMBLE[:5]) == (b"us\r", None)
    assert scanner.feed(PREAMBLE[5:] + b"\x00frame") == (b"", b"\x00frame")
    # A lone NUL (Ctrl-@) is held only until the next key shows it is not the preamble.
    scanner = PreambleScanner()
    assert scanner.feed(b"\x00") == (b"", None)
    assert scanner.feed(b"x") == (b"\x00x", None)


def test_find_sticks(tmp_path):
    media, mount = tmp_path / "media", tmp_path / "mnt"
    (media / "a/giter/inbox").mkdir(parents=True)
    (media / "b").mkdir()
    (mount / "giter/inbox").mkdir(parents=True)  # a stick mounted right on the root
    assert find_sticks([media]) == [media / "a"]
    assert find_sticks([mount, tmp_path / "missing"]) == [mount]


def test_serial_config_and_the_port_it_names(tmp_path, device):
    from giter_agent.config.agent_toml import from_dict
    from giter_agent.core.errors import ConfigError
    from giter_agent.transport.serial.endpoint import configured_port

    base = {"device_id": "pi-01", "state_dir": "s", "board": "rpi-4b", "allowed_signers": "a"}
    config = from_dict({**base, "serial": {"port": "/dev/ttyAMA0", "baud": 57600}},
                       base=tmp_path)
    assert (config.serial_port, config.serial_baud) == ("/dev/ttyAMA0", 57600)
    assert from_dict(base, base=tmp_path).serial_baud == 115200
    for bad in ({"baud": "fast"}, {"baud": 300}, {"port": ""}, {"parity": "E"}):
        with pytest.raises(ConfigError, match="serial"):
            from_dict({**base, "serial": bad}, base=tmp_path)
    agent = device.agent()  # generic-mock names no serial port, and the config none
    try:
        assert configured_port(agent) is None
    finally:
        agent.close()
