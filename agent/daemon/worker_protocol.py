"""What the daemon and its pass worker say to each other: plain JSON, one side each.

The daemon writes one request on the worker's stdin and closes it; the worker writes
lines of JSON on a pipe the daemon gave it, each one message:

- ``{"busy": seconds}``: the pass may run this much longer than usual (a Command's
  timeout, ``Context.allow_busy``), sent as soon as it is known;
- the last line, the outcome: ``{"report": {...}}`` or ``{"error": {...}}``, with what
  the daemon keeps between passes (``settings``, ``wakeups``, ``clean``), ``plan``: the
  calls on the outputs the daemon is to make (``device.outputs``; the request carried
  what it holds), and ``holds``: the resources with a live device the worker could
  not hand over (a Sensor's sampler), which the daemon must then hold itself.

Both sides import this module; it needs nothing heavier than ``json`` so the daemon
stays small. A worker makes its records at every pass, so they are no dataclasses
(docs/decisions.md, "Records read on every start are NamedTuples"): the request is a
NamedTuple, the outcome (filled in as the pass goes) a plain class.
"""

from __future__ import annotations

import json
from typing import Any

from giter_agent.core.errors import GiterError, LockedError, WorkerError
from giter_agent.core.named_tuple import NamedTuple
from giter_agent.daemon.jobs import Job
from giter_agent.state.records import NetworkRecord
from giter_agent.status.report import SyncReport

WORKER_MODULE = "giter_agent.daemon.worker"
_REPORT_FIELDS = ("outcome", "reason", "message", "accepted", "applied", "status_commit",
                  "not_ready", "stale")


class Request(NamedTuple):
    """One pass for the worker to run, and what the daemon kept from the last one."""

    config: str  # the agent.toml path
    job: Job
    owner: int  # the daemon's pid: the state lock is held in its name
    level: int  # the log level in force
    clean: bool  # the last pass ended cleanly (no full recovery sweep needed)
    settings: dict[str, Any]  # remote overrides
    wakeups: list[tuple[str | None, float]]
    outputs: dict[str, Any]  # held, as held_to_plain gives
    output_failures: dict[str, str]  # key -> why not held

    def encode(self) -> bytes:
        job = {"kind": self.job.kind, "arg": self.job.arg, "reason": self.job.reason}
        return json.dumps({"config": self.config, "job": job, "owner": self.owner,
                           "level": self.level, "clean": self.clean,
                           "settings": self.settings, "wakeups": self.wakeups,
                           "outputs": self.outputs,
                           "output_failures": self.output_failures}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Request:
        data = json.loads(raw)
        job = data["job"]
        return cls(config=data["config"], job=Job(job["kind"], job["arg"], job["reason"]),
                   owner=int(data["owner"]), level=int(data["level"]),
                   clean=bool(data["clean"]), settings=dict(data["settings"]),
                   wakeups=[(key, float(at)) for key, at in data["wakeups"]],
                   outputs=dict(data["outputs"]),
                   output_failures=dict(data["output_failures"]))


class Outcome:
    """What a pass worker answered (its last line); the worker fills it in."""

    __slots__ = ("clean", "error", "holds", "plan", "report", "settings", "wakeups")

    def __init__(self, report: SyncReport | None = None, error: GiterError | None = None,
                 settings: dict[str, Any] | None = None,
                 wakeups: list[tuple[str | None, float]] | None = None, clean: bool = False,
                 holds: list[str] | None = None, plan: list[list[Any]] | None = None
                 ) -> None:
        self.report = report
        self.error = error
        self.settings = {} if settings is None else settings
        self.wakeups = [] if wakeups is None else wakeups
        self.clean = clean
        self.holds = [] if holds is None else holds
        self.plan = [] if plan is None else plan

    def encode(self) -> bytes:
        out: dict[str, Any] = {"settings": self.settings, "wakeups": self.wakeups,
                               "clean": self.clean, "holds": self.holds, "plan": self.plan}
        if self.report is not None:
            report = {name: getattr(self.report, name) for name in _REPORT_FIELDS}
            network = self.report.network
            report["network"] = network.to_plain() if network is not None else None
            out["report"] = report
        else:
            error = self.error or WorkerError("the pass ended without a report")
            out["error"] = {"type": type(error).__name__, "reason": str(error.reason),
                            "message": str(error)}
        return json.dumps(out, default=str).encode() + b"\n"

    @classmethod
    def decode(cls, data: dict[str, Any]) -> Outcome:
        out = cls(settings=dict(data.get("settings") or {}),
                  wakeups=[(key, float(at)) for key, at in data.get("wakeups") or ()],
                  clean=bool(data.get("clean")), holds=list(data.get("holds") or ()),
                  plan=list(data.get("plan") or ()))
        if "report" in data:
            raw = dict(data["report"])
            network = raw.pop("network", None)
            out.report = SyncReport(
                str(raw["outcome"]), str(raw["reason"]), str(raw["message"]),
                accepted=raw.get("accepted"), applied=raw.get("applied"),
                status_commit=raw.get("status_commit"), stale=raw.get("stale"),
                not_ready=list(raw.get("not_ready") or ()),
                network=NetworkRecord.from_plain(network or {}))
        else:
            error = data.get("error") or {}
            # A refusal keeps its reason; a busy lock stays a LockedError (the daemon
            # tries again); anything else is the worker's failure.
            kind = LockedError if error.get("type") == LockedError.__name__ else GiterError
            out.error = kind(str(error.get("message") or "the pass worker failed"),
                             reason=str(error.get("reason") or WorkerError.reason))
        return out


def busy_line(seconds: float) -> bytes:
    return json.dumps({"busy": seconds}).encode() + b"\n"
