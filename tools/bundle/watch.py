"""Alerts on divergence: one alert when a device starts being late, one when it is not.

Each check opens the exchange repository afresh (on a hub, devices push their status
branches between checks), finds the devices diverged for the threshold or longer
(``divergence``), and compares them with the set already alerted on, kept in a small
JSON state file so that a restart, or a cron job running ``watch --once``, does not
raise the same alert again. Every change is an event:

- ``diverged``: the device has not converged on the spec tip for the threshold or longer;
- ``resolved``: it has converged since, or is no longer enrolled.

An event goes to a command (run without a shell, the event as JSON on its standard input
and in ``GITER_ALERT_*`` variables) and/or a webhook (an HTTP POST of the same JSON). An
event counts as delivered only when every sink took it (the command exited 0, the
server answered 2xx); otherwise it is tried again at the next check, so an alert is
never lost to a hub restart or an unreachable receiver. A reason that changes while the
device stays late raises nothing new.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from giter_agent.core.errors import PublisherError, UsageError

COMMAND_TIMEOUT_S = 60
WEBHOOK_TIMEOUT_S = 10
MAX_STATE_BYTES = 16 * 2**20


@dataclass
class Sinks:
    """Where events go; at least one of them."""

    command: Sequence[str] = ()
    webhook: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.command and not self.webhook:
            raise UsageError("watch needs somewhere to send alerts: --exec CMD and/or "
                             "--webhook URL", reason="UsageError")
        if self.webhook and not self.webhook.startswith(("http://", "https://")):
            raise UsageError(f"--webhook {self.webhook!r} is not an http:// or https:// URL",
                             reason="UsageError")

    def deliver(self, event: dict[str, Any]) -> str | None:
        """None when every sink took ``event``; else why not (one line)."""
        body = json.dumps(event, sort_keys=True).encode()
        if self.command:
            env = dict(os.environ, GITER_ALERT_EVENT=event["event"],
                       GITER_ALERT_DEVICE=event["device"], GITER_ALERT_REASON=event["reason"],
                       GITER_ALERT_SINCE=event["since"] or "")
            try:
                done = subprocess.run(list(self.command), input=body, env=env,
                                      capture_output=True, timeout=COMMAND_TIMEOUT_S,
                                      check=False)
            except subprocess.TimeoutExpired:
                return f"{self.command[0]} did not finish within {COMMAND_TIMEOUT_S} s"
            except OSError as exc:
                return f"{self.command[0]}: {exc.strerror or exc}"
            if done.returncode != 0:
                tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
                return f"{self.command[0]} exited {done.returncode} {tail[0][:200]}".rstrip()
        if self.webhook:
            return _post(self.webhook, body, self.headers)
        return None


def _post(url: str, body: bytes, headers: dict[str, str]) -> str | None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "giter-bundle-watch", **headers})
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as answer:
            answer.read(65536)
            return None
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{url} unreachable: {reason}"


class AlertState:
    """The devices already alerted on as diverged, kept across checks and restarts."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.diverged: dict[str, dict[str, Any]] = {}
        if path is not None and path.exists():
            self.diverged = self._load(path)

    @staticmethod
    def _load(path: Path) -> dict[str, dict[str, Any]]:
        from giter_agent.core.durable import read_regular

        try:
            doc = json.loads(read_regular(path, MAX_STATE_BYTES))
        except (ValueError, UnicodeDecodeError) as exc:
            raise PublisherError(f"{path} is not a watch state file ({exc}); move it away to "
                                 "start afresh (alerts already sent would be sent again)",
                                 reason="StateCorrupt") from None
        devices = doc.get("diverged") if isinstance(doc, dict) else None
        if not isinstance(devices, dict):
            raise PublisherError(f"{path} is not a watch state file (no 'diverged' map)",
                                 reason="StateCorrupt")
        return {str(k): v for k, v in devices.items() if isinstance(v, dict)}

    def save(self) -> None:
        if self.path is None:
            return
        from giter_agent.core.durable import atomic_write

        data = json.dumps({"diverged": self.diverged}, indent=1, sort_keys=True) + "\n"
        atomic_write(self.path, data.encode(), 0o600)


def events(alerted: dict[str, dict[str, Any]], late: list[dict[str, Any]],
           context: dict[str, str]) -> list[dict[str, Any]]:
    """The transitions between what was alerted on and what is late now."""
    now_late = {d["device"]: d for d in late}
    out = []
    for device, d in sorted(now_late.items()):
        if device not in alerted:
            out.append({"event": "diverged", **d, **context})
    for device in sorted(set(alerted) - set(now_late)):
        was = alerted[device]
        out.append({"event": "resolved", "device": device, "since": was.get("since"),
                    "atLeast": False, "seconds": 0,
                    "reason": f"converged (was: {was.get('reason', '?')})", **context})
    return out


@dataclass
class Check:
    """What one check found and did."""

    late: int  # devices late now
    delivered: list[dict[str, Any]]
    undelivered: int  # events no sink took: tried again at the next check


def check(repo: Path, branch: str, threshold: int, state: AlertState, sinks: Sinks, *,
          now: float, log: Callable[[str], None]) -> Check:
    """One check: the events delivered (failed ones stay pending for the next check)."""
    from giter_bundle import divergence
    from giter_bundle.exchange import Exchange
    from giter_bundle.fleet_status import fleet_status

    with Exchange.open(repo, branch) as exchange:
        doc = fleet_status(exchange)
        found = divergence.diverged(exchange, doc, now=now, threshold=threshold)
    late = [d.as_dict(now) for d in divergence.overdue(found, now=now, threshold=threshold)]
    context = {"branch": doc["branch"], "tip": doc["tip"]}
    delivered = []
    undelivered = 0
    for event in events(state.diverged, late, context):
        problem = sinks.deliver(event)
        if problem is not None:
            undelivered += 1
            log(f"giter-bundle watch: AlertNotDelivered: {event['event']} {event['device']}: "
                f"{problem} (tried again at the next check)")
            continue
        if event["event"] == "diverged":
            state.diverged[event["device"]] = {"since": event["since"],
                                               "reason": event["reason"]}
        else:
            state.diverged.pop(event["device"], None)
        delivered.append(event)
        state.save()
    return Check(len(late), delivered, undelivered)


def run(repo: Path, branch: str, threshold: int, state: AlertState, sinks: Sinks, *,
        every: float, once: bool, log: Callable[[str], None],
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep) -> int:
    """Check every ``every`` seconds until interrupted, or once. The exit status of a
    single check: 1 when an alert could not be delivered, else 3 when devices are late
    (as ``status --diverged-for`` exits), else 0."""
    from giter_agent.core.errors import GiterError

    while True:
        try:
            result = check(repo, branch, threshold, state, sinks, now=clock(), log=log)
        except GiterError as exc:
            if once:
                raise
            # A hub being written to, or briefly unreadable: the next check tries again.
            log(f"giter-bundle watch: {exc.reason}: {exc} (checking again in {every:g} s)")
        else:
            for event in result.delivered:
                log(f"giter-bundle watch: {event['event']} {event['device']}: "
                    f"{event['reason']}")
            if once:
                return 1 if result.undelivered else 3 if result.late else 0
        sleep(every)
