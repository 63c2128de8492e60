"""Which devices have not converged on the current spec, and since when.

A device has *converged* when its newest imported status commit observed the spec
branch's tip and every resource it reported there is Ready (and the spec was not
stale). Anything else is *divergence*, and it started at:

- for a device that has not observed the tip (behind, on a spec that is not on the
  branch, or never reported): the publish time (committer date) of the oldest spec
  commit it has not observed, and never before the commit that enrolled it;
- for a device that observed the tip but is not Ready: its first status commit of the
  current run of not-Ready reports on the tip (the one after its last converged report),
  or, when that run reaches back past the tip, the tip's own publish time rule above.

Publish times are the publisher's clock and status times the device's own: a device
whose clock is wrong shifts only the second case. The walk back through a device's
status commits stops once it is older than the threshold asked about (the answer is
then "at least that long") or after ``MAX_STREAK`` commits, so the cost is bounded by
the interval, not by the device's history.

Used by ``giter-bundle status --diverged-for`` and ``giter-bundle watch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from giter_agent.core.times import parse_duration as parse_duration  # re-exported
from giter_agent.core.times import rfc3339, span
from giter_agent.history.objects import has_object
from giter_bundle.exchange import Exchange

MAX_STREAK = 2000  # status commits walked back per device, at most


@dataclass(frozen=True)
class Divergence:
    """One device that has not converged on the spec tip."""

    device: str
    since: int  # seconds since the epoch: when the divergence started (a lower bound if
    at_least: bool  # ... the walk stopped before finding the start)
    reason: str

    def age(self, now: float) -> int:
        return max(0, int(now - self.since))

    def as_dict(self, now: float) -> dict[str, Any]:
        return {"device": self.device, "since": rfc3339(self.since),
                "atLeast": self.at_least, "seconds": self.age(now), "reason": self.reason}


def _converged(row: dict[str, Any], tip: str) -> bool:
    return (row["statusCommit"] is not None and row["observedSpec"] == tip
            and not row["notReady"] and not row["stale"] and not row["invalid"]
            and not row["problems"])


def _why(row: dict[str, Any], tip: str) -> str:
    if row["statusCommit"] is None:
        return "never reported"
    if row["observedSpec"] != tip:
        if row["onBranch"]:
            return f"behind by {row['behind']} spec commit(s)"
        return f"observed {row['observedSpec'][:12]}, not on the branch"
    if row["stale"]:
        return f"stale: {row['stale']}"
    if row["notReady"]:
        first = row["notReady"][0]
        more = f" (+{len(row['notReady']) - 1} more)" if len(row["notReady"]) > 1 else ""
        return f"not ready {first['resource']}: {first['reason']}{more}"
    if row["invalid"]:
        return f"invalid {row['invalid'][0]['path']}: {row['invalid'][0]['reason']}"
    return "; ".join(row["problems"])


class _Branch:
    """The spec branch's commits and publish times, read once per check."""

    def __init__(self, exchange: Exchange, tip: bytes) -> None:
        self.exchange = exchange
        self.tip = tip
        self.commits = exchange.ancestors(tip)
        self._oldest_new: dict[bytes, int] = {}
        self._enrolled: dict[str, int] = {}
        self._enrolment_walked = False

    def time(self, sha: bytes) -> int:
        return int(self.exchange.commit(sha).commit_time)

    def oldest_unobserved(self, observed: bytes | None) -> int | None:
        """Publish time of the oldest branch commit ``observed`` does not contain."""
        key = observed or b""
        if key not in self._oldest_new:
            held = set()
            if observed is not None and has_object(self.exchange.history.object_store, observed):
                held = self.exchange.ancestors(observed)
            new = self.commits - held
            self._oldest_new[key] = min((self.time(c) for c in new), default=-1)
        value = self._oldest_new[key]
        return None if value < 0 else value

    def enrolled_at(self, device: str) -> int | None:
        """Publish time of the first commit of the run, back from the tip, in which
        ``device`` is enrolled (one first-parent walk serves every device)."""
        if not self._enrolment_walked:
            self._walk_enrolments()
        return self._enrolled.get(device)

    def _walk_enrolments(self) -> None:
        self._enrolment_walked = True
        pending = set(self.exchange.devices(self.tip))
        sha: bytes | None = self.tip
        child_time = self.time(self.tip)
        while sha is not None and pending:
            commit = self.exchange.commit(sha)
            present = set(self.exchange.devices(sha))
            for device in pending - present:
                self._enrolled[device] = child_time
            pending &= present
            child_time = int(commit.commit_time)
            sha = commit.parents[0] if commit.parents else None
        for device in pending:  # enrolled since the root commit
            self._enrolled[device] = child_time


def _streak_start(exchange: Exchange, branch: _Branch, row: dict[str, Any],
                  groups: tuple[str, ...], floor: float) -> tuple[int, bool]:
    """(since, at_least) for a device that observed the tip but is not Ready."""
    from giter_bundle.fleet_status import ready_condition, reported_documents

    sha = row["statusCommit"].encode()
    oldest = int(exchange.commit(sha).commit_time)
    for _ in range(MAX_STREAK):
        commit = exchange.commit(sha)
        if len(commit.parents) < 2:
            return oldest, False  # the device's first status commit
        previous = commit.parents[0]
        if not has_object(exchange.history.object_store, previous):
            return oldest, True
        before = exchange.commit(previous)
        if before.parents[-1] != branch.tip:
            # Before this run the device was on an older spec: it has not converged on
            # the tip since the tip's commits were published.
            since = branch.oldest_unobserved(before.parents[-1])
            return (oldest, False) if since is None else (min(oldest, since), False)
        documents, _problems = reported_documents(exchange, before.tree, row["device"], groups)
        if all((ready_condition(status) or {}).get("status") == "True"
               for _path, _key, status in documents):
            return oldest, False  # ``before`` was converged: the run starts after it
        oldest = int(before.commit_time)
        if oldest < floor:
            return oldest, True
        sha = previous
    return oldest, True


def diverged(exchange: Exchange, doc: dict[str, Any], *, now: float,
             threshold: int) -> list[Divergence]:
    """Every device of ``doc`` (``fleet_status``) that has not converged on the tip, with
    when its divergence started; walks no further back than ``threshold`` needs."""
    tip = doc["tip"]
    branch = _Branch(exchange, tip.encode())
    floor = now - threshold
    out: list[Divergence] = []
    for row in doc["devices"]:
        if not row["enrolled"] or _converged(row, tip):
            continue
        at_least = False
        if row["observedSpec"] == tip:
            since, at_least = _streak_start(exchange, branch, row, tuple(row["groups"]), floor)
        else:
            observed = row["observedSpec"].encode() if row["observedSpec"] else None
            since = branch.oldest_unobserved(observed) or branch.time(branch.tip)
            enrolled = branch.enrolled_at(row["device"])
            if enrolled is not None:
                since = max(since, enrolled)
        out.append(Divergence(row["device"], since, at_least, _why(row, tip)))
    return out


def overdue(found: list[Divergence], *, now: float, threshold: int) -> list[Divergence]:
    """The divergences that have lasted ``threshold`` seconds or more."""
    return [d for d in found if d.age(now) >= threshold]


def render(found: list[Divergence], *, now: float, threshold: int) -> str:
    """The lines ``status --diverged-for`` adds under the table."""
    if not found:
        return f"no device diverged for {span(threshold)} or more\n"
    lines = [f"DIVERGED for {span(threshold)} or more: {len(found)} device(s)"]
    for d in found:
        age = ("at least " if d.at_least else "") + span(d.age(now))
        lines.append(f"  {d.device}  {age}  {d.reason}")
    return "\n".join(lines) + "\n"
