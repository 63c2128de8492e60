"""What a transport raises, mapped to a ``NetworkError`` whose reason says what to do.

``transport_errors`` wraps every exchange with the hub (``sync.hub``); ``classify`` maps
one exception: our own verdict (a budget, a cap) wherever dulwich or urllib3 wrapped it,
an SSH client's complaint (host key, key refused, unreachable), an HTTP status, a TLS
failure, or a socket error. A disk error while spooling a pack is this device's
``StorageError``, never an offline hub.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Callable, Iterator

from giter_agent.core.errors import (
    GiterError,
    HubRemoteError,
    NetworkError,
    StorageError,
    hub_error,
)
from giter_agent.core.log import get_logger

log = get_logger("giter.network")


_SSH_PATTERNS = (
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "HostKeyMismatch",
     "the hub's SSH host key does not match the pinned one in network.known_hosts"),
    ("Host key verification failed", "UnknownHostKey",
     "the hub's SSH host key is not in network.known_hosts (keys are never trusted on "
     "first use: add the hub's key there)"),
    ("Permission denied", "AuthFailed", "the hub refused network.ssh_key"),
    ("Could not resolve hostname", "Offline", "cannot resolve the hub's name"),
    ("Connection refused", "Offline", "connection refused"),
    ("Connection timed out", "Offline", "connection timed out"),
    ("No route to host", "Offline", "no route to the hub"),
    ("Network is unreachable", "Offline", "the network is unreachable"),
    ("Connection reset", "Offline", "connection reset"),
    ("Connection closed", "Offline", "connection closed"),
    ("Timeout, server", "Offline", "the hub stopped answering"),
)


def own_verdict(exc: BaseException) -> NetworkError | None:
    """Our own verdict (a budget, a cap) inside ``exc``, however dulwich or urllib3
    wrapped it on the way out: as a cause, a context, a retry's reason or an argument."""
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        cause = todo.pop()
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, NetworkError):
            return cause
        linked = [cause.__cause__, cause.__context__, getattr(cause, "reason", None),
                  *cause.args]
        todo.extend(e for e in linked if isinstance(e, BaseException))
    return None


def classify(exc: BaseException, display: str) -> NetworkError:
    """The ``NetworkError`` a transport exception means, naming the hub."""
    from dulwich.client import HTTPProxyUnauthorized, HTTPUnauthorized
    from dulwich.errors import GitProtocolError, HangupException, NotGitRepository

    def err(reason: str, what: str) -> NetworkError:
        return hub_error(f"{display}: {what}", reason)

    verdict = own_verdict(exc)
    if verdict is not None:
        return verdict
    if isinstance(exc, HTTPUnauthorized):
        return err("AuthFailed", "the hub refused our credentials (HTTP 401)")
    if isinstance(exc, HTTPProxyUnauthorized):
        return err("AuthFailed", "a proxy on the way wants credentials (HTTP 407)")
    if isinstance(exc, NotGitRepository):
        return err("RemoteError", "no git repository there")
    if isinstance(exc, HangupException):
        text = "\n".join(line.decode("utf-8", "replace")
                         for line in (getattr(exc, "stderr_lines", None) or []))
        for pattern, reason, what in _SSH_PATTERNS:
            if pattern in text:
                return err(reason, what)
        last = text.strip().splitlines()[-1] if text.strip() else ""
        return err("Offline", f"the connection was cut{': ' + last if last else ''}")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return err("Offline", "timed out")
    if isinstance(exc, socket.gaierror):
        return err("Offline", f"cannot resolve the hub's name ({exc.strerror or exc})")
    if isinstance(exc, OSError):
        return err("Offline", exc.strerror or str(exc) or type(exc).__name__)
    if isinstance(exc, GitProtocolError):
        return _classify_protocol(exc, err)
    return err("Offline", f"{type(exc).__name__}: {exc}")


def _classify_protocol(exc: BaseException, err: Callable[[str, str], NetworkError]
                       ) -> NetworkError:
    """dulwich wraps urllib3's errors in GitProtocolError; look at the cause."""
    import urllib3.exceptions as u3

    cause: BaseException | None = exc.__cause__
    while isinstance(cause, u3.MaxRetryError) and cause.reason is not None:
        cause = cause.reason
    text = str(exc)
    if isinstance(cause, u3.SSLError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return err("TlsVerifyFailed", "the hub's TLS certificate does not verify "
                   f"against the trusted CAs ({cause or text})")
    if isinstance(cause, (u3.TimeoutError, u3.NewConnectionError, u3.ProtocolError,
                          u3.MaxRetryError, OSError)):
        return err("Offline", str(cause))
    if "unexpected http resp 5" in text:
        return err("Offline", f"the hub is failing ({text})")
    if "Connection" in text or "timed out" in text.lower():
        return err("Offline", text)
    return err("RemoteError", f"the hub said: {text}")


# Errors only a local disk raises (a socket never does): a fetch cut short by them is a
# StorageError, reported as such, not an offline hub.
_LOCAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


@contextlib.contextmanager
def transport_errors(display: str) -> Iterator[None]:
    """Turn anything a transport raises inside the block into a ``NetworkError``.

    The agent's own typed errors (a refused pack, a cap, a lost ref race) pass through.
    Anything else dulwich raises while talking to the hub (a malformed answer can
    surface as ValueError or KeyError deep in the protocol code) is the hub's doing:
    ``RemoteError``, with the exception's type kept in the message and the log.
    """
    from dulwich.client import HTTPProxyUnauthorized, HTTPUnauthorized
    from dulwich.errors import GitProtocolError, NotGitRepository

    try:
        yield
    except GiterError:
        raise
    except OSError as exc:
        if exc.errno in _LOCAL_ERRNOS:  # this device's disk, not the hub: never "offline"
            raise StorageError.of(exc, "the received pack to the state directory") from None
        raise classify(exc, display) from exc
    except (GitProtocolError, HTTPUnauthorized, HTTPProxyUnauthorized,
            NotGitRepository) as exc:
        raise classify(exc, display) from exc
    except Exception as exc:
        log.warning("%s: unexpected %s from the transport", display, type(exc).__name__,
                    exc_info=True)
        raise HubRemoteError(f"{display}: the hub's answer made no sense "
                           f"({type(exc).__name__}: {exc})", reason="RemoteError") from exc
