"""http(s)://: dulwich's urllib3 client, every byte of every response read inside the budget.

``http_client`` builds the client for ``[network]``: basic auth whose password or token
is read from a file only the agent may read, TLS verified against the system's CAs or a
pinned ``ca_file``, connect and read timeouts, no retries inside one attempt (the
daemon's backoff retries).

Once ``Remote.arm`` gives it the sync's ``Budget``, each request gets a ``Meter``: the
connect and the sending of the request wait at most what is left of the budget, and the
response, from its status line to the last byte of the pack, is parsed from a
``metered.BudgetedSocketFile``, whose every ``recv`` waits at most the read timeout or
what is left of the budget. A response to ``info/refs`` or to protocol v2's ``ls-refs``
is the ref advertisement and falls under its own cap; everything counts against
``max_bundle_mib``. urllib3 and dulwich wrap what a read raises in their own errors;
the client raises the meter's verdict (``TimeBudgetExceeded``, ``TooLarge``) instead.
dulwich and urllib3 are imported only when a sync connects.
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from giter_agent import __version__
from giter_agent.config.agent_toml import Network
from giter_agent.transport.network.metered import BudgetedSocketFile, Meter
from giter_agent.transport.network.secret_files import check_not_writable_by_others, read_secret

if TYPE_CHECKING:
    from giter_agent.core.budget import Budget


def is_advertisement(url: str, data: bytes | Iterator[bytes] | None) -> bool:
    """Does a request for ``url`` with body ``data`` ask for the ref advertisement
    (``info/refs``, or protocol v2's ``ls-refs``)? A request for objects or a push does not."""
    if isinstance(data, bytes) and b"command=ls-refs" in data:
        return True
    return data is None and "/info/refs" in url.split("?", 1)[0]


class RequestMeter:
    """The ``Meter`` of the request on the wire (one at a time per client), shared by the
    client that makes requests and the responses its connections parse."""

    def __init__(self, read_timeout: float) -> None:
        self.read_timeout = read_timeout
        self.current: Meter | None = None


def http_client(net: Network, display: str) -> Any:
    """A dulwich HTTP client for ``net`` (``ConfigError`` if a secret file is exposed)."""
    import urllib3

    password = None
    if net.password_file is not None:
        password = read_secret(net.password_file, "network.password_file")
    if net.ca_file is not None:
        check_not_writable_by_others(net.ca_file, "network.ca_file")
    meters = RequestMeter(net.read_timeout_s)
    pool = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=net.connect_timeout_s, read=net.read_timeout_s),
        # Failures are retried by the agent's backoff, not inside one attempt; a few
        # redirects are followed (dulwich drops the credentials on a change of origin).
        retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=3),
        cert_reqs="CERT_REQUIRED",
        ca_certs=str(net.ca_file) if net.ca_file else None,
        headers={"User-Agent": f"git/2.0 (giter-agent {__version__})"},
    )
    pool.pool_classes_by_scheme = _budgeted_pools(meters)
    return _client_class()(display, pool_manager=pool, username=net.username,
                           password=password, meters=meters,
                           timeouts=(net.connect_timeout_s, net.read_timeout_s))


def _budgeted_pools(meters: RequestMeter) -> dict[str, type]:
    """urllib3's connection pools, whose connections parse responses through the meter."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class BudgetedResponse(http.client.HTTPResponse):
        def __init__(self, sock: socket.socket, debuglevel: int = 0,
                     method: str | None = None, url: str | None = None) -> None:
            super().__init__(sock, debuglevel, method, url)
            # socket.makefile's reader keeps the socket open until the response is done
            # with it (a connection that will close closes its socket at once otherwise):
            # unused, but closed only with ours.
            raw = BudgetedSocketFile(sock, meters.read_timeout, lambda: meters.current,
                                     holds=self.fp)
            self.fp = io.BufferedReader(raw)

    class Plain(HTTPConnection):
        response_class = BudgetedResponse

    class Tls(HTTPSConnection):
        response_class = BudgetedResponse

    class PlainPool(HTTPConnectionPool):
        ConnectionCls = Plain

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = Tls

    return {"http": PlainPool, "https": TlsPool}


@functools.cache
def _client_class() -> type:
    """dulwich's ``Urllib3HttpGitClient``, each request inside the sync's budget."""
    import urllib3
    from dulwich.client import Urllib3HttpGitClient

    class BudgetedHttpGitClient(Urllib3HttpGitClient):
        def __init__(self, base_url: str, *, meters: RequestMeter,
                     timeouts: tuple[float, float], **kwargs: Any) -> None:
            super().__init__(base_url, **kwargs)
            self._display = base_url
            self._meters = meters
            self._timeouts = timeouts
            self.budget: Budget | None = None  # Remote.arm: the sync's time and bytes

        def _http_request(self, url: str, headers: dict[str, str] | None = None,
                          data: bytes | Iterator[bytes] | None = None,
                          raise_for_status: bool = True
                          ) -> tuple[Any, Callable[[int], bytes]]:
            if self.budget is None:
                self._meters.current = None
                return super()._http_request(url, headers, data, raise_for_status)
            meter = Meter(self.budget, self._display,
                          advertising=is_advertisement(url, data))
            self._meters.current = meter
            connect, read = self._timeouts
            # Connecting and sending end with the budget too (a send's timeout is its total).
            left = meter.wait_s()
            # dulwich passes it to urllib3 as is; its annotation says float only.
            self._timeout = urllib3.Timeout(  # type: ignore[assignment]
                connect=min(connect, left), read=min(read, left))
            try:
                resp, read_body = super()._http_request(url, headers, data, raise_for_status)
            except Exception:
                if meter.breach is not None:
                    raise meter.breach from None
                raise

            def budgeted_read(n: int) -> bytes:
                try:
                    return read_body(n)
                except Exception:
                    if meter.breach is not None:
                        raise meter.breach from None
                    raise

            return resp, budgeted_read

    return BudgetedHttpGitClient
