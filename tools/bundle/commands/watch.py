"""``giter-bundle watch``: alert when devices stay diverged from the spec, once per change.

Checks the exchange repository (on the hub, where devices push their status) every
``--every`` seconds; a device that has not converged on the spec tip for
``--diverged-for`` or longer raises one ``diverged`` alert, and one ``resolved`` alert
when it has converged. Alerts go to ``--exec`` (a command run without a shell, the
alert as JSON on its standard input and in ``GITER_ALERT_EVENT``, ``GITER_ALERT_DEVICE``,
``GITER_ALERT_REASON``, ``GITER_ALERT_SINCE``) and/or ``--webhook`` (an HTTP POST of the
JSON). ``--state FILE`` remembers what was alerted on across restarts; with ``--once``
(for cron or a systemd timer) it is required. Exit status with ``--once``: 0 no device
late, 3 some device late (as ``status --diverged-for``).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

HELP = "alert (command or webhook) when devices stay diverged from the spec, once per change"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--diverged-for", required=True, metavar="DURATION",
                   help="how long a device may stay unconverged before an alert (30m, 2h)")
    p.add_argument("--every", default="60s", metavar="DURATION",
                   help="time between checks (default 60s)")
    p.add_argument("--exec", dest="command", metavar="'CMD ARGS'",
                   help="command to run per alert (split like a shell would; no shell runs)")
    p.add_argument("--webhook", metavar="URL", help="POST each alert as JSON to this URL")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="extra header for the webhook (e.g. an Authorization token)")
    p.add_argument("--state", type=Path, metavar="FILE",
                   help="where to remember the alerts already sent (kept across restarts)")
    p.add_argument("--once", action="store_true", help="check once and exit (cron, timers)")


def run(args: argparse.Namespace) -> int:
    import sys

    from giter_agent.core.errors import UsageError
    from giter_bundle import watch
    from giter_bundle.divergence import parse_duration

    threshold = parse_duration(args.diverged_for)
    every = parse_duration(args.every)
    if every < 1:
        raise UsageError("--every must be at least 1s", reason="UsageError")
    if args.once and args.state is None:
        raise UsageError("--once needs --state FILE, or every run would alert again",
                         reason="UsageError")
    headers = {}
    for line in args.header:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {line!r} is not 'Name: value'", reason="UsageError")
        headers[name.strip()] = value.strip()
    sinks = watch.Sinks(command=shlex.split(args.command) if args.command else (),
                        webhook=args.webhook, headers=headers)
    state = watch.AlertState(args.state)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    return watch.run(args.repo, args.branch, threshold, state, sinks, every=every,
                     once=args.once, log=log)
