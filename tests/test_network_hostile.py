"""A hostile hub: every byte it sends, over git://, ssh:// or http(s)://, is read inside the
sync's budget.

A tiny server on 127.0.0.1 plays the hub (a TCP server for git://, a fake ssh client
for ssh://, ``http.server`` for http:// and https://): one advertises refs without end,
one sends its answer a byte at a time, one answers a fetch with a pack that never ends.
The sync must end with a typed error (``TooLarge``, ``TimeBudgetExceeded``), not grow
without bound or hold the state lock past its budget, and change nothing.
Each server stops on its own after a bounded amount of mischief, so a regression shows
as a wrong verdict rather than a hung suite.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.devices import SimDevice
from support.servers import free_port, make_tls


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
    assert dev.state().network.reason == "TimeBudgetExceeded"


def test_one_budget_counts_time_and_bytes_on_the_sync_clock():
    from giter_agent.core.budget import Budget
    from giter_agent.core.errors import BundleError, NetworkError

    now = [100.0]
    budget = Budget(5, lambda: now[0], max_bytes=10)
    budget.receive(10, "hub")
    with pytest.raises(NetworkError) as big:
        budget.receive(1, "hub")
    assert big.value.reason == "TooLarge"
    assert budget.wait_s("hub") == 5
    now[0] = 105.0
    with pytest.raises(NetworkError) as slow:
        budget.wait_s("hub")
    assert slow.value.reason == "TimeBudgetExceeded"
    now[0] = 105.5
    with pytest.raises(BundleError) as stage:  # the same clock runs out for every stage
        budget.check()
    assert stage.value.reason == "TimeBudgetExceeded"


def test_the_advertisement_cap_is_per_connection_and_the_byte_cap_per_sync():
    """A large pack fetched first leaves a later push its full advertisement allowance;
    the sync's total still bounds both."""
    from giter_agent.core.budget import Budget
    from giter_agent.core.errors import NetworkError
    from giter_agent.transport.network.metered import Meter

    budget = Budget(600, max_bytes=100)
    fetch = Meter(budget, "hub", max_advertisement=10)
    fetch.took(10)
    fetch.sent(b"0032want " + b"a" * 40 + b"\n")
    fetch.took(60)  # the pack: only the sync's cap applies
    push = Meter(budget, "hub", max_advertisement=10)
    push.took(10)  # its own advertisement, in full
    with pytest.raises(NetworkError) as adv:
        push.took(1)
    assert adv.value.reason == "TooLarge" and "advertisement" in str(adv.value)
    answer = Meter(budget, "hub", advertising=False)
    with pytest.raises(NetworkError) as total:
        answer.took(20)
    assert total.value.reason == "TooLarge" and "max_bundle_mib" in str(total.value)


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

    from giter_agent.transport.network import Remote
    from giter_agent.transport.network.ssh import PinnedSSH

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


# -- http:// ------------------------------------------------------------------------------

@contextlib.contextmanager
def hostile_http_hub(talk: Callable[[Any, threading.Event], None],
                     tls: Path | None = None) -> Iterator[str]:
    """Serve ``talk(handler, stop)`` for every GET and POST on 127.0.0.1; yields the URL.

    With ``tls`` (a folder), over TLS with a certificate from a CA at ``tls/ca.pem``."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with contextlib.suppress(OSError):
                talk(self, stop)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with contextlib.suppress(OSError):
                talk(self, stop)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    if tls is not None:
        import ssl

        make_tls(tls / "ca.pem", tls / "server.pem", "localhost")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls / "server.pem")
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http{'s' if tls else ''}://127.0.0.1:{server.server_address[1]}/fleet.git"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


ADVERTISEMENT = "application/x-git-upload-pack-advertisement"


def headers(handler: Any, content_type: str) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Cache-Control", "no-cache")
    handler.end_headers()  # no length: the body ends when the connection does


def trickled_advertisement(handler: Any, stop: threading.Event) -> None:
    headers(handler, ADVERTISEMENT)
    refs = b"".join(pkt(b"b" * 40 + b" refs/heads/r%06d\n" % i) for i in range(40))
    for byte in pkt(b"# service=git-upload-pack\n") + b"0000" + refs[:2000]:
        if stop.is_set():  # a valid byte every 10 ms: 20 s at most
            return
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(0.01)


def trickled_status_line(handler: Any, stop: threading.Event) -> None:
    for byte in b"HTTP/1.0 200 OK\r\n" + b"X-Slow: " + b"x" * 2000:
        if stop.is_set():
            return
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(0.01)


def endless_http_refs(handler: Any, stop: threading.Event) -> None:
    headers(handler, ADVERTISEMENT)
    handler.wfile.write(pkt(b"# service=git-upload-pack\n") + b"0000")
    handler.wfile.write(pkt(b"a" * 40 + b" HEAD\0ofs-delta\n"))
    chunk = b"".join(pkt(b"b" * 40 + b" refs/heads/r%06d\n" % i) for i in range(1000))
    for _ in range(64 * 2**20 // len(chunk)):  # 64 MiB, then it gives up
        if stop.is_set():
            return
        handler.wfile.write(chunk)


def endless_pack(handler: Any, stop: threading.Event) -> None:
    if handler.command == "GET":  # an honest advertisement of a spec we do not have
        headers(handler, ADVERTISEMENT)
        handler.wfile.write(pkt(b"# service=git-upload-pack\n") + b"0000"
                            + pkt(b"c" * 40 + b" refs/heads/main\0ofs-delta\n") + b"0000")
        return
    headers(handler, "application/x-git-upload-pack-result")
    handler.wfile.write(pkt(b"NAK\n") + b"PACK\0\0\0\2\0\0\xff\xff")
    junk = b"\x78" * 2**16
    for _ in range(64 * 2**20 // len(junk)):  # 64 MiB, then it gives up
        if stop.is_set():
            return
        handler.wfile.write(junk)


@pytest.fixture
def applied(tmp_path, publisher):
    """A device whose spec came from a stick: what a hostile hub must leave alone."""
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers)
    publisher.commit("motd", files=dev.spec_files("from the stick\n"))
    bundle = publisher.bundle(tmp_path / "fleet.bundle")
    agent = dev.agent()
    try:
        assert agent.sync([bundle], "usb").outcome == "applied"
    finally:
        agent.close()
    return dev


def repository(dev: SimDevice) -> dict[str, bytes]:
    """Every ref and pack of the device's repository."""
    repo = dev.dir / "state" / "repo.git"
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*"))
            if p.is_file() and (p.name.startswith("pack-") or "refs" in p.parts)}


@pytest.mark.parametrize("talk,budget_s,reason", [
    (trickled_advertisement, 1, "TimeBudgetExceeded"),
    (trickled_status_line, 1, "TimeBudgetExceeded"),
    (endless_http_refs, 600, "TooLarge"),
    (endless_pack, 600, "TooLarge"),
], ids=["trickled-advertisement", "trickled-status-line", "endless-advertisement",
        "endless-pack"])
def test_an_http_hub_is_read_inside_the_same_budget(applied, talk, budget_s, reason):
    """Each hostile answer is cut with its reason; the spec from the stick stays applied,
    and the repository, the state and the files are as they were."""
    before, refs = applied.snapshot(), repository(applied)
    with hostile_http_hub(talk) as url:
        with applied.config_path.open("a") as fh:
            fh.write(f'[network]\nurl = "{url}"\nread_timeout_s = 5\n'
                     f"[limits]\ntime_budget_s = {budget_s}\nmax_bundle_mib = 1\n")
        report = applied.sync()
    assert (report.outcome, report.reason, report.exit_code) == ("error", reason, 4)
    state = applied.state()
    assert state.network.state == "error" and state.network.reason == reason
    assert "\n" not in state.network.message
    assert applied.snapshot() == before and repository(applied) == refs
    assert applied.motd() == "from the stick\n"


@pytest.mark.parametrize("talk,budget_s,reason", [
    (trickled_advertisement, 1, "TimeBudgetExceeded"),
    (endless_pack, 600, "TooLarge"),
], ids=["trickled-advertisement", "endless-pack"])
def test_an_https_hub_is_read_inside_the_same_budget(applied, tmp_path, talk, budget_s,
                                                     reason):
    """The same over TLS: the budget bounds each read of the TLS socket, not of a buffer."""
    before, refs = applied.snapshot(), repository(applied)
    with hostile_http_hub(talk, tls=tmp_path) as url:
        with applied.config_path.open("a") as fh:
            fh.write(f'[network]\nurl = "{url}"\nread_timeout_s = 5\n'
                     f'ca_file = "{tmp_path / "ca.pem"}"\n'
                     f"[limits]\ntime_budget_s = {budget_s}\nmax_bundle_mib = 1\n")
        report = applied.sync()
    assert (report.outcome, report.reason, report.exit_code) == ("error", reason, 4)
    assert applied.snapshot() == before and repository(applied) == refs
