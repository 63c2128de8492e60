"""Serial sync end to end, over real pseudo-terminals joined by a relay (tests/serial_line).

The publisher signs with real git and bundles with ``git bundle create``; the device
serves ``line.a`` with ``SerialEndpoint``; the laptop runs ``SerialPeer`` (and once the
``giter-bundle serial`` command) on ``line.b``. Real git then checks what came back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import msgpack
import pytest
import serial
from support.devices import SimDevice
from support.serial_line import SerialLine
from support.serial_rig import ServedDevice, peer

from giter_agent.transport.serial.frames import encode_frame
from giter_agent.transport.serial.link import (
    HELLO,
    PREAMBLE,
    Link,
    PeerError,
    ProtocolError,
    control,
    error,
    pack,
)
from giter_agent.transport.serial.offer import Offer
from giter_agent.transport.serial.transfer import Sender
from giter_bundle.serial_peer import NoDeviceError


@pytest.fixture
def device(tmp_path, publisher):
    return SimDevice(tmp_path, "pi-01", publisher.allowed_signers)


def spec_bundle(publisher, device, tmp_path, *, blob_kib: int = 48, text: str = "hello\n"):
    """A signed spec for ``device`` plus incompressible filler, so it spans many chunks."""
    files = device.spec_files(text)
    if blob_kib:
        files["blob.txt"] = os.urandom(blob_kib * 512).hex()
    tip = publisher.commit(f"spec {text.strip()}", files=files)
    return tip, publisher.bundle(tmp_path / f"spec-{tip[:8]}.bundle")


def device_signers(tmp_path, device) -> os.PathLike:
    agent = device.agent()
    try:
        path = tmp_path / "device.signers"
        path.write_text(agent.public_key_line() + "\n")
        return path
    finally:
        agent.close()


def check_status_bundle(publisher, tmp_path, device, bundle, tip) -> None:
    publisher.git("bundle", "verify", bundle)
    publisher.git("fetch", "-q", bundle, "refs/heads/status/pi-01:refs/heads/status/pi-01")
    signers = device_signers(tmp_path, device)
    publisher.git("-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit",
                  "status/pi-01")
    parents = publisher.git("rev-list", "--parents", "-n1", "status/pi-01").stdout.split()
    assert parents[-1].decode() == tip


def test_full_transfer_applies_and_returns_verified_status(tmp_path, publisher, device):
    tip, bundle = spec_bundle(publisher, device, tmp_path)
    with SerialLine() as line:
        served = ServedDevice(device, line)
        try:
            result = peer(line, tmp_path, bundle).run()
        finally:
            served.close()
    assert result.device == "pi-01" and result.exit_code == 0, result.result
    assert result.result["outcome"] == "applied" and result.result["applied"] == tip
    assert device.motd() == "hello\n" and device.state().accepted == tip
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == ["pi-01.bundle",
                                                                        "pi-01.txt"]
    receipt = (tmp_path / "outbox/pi-01.txt").read_text()
    assert "APPLIED" in receipt and tip in receipt and bundle.name in receipt
    assert device.state().last_sync["source"] == f"serial:{line.a}"
    check_status_bundle(publisher, tmp_path, device, tmp_path / "outbox/pi-01.bundle", tip)
    # Nothing is left half-done on either side.
    assert not list((device.dir / "state/serial/partial").iterdir())
    assert not list((tmp_path / "cache/pi-01").iterdir())


def test_cli_sends_nothing_the_device_holds(tmp_path, publisher, device, capsys):
    """``giter-bundle serial`` with a bundle the device already applied: no transfer."""
    from giter_bundle.cli import main

    _, bundle = spec_bundle(publisher, device, tmp_path, blob_kib=0)
    agent = device.agent()
    try:
        assert agent.sync([bundle], source="bundle:test").outcome == "applied"
    finally:
        agent.close()
    with SerialLine() as line:
        served = ServedDevice(device, line)
        try:
            code = main(["serial", "--port", line.b, "--bundle", str(bundle),
                         "--outbox", str(tmp_path / "out"), "--cache", str(tmp_path / "c"),
                         "--device", "pi-01"])
        finally:
            served.close()
    out = capsys.readouterr()
    assert code == 0, out
    assert "already holds spec" in out.err and "up-to-date" in out.out
    assert (tmp_path / "out/pi-01.txt").is_file() and (tmp_path / "out/pi-01.bundle").is_file()
    assert device.state().last_sync["source"] == "bundle:test"  # no second sync


def partial_chunks(device) -> set[int]:
    """The chunks the device holds of the one partial transfer in its state dir."""
    (state,) = (device.dir / "state/serial/partial").glob("*.state")
    raw = msgpack.unpackb(state.read_bytes())
    return set(range(raw["next"])) | set(raw["extra"])


def test_cut_line_resumes_without_resending_what_arrived(tmp_path, publisher, device):
    tip, bundle = spec_bundle(publisher, device, tmp_path, blob_kib=96)
    with SerialLine() as line:
        served = ServedDevice(device, line)
        try:
            line.cut_after(40_000, "b-a")  # laptop -> device, about 40 % of the bundle
            the_peer = peer(line, tmp_path, bundle)
            box = {}
            thread = threading.Thread(target=lambda: box.update(r=the_peer.run()))
            thread.start()
            assert line.cut_event.wait(20)
            served.wait_sessions(1)  # the device noticed the silence and kept what it had
            held = partial_chunks(device)
            line.restore()
            thread.join(30)
        finally:
            served.close()
    result = box["r"]
    assert result.result["outcome"] == "applied" and device.state().accepted == tip
    size = bundle.stat().st_size
    total = -(-size // 1024)
    assert 20 < len(held) < total
    first, *later = result.attempts
    assert held <= set(first.sent_seqs)
    resent = {q for a in later for q in a.sent_seqs} & held
    assert not resent, f"chunks the device already held were sent again: {sorted(resent)}"
    sent_after = {q for a in later for q in a.sent_seqs}
    assert sent_after == set(range(total)) - held
    assert served.endpoint.last_error is None  # the second session ended well
    check_status_bundle(publisher, tmp_path, device, tmp_path / "outbox/pi-01.bundle", tip)


def test_noisy_line_still_delivers(tmp_path, publisher, device):
    tip, bundle = spec_bundle(publisher, device, tmp_path, blob_kib=64)
    with SerialLine(ber=5e-5, drop=2e-5, seed=11) as line:
        served = ServedDevice(device, line)
        try:
            result = peer(line, tmp_path, bundle).run()
        finally:
            served.close()
        errors = line.b_to_a.stats.bit_errors + line.b_to_a.stats.dropped
    assert result.result["outcome"] == "applied" and device.motd() == "hello\n"
    assert errors > 5
    # Noise can cut a session after the spec arrived: the next attempt then finds the
    # device holding it and sends nothing. The last attempt that sent it resent chunks.
    sent = [a.spec_sent for a in result.attempts if a.spec_sent is not None][-1]
    assert sent.resent > 0 and sent.outcome == "delivered"
    check_status_bundle(publisher, tmp_path, device, tmp_path / "outbox/pi-01.bundle", tip)


def test_garbage_after_the_preamble_applies_nothing(tmp_path, publisher, device):
    spec_bundle(publisher, device, tmp_path, blob_kib=0)
    with SerialLine() as line:
        served = ServedDevice(device, line)
        try:
            port = serial.Serial(line.b, 115200, timeout=0.2)
            port.write(PREAMBLE + os.urandom(3000) + b"\x00" + os.urandom(500))
            served.wait_sessions(1)
            # A frame that checks out but holds no message is refused outright, with an
            # ERROR the peer can read.
            port.write(PREAMBLE + encode_frame(b"\xc1 not msgpack"))
            served.wait_sessions(2)
            echoed = b""
            end = time.monotonic() + 3
            while b"refused" not in echoed and time.monotonic() < end:
                echoed += port.read(4096)
            port.close()
            first_error = served.endpoint.last_error
        finally:
            served.close()
    assert isinstance(first_error, ProtocolError)
    assert b"serial session refused: ProtocolError" in echoed
    state = device.state()
    assert state.accepted is None and state.last_sync == {}
    assert device.motd() is None


def test_device_garbage_gives_the_technician_a_clear_error(tmp_path):
    with SerialLine() as line:
        stop = threading.Event()

        def chatter():  # a GPS module on the wrong port
            port = serial.Serial(line.a, 115200)
            while not stop.is_set():
                port.write(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9*47\r\n")
                time.sleep(0.05)
            port.close()

        thread = threading.Thread(target=chatter)
        thread.start()
        try:
            with pytest.raises(NoDeviceError) as caught:
                peer(line, tmp_path, None, connect_timeout=1.0).run()
        finally:
            stop.set()
            thread.join()
    message = str(caught.value)
    assert "no giter device answered" in message and "$GPGGA" in message
    assert "baud" in message


def test_hash_mismatch_is_caught_before_history(tmp_path, publisher, device):
    """A peer whose bytes do not match what it offered: nothing reaches the history layer.

    The peer here is built from the protocol's own parts, lying about the SHA-256: the
    flipped bit is in the file, before framing, so no CRC can see it.
    """
    tip, bundle = spec_bundle(publisher, device, tmp_path, blob_kib=8)
    data = bytearray(bundle.read_bytes())
    data[-100] ^= 0x01
    lying = tmp_path / "lying.bundle"
    lying.write_bytes(bytes(data))
    honest = Offer.of_file(bundle, 1, "spec", tip=tip)
    with SerialLine() as line:
        served = ServedDevice(device, line)
        port = serial.Serial(line.b, 115200)
        try:
            link = Link(port, idle_timeout=5)
            link.write_raw(PREAMBLE)
            link.request(control(HELLO, proto=1, role="peer", nonce=42),
                         lambda m: m.kind == HELLO)
            sent = Sender(link, lying, honest).run()
            served.wait_sessions(1)
        finally:
            port.close()
            served.close()
    assert (sent.outcome, sent.reason) == ("failed", "HashMismatch")
    assert device.state().accepted is None and device.motd() is None
    assert not list((device.dir / "state/serial/partial").iterdir())


def test_unsupported_version_is_refused_clearly(tmp_path, device):
    with SerialLine() as line:
        served = ServedDevice(device, line)
        try:
            port = serial.Serial(line.b, 115200, timeout=0.2)
            hello = control(1, proto=99, role="peer", nonce=5)
            port.write(PREAMBLE + encode_frame(pack(hello)))
            served.wait_sessions(1)
            got = port.read(4096)
            port.close()
        finally:
            served.close()
    assert served.endpoint.last_error.reason == "UnsupportedVersion"
    assert b"UnsupportedVersion" in got


def test_peer_reports_a_device_error(tmp_path):
    """The laptop turns the device's ERROR into a PeerError carrying the device's reason."""
    with SerialLine() as line:
        port = serial.Serial(line.a, 115200)
        link = Link(port)

        def refuse():  # a device that answers any HELLO with an ERROR
            while (msg := link.recv(0.1)) is None or msg.kind != HELLO:
                pass
            link.send(error("UnsupportedVersion", "this device speaks giter-serial 7"))

        thread = threading.Thread(target=refuse)
        thread.start()
        try:
            with pytest.raises(PeerError) as caught:
                peer(line, tmp_path, None).run()
        finally:
            thread.join()
            port.close()
    assert caught.value.reason == "UnsupportedVersion"
    assert "giter-serial 7" in str(caught.value)


def test_both_commands_in_their_own_processes(tmp_path, publisher, device):
    """``giter-agent serve-serial`` on one end, ``giter-bundle serial`` on the other."""
    tip, bundle = spec_bundle(publisher, device, tmp_path, blob_kib=16)
    with SerialLine() as line:
        # Started as a shell starts a background job: SIGINT ignored. Ctrl-C stops it still.
        served = subprocess.Popen([sys.executable, "-m", "giter_agent",
                                   "-c", str(device.config_path),
                                   "serve-serial", "--port", line.a, "--status-interval", "1"],
                                  stderr=subprocess.PIPE,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        try:
            laptop = subprocess.run(
                [sys.executable, "-m", "giter_bundle.cli", "serial", "--port", line.b,
                 "--bundle", str(bundle), "--outbox", str(tmp_path / "out"),
                 "--cache", str(tmp_path / "cache")], capture_output=True, timeout=60)
        finally:
            served.send_signal(signal.SIGINT)
            try:
                _, served_err = served.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                served.kill()  # fail, but leave no server behind holding the port
                served.communicate()
                raise
    assert laptop.returncode == 0, laptop.stderr.decode()
    assert b"device pi-01: applied" in laptop.stdout
    assert b"sending [####" in laptop.stderr and b"100%" in laptop.stderr
    assert served.returncode in (0, 130), served_err.decode()
    assert device.state().accepted == tip
    check_status_bundle(publisher, tmp_path, device, tmp_path / "out/pi-01.bundle", tip)


def test_the_wrong_board_gets_nothing(tmp_path, publisher, device):
    from giter_bundle.serial_peer import WrongDeviceError

    _, bundle = spec_bundle(publisher, device, tmp_path, blob_kib=0)
    with SerialLine() as line:
        served = ServedDevice(device, line)
        try:
            with pytest.raises(WrongDeviceError, match="leads to pi-01, not pi-99"):
                peer(line, tmp_path, bundle, expect_device="pi-99").run()
            served.wait_sessions(1, timeout=1.0)  # told at once, not after a timeout
        finally:
            served.close()
    assert served.endpoint.last_error.reason == "WrongDevice"
    assert device.state().accepted is None


def test_status_bundle_leaves_out_what_the_hub_holds(tmp_path, publisher, device):
    """``--hub``: the device sends only the status commits the laptop's hub lacks, as it
    does for a stick's hub-status.txt."""
    _, first = spec_bundle(publisher, device, tmp_path, blob_kib=0, text="one\n")
    with SerialLine() as line:
        served = ServedDevice(device, line)
        try:
            assert peer(line, tmp_path / "a", first).run().exit_code == 0
            hub_has = device.state().status_tip
            _, second = spec_bundle(publisher, device, tmp_path, blob_kib=0, text="two\n")
            result = peer(line, tmp_path / "b", second,
                          hub_status={"pi-01": hub_has, "pi-02": "f" * 40}).run()
            assert result.exit_code == 0, result.result
            # The same answer again, without the hub: the whole chain, not the kept cut.
            whole = peer(line, tmp_path / "c", None).run()
        finally:
            served.close()
    cut = tmp_path / "b/outbox/pi-01.bundle"
    # A hub that holds the first status (fetched from the first session's bundle) takes
    # the cut bundle as it is.
    publisher.git("fetch", "-q", tmp_path / "a/outbox/pi-01.bundle",
                  "refs/heads/status/pi-01:refs/heads/hub-status")
    publisher.git("bundle", "verify", cut)
    heads = publisher.git("bundle", "list-heads", cut).stdout.decode()
    assert device.state().status_tip in heads
    header = cut.read_bytes().split(b"\n\n", 1)[0].decode()
    # A prerequisite line ("-<sha>") names the hub's commit: it is left out.
    assert f"-{hub_has}" in header
    full_header = (tmp_path / "c/outbox/pi-01.bundle").read_bytes().split(b"\n\n", 1)[0]
    assert f"-{hub_has}".encode() not in full_header  # it needs only the spec commits
    assert whole.exit_code == 0
