"""Take the devices' status bundles from a stick's outbox into the hub, verified.

For each ``giter/outbox/<id>.bundle``:

1. ``<id>`` must be enrolled on the spec branch's tip: its key and groups come from there.
2. The bundle streams into a quarantine (``History.quarantine``: caps, pack checksum,
   prerequisites, completeness); nothing reaches the hub's object store before every
   check below has passed.
3. It must carry exactly ``refs/heads/status/<id>``.
4. Its tip must continue the hub's ``status/<id>``. Every status commit between the two
   (along first parents) is checked by ``trust.status_rule.verify_status_commit``: signed by
   the device's enrolled key, changing nothing but the status of that device's own
   resources (and its summary), and observing a spec commit that is on the branch.
5. Only then are the objects the new tip reaches promoted (nothing else the bundle
   carries is kept) and the ref moved, by compare-and-swap.

The caps are a device's default ``[limits]`` (``Exchange`` opens the history with
them) and every status document is read by the device's own strict YAML loader
(``core.yaml_policy.load_yaml``, through ``trust.status_rule.verify_status_commit``): the
hub takes in nothing a device would refuse.

A bundle older than what the hub has is "up to date", not an error: the same stick is
often imported twice. The hub stays a plain git repository; nothing here writes
anything a git server would not serve.

Called by ``giter-bundle import``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from giter_agent.config.agent_toml import NAME_RE, Limits
from giter_agent.core.durable import shown
from giter_bundle.enrolment import EnrolledDevice
from giter_bundle.exchange import Exchange, signed_by, status_ref

# A device reports when something changed; more reports than a device would take spec
# commits in one bundle (its default [limits] max_commits) is hostile.
MAX_STATUS_COMMITS = Limits().max_commits


@dataclass(frozen=True)
class ImportResult:
    """What happened to one status bundle."""

    file: str
    device: str
    verdict: str  # accepted | up-to-date | refused
    reason: str
    message: str
    tip: str | None = None
    commits: int = 0


def _refused(path: Path, device: str, reason: str, message: str) -> ImportResult:
    return ImportResult(shown(path.name), device, "refused", reason, message)


def import_bundle(exchange: Exchange, path: Path, device: EnrolledDevice,
                  on_branch: Callable[[bytes], bool]) -> ImportResult:
    """Verify and take in one device's status bundle; refusals change nothing.

    The import gate (``trust.gate``) with the status-commit ownership rule
    (``trust.status_rule.StatusPolicy``): the same gate the device's spec imports pass.
    ``on_branch(id)``: whether a spec commit is on the spec branch.
    """
    from giter_agent.trust.gate import admit
    from giter_agent.trust.status_rule import StatusPolicy

    ref = status_ref(device.id)
    old = exchange.history.ref(ref)
    policy = StatusPolicy(device.id, device.key, spec_tip_known=on_branch,
                          device_groups=device.groups, max_commits=MAX_STATUS_COMMITS,
                          restarted=lambda store, sha: not signed_by(store, sha, device.key))
    try:
        verdict = admit(exchange.history, ref, old,
                        lambda: exchange.history.quarantine(path), policy)
    except OSError as exc:
        return _refused(path, device.id, "UnreadableBundle", f"cannot read: {exc}")
    if verdict.outcome == "up-to-date":
        return ImportResult(path.name, device.id, "up-to-date", verdict.reason,
                            verdict.message, verdict.tip.decode() if verdict.tip else None)
    if verdict.outcome != "accepted" or verdict.tip is None:
        # The hub keeps one word for both: what it did not take in is refused.
        return _refused(path, device.id, verdict.reason, verdict.message)
    n, tip = verdict.commits, verdict.tip
    exchange.history.consolidate()  # one pack per bundle would make lookups linear
    return ImportResult(path.name, device.id, "accepted", "Verified",
                        f"{n} status commit{'' if n == 1 else 's'} verified, "
                        f"status/{device.id} -> {tip.decode()[:12]}", tip.decode(), n)


def import_outbox(exchange: Exchange, outbox: Path) -> list[ImportResult]:
    """Import every ``<device-id>.bundle`` in ``outbox`` (dotfiles are unfinished copies),
    as the hub repository's one writer: each accepted bundle's pack is consolidated."""
    with exchange.history.writer_lock():
        return _import_all(exchange, outbox)


def _import_all(exchange: Exchange, outbox: Path) -> list[ImportResult]:
    tip = exchange.require_tip()
    devices = exchange.devices(tip)
    on_branch = exchange.on_branch(tip)
    results = []
    for path in sorted(outbox.glob("*.bundle")):
        if path.name.startswith("."):
            continue
        device_id = path.name[:-len(".bundle")]
        if path.is_symlink() or not path.is_file():
            # A stick comes from the field: a link (out of the stick, to a device) or a
            # FIFO is never followed or read.
            results.append(_refused(path, shown(device_id), "NotARegularFile",
                                    f"{shown(path.name)} is a link or not a regular file"))
        elif not NAME_RE.fullmatch(device_id):
            results.append(_refused(path, shown(device_id), "InvalidName",
                                    f"{shown(device_id)!r} is not a device id"))
        elif device_id not in devices:
            results.append(_refused(path, device_id, "UnknownDevice",
                                    f"{device_id} is not enrolled on {exchange.branch} "
                                    "(or its enrolment is invalid: giter-bundle lint)"))
        else:
            results.append(import_bundle(exchange, path, devices[device_id], on_branch))
    return results
