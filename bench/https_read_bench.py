"""Benchmark: an https response read inside the sync's budget, against urllib3's own reader.

Every byte an http(s) hub sends is now parsed from ``transport.network.metered.
BudgetedSocketFile`` (each ``recv`` bounded by what is left of ``time_budget_s``, every
byte counted) instead of the socket file http.client makes. This measures what that
costs: a TLS server on 127.0.0.1 (Python's ``http.server`` in a thread, a throwaway
self-signed certificate) sends the same ``--mib`` MiB body, read in 64 KiB pieces
  - through the urllib3 pool ``transport.network.http_client`` builds, budget armed,
  - through a stock urllib3 pool (the read path before the budget existed: the reference),
each best of ``--runs``, and prints the times and their ratio. Both sides share one
process and one core's worth of TLS, so the ratio is what matters, not the MiB/s.

Run from the repository root:  python3 bench/https_read_bench.py [--mib 64] [--runs 3]
Used by hand and for docs/performance.md; nothing imports it.
"""

from __future__ import annotations

import argparse
import datetime
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import urllib3

from giter_agent.core.budget import Budget
from giter_agent.transport.network.http_client import RequestMeter, _budgeted_pools
from giter_agent.transport.network.metered import Meter

CHUNK = 2**16


def self_signed(folder: Path) -> Path:
    """A key and a self-signed certificate for 127.0.0.1, in one PEM file."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    pem = folder / "server.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
                    + cert.public_bytes(serialization.Encoding.PEM))
    return pem


def serve(pem: Path, body: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            view = memoryview(body)
            for start in range(0, len(body), CHUNK):
                self.wfile.write(view[start:start + CHUNK])

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def pool(ca: Path, budgeted: bool) -> tuple[urllib3.PoolManager, RequestMeter]:
    meters = RequestMeter(60.0)
    manager = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=str(ca),
                                  retries=False)
    if budgeted:
        manager.pool_classes_by_scheme = _budgeted_pools(meters)
    return manager, meters


def read_all(manager: urllib3.PoolManager, url: str) -> int:
    resp = manager.request("GET", url, preload_content=False)
    got = 0
    while chunk := resp.read(CHUNK):
        got += len(chunk)
    resp.release_conn()
    return got


def best(runs: int, once: Callable[[], int], size: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        assert once() == size
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    body = bytes(range(256)) * (args.mib * 2**20 // 256)
    with tempfile.TemporaryDirectory() as scratch:
        pem = self_signed(Path(scratch))
        server = serve(pem, body)
        url = f"https://127.0.0.1:{server.server_address[1]}/pack"
        try:
            ours, meters = pool(pem, budgeted=True)

            def budgeted() -> int:
                meters.current = Meter(Budget(600.0, max_bytes=2 * len(body)), "bench",
                                       advertising=False)
                return read_all(ours, url)

            stock, _ = pool(pem, budgeted=False)
            t_ours = best(args.runs, budgeted, len(body))
            t_stock = best(args.runs, lambda: read_all(stock, url), len(body))
        finally:
            server.shutdown()
            server.server_close()
    print(f"https GET of a {args.mib} MiB body on 127.0.0.1, best of {args.runs}")
    print(f"  agent, budgeted reads     {t_ours:7.2f} s")
    print(f"  urllib3's socket file     {t_stock:7.2f} s")
    print(f"budgeted / stock x{t_ours / t_stock:.2f}")


if __name__ == "__main__":
    main()
