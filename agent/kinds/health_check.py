"""A release's health check: an allowlisted command, a localhost HTTP GET, or a unit active.

Called by ``kinds.release`` after it switched a release in and restarted its units.
The spec picks one kind of check; the device decides what may run:

- ``command``: a name from the device's ``[commands] allowed`` table (run as the
  Command kind runs it, ``kinds.command.run_bounded``); healthy when it exits 0;
- ``http``: ``http://127.0.0.1:PORT/path`` or ``http://[::1]:PORT/path``; healthy on a
  2xx answer. Only the loopback addresses, written as addresses: a name could be
  pointed anywhere by ``/etc/hosts``, and the check must never reach another machine;
- ``unit``: a unit of the ``[services] allowed`` list; healthy when it is ``active``.

Each try has ``timeout`` seconds; up to ``tries`` tries, ``interval`` seconds apart.
The output kept for status is bounded (``MAX_OUTPUT`` characters, the tail) and
escaped to one printable line (``core.durable.shown``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from giter_agent.core.durable import shown
from giter_agent.core.named_tuple import NamedTuple
from giter_agent.kinds.base import Context, Failed

MAX_OUTPUT = 1024
LOOPBACK = ("127.0.0.1", "::1")


class CheckResult(NamedTuple):
    healthy: bool
    tries: int
    output: str  # the last try's, bounded and escaped


def bounded(text: str) -> str:
    """One printable line of at most ``MAX_OUTPUT`` characters (the tail)."""
    line = shown(text.strip())
    return line if len(line) <= MAX_OUTPUT else "..." + line[-(MAX_OUTPUT - 3):]


def http_target(url: str) -> tuple[str, int, str] | None:
    """(host, port, path) of a loopback ``http://`` URL, or None when it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != "http" or parts.hostname not in LOOPBACK or port is None \
            or parts.username is not None or parts.password is not None:
        return None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, port, path


def refusal(check: dict[str, Any], ctx: Context) -> Failed | None:
    """Why the device will not run this check (None: it may)."""
    from giter_agent.kinds.service import unit_refusal

    if "command" in check and check["command"] not in ctx.commands:
        allowed = ", ".join(sorted(ctx.commands)) or "none"
        return Failed("CommandNotAllowed", f"check.command {check['command']!r} is not in "
                      f"this device's [commands] allowed list (allowed: {allowed})")
    if "unit" in check:
        return unit_refusal(check["unit"], ctx.services)
    return None


def describe(check: dict[str, Any]) -> str:
    for what in ("command", "http", "unit"):
        if what in check:
            return f"{what} {check[what]}"
    return "no check"


def _one(check: dict[str, Any], ctx: Context) -> tuple[bool, str]:
    timeout = float(check["timeout"])
    if "command" in check:
        from giter_agent.kinds.command import run_bounded

        try:
            result = run_bounded(ctx.commands[check["command"]], timeout)
        except OSError as exc:
            return False, f"cannot run {check['command']}: {exc.strerror or exc}"
        if result.exit_code is None:
            return False, f"timed out after {timeout:g} s: {result.tail}"
        return result.exit_code == 0, f"exit {result.exit_code}: {result.tail}"
    if "http" in check:
        return _http(check["http"], timeout)
    from giter_agent.kinds import systemctl

    try:
        props = systemctl.show(check["unit"])
    except systemctl.SystemctlError as exc:
        return False, str(exc)
    state = f"{props['ActiveState'] or 'unknown'} ({props['SubState'] or 'unknown'})"
    return props["ActiveState"] == "active", f"{check['unit']} is {state}"


def _http(url: str, timeout: float) -> tuple[bool, str]:
    import http.client

    target = http_target(url)
    if target is None:  # validate refused it already; never reach out anywhere else
        return False, f"{url} is not a loopback http:// URL"
    host, port, path = target
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "giter-agent health check"})
        resp = conn.getresponse()
        body = resp.read(MAX_OUTPUT).decode("utf-8", "replace")
        return 200 <= resp.status < 300, f"HTTP {resp.status}: {body}"
    except TimeoutError:
        return False, f"no answer within {timeout:g} s"
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def run_check(check: dict[str, Any], ctx: Context,
              sleep: Callable[[float], None] = time.sleep) -> CheckResult:
    """Try the check up to ``tries`` times; healthy at the first success."""
    output = ""
    tries = int(check["tries"])
    for attempt in range(1, tries + 1):
        healthy, output = _one(check, ctx)
        if healthy:
            return CheckResult(True, attempt, bounded(output))
        if attempt < tries:
            sleep(float(check["interval"]))
    return CheckResult(False, tries, bounded(output))


def budget(check: dict[str, Any] | None) -> float:
    """The longest the check may take, for the daemon's watchdog allowance."""
    if check is None:
        return 0.0
    return float(check["tries"]) * (float(check["timeout"]) + float(check["interval"]) + 10)
