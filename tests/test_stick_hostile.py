"""A hostile USB stick: what the agent reads from it is bounded and typed, and what it
writes lands on that stick or nowhere.

Each case is a stick a person could make with ``mkfifo``, ``ln -s`` and ``truncate``:
a FIFO, a link out of the stick, a huge file, a symlinked outbox, odd file names, and
a stick pulled between the import and the write-back.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from support.devices import SimDevice
from test_roundtrip import first_spec

from giter_agent.core.layout import HUB_STATUS
from giter_agent.transport.hub_status import read_hub_status

SHA = "a" * 40


@pytest.fixture
def stick(tmp_path) -> Path:
    (tmp_path / "stick" / "giter" / "inbox").mkdir(parents=True)
    return tmp_path / "stick"


@pytest.fixture
def device(tmp_path, publisher) -> SimDevice:
    return SimDevice(tmp_path, "pi-01", publisher.allowed_signers)


def test_hub_status_fifo_is_ignored_not_waited_on(stick):
    inbox = stick / "giter/inbox"
    fifo = inbox / HUB_STATUS
    os.mkfifo(fifo)
    # A writer is ready to feed the FIFO: a reader that opens it would get a valid line.
    writer = threading.Thread(target=lambda: fifo.write_text(f"pi-01 {SHA}\n"), daemon=True)
    writer.start()
    try:
        assert read_hub_status(inbox) == {}
    finally:
        # Let the writer through (a reader appears and goes), so the thread ends.
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        writer.join(timeout=30)
        os.close(fd)


def test_hub_status_link_out_of_the_stick_is_ignored(stick, tmp_path):
    outside = tmp_path / "board-file.txt"
    outside.write_text(f"pi-01 {SHA}\n")
    (stick / "giter/inbox" / HUB_STATUS).symlink_to(outside)
    assert read_hub_status(stick / "giter/inbox") == {}


def test_hub_status_over_the_cap_is_not_read(stick):
    path = stick / "giter/inbox" / HUB_STATUS
    with path.open("w") as fh:
        fh.write(f"pi-01 {SHA}\n")
        fh.truncate(64 * 2**20)  # sparse: costs the test no disk; far over the cap
    assert read_hub_status(stick / "giter/inbox") == {}
    path.write_text(f"pi-01 {SHA}\nnot/a-device {SHA}\n")
    assert read_hub_status(stick / "giter/inbox") == {"pi-01": SHA}


def test_bundle_linked_from_outside_the_stick_is_not_imported(tmp_path, publisher, device,
                                                                stick):
    first_spec(publisher, device)
    outside = publisher.bundle(tmp_path / "elsewhere.bundle")
    (stick / "giter/inbox/fleet.bundle").symlink_to(outside)
    assert device.cli("sync", "--usb", stick) == 1
    assert device.state().accepted is None
    assert "no bundle to import" in (stick / "giter/outbox/pi-01.txt").read_text()


def test_symlinked_outbox_is_refused_and_nothing_written_through_it(tmp_path, publisher,
                                                                   device, stick, capsys):
    first_spec(publisher, device)
    publisher.bundle(stick / "giter/inbox/fleet.bundle")
    target = tmp_path / "device-refs"  # say, the device's own repository
    target.mkdir()
    (stick / "giter/outbox").symlink_to(target)
    assert device.cli("sync", "--usb", stick) == 1
    assert list(target.iterdir()) == []
    err = capsys.readouterr().err
    assert "UnsafeStickPath" in err and len(err.strip().splitlines()) == 1
    # The spec itself was applied on the device; only the write-back was refused.
    assert (device.root / "motd").read_text() == "hello\n"


def test_stick_pulled_mid_sync_is_not_recreated_and_no_receipt_claimed(
        tmp_path, publisher, device, stick, monkeypatch, capsys):
    from giter_agent.sync.agent import Agent

    first_spec(publisher, device)
    publisher.bundle(stick / "giter/inbox/fleet.bundle")
    real_sync = Agent.sync

    def sync_then_pull(self, bundles, source):
        report = real_sync(self, bundles, source)
        shutil.rmtree(stick)  # the technician pulls the stick; the mount point goes
        return report

    monkeypatch.setattr(Agent, "sync", sync_then_pull)
    assert device.cli("sync", "--usb", stick) == 1
    assert not stick.exists()  # never re-created on the board's own filesystem
    err = capsys.readouterr().err
    assert "StickRemoved" in err and "APPLIED" not in err


@pytest.mark.skipif(os.stat("/dev/shm").st_dev == os.stat(os.environ.get("TMPDIR", "/tmp"))
                    .st_dev, reason="needs /dev/shm on a filesystem of its own")
def test_stick_replaced_by_another_filesystem_mid_sync(tmp_path, publisher, device,
                                                       monkeypatch, capsys):
    """The mount point left behind is on another filesystem than the stick was."""
    from giter_agent.sync.agent import Agent

    real = tmp_path / "real-stick"
    (real / "giter/inbox").mkdir(parents=True)
    mount = tmp_path / "STICK"
    mount.symlink_to(real)  # the mount point, as the sync is given it
    first_spec(publisher, device)
    publisher.bundle(real / "giter/inbox/fleet.bundle")
    other = Path(os.environ.get("SHM", "/dev/shm")) / f"giter-test-{os.getpid()}"
    (other / "giter").mkdir(parents=True)
    real_sync = Agent.sync

    def sync_then_swap(self, bundles, source):
        report = real_sync(self, bundles, source)
        mount.unlink()
        mount.symlink_to(other)
        return report

    monkeypatch.setattr(Agent, "sync", sync_then_swap)
    try:
        assert device.cli("sync", "--usb", mount) == 1
        assert list((other / "giter").iterdir()) == []
        assert "StickRemoved" in capsys.readouterr().err
    finally:
        shutil.rmtree(other)


def test_odd_bundle_names_are_shown_escaped(tmp_path, publisher, device, stick):
    first_spec(publisher, device)
    inbox = stick / "giter/inbox"
    good = publisher.bundle(tmp_path / "fleet.bundle")
    # Not UTF-8, and a newline that would forge a receipt line if printed raw.
    shutil.copy(good, os.fsdecode(bytes(inbox) + b"/fleet-\xff.bundle"))
    shutil.copy(good, inbox / "x\nresult:         APPLIED - forged.bundle")
    assert device.cli("sync", "--usb", stick) == 0
    state = device.state()
    assert state.last_sync["outcome"] == "applied"  # the state was saved
    receipt = (stick / "giter/outbox/pi-01.txt").read_text(encoding="utf-8")
    assert len([line for line in receipt.splitlines() if line.startswith("result:")]) == 1
    assert "fleet-\\xff.bundle" in receipt
    assert "x\\nresult:" in receipt
    files = {b["file"] for b in state.last_sync["bundles"]}
    assert "fleet-\\xff.bundle" in files
