"""Small unsigned inputs that used to cost a board hundreds of megabytes or minutes.

Memory: a bundle of a few kilobytes whose deltas stack 4 MiB results level on level
(each level with a pending sibling) grew dulwich's resolver by one result per level; it
must stay within a small multiple of the object cap however deep it goes (checked with
getrusage in a child process, against a bound derived from the cap). Time: one budget
per sync, shared by every bundle and every stage, driven by a fake clock here.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import packcraft
from support.git import run
from test_trust import World, keys  # noqa: F401 - keys is a fixture World needs

from giter_agent.config.agent_toml import load
from giter_agent.core.budget import Budget
from giter_agent.core.errors import BundleError
from giter_agent.history.store import Caps, History
from giter_agent.sync.agent import Agent

TESTS = Path(__file__).parent


class TickingClock:
    """A monotonic clock that moves one second each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        self.now += 1.0
        return self.now


def test_stacked_delta_results_do_not_grow_memory_per_level(tmp_path):
    cap_mib, levels = 4, 24  # dulwich alone: ~96 MiB more; bounded: about one object
    script = textwrap.dedent(f"""
        import resource, sys
        from pathlib import Path
        sys.path.insert(0, {str(TESTS)!r})
        from support import packcraft
        from giter_agent.history.store import Caps, History
        tmp = Path({str(tmp_path)!r})
        (tmp / "warm.bundle").write_bytes(packcraft.stacked(4096, 1).bundle)
        crafted = packcraft.stacked({cap_mib} << 20, {levels})
        (tmp / "big.bundle").write_bytes(crafted.bundle)
        del crafted
        history = History(tmp / "repo.git", Caps(max_object_bytes={cap_mib} << 20))
        with history.quarantine(tmp / "warm.bundle"):
            pass
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with history.quarantine(tmp / "big.bundle") as q:
            q.promote()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) * 1024)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    growth = int(proc.stdout.split()[-1])
    # The scanner inflates one object, the cache holds one, a delta makes one: 4 x cap
    # leaves room for the allocator; one result per level would be 24 x cap.
    assert growth < 4 * (cap_mib << 20), growth
    # And every object arrived intact: git's own full check of the store agrees.
    assert run("git", "--git-dir", tmp_path / "repo.git", "fsck", "--full",
               check=False).returncode == 0


def test_evicted_bases_are_rebuilt_and_every_object_is_right(tmp_path):
    crafted = packcraft.stacked(64 << 10, 10)
    bundle = tmp_path / "stacked.bundle"
    bundle.write_bytes(crafted.bundle)
    # A cap of one object forces evictions: bases are rebuilt from their chains.
    history = History(tmp_path / "repo.git", Caps(max_object_bytes=64 << 10))
    with history.quarantine(bundle) as q:
        q.promote()
    listed = run("git", "--git-dir", tmp_path / "repo.git", "ls-tree", crafted.commit)
    names = listed.stdout.decode().split()
    assert len(names) // 4 == 21
    fsck = run("git", "--git-dir", tmp_path / "repo.git", "fsck", "--full", "--strict",
               check=False)
    assert fsck.returncode == 0, fsck.stderr


def test_the_budget_stops_indexing_a_long_delta_chain(tmp_path):
    crafted = packcraft.chain(64 << 10, 400)
    bundle = tmp_path / "chain.bundle"
    bundle.write_bytes(crafted.bundle)
    clock = TickingClock()
    history = History(tmp_path / "repo.git", Caps(max_object_bytes=1 << 20))
    with pytest.raises(BundleError) as err, history.quarantine(bundle, Budget(200, clock)):
        pass
    assert err.value.reason == "TimeBudgetExceeded"
    assert 200 <= clock.reads <= 202  # it stopped at the first check past the budget
    assert not list((tmp_path / "repo.git" / "quarantine").glob("*"))


def test_signature_verification_checks_the_budget(tmp_path, keys):  # noqa: F811
    world = World(tmp_path, keys)
    for i in range(5):
        tip = world.commit(f"c{i}")
    clock = TickingClock()
    with pytest.raises(BundleError) as err:
        world.verify(None, tip, budget=Budget(3, clock))
    assert err.value.reason == "TimeBudgetExceeded"
    assert clock.reads == 1 + 4  # made, then checked before each of commits 1..4


def _agent(tmp_path: Path, publisher, budget_s: int, clock: TickingClock) -> Agent:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    config = tmp_path / "agent.toml"
    config.write_text(f'device_id = "d1"\nstate_dir = "state"\nboard = "generic-mock"\n'
                      f'allowed_signers = "{publisher.allowed_signers}"\n'
                      f'[files]\nroots = ["{root}"]\n[limits]\ntime_budget_s = {budget_s}\n')
    return Agent(load(config), monotonic=clock)


def test_one_budget_is_shared_by_every_bundle_of_a_sync(tmp_path, publisher):
    for i in range(3):
        publisher.commit(f"c{i}")
    # An older stick: its header names a commit other than the accepted tip, so it is
    # read whole before it is found to bring nothing new (a copy of the accepted tip's
    # bundle is answered from its header and costs the budget next to nothing).
    older = publisher.bundle(tmp_path / "older.bundle")
    publisher.commit("c3")
    one = publisher.bundle(tmp_path / "one.bundle")

    def reads(bundles: list[Path], budget_s: int, where: Path) -> tuple[int, list]:
        where.mkdir()
        clock = TickingClock()
        agent = _agent(where, publisher, budget_s, clock)
        try:
            report = agent.sync(bundles, "usb")
        finally:
            agent.close()
        return clock.reads, [(b.file, b.verdict, b.reason) for b in report.bundles]

    # How many clock reads one bundle costs when it is new, and when it is already held.
    first, _ = reads([one], 86400, tmp_path / "probe1")
    agent_dir = tmp_path / "probe2"
    agent_dir.mkdir()
    clock = TickingClock()
    agent = _agent(agent_dir, publisher, 86400, clock)
    agent.sync([one], "usb")
    clock.reads = 0
    agent.sync([older], "usb")
    again = clock.reads
    agent.close()

    # The new bundle and two copies of the older one: the first two fit the budget,
    # the third does not.
    stick = tmp_path / "stick"
    stick.mkdir()
    copies = []
    for name, source in (("a", one), ("b", older), ("c", older)):
        copies.append(stick / f"{name}.bundle")
        copies[-1].write_bytes(source.read_bytes())
    budget = first + again + again // 2
    _, verdicts = reads(copies, budget, tmp_path / "device")
    assert verdicts == [("a.bundle", "applied", "Verified"),
                        ("b.bundle", "up-to-date", "OlderSpec"),
                        ("c.bundle", "refused", "TimeBudgetExceeded")]
