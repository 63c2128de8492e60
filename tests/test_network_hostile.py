"""A hostile git:// hub: every byte it sends is read inside the sync's budget.

A tiny TCP server on 127.0.0.1 plays the hub: one advertises refs without end, one
sends its answer a byte at a time. The sync must end with a typed error (``TooLarge``,
``TimeBudgetExceeded``), not grow without bound or hold the state lock past its budget.
Each server stops on its own after a bounded amount of mischief, so a regression shows
as a wrong verdict rather than a hung suite.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from support.devices import SimDevice
from support.servers import free_port


@contextlib.contextmanager
def hostile_hub(talk: Callable[[socket.socket], None]) -> Iterator[int]:
    """Serve ``talk(connection)`` to each client on 127.0.0.1; yields the port."""
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(30)
                conn.recv(4096)  # the client's git-upload-pack request
                talk(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(timeout=30)
        listener.close()


def pkt(line: bytes) -> bytes:
    return b"%04x" % (len(line) + 4) + line


def endless_refs(conn: socket.socket) -> None:
    conn.sendall(pkt(b"a" * 40 + b" HEAD\0side-band-64k ofs-delta\n"))
    chunk = b"".join(pkt(b"b" * 40 + b" refs/heads/r%06d\n" % i) for i in range(1000))
    for _ in range(64 * 2**20 // len(chunk)):  # 64 MiB, then it gives up
        conn.sendall(chunk)


def trickle(conn: socket.socket) -> None:
    for byte in b"ffff" + b"x" * 2000:  # a byte every 10 ms: 20 s at most
        conn.sendall(bytes([byte]))
        time.sleep(0.01)


def device(tmp_path, publisher, port: int, time_budget_s: int) -> SimDevice:
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers,
                    {"url": f"git://127.0.0.1:{port}/fleet.git", "read_timeout_s": 5})
    with dev.config_path.open("a") as fh:
        fh.write(f"[limits]\ntime_budget_s = {time_budget_s}\nmax_bundle_mib = 1\n")
    return dev


def test_a_hub_advertising_refs_forever_is_cut_at_the_cap(tmp_path, publisher):
    with hostile_hub(endless_refs) as port:
        report = device(tmp_path, publisher, port, time_budget_s=600).sync()
    assert (report.outcome, report.reason, report.exit_code) == ("error", "TooLarge", 4)


def test_a_hub_trickling_bytes_is_cut_at_the_time_budget(tmp_path, publisher):
    with hostile_hub(trickle) as port:
        dev = device(tmp_path, publisher, port, time_budget_s=1)
        report = dev.sync()
    assert (report.outcome, report.reason) == ("error", "TimeBudgetExceeded")
    assert dev.state().network["reason"] == "TimeBudgetExceeded"


def test_budget_counts_time_and_bytes_on_its_own_clock():
    from giter_agent.transport.network import Budget, NetworkError

    now = [100.0]
    budget = Budget.start(5, max_bytes=10, clock=lambda: now[0])
    budget.take(10, advertising=False)
    with pytest.raises(NetworkError) as big:
        budget.take(1, advertising=False)
    assert big.value.reason == "TooLarge"
    assert budget.remaining() == 5
    now[0] = 105.0
    with pytest.raises(NetworkError) as slow:
        budget.remaining()
    assert slow.value.reason == "TimeBudgetExceeded"


FAKE_SSH = """\
import sys, time
# Stands in for OpenSSH: whatever it is asked, it plays a hostile hub on stdout.
out = sys.stdout.buffer
def pkt(body):
    return b"%04x" % (len(body) + 4) + body
if {endless!r}:
    out.write(pkt(b"a" * 40 + b" HEAD\\0side-band-64k ofs-delta\\n"))
    line = pkt(b"b" * 40 + b" refs/heads/r00000000000\\n")
    for _ in range(64 * 2**20 // len(line)):
        out.write(line)
    out.flush()
else:
    for byte in b"ffff" + b"x" * 2000:
        out.write(bytes([byte]))
        out.flush()
        time.sleep(0.01)
"""


@pytest.mark.parametrize("endless,budget_s,reason", [(True, 600, "TooLarge"),
                                                     (False, 1, "TimeBudgetExceeded")])
def test_an_ssh_hub_is_read_inside_the_same_budget(tmp_path, publisher, endless, budget_s,
                                                   reason):
    import sys

    from dulwich.client import SSHGitClient

    from giter_agent.transport.network import PinnedSSH, Remote

    fake = tmp_path / "ssh"
    fake.write_text(f"#!{sys.executable}\n" + FAKE_SSH.format(endless=endless))
    fake.chmod(0o755)
    vendor = PinnedSSH(tmp_path / "key", tmp_path / "known_hosts", 5, 5, ssh=str(fake))
    remote = Remote(SSHGitClient("hub.example", vendor=vendor), "/fleet.git",
                    "ssh://hub.example/fleet.git")
    dev = device(tmp_path, publisher, 9, time_budget_s=budget_s)
    report = dev.sync(remote=remote)
    remote.close()
    assert (report.outcome, report.reason) == ("error", reason)
