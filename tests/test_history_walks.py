"""The publisher's walks read what is new, not the whole history (``history.walk``).

A one-commit increment on a long spec branch: ``giter-bundle create``'s plan and its
check by the devices' rule, ``inspect`` of the bundle, and ``import`` of the device's
next status report each read a handful of commits, however long the branch is. The
test counts the commits read from the object stores, never time.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from dulwich.object_store import DiskObjectStore
from support.fleet import BEACON, Fleet, enrolled, motd

from giter_agent.trust import ssh_keyfile
from giter_bundle.exchange import Exchange
from giter_bundle.fleet_bundle import plan_bundle, verify_plan
from giter_bundle.inspection import inspect_bundle
from giter_bundle.publisher import PublisherRepo
from giter_bundle.status_import import import_outbox

LONG = 150  # spec commits before the increment: the counts below must not depend on it


@pytest.fixture
def commits_read(monkeypatch) -> Counter:
    """Commits read through any disk object store, by id."""
    seen: Counter = Counter()
    get_raw = DiskObjectStore.get_raw

    def counting(self, name):  # type: ignore[no-untyped-def]
        type_num, raw = get_raw(self, name)
        if type_num == 1:
            seen[bytes(name)] += 1
        return type_num, raw

    monkeypatch.setattr(DiskObjectStore, "get_raw", counting)
    return seen


def _grow(fleet: Fleet, count: int) -> None:
    """``count`` signed spec commits on the branch, made in process (quick)."""
    publisher = PublisherRepo(fleet.root / ".git", ssh_keyfile.load_private_key(fleet.key))
    for i in range(count):
        publisher.commit({"groups/lobby/note.yaml": BEACON.replace("beacon", f"b{i}").encode()},
                         f"step {i}")


def test_a_one_commit_increment_reads_only_new_commits(tmp_path, publisher_key,
                                                       commits_read):
    fleet = Fleet(tmp_path, publisher_key)
    stick = tmp_path / "stick"
    stick.mkdir()
    (pi_a,) = enrolled(fleet, tmp_path, "pi-a")
    fleet.write("devices/pi-a/motd.yaml", motd(pi_a, "hello\n"))
    fleet.ok("commit", "-m", "spec")
    _grow(fleet, LONG)
    fleet.ok("create", stick)
    assert pi_a.cli("sync", "--usb", stick) == 0
    assert "ACCEPTED" in fleet.ok("import", stick)
    _grow(fleet, 1)  # the increment
    bundle = tmp_path / "one.bundle"

    commits_read.clear()
    with Exchange.open(fleet.root) as exchange:
        plan = plan_bundle(exchange)
        assert plan.prerequisite is not None  # an incremental bundle: one new commit
        verify_plan(exchange, plan)
        create_reads = set(commits_read)
        # The bundle writer's own walk (dulwich's, in the history store) is not counted.
        exchange.history.write_bundle(bundle, {exchange.branch_ref: plan.tip},
                                      exclude=[plan.prerequisite])

    commits_read.clear()
    with Exchange.open(fleet.root) as exchange:
        doc = inspect_bundle(bundle, exchange)
    assert doc["ok"], doc["problems"]
    assert len(doc["commits"]) == 1
    inspect_reads = set(commits_read)

    inbox = stick / "giter" / "inbox"
    for old in inbox.glob("*.bundle"):
        old.unlink()
    Path(bundle).rename(inbox / "main.bundle")
    assert pi_a.cli("sync", "--usb", stick) == 0  # a new status report on the new spec
    commits_read.clear()
    with Exchange.open(fleet.root) as exchange:
        (result,) = import_outbox(exchange, stick / "giter" / "outbox")
    assert (result.verdict, result.commits) == ("accepted", 1), result
    import_reads = set(commits_read)

    # A few commits each: the new one, its parent, the device's status commits.
    assert len(create_reads) <= 12, len(create_reads)
    assert len(inspect_reads) <= 12, len(inspect_reads)
    assert len(import_reads) <= 12, len(import_reads)
