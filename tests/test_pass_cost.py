"""A pass costs what changed, not what exists: counted work, never time.

A device with many File resources and one sensor, synced from a real-git spec; the
daemon's timer pass (the sensor's wakeup) and a full pass that change nothing must
parse no YAML, serialise no status document, write no object and leave the state file
and the status ref alone. A wakeup pass visits only the resources that are due and
those depending on them; a full pass still looks at every one (drift).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from support.kinds import Clock, Rig, doc, make_ctx, specset

from giter_agent.kinds import load_kinds
from giter_agent.reconcile.engine import reconcile
from giter_agent.spec import resources as spec_resources
from giter_agent.state.records import ResourceRecord
from giter_agent.status.documents import StatusDocuments, status_files

pytestmark = pytest.mark.unit

FILES = 40


def spec(rig: Rig, *, depends: bool = False) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for i in range(FILES):
        body = {"path": str(rig.root / f"f{i:02d}"), "content": f"{i}\n", "mode": "0644"}
        if depends and i == 0:
            body["dependsOn"] = ["cpu"]
        out[f"f{i:02d}.yaml"] = doc("File", f"f{i:02d}", body)
    out["cpu.yaml"] = doc("Sensor", "cpu", {"source": "cpu-temperature", "interval": 10,
                                            "deadband": 1})
    return out


class Counted:
    """Counts YAML parses (the one spec reader) and File handler calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, agent: object) -> None:
        self.parses = 0
        self.applied: list[str] = []
        parse = spec_resources.load_yaml

        def counted(data: bytes) -> object:
            self.parses += 1
            return parse(data)

        monkeypatch.setattr(spec_resources, "load_yaml", counted)
        file_kind = agent.kinds["File"]  # type: ignore[attr-defined]
        apply = file_kind.apply

        def applied(key: str, spec: dict, ctx: object) -> object:
            self.applied.append(key)
            return apply(key, spec, ctx)

        monkeypatch.setattr(file_kind, "apply", applied)


def objects(rig: Rig) -> dict[str, int]:
    base = rig.state_dir / "repo.git" / "objects"
    return {str(p): p.stat().st_mtime_ns for p in base.rglob("*") if p.is_file()}


def device(tmp_path, publisher, *, depends: bool = False):
    rig = Rig(tmp_path, publisher)
    zone = tmp_path / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("48000\n")
    rig.publish(spec(rig, depends=depends))
    clock = Clock()
    agent = rig.agent(clock=clock, factory=MockFactory())
    agent.ctx.sysfs = tmp_path / "sys"
    report = agent.sync([rig.bundle()], source="test")
    assert report.exit_code == 0, (report.outcome, report.not_ready)
    return rig, agent, clock, zone / "temp"


def settle(agent, clock: Clock) -> None:
    """The next pass the sensor asks for, as the daemon runs it."""
    wake = agent.next_wakeup()
    assert wake is not None
    clock.now = max(clock.now, wake)


@pytest.mark.parametrize("due_only", [True, False], ids=["wakeup-pass", "full-pass"])
def test_a_pass_that_changes_nothing_parses_serialises_and_writes_nothing(
        tmp_path, publisher, monkeypatch, due_only):
    rig, agent, clock, _ = device(tmp_path, publisher)
    try:
        settle(agent, clock)
        agent.reconcile_pass()  # the first timer pass in this process
        state_file = rig.state_dir / "state.msgpack"
        before = (objects(rig), os.stat(state_file).st_ino, rig.state().status_tip)
        count = Counted(monkeypatch, agent)
        dumped = agent.applier.documents.dumped
        store = agent.state_store
        unpacked, packed = store.unpacked, store.packed
        for _ in range(3):
            settle(agent, clock)
            report = agent.reconcile_pass(due_only=due_only)
            assert report.outcome == "up-to-date" and report.not_ready == []
        assert count.parses == 0  # the spec was parsed once, for its commit
        assert agent.applier.documents.dumped == dumped  # no status document re-serialised
        # The state file is neither read back nor packed: the store remembers it.
        assert (store.unpacked, store.packed) == (unpacked, packed)
        # No object written (not even an existing one again), no state file replaced, no
        # status commit.
        assert (objects(rig), os.stat(state_file).st_ino, rig.state().status_tip) == before
        # A wakeup pass visits the sensor alone; a full pass still checks every file.
        assert len(count.applied) == (0 if due_only else 3 * FILES)
    finally:
        agent.close()


def test_a_wakeup_pass_leaves_drift_to_the_next_full_pass(tmp_path, publisher, monkeypatch):
    rig, agent, clock, _ = device(tmp_path, publisher)
    try:
        (rig.root / "f03").write_text("changed by hand\n")
        settle(agent, clock)
        agent.reconcile_pass(due_only=True)
        assert (rig.root / "f03").read_text() == "changed by hand\n"
        agent.reconcile_pass()  # a full pass (a sync, another process's change)
        assert (rig.root / "f03").read_text() == "3\n"
        assert rig.state().resources["File/f03"].status["drift"]["corrections"] == 1
    finally:
        agent.close()


def test_a_wakeup_pass_visits_what_depends_on_a_due_resource(tmp_path, publisher,
                                                            monkeypatch):
    rig, agent, clock, temp = device(tmp_path, publisher, depends=True)
    try:
        count = Counted(monkeypatch, agent)
        settle(agent, clock)
        temp.write_text("60000\n")  # past the deadband: the sensor's status changes
        tip = rig.state().status_tip
        dumped = agent.applier.documents.dumped
        agent.reconcile_pass(due_only=True)
        assert count.applied == ["File/f00"]  # it depends on the sensor; the rest wait
        assert rig.state().status_tip != tip  # the sensor's new value is reported
        # Only what changed is serialised again: the sensor's document (the summary and
        # the files' documents are as they were).
        assert agent.applier.documents.dumped == dumped + 1
        assert "60" in rig.show(f"devices/{rig.id}/cpu.yaml")
    finally:
        agent.close()


def test_a_new_spec_from_another_process_is_not_parsed_again(tmp_path, publisher,
                                                              monkeypatch):
    """The process that took the new commit parsed it and kept the result beside the
    state (``sync.spec_cache``): the daemon's next passes read that, and parse nothing."""
    rig, agent, clock, _ = device(tmp_path, publisher)
    try:
        rig.publish({"f05.yaml": None})
        other = rig.agent(clock=clock, factory=MockFactory())  # a manual sync, say
        other.ctx.sysfs = agent.ctx.sysfs
        assert other.sync([rig.bundle()], source="test").exit_code == 0
        other.close()
        count = Counted(monkeypatch, agent)
        for _ in range(2):
            settle(agent, clock)
            agent.reconcile_pass(due_only=True)
        assert count.parses == 0
        assert agent.applier.spec_cache.loaded == 1  # once for the new commit
        assert count.applied == []  # the other process's pass was over this very spec
        assert "File/f05" not in rig.state().resources
    finally:
        agent.close()


def test_a_wakeup_pass_over_records_of_another_spec_looks_at_everything(tmp_path):
    ctx = make_ctx(tmp_path, MockFactory())
    kinds = load_kinds()
    root = tmp_path / "root"
    files = specset(*(doc("File", f"f{i}", {"path": str(root / f"f{i}"), "content": "x\n"})
                      for i in range(3)))
    first = reconcile(files, ctx, kinds, {}, "a" * 40)
    assert not first.not_ready
    (root / "f1").write_text("drift\n")
    same = reconcile(files, ctx, kinds, first.records, "a" * 40, only=set())
    assert (root / "f1").read_text() == "drift\n" and same.records == first.records
    reconcile(files, ctx, kinds, first.records, "b" * 40, only=set())
    assert (root / "f1").read_text() == "x\n"


def test_status_documents_are_rendered_from_what_they_hold_now():
    record = ResourceRecord(kind="File", name="a", path="devices/d/a.yaml", status={"n": 1},
                            document={"apiVersion": "giter.dev/v1alpha1", "kind": "File",
                                      "metadata": {"name": "a"}, "spec": {"x": [1]}})
    records = {"File/a": record}
    documents = StatusDocuments()
    first = documents.files("d", records, {"s": 1})
    assert first == status_files("d", records, {"s": 1})
    assert documents.files("d", records, {"s": 1}) == first and documents.dumped == 2
    # An equal record made anew (what a full pass makes) is compared, not serialised.
    records = {"File/a": record.with_status({"n": 1})}
    assert documents.files("d", records, {"s": 1}) == first and documents.dumped == 2
    # A new record whose nested contents differ is noticed: the memory holds copies, so
    # a document shared with the last record and changed since cannot look current.
    assert record.document is not None
    record.document["spec"]["x"].append(2)
    records = {"File/a": record.with_status({"n": 2})}
    again = documents.files("d", records, {"s": 1})
    assert again == status_files("d", records, {"s": 1}) and documents.dumped == 3
    assert b"n: 2" in again["devices/d/a.yaml"] and b"- 2" in again["devices/d/a.yaml"]


def settled(tmp_path, publisher) -> tuple[Rig, Path]:
    """A device that synced one File's bundle twice (a one-shot's status settles on the
    second), and that bundle: the next sync of it is a steady one."""
    rig = Rig(tmp_path, publisher)
    rig.publish({"f00.yaml": spec(rig)["f00.yaml"]})
    bundle = rig.bundle()
    assert rig.cli("sync", "--bundle", bundle) == 0
    assert rig.cli("sync", "--bundle", bundle) == 0
    return rig, bundle


def one_commit_ahead(tmp_path, publisher) -> tuple[Rig, str]:
    """A device that synced one File, and the id of a newer commit it has not seen."""
    rig = Rig(tmp_path, publisher)
    rig.publish({"f00.yaml": spec(rig)["f00.yaml"]})
    assert rig.cli("sync", "--bundle", rig.bundle()) == 0
    return rig, rig.publish({"f01.yaml": spec(rig)["f01.yaml"]})


def test_a_steady_sync_writes_only_its_record(tmp_path, publisher):
    """`giter-agent sync` of a bundle already applied, in a process of its own: no
    status commit, no object written again (already-stored ones included), the state
    file replaced at most once (the sync's record), nothing else under the state dir."""
    rig, bundle = settled(tmp_path, publisher)

    def files() -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns)
                for p in rig.state_dir.rglob("*") if p.is_file() and p.name != "lock"}

    before, tip = files(), rig.state().status_tip
    assert rig.cli("sync", "--bundle", bundle) == 0
    after = files()
    assert rig.state().status_tip == tip
    # The state file holds the sync's time (whole seconds): rewritten, or the same.
    assert {k for k in after if after[k] != before.get(k)} <= {
        str(rig.state_dir / "state.msgpack")}


def test_a_stick_already_taken_is_answered_from_its_header(tmp_path, publisher,
                                                           monkeypatch):
    """The bundle the device accepted, synced again: its header names the accepted tip,
    so no quarantine is opened (nothing read past the header, nothing written or
    fsynced), no trust file is loaded and no pack merge is tried; a bundle with a new
    tip goes the whole way."""
    from giter_agent.history.store import History

    rig = Rig(tmp_path, publisher)
    rig.publish({"f00.yaml": spec(rig)["f00.yaml"]})
    agent = rig.agent(clock=Clock(), factory=MockFactory())
    try:
        assert agent.sync([rig.bundle()], source="test").exit_code == 0
        opened: list[str] = []
        quarantine = History.quarantine
        monkeypatch.setattr(History, "quarantine", lambda self, path, budget=None: (
            opened.append(str(path)), quarantine(self, path, budget))[1])
        roots: list[int] = []
        trust_root = agent._trust_root
        monkeypatch.setattr(agent, "_trust_root", lambda: (roots.append(1), trust_root())[1])

        merges: list[int] = []
        consolidate = History.consolidate
        monkeypatch.setattr(History, "consolidate",
                            lambda self: (merges.append(1), consolidate(self))[1])
        report = agent.sync([rig.bundle()], source="test")
        assert [(v.verdict, v.reason) for v in report.bundles] == [("up-to-date", "UpToDate")]
        assert (opened, roots, merges) == ([], [], [])  # nothing new: no packs to merge

        rig.publish({"f01.yaml": spec(rig)["f01.yaml"]})
        report = agent.sync([rig.bundle()], source="test")
        assert [v.verdict for v in report.bundles] == ["applied"]
        assert len(opened) == 1 and roots == [1] and merges == [1]
    finally:
        agent.close()


def test_new_commits_are_walked_once_for_completeness_and_promotion(tmp_path, publisher,
                                                                   monkeypatch):
    """The completeness check walks the bundle's new commits, trees and blobs; promoting
    the same tip reuses that walk (the quarantine's objects cannot have changed) instead
    of reading every new object again. A promotion of other tips walks its own."""
    from giter_agent.history.quarantine import Gate
    from giter_agent.history.store import History

    rig = Rig(tmp_path, publisher)
    rig.publish({"f00.yaml": spec(rig)["f00.yaml"]})
    agent = rig.agent(clock=Clock(), factory=MockFactory())
    try:
        assert agent.sync([rig.bundle()], source="test").exit_code == 0
        for i in range(1, 4):
            rig.publish({f"f{i:02d}.yaml": spec(rig)[f"f{i:02d}.yaml"]})
        walks: list[list[bytes]] = []
        new_objects = Gate._new_objects
        monkeypatch.setattr(Gate, "_new_objects", lambda self, store, tips, deadline=None: (
            walks.append(list(tips)), new_objects(self, store, tips, deadline))[1])
        report = agent.sync([rig.bundle()], source="test")
        assert [v.verdict for v in report.bundles] == ["applied"]
        assert walks == [[rig.state().accepted.encode()]]
    finally:
        agent.close()
    # Promoting fewer tips than were checked walks again: only what they need moves.
    walks.clear()
    with History(tmp_path / "other.git") as history:
        with history.quarantine(rig.bundle()) as q:
            assert q.checked is not None and len(walks) == 1
            q.promote([])
        assert len(walks) == 2
        assert not history.object_store.packs or all(len(p) == 0
                                                     for p in history.object_store.packs)


def test_the_completeness_walk_reads_each_pack_index_once_and_lists_no_folder_per_object(
        tmp_path, publisher, monkeypatch):
    """The walk asks of every object whether the device holds it: through dulwich's
    store, each new object (a miss) listed the pack folder again and tried a loose
    file; the quarantine's alternate, named by path, opened and read every pack index
    of the store a second time. Now the walk probes the indexes it holds (the main
    store's own, already read), lists the store's pack folder once, and no index file
    is read twice in a sync (the bundle's pack is read in quarantine and again once
    promoted: another path). The trust check that follows asks again of each new
    commit whether the device held it: the walk's answer, no lookup at all."""
    import dulwich.pack

    from giter_agent.history.quarantine import Gate
    from giter_agent.trust.spec_policy import SpecPolicy

    rig = Rig(tmp_path, publisher)
    rig.publish({"f00.yaml": spec(rig)["f00.yaml"]})
    agent = rig.agent(clock=Clock(), factory=MockFactory())
    pack_dir = str(rig.state_dir / "repo.git/objects/pack")
    try:
        assert agent.sync([rig.bundle()], source="test").exit_code == 0
        for i in range(1, 6):
            rig.publish({f"f{i:02d}.yaml": spec(rig)[f"f{i:02d}.yaml"]})
        listed: list[str] = []
        indexes: list[str] = []
        in_walk = [False]
        listdir, load = os.listdir, dulwich.pack.load_pack_index

        def counted_listdir(path="."):
            if in_walk[0]:
                listed.append(str(path))
            return listdir(path)

        def counted_load(path, *args, **kwargs):
            indexes.append(str(path))
            return load(path, *args, **kwargs)

        new_objects, verify = Gate._new_objects, SpecPolicy.verify

        def walk(self, store, tips, deadline=None):
            in_walk[0] = True
            try:
                return new_objects(self, store, tips, deadline)
            finally:
                in_walk[0] = False

        def verified(self, q, ref, old, tip):
            listed.append("verify")
            in_walk[0] = True
            try:
                return verify(self, q, ref, old, tip)
            finally:
                in_walk[0] = False

        monkeypatch.setattr(os, "listdir", counted_listdir)
        monkeypatch.setattr(dulwich.pack, "load_pack_index", counted_load)
        monkeypatch.setattr(Gate, "_new_objects", walk)
        monkeypatch.setattr(SpecPolicy, "verify", verified)
        report = agent.sync([rig.bundle()], source="test")
        assert [v.verdict for v in report.bundles] == ["applied"]
    finally:
        agent.close()
    assert "verify" in listed  # the trust check ran, between the walk and promote()
    # 5 commits, 20-odd new objects: once as the walk begins, once as the trust check's
    # reader does (it reads the packs as they are then).
    assert listed.count(pack_dir) <= 2, listed
    assert indexes and len(indexes) == len(set(indexes)), indexes


# What a `giter-agent sync` of a stick must not load: the plug-in entry-point scan
# (importlib.metadata, email), git's repository plumbing it does not use, the network
# transport, importlib.resources, secrets. A stick the device already took loads no
# verifier, no trust file and no cryptography either.
# Nor the other subcommands (only the parser of the one named is built), the hub
# exchange, the stick's folders or the status bundle's writers (a --bundle sync without
# --outbox writes no bundle).
NEVER_ON_A_STICK_SYNC = ("importlib.metadata", "email", "dulwich.repo", "dulwich.index",
                         "importlib.resources", "secrets", "giter_agent.transport.network",
                         "ssl", "socket", "http", "giter_agent.sync.hub",
                         "giter_agent.sync.export", "giter_agent.transport.usb",
                         "giter_agent.history.bundle_writer",
                         "giter_agent.history.chain_export",
                         *(f"giter_agent.cli.commands.{name}" for name in (
                             "run", "status", "plan", "key", "doctor", "serve_serial",
                             "demo")))
# A stick with new commits: the device key is read and its public half encoded without
# cryptography's serialization package (every key format and cipher), a history signed
# with ed25519 loads neither ECDSA nor RSA (nor their padding), shell quoting is for the
# messages of a refusal only, and a tree without rollouts/ loads no rollout parser. The
# quarantine and the packs are made and removed by core.durable's scratch helpers, without
# tempfile, random and shutil (with bz2 and lzma).
NOT_ON_A_NEW_COMMITS_SYNC = (*NEVER_ON_A_STICK_SYNC, "tempfile", "random", "shutil",
                             "cryptography.hazmat.primitives.serialization",
                             *(f"cryptography.hazmat.primitives.asymmetric.{name}"
                               for name in ("ec", "rsa", "padding")),
                             "shlex", "giter_agent.spec.rollouts")
# A stick already taken writes no pack, opens no quarantine (its header answers: the
# import gate's pack reader is not loaded) and runs no program: neither tempfile nor
# subprocess is needed (nor the guard's signal set-up of the boot loader). A text File
# decodes no base64, and resources that name no dependsOn need no heap to be ordered.
# The pass's own digests (spec fingerprints, a File's content, the status inputs) use
# CPython's SHA-256 (core.digest): OpenSSL's hashlib is for packs and signatures. A
# sync that logs nothing loads no logging (core.log): only dulwich brings it in.
NOT_ON_THE_STEADY_PATH = (*NOT_ON_A_NEW_COMMITS_SYNC, "cryptography", "base64", "heapq",
                          "hashlib", "_hashlib", "logging",
                          "giter_agent.trust.spec_rule", "giter_agent.trust.sshsig",
                          "giter_agent.trust.trust_files", "tempfile", "subprocess",
                          "signal", "giter_agent.history.quarantine",
                          "giter_agent.history.pack_index")
# Nor any of dulwich: the refs agree with the state and are read as plain loose files,
# and the applied commit's tree, date and Giter-Urgent: trailer come with its parsed
# spec (sync.spec_cache); nor the agent environments' wheels and release switch
# (zipfile, shutil), the artifacts of a tree no kind reads, or the object reader.
NO_OBJECT_STORE_WHEN_STEADY = ("dulwich", "zipfile", "shutil", "giter_agent.kinds.wheels",
                               "giter_agent.kinds.release_switch",
                               "giter_agent.history.artifacts",
                               "giter_agent.history.objects", "giter_agent.history.refs",
                               "giter_agent.history.packs", "giter_agent.trust.trailers")


def sync_process_says(rig: Rig, bundle, report: str, before: str = "",
                      source: tuple[str, ...] | None = None) -> Any:
    """The value of the expression ``report`` at the end of a fresh `giter-agent sync
    --bundle` process (or `sync` with the options ``source``), which ran the statements
    ``before`` first."""
    script = (f"import sys\n{before}from giter_agent.cli.main import main\n"
              f"code = main(sys.argv[1:])\nprint('REPORT', repr({report}))\nsys.exit(code)\n")
    options = source if source is not None else ("--bundle", str(bundle))
    proc = subprocess.run([sys.executable, "-c", script, "-c", str(rig.config), "sync",
                           *options], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return ast.literal_eval(proc.stdout.split("REPORT ", 1)[1].strip())


def loaded_by_sync(rig: Rig, bundle) -> list[str]:
    """The modules a fresh `giter-agent sync --bundle` process had loaded at its end."""
    loaded: list[str] = sync_process_says(rig, bundle, "sorted(sys.modules)")
    return loaded


def unwanted(loaded: list[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded
                  if any(m == bad or m.startswith(bad + ".") for bad in banned))


def test_a_steady_sync_process_loads_only_what_it_uses(tmp_path, publisher):
    rig = Rig(tmp_path, publisher)
    rig.publish({"f00.yaml": spec(rig)["f00.yaml"]})
    bundle = rig.bundle()
    assert rig.cli("sync", "--bundle", bundle) == 0
    assert unwanted(loaded_by_sync(rig, bundle), NOT_ON_THE_STEADY_PATH) == []


def test_a_steady_sync_process_opens_no_object_store(tmp_path, publisher):
    rig, bundle = settled(tmp_path, publisher)
    assert unwanted(loaded_by_sync(rig, bundle), NO_OBJECT_STORE_WHEN_STEADY) == []


def test_a_spec_cache_without_the_commit_facts_gains_them_once(tmp_path, publisher):
    """A cache file written without the commit's facts (the spec alone) is still used
    for the spec; the commit is read once, its facts added, and the next process reads
    no object."""
    import msgpack

    rig = Rig(tmp_path, publisher)
    tip = rig.publish({"f00.yaml": spec(rig)["f00.yaml"]},
                      message="one file\n\nGiter-Urgent: a fix that cannot wait\n")
    bundle = rig.bundle()
    assert rig.cli("sync", "--bundle", bundle) == 0
    cache = rig.state_dir / "spec-cache.msgpack"
    raw = msgpack.unpackb(cache.read_bytes(), raw=False, strict_map_key=False)
    when, urgent = raw["facts"]
    shown = subprocess.run(["git", "-C", str(publisher.root), "show", "-s",
                            "--format=%ct", tip], check=True, capture_output=True,
                           text=True).stdout.strip()
    assert [str(when), urgent] == [shown, "a fix that cannot wait"]
    raw["facts"] = None
    cache.write_bytes(msgpack.packb(raw, use_bin_type=True))
    loaded = loaded_by_sync(rig, bundle)
    assert "giter_agent.history.objects" in loaded  # read the commit once more
    assert "yaml" not in loaded  # the spec itself came from the cache
    again = msgpack.unpackb(cache.read_bytes(), raw=False, strict_map_key=False)
    assert again["facts"] == [when, urgent]
    assert unwanted(loaded_by_sync(rig, bundle), NO_OBJECT_STORE_WHEN_STEADY) == []


def test_a_sync_of_new_commits_loads_only_what_it_uses(tmp_path, publisher):
    rig, tip = one_commit_ahead(tmp_path, publisher)
    loaded = loaded_by_sync(rig, rig.bundle())
    assert rig.state().accepted == tip  # verified and taken in: the path was the real one
    assert "giter_agent.trust.spec_rule" in loaded
    assert "giter_agent.trust.devicekey" in loaded  # the status commit was signed
    assert unwanted(loaded, NOT_ON_A_NEW_COMMITS_SYNC) == []


# Creating a dataclass costs Python 3.11 a compile of each generated method (a frozen one
# three more): 0.25-1.3 ms per class here, ten times that on a Pi Zero 2 W, paid by every
# one-shot sync and every pass worker at start-up; importing `dataclasses` itself brings
# `inspect` (with ast, dis, tokenize, linecache), about 4.5 ms more. No module on either
# sync path imports it: immutable records are NamedTuples, mutable ones plain classes with
# __slots__ (docs/decisions.md, "Records read on every start are NamedTuples").


# Statements that make the process count the dataclasses it creates (in ``made``), and
# create one, ``Probe``, first: the count really counts.
COUNT_DATACLASSES = ("import dataclasses\nmade = []\nprocess = dataclasses._process_class\n"
                     "def counted(cls, *args):\n"
                     "    made.append(f'{cls.__module__}.{cls.__qualname__}')\n"
                     "    return process(cls, *args)\n"
                     "dataclasses._process_class = counted\n"
                     "@dataclasses.dataclass\nclass Probe:\n    pass\n")


def dataclasses_made_by_sync(rig: Rig, bundle, source: tuple[str, ...] | None = None
                             ) -> tuple[list[str], list[str]]:
    """The dataclasses a fresh `giter-agent sync --bundle` (or `sync` with the options
    ``source``) process created, by name, and the agent's modules it had loaded at its
    end."""
    made, loaded = sync_process_says(
        rig, bundle, "(made, sorted(m for m in sys.modules if m.startswith('giter_agent.')))",
        before=COUNT_DATACLASSES, source=source)
    # The probe made before the sync started shows that the count really counts.
    assert made[:1] == ["__main__.Probe"], made
    return made[1:], loaded


def ours(made: list[str]) -> list[str]:
    return [name for name in made if name.startswith("giter_agent.")]


def imports_dataclasses_when_loaded(module: str) -> bool:
    """Does ``module``'s source import ``dataclasses`` as it is loaded (at its top level
    or in a class body; not inside a function, nor under ``if TYPE_CHECKING``)?"""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    tree = ast.parse(Path(spec.origin).read_text(), spec.origin)

    def found(nodes: list[ast.stmt]) -> bool:
        for node in nodes:
            if isinstance(node, ast.Import) and any(
                    a.name.split(".")[0] == "dataclasses" for a in node.names):
                return True
            if isinstance(node, ast.ImportFrom) and node.module == "dataclasses":
                return True
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                if found(node.orelse):
                    return True
                continue
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            inner = [child for child in ast.iter_child_nodes(node)
                     if isinstance(child, ast.stmt)]
            if found(inner):
                return True
        return False

    return found(tree.body)


def test_a_steady_sync_process_creates_no_dataclass(tmp_path, publisher):
    rig, bundle = settled(tmp_path, publisher)
    made, loaded = dataclasses_made_by_sync(rig, bundle)
    assert made == []
    assert "giter_agent.kinds.base" in loaded  # the pass really ran
    # Nor imports `dataclasses` (with inspect, ast, dis, tokenize...) at all.
    assert "dataclasses" not in loaded_by_sync(rig, bundle)


def test_a_sync_of_new_commits_creates_none_of_our_dataclasses(tmp_path, publisher):
    rig, tip = one_commit_ahead(tmp_path, publisher)
    made, loaded = dataclasses_made_by_sync(rig, rig.bundle())
    assert rig.state().accepted == tip  # verified and taken in: the path was the real one
    assert ours(made) == [], made  # dulwich's own (dulwich.file.SharedPerm) may stay
    # dulwich loads `dataclasses` on this path anyway; none of the agent's modules it
    # loaded may need it (a module-level import alone costs its import).
    assert "giter_agent.trust.spec_rule" in loaded
    assert [m for m in loaded if imports_dataclasses_when_loaded(m)] == []


def test_a_stick_sync_of_new_commits_creates_none_of_our_dataclasses(tmp_path, publisher):
    """`giter-agent sync --usb` of a stick whose outbox holds the device's last status:
    the new commits are taken in and a status bundle is written on the stick
    (``history.chain_export``), the health word for the receipt (``state.health``)."""
    rig = Rig(tmp_path, publisher)
    stick = tmp_path / "stick"
    inbox = stick / "giter" / "inbox"
    inbox.mkdir(parents=True)
    rig.publish({"f00.yaml": spec(rig)["f00.yaml"]})
    rig.bundle().rename(inbox / "fleet.bundle")
    assert rig.cli("sync", "--usb", stick) == 0
    outbox = stick / "giter" / "outbox"
    last = (outbox / f"{rig.id}.bundle").read_bytes()
    tip = rig.publish({"f01.yaml": spec(rig)["f01.yaml"]})
    rig.bundle().rename(inbox / "fleet.bundle")
    made, loaded = dataclasses_made_by_sync(rig, None, source=("--usb", str(stick)))
    assert rig.state().accepted == tip  # verified and taken in
    assert (outbox / f"{rig.id}.bundle").read_bytes() != last  # the new status written
    assert "giter_agent.history.chain_export" in loaded
    assert "giter_agent.state.health" in loaded
    assert ours(made) == [], made
    assert [m for m in loaded if imports_dataclasses_when_loaded(m)] == []


def test_a_sync_of_commands_and_a_checked_release_creates_none_of_our_dataclasses(
        tmp_path, publisher):
    """A spec with a Command and a Release whose health check runs a command: the
    command's run, the check's result and the tree's artifacts are read on the way."""
    rig = Rig(tmp_path, publisher,
              extra_config='[commands]\nallowed = { ok = ["/bin/true"] }\n')
    app = rig.root / "app"
    (publisher.root / "artifacts/app").mkdir(parents=True)
    (publisher.root / "artifacts/app/run.sh").write_text("v1\n")
    rig.publish({"hello.yaml": doc("Command", "hello", {"command": "ok"}),
                 "app.yaml": doc("Release", "app", {"source": "artifacts/app",
                                                    "root": str(app),
                                                    "check": {"command": "ok"}})})
    made, loaded = dataclasses_made_by_sync(rig, rig.bundle())
    records = rig.state().resources
    assert records["Command/hello"].ready and records["Release/app"].ready
    assert (app / "current/run.sh").read_text() == "v1\n"
    assert {"giter_agent.kinds.command", "giter_agent.kinds.health_check",
            "giter_agent.history.artifacts"} <= set(loaded)
    assert ours(made) == [], made
    assert [m for m in loaded if imports_dataclasses_when_loaded(m)] == []


def worker_probe(tmp_path: Path, count: bool) -> tuple[Path, Path]:
    """An interpreter for ``WorkerPasses`` (``python=``) that runs the pass worker as
    ``python -m`` does, then appends to the first file returned the dataclasses it
    created (with ``count``; None without) and the modules it had loaded; the
    worker's stderr goes to the second file."""
    name = "count" if count else "plain"
    report, err = tmp_path / f"worker-{name}.txt", tmp_path / f"worker-{name}.err"
    probe = tmp_path / f"worker-{name}.py"
    probe.write_text(
        "import sys\n"
        f"{COUNT_DATACLASSES if count else 'made = None'}\n"
        "import runpy\n"
        "module, sys.argv = sys.argv[2], [sys.argv[2], *sys.argv[3:]]\n"
        "try:\n"
        "    runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
        "finally:\n"
        f"    with open({str(report)!r}, 'a') as out:\n"
        "        out.write(repr((made, sorted(sys.modules))) + '\\n')\n")
    python = tmp_path / f"python-{name}"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} {probe} "$@" 2>>{err}\n')
    python.chmod(0o755)
    return python, report


def worker_passes(rig: Rig, python: Path) -> Any:
    from giter_agent.config.agent_toml import load
    from giter_agent.daemon.worker_passes import WorkerPasses
    from giter_agent.device.board import load_board

    config = load(rig.config)
    return WorkerPasses(config, rig.config, board=load_board(config.board),
                        pin_factory=MockFactory, python=str(python))


def worker_reports(report: Path) -> list[tuple[list[str] | None, list[str]]]:
    return [ast.literal_eval(line) for line in report.read_text().splitlines()]


def test_a_worker_pass_that_changes_nothing_creates_no_dataclass_and_loads_no_logging(
        tmp_path, publisher):
    """The daemon's pass worker, as `giter-agent run` starts it for a timer pass, on a
    device whose last sync settled: no record made as a dataclass, neither `dataclasses`
    nor `logging` loaded (its log handler is installed only if a line is emitted), nor
    the triggers the daemon waits with. A pass that corrects drift logs a line: then
    `logging` is loaded, and the line is the daemon's logfmt."""
    import logging

    from giter_agent.daemon.triggers import RECONCILE, Job

    rig, _ = settled(tmp_path, publisher)
    for count in (True, False):
        python, report = worker_probe(tmp_path, count)
        passes = worker_passes(rig, python)
        try:
            for _ in range(2):
                assert passes.run(Job(RECONCILE, reason="timer")).outcome == "up-to-date"
        finally:
            passes.close()
        for made, loaded in worker_reports(report):
            assert "giter_agent.daemon.worker_protocol" in loaded  # the worker really ran
            assert "giter_agent.kinds.base" in loaded  # and so did its pass
            if count:
                assert made is not None and made[:1] == ["__main__.Probe"], made
                assert made[1:] == [], made
            else:
                assert unwanted(loaded, ("dataclasses", "logging", "traceback", "threading",
                                         "giter_agent.daemon.triggers",
                                         "giter_agent.daemon.logfmt")) == []
    # Drift, corrected by a full pass: a warning, at the daemon's level (INFO).
    (rig.root / "f00").write_text("changed by hand\n")
    drift = tmp_path / "drift"
    drift.mkdir()
    python, report = worker_probe(drift, count=False)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    passes = worker_passes(rig, python)
    try:
        assert passes.run(Job(RECONCILE, reason="timer")).outcome == "up-to-date"
    finally:
        passes.close()
        root.setLevel(level)
    ((_, loaded),) = worker_reports(report)
    assert "logging" in loaded and "giter_agent.daemon.logfmt" in loaded
    (line,) = [x for x in (drift / "worker-plain.err").read_text().splitlines()
               if "File/f00" in x]
    assert " level=warning device=pi-01 spec=" + rig.state().applied in line
    assert line.startswith("time=") and "logger=giter." in line


def test_the_check_for_a_dataclasses_import_sees_one():
    assert imports_dataclasses_when_loaded("giter_agent.reconcile.plan")  # `plan` only
    assert not imports_dataclasses_when_loaded("giter_agent.state.records")


class Fsyncs:
    """Every ``os.fsync`` of this process, by what the descriptor names (Linux's
    /proc/self/fd): the durable writes' one system call, counted where they all end."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: list[str] = []
        fsync = os.fsync

        def counted(fd: int) -> None:
            self.names.append(os.readlink(f"/proc/self/fd/{fd}"))
            fsync(fd)

        monkeypatch.setattr(os, "fsync", counted)


def test_a_sync_of_new_commits_fsyncs_what_a_power_cut_needs(tmp_path, publisher,
                                                             monkeypatch):
    """A stick with a new commit: the quarantined pack, its index and folder, the state
    file (accepted, then applied) and its folder, each ref in its own folder, the File
    and its folder, the status commit's pack (merged with the small packs) and the
    folder after the merged-away packs go. Not the parsed-spec cache (derived data,
    checked when read) nor the folders above a ref's own."""
    rig = Rig(tmp_path, publisher)
    rig.publish({"f00.yaml": spec(rig)["f00.yaml"]})
    agent = rig.agent(clock=Clock(), factory=MockFactory())
    try:
        assert agent.sync([rig.bundle()], source="test").exit_code == 0
        rig.publish({"f01.yaml": spec(rig)["f01.yaml"]})
        bundle = rig.bundle()
        fsyncs = Fsyncs(monkeypatch)
        report = agent.sync([bundle], source="test")
        assert [v.verdict for v in report.bundles] == ["applied"]
    finally:
        agent.close()
    repo = rig.state_dir / "repo.git"
    names = fsyncs.names
    assert not [n for n in names if "spec-cache" in n], names
    assert str(repo / "refs") not in names and str(repo / "refs/heads") in names, names
    assert names.count(str(repo / "refs/heads")) == 1, names  # main's
    assert names.count(str(repo / "refs/heads/status")) == 1, names  # status/<id>'s
    # One pack (and its index) written into the store for the status commit: its
    # objects and the small packs' (the bundle's among them) merged in one go, not a
    # pack of its own that a merge rewrites at once (7 fsyncs for the two then).
    written = [n for n in names if n.startswith(str(repo / "objects/pack/tmp_pack_"))]
    assert len(written) == 2, names
    assert names.count(str(repo / "objects/pack")) == 3, names  # promote, merge, removal
    assert len(names) <= 17, names


def test_a_ref_in_a_new_folder_fsyncs_each_folder_made(tmp_path, publisher, monkeypatch):
    """The first status ref makes refs/heads/status/: that folder is fsynced into
    refs/heads, as a ref in an existing folder needs only its own folder's."""
    from giter_agent.history.store import History

    rig = Rig(tmp_path, publisher)
    tip = rig.publish({"f00.yaml": spec(rig)["f00.yaml"]})
    with History(tmp_path / "repo.git") as history:
        with history.quarantine(rig.bundle()) as q:
            q.promote()
        fsyncs = Fsyncs(monkeypatch)
        history.set_ref(b"refs/heads/status/pi-01", None, tip.encode())
        made = [n for n in fsyncs.names if not n.endswith(".lock")]  # the ref file's own
        fsyncs.names.clear()
        history.set_ref(b"refs/heads/main", None, tip.encode())
    repo = tmp_path / "repo.git"
    assert made == [str(repo / "refs/heads/status"), str(repo / "refs/heads")]
    assert [n for n in fsyncs.names if not n.endswith(".lock")] == [str(repo / "refs/heads")]
