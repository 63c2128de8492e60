"""One import gate for the device and the hub (``giter_agent.trust.gate``).

The device takes spec bundles through it with the spec-commit rule; ``giter-bundle
import`` takes status bundles through it with the status-commit ownership rule. The
same hostile commit, offered to both, is refused by both with the same reason, naming
the same commit, and changes nothing on either side.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dulwich.objects import Commit
from support.fleet import BEACON, Fleet, enrolled, motd

from giter_agent.history.store import History
from giter_agent.history.walk import ancestors
from giter_agent.trust.gate import GateVerdict, admit
from giter_agent.trust.spec_rule import SpecPolicy
from giter_agent.trust.status_rule import StatusPolicy
from giter_bundle.exchange import Exchange, signed_by


def _unsigned_on(tmp: Path, fleet: Fleet, parent: bytes) -> tuple[bytes, Path, Path]:
    """An unsigned commit on ``parent`` (the spec tip), bundled as the spec branch and as
    pi-a's status branch: (its id, spec bundle, status bundle)."""
    scratch = tmp / "forge.git"
    shutil.copytree(fleet.root / ".git", scratch)
    with History(scratch) as history:
        store = history.object_store
        commit = Commit()
        commit.tree = store[parent].tree
        commit.parents = [parent]
        commit.author = commit.committer = b"Mallory <m@example.invalid>"
        commit.author_time = commit.commit_time = 2_000_000_000
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = b"no signature\n"
        store.add_object(commit)
        spec, status = tmp / "spec.bundle", tmp / "pi-a.bundle"
        history.write_bundle(spec, {b"refs/heads/main": commit.id}, exclude=[parent])
        history.write_bundle(status, {b"refs/heads/status/pi-a": commit.id}, exclude=[parent])
    return commit.id, spec, status


def test_the_device_and_the_hub_refuse_the_same_commit_through_one_gate(tmp_path,
                                                                       publisher_key):
    fleet = Fleet(tmp_path, publisher_key)
    stick = tmp_path / "stick"
    stick.mkdir()
    (pi_a,) = enrolled(fleet, tmp_path, "pi-a")
    fleet.write("devices/pi-a/motd.yaml", motd(pi_a, "hello\n"))
    fleet.write("groups/lobby/beacon.yaml", BEACON)
    fleet.ok("commit", "-m", "spec")
    fleet.ok("create", stick)
    assert pi_a.cli("sync", "--usb", stick) == 0
    assert "ACCEPTED" in fleet.ok("import", stick)
    spec_tip = fleet.rev("main").encode()
    hub_status = fleet.rev("status/pi-a")
    bad, spec_bundle, status_bundle = _unsigned_on(tmp_path, fleet, spec_tip)

    # The device, through its sync.
    before = pi_a.state()
    assert pi_a.cli("sync", "--bundle", spec_bundle) == 1
    after = pi_a.state()
    assert after.last_sync["outcome"] == "refused"
    assert after.last_sync["reason"] == "UnsignedCommit"
    assert (after.accepted, after.applied) == (before.accepted, before.applied)

    # The hub, through giter-bundle import.
    outbox = stick / "giter" / "outbox"
    shutil.copy(status_bundle, outbox / "pi-a.bundle")
    code, out = fleet.cli("import", stick, "--json")
    assert code == 1
    (result,) = json.loads(out)
    assert (result["verdict"], result["reason"]) == ("refused", "UnsignedCommit")
    assert bad.decode() in result["message"]
    assert fleet.rev("status/pi-a") == hub_status

    # Both rules, run through the gate itself on the same repository: one verdict type,
    # the same refusal.
    with Exchange.open(fleet.root) as exchange:
        history = exchange.history
        device = exchange.devices()["pi-a"]
        root = exchange.trust_root()
        on_line = ancestors(history.object_store, spec_tip)
        spec = SpecPolicy(root, "spec.bundle", branch="main", max_commits=100,
                          on_accepted_line=on_line.__contains__)
        status = StatusPolicy(device.id, device.key, spec_tip_known=on_line.__contains__,
                              device_groups=device.groups, max_commits=100,
                              restarted=lambda store, sha: not signed_by(store, sha,
                                                                         device.key))
        verdicts = [
            admit(history, b"refs/heads/main", spec_tip,
                  lambda: history.quarantine(spec_bundle), spec),
            admit(history, b"refs/heads/status/pi-a", hub_status.encode(),
                  lambda: history.quarantine(status_bundle), status),
        ]
    assert all(isinstance(v, GateVerdict) for v in verdicts)
    assert {(v.outcome, v.reason, v.commit) for v in verdicts} == {
        ("refused", "UnsignedCommit", bad.decode())}
    assert fleet.rev("main").encode() == spec_tip
    assert fleet.rev("status/pi-a") == hub_status
