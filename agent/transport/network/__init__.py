"""The network transport: the fleet's git server (the hub) through dulwich, inside one budget.

One module per responsibility:

- ``remote``: ``open_remote`` (``[network]`` to a client) and ``Remote`` (``arm`` it with
  the sync's budget, ``close`` it) - what ``sync.hub`` and ``sync.agent`` use;
- ``metered``: reads from a hub inside the sync's ``core.budget.Budget`` and byte caps
  (a socket, an ssh pipe, the file an HTTP response is parsed from);
- ``git_tcp``, ``http_client``, ``ssh``: the three transports;
- ``secret_files``: the password, key and pin files, checked before each use;
- ``failures``: what a transport raises, mapped to a ``NetworkError`` with a reason.

Nothing here touches the object store. dulwich's client modules are heavy, so they are
imported only when a sync connects; importing this package loads the standard library
and the agent's config and errors only.
"""

from giter_agent.transport.network.failures import classify, transport_errors
from giter_agent.transport.network.remote import Remote, display_url, open_remote

__all__ = ["Remote", "classify", "display_url", "open_remote", "transport_errors"]
