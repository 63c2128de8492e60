"""The entry point: a ``Remote`` for ``[network]``, and the one budget its reads obey.

``open_remote`` turns ``[network]`` into a dulwich client with connect and read
timeouts and a pinned identity: git:// (``git_tcp``), http(s):// (``http_client``) or
ssh:// (``ssh``). ``Remote.arm`` hands every client the sync's one ``Budget``, so every
byte the hub sends, over any transport, from the first line of its ref advertisement to
the last byte of the pack, is read inside ``time_budget_s`` and the byte caps.
``history.store`` fetches and pushes through ``Remote.client``; ``sync.hub`` decides
what to fetch and push.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

from giter_agent.config.agent_toml import Network
from giter_agent.transport.network.secret_files import check_not_writable_by_others, check_private
from giter_agent.transport.network.ssh import PinnedSSH

if TYPE_CHECKING:
    from giter_agent.core.budget import Budget


@dataclass
class Remote:
    """A connected-on-demand dulwich client and the path to the repository on it."""

    client: Any
    path: str
    display: str  # the URL as logs and reports show it (never holds a secret)

    def arm(self, budget: Budget) -> None:
        """Bound every later read from the hub by the sync's ``budget`` (time and bytes)."""
        holders: tuple[Any, ...] = (self.client, getattr(self.client, "ssh_vendor", None))
        for holder in holders:
            if hasattr(holder, "budget"):
                holder.budget = budget

    def close(self) -> None:
        self.client.close()
        vendor = getattr(self.client, "ssh_vendor", None)
        if isinstance(vendor, PinnedSSH):
            vendor.close()


def display_url(url: str) -> str:
    """``url`` without any user-info: safe to log and to write into status."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def open_remote(net: Network) -> Remote:
    """A client for ``net.url``; reads the secrets it needs (ConfigError if exposed)."""
    parts = urlsplit(net.url)
    display = display_url(net.url)
    host = parts.hostname or ""
    if net.scheme == "git":
        from giter_agent.transport.network.git_tcp import tcp_client_class

        client = tcp_client_class()(host, parts.port, net.connect_timeout_s,
                                    net.read_timeout_s, display)
        return Remote(client, parts.path, display)
    if net.scheme in ("http", "https"):
        from giter_agent.transport.network.http_client import http_client

        return Remote(http_client(net, display), "", display)
    assert net.ssh_key is not None and net.known_hosts is not None  # config checked
    check_private(net.ssh_key, "network.ssh_key")
    check_not_writable_by_others(net.known_hosts, "network.known_hosts")
    from dulwich.client import SSHGitClient, SSHVendor

    vendor = PinnedSSH(net.ssh_key, net.known_hosts, net.connect_timeout_s,
                       net.read_timeout_s, display=display)
    # PinnedSSH implements SSHVendor's one method; subclassing it would load dulwich's
    # client at import time, which the agent avoids (RAM), so the type is named here.
    client = SSHGitClient(host, port=parts.port, username=parts.username or net.username,
                          vendor=cast("SSHVendor", vendor))
    return Remote(client, parts.path, display)
