"""``giter-agent run`` with ``[serial] port``: the daemon serves the UART itself.

A real ``giter-agent run`` process serves one end of a pseudo-terminal pair
(tests/serial_line); the technician's terminal, then the laptop's ``SerialPeer``, are
on the other end. The daemon also puts the USB stick's news on that console.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import serial
from support.devices import SimDevice
from support.serial_line import SerialLine
from support.serial_rig import peer


def read_until(port: serial.Serial, marker: bytes, timeout: float = 20.0,
               poke: bytes = b"") -> bytes:
    """Read until ``marker``; ``poke`` is typed every half second meanwhile."""
    got = b""
    end = time.monotonic() + timeout
    next_poke = 0.0
    while marker not in got and time.monotonic() < end:
        if poke and time.monotonic() >= next_poke:
            port.write(poke)
            next_poke = time.monotonic() + 0.5
        got += port.read(max(1, port.in_waiting))
    assert marker in got, f"no {marker!r} in {got!r}"
    return got


def test_the_daemon_serves_console_sticks_and_sync_on_the_uart(tmp_path, publisher):
    media = tmp_path / "media"
    media.mkdir()
    device = SimDevice(tmp_path, "pi-01", publisher.allowed_signers, usb_roots=[media])
    with SerialLine() as line:
        with device.config_path.open("a") as f:
            f.write(f'[serial]\nport = "{line.a}"\n')
        proc = subprocess.Popen([sys.executable, "-m", "giter_agent", "-c", str(device.config_path),
                                 "run"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            term = serial.Serial(line.b, 115200, timeout=0.1)
            try:
                # The console answers (Ctrl-L: the status line) while the daemon runs.
                read_until(term, b"giter pi-01 | spec none", poke=b"\x0c")
                term.write(b"key\r")
                read_until(term, b'pi-01 namespaces="git" ssh-ed25519 ')

                # A stick: its progress and result on the same console.
                first = publisher.commit("first", files=device.spec_files("one\n"))
                inbox = media / "STICK" / "giter" / "inbox"
                inbox.mkdir(parents=True)
                publisher.bundle(tmp_path / "fleet.bundle")
                (tmp_path / "fleet.bundle").rename(inbox / "fleet.bundle")
                seen = read_until(term, b"wait for SAFE TO REMOVE")
                assert b"USB stick STICK: syncing, leave it in" in seen
                assert b"USB stick STICK: applied" in seen
                # Printed on change: the new state shows without being asked.
                assert first[:12].encode() in read_until(term, b"IN-SYNC")
                shutil.rmtree(media / "STICK")
                assert b"USB stick STICK: gone" in read_until(term, b"STICK: gone")
            finally:
                term.close()

            # A laptop syncs over the same cable, through the same process.
            second = publisher.commit("second", files=device.spec_files("two\n"))
            bundle = publisher.bundle(tmp_path / "second.bundle")
            result = peer(line, tmp_path, bundle).run()
            assert result.exit_code == 0, result.result
            assert result.result["applied"] == second
            assert device.motd() == "two\n"
            assert device.state().last_sync["source"] == f"serial:{line.a}"
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err


def test_a_stick_going_away_says_safe_to_remove_or_pulled_out(tmp_path):
    from giter_agent.daemon.triggers import UsbWatch

    media, sys_block = tmp_path / "media", tmp_path / "sys-block"
    media.mkdir()
    sys_block.mkdir()
    (sys_block / "sda1").mkdir()
    mountinfo = tmp_path / "mountinfo"
    said: list[str] = []
    watch = UsbWatch([media], mountinfo=str(mountinfo), say=said.append, sys_block=sys_block)
    try:
        for name, dev in (("sda1", "sda1"), ("sdb1", "sdb1")):
            (media / name / "giter/inbox").mkdir(parents=True)
            mountinfo.write_text(f"36 35 8:1 / {media / name} rw - vfat /dev/{dev} rw\n")
            assert [j.arg for j in watch._scan()[0]] == [str(media / name)]
            shutil.rmtree(media / name)  # giter-usb eject: unmounted, mount point removed
            watch._scan()
        # sda1's block device is still there (unmounted, written back); sdb1's is gone.
        assert said == ["USB stick sda1: written back and unmounted: SAFE TO REMOVE",
                        "USB stick sdb1: pulled out before it was unmounted: "
                        "plug it in again to resync"]
    finally:
        watch.close()


def test_serve_serial_status_line_is_posted_from_other_threads(tmp_path, publisher):
    """``post`` from another thread reaches the console (the daemon's stick news)."""
    from support.serial_rig import ServedDevice

    device = SimDevice(tmp_path, "pi-01", publisher.allowed_signers)
    with SerialLine() as line:
        served = ServedDevice(device, line)
        term = serial.Serial(line.b, 115200, timeout=0.1)
        try:
            served.endpoint.post("USB stick sda1: written back and unmounted: SAFE TO REMOVE")
            read_until(term, b"SAFE TO REMOVE\r\n")
        finally:
            term.close()
            served.close()

