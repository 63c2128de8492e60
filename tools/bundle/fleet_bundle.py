"""Choose and write the smallest spec bundle that every target device can apply.

The hub knows, per device, the spec commit it last observed: the last parent of the
tip of ``refs/heads/status/<id>`` (a status commit's parents are the previous status
commit, then the spec commit it answers). A device that observed ``S`` accepted ``S``,
so it holds ``S`` and all of its ancestors. A bundle with one prerequisite ``P`` applies
on every target whose ``S`` descends from ``P``, and the newest such ``P`` gives the
smallest bundle: the merge base of what the targets observed (on a linear branch, the
oldest of them). A target that never reported, was re-enrolled since its last report
(a wiped or replaced device: that report is signed by another key), or observed a
commit that is no longer on the branch gets a full bundle, which every device can apply.

When every target is already at the tip, the bundle is empty (its prerequisite is the
tip): git accepts it, and a device syncing it reports "up to date" and writes a fresh
status for the technician to carry back.

Before anything is written, ``verify_plan`` checks the branch by the devices' own rule
(``trust.spec_rule.verify_update``) from what each target holds: a bundle a device would
refuse is never shipped.

Called by ``giter-bundle create``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from giter_agent.config.agent_toml import Limits
from giter_agent.trust.spec_rule import Verified
from giter_bundle.enrolment import EnrolledDevice
from giter_bundle.errors import PublisherError, UsageError
from giter_bundle.exchange import Exchange, signed_by

# A device refuses more new commits than its default [limits] max_commits.
MAX_NEW_COMMITS = Limits().max_commits


@dataclass(frozen=True)
class Target:
    """One device the bundle is for, and what the hub knows it holds."""

    device: str
    observed: bytes | None  # the spec commit it last reported, when still on the branch
    note: str
    # The hub's status/<device>, when the device's enrolled key signed it: the device
    # leaves it out of the status bundle it writes back (agent.usb.read_hub_status).
    hub_status: bytes | None = None


@dataclass
class Plan:
    """What ``create`` will write: the branch tip, and at most one prerequisite."""

    tip: bytes
    prerequisite: bytes | None
    targets: list[Target] = field(default_factory=list)


def _observed(exchange: Exchange, device: EnrolledDevice, status_tip: bytes | None,
              on_branch: Callable[[bytes], bool]) -> Target:
    if status_tip is None:
        return Target(device.id, None, "never reported: needs a full bundle")
    if not signed_by(exchange.history.object_store, status_tip, device.key):
        return Target(device.id, None, "re-enrolled since its last report (a new device or "
                      "a wiped one): needs a full bundle")
    spec = exchange.commit(status_tip).parents[-1]
    if not on_branch(spec):
        return Target(device.id, None, f"observed {spec.decode()[:12]}, which is not on "
                      f"{exchange.branch} any more: needs a full bundle", status_tip)
    return Target(device.id, spec, f"observed {spec.decode()[:12]}", status_tip)


def _common_base(exchange: Exchange, observed: list[bytes]) -> bytes | None:
    """The newest commit every one of ``observed`` descends from (None: nothing shared)."""
    distinct = list(dict.fromkeys(observed))
    for candidate in distinct:
        if all(exchange.history.is_ancestor(candidate, other) for other in distinct):
            return candidate
    from dulwich.graph import find_octopus_base
    from dulwich.repo import Repo

    from giter_agent.history.objects import oid

    with Repo(str(exchange.git_dir)) as repo:
        bases = find_octopus_base(repo, [oid(sha) for sha in distinct])
    return bases[0] if bases else None


def plan_bundle(exchange: Exchange, devices: list[str] | None = None, *,
                full: bool = False) -> Plan:
    """The bundle for ``devices`` (default: every enrolled device)."""
    tip = exchange.require_tip()
    enrolled = exchange.devices(tip)
    names = sorted(enrolled) if devices is None else list(dict.fromkeys(devices))
    unknown = [d for d in names if d not in enrolled]
    if unknown:
        raise UsageError(f"not enrolled on {exchange.branch}: {', '.join(unknown)}",
                         reason="UnknownDevice")
    status = exchange.status_tips()
    on_branch = exchange.on_branch(tip)
    targets = [_observed(exchange, enrolled[d], status.get(d), on_branch) for d in names]
    plan = Plan(tip, None, targets)
    if full or not targets or any(t.observed is None for t in targets):
        return plan
    plan.prerequisite = _common_base(exchange, [t.observed for t in targets if t.observed])
    return plan


def verify_plan(exchange: Exchange, plan: Plan,
                allowed_signers: Path | None = None) -> Verified:
    """Refuse to ship what a target would refuse, by the rule a device applies.

    ``trust.spec_rule.verify_update`` runs once for each distinct commit the targets are
    known to hold (their accepted tip), and once as a first sync when a target has never
    reported (pinned set: the trust file of the branch's first commit, as ``init`` tells
    operators to install, or the tip's when it has none; genesis: that commit;
    ``allowed_signers`` instead when given). PublisherError names the first refusal; the
    last verdict is returned (the tip's ``Expires:``).
    """
    from giter_agent.core.errors import TrustError
    from giter_agent.history.walk import HeldAt, ancestors
    from giter_agent.trust.spec_rule import TrustRoot, verify_update

    def pinned(commit: bytes | None) -> TrustRoot:
        """The trust file of ``commit`` standing in for a device's pinned file (the tip's
        when ``commit`` has none: a repository adopted by ``init``)."""
        try:
            return exchange.trust_root(commit, allowed_signers)
        except UsageError:
            return exchange.trust_root(None, allowed_signers)

    verified: Verified | None = None
    store = exchange.history.object_store
    starts = list(dict.fromkeys(t.observed for t in plan.targets)) or [None]
    for start in starts:
        try:
            if start is None:
                firsts = [c for c in ancestors(store, plan.tip)
                          if not exchange.commit(c).parents]
                genesis = firsts[0] if len(firsts) == 1 else None
                root = TrustRoot(pinned(genesis).signers, (), genesis)
                verified = verify_update(store, None, plan.tip, root, branch=exchange.branch)
            else:
                held = HeldAt(store, start, plan.tip, MAX_NEW_COMMITS)
                verified = verify_update(store, start, plan.tip, pinned(start),
                                         held=held, branch=exchange.branch)
        except TrustError as exc:
            who = f"one at {start.decode()[:12]}" if start else "a new one"
            hint = (". Re-sign the commits with a key in the trust file (git rebase --exec "
                    "'git commit --amend --no-edit -S')"
                    if exc.reason in ("UnknownSigner", "UnsignedCommit") else "")
            raise PublisherError(f"not shipped: a device would refuse {exchange.branch} "
                                 f"({who}): {exc}{hint}", reason=exc.reason) from None
    assert verified is not None
    return verified


def bundle_name(branch: str) -> str:
    return branch.replace("/", "-") + ".bundle"


def write_plan(exchange: Exchange, plan: Plan, path: Path,
               progress: Callable[[int, int], None] | None = None) -> None:
    """Write the planned bundle to ``path`` (temp file, fsync, rename)."""
    exclude = [plan.prerequisite] if plan.prerequisite else []
    exchange.history.write_bundle(path, {exchange.branch_ref: plan.tip}, exclude=exclude,
                                  progress=progress, deltify_artifacts=True)


def write_hub_status(inbox: Path, targets: list[Target]) -> Path | None:
    """Tell the targets what the hub holds of their status, in ``inbox/hub-status.txt``.

    Entries for other devices (another fleet's bundle on the same stick) are kept; a
    target the hub holds nothing of loses its stale entry. None when nothing is left.
    """
    from giter_agent.core.durable import atomic_write
    from giter_agent.core.layout import HUB_STATUS
    from giter_agent.transport.hub_status import format_hub_status, read_hub_status

    acks = read_hub_status(inbox)
    for t in targets:
        if t.hub_status is None:
            acks.pop(t.device, None)
        else:
            acks[t.device] = t.hub_status.decode()
    path = inbox / HUB_STATUS
    if not acks:
        path.unlink(missing_ok=True)
        return None
    atomic_write(path, format_hub_status(acks).encode())
    return path


def superseded(exchange: Exchange, inbox: Path, keep: Path, tip: bytes) -> list[Path]:
    """Other bundles in ``inbox`` that only carry an older state of the branch.

    A device ahead of such a bundle refuses it as a rollback, and a refusal makes its
    whole sync report "refused": they must not stay on the stick.
    """
    from giter_agent.core.errors import GiterError
    from giter_agent.history.bundle import read_header
    from giter_agent.history.objects import has_object

    old = []
    for path in sorted(inbox.glob("*.bundle")):
        if path.name.startswith(".") or path.resolve() == keep.resolve():
            continue
        try:
            with path.open("rb") as fh:
                refs = read_header(fh).refs
            sha = refs.get(exchange.branch_ref)
            if (set(refs) == {exchange.branch_ref} and sha is not None
                    and has_object(exchange.history.object_store, sha)
                    and exchange.history.is_ancestor(sha, tip)):
                old.append(path)
        except (OSError, GiterError):
            continue  # not ours to judge; the device reports what it makes of it
    return old
