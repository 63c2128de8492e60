"""The parsed spec kept on disk: exactly what parsing gives, and only for its commit.

A spec with every built-in kind, odd YAML values, invalid documents, a ``fleet/``
resource chosen by the device's labels, a group's file it overrides, rendered
placeholders, one that cannot be rendered and a file a rollout holds at its baseline
is parsed (``spec.targeting``), kept (``sync.spec_cache``) and read back: equal, field
for field and type for type. A file torn by a power cut, another commit, another device
or group list, or another format is a miss; a new process reading it does not import
PyYAML (a one-shot sync and a daemon's pass worker, real processes).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dulwich.object_store import MemoryObjectStore
from dulwich.objects import Commit
from gpiozero.pins.mock import MockFactory
from support.kinds import Rig, build_tree, doc
from support.resources import API_VERSION

from giter_agent.kinds import BUILTIN
from giter_agent.spec.targeting import read_device_spec
from giter_agent.sync.spec_cache import FILE, FORMAT, SpecCache

pytestmark = pytest.mark.unit

DEVICE = "pi-01"
GROUPS = ("lobby",)
API = f"apiVersion: {API_VERSION}\n"
RECORD = (f"{API}kind: Device\nmetadata:\n  name: {DEVICE}\nspec:\n  groups: [lobby]\n"
          "  labels: {site: north, hw: pi4}\n").encode()
FLEET = (f"{API}kind: File\nmetadata:\n  name: fleet-motd\n  selector:\n"
         "    matchLabels: {site: north}\nspec:\n  path: ${values.root}/motd\n"
         "  content: \"${device.id} at ${labels.site}: ${values.greeting}\\n\"\n").encode()
ODD = (f"{API}kind: Command\nmetadata: {{name: odd, generation: 7}}\nspec:\n"
       "  ints: [0, -1, 18446744073709551615, -9223372036854775808]\n"
       "  floats: [1.5, -0.0, .inf, 1e300]\n  flags: {true: yes, false: off, 3: three}\n"
       "  nothing: null\n  text: \"\\u00e9\\u0000 \\U0001F600\"\n"
       "  nested: [[{a: [1, {b: []}]}], {}]\n").encode()


def rollout(baseline: str) -> bytes:
    return (f"{API}kind: Rollout\nmetadata: {{name: wave}}\nspec:\n"
            f"  baseline: \"{baseline}\"\n  resources: [fleet/held.yaml]\n  waves:\n"
            "    - {name: canary, selector: {matchLabels: {ring: canary}}}\n"
            "    - {name: all, percent: 100}\n  readyPercent: 100\n  openWaves: 1\n").encode()


def held(version: str) -> bytes:
    return doc("File", "held", {"path": f"/srv/held-{version}", "content": version})


def spec_tree(store: Any) -> tuple[bytes, dict[str, tuple[bytes, int]]]:
    """A tree with everything a device's parse resolves, and a baseline commit."""
    base_files = {"fleet/held.yaml": (
        held("v1").replace(b"metadata:", b"metadata:\n  selector: {}"), 0o100644)}
    base = Commit()
    base.tree = build_tree(store, base_files)
    base.author = base.committer = b"t <t@example.org>"
    base.author_time = base.commit_time = 1_700_000_000
    base.author_timezone = base.commit_timezone = 0
    base.message = b"baseline\n"
    store.add_object(base)
    files: dict[str, bytes] = {f".giter/devices/{DEVICE}.yaml": RECORD,
                               "values/defaults.yaml": b"greeting: hello\nroot: /srv\n",
                               "values/labels/site/north.yaml": b"greeting: morning\n",
                               "fleet/motd.yaml": FLEET,
                               "fleet/held.yaml": held("v2").replace(
                                   b"metadata:", b"metadata:\n  selector: {}"),
                               "fleet/elsewhere.yaml": FLEET.replace(b"north", b"south")
                               .replace(b"fleet-motd", b"south-motd"),
                               "rollouts/wave.yaml": rollout(base.id.decode()),
                               "groups/lobby/motd.yaml": doc("File", "fleet-motd", {
                                   "path": "/srv/lobby", "content": "lobby"}),
                               f"devices/{DEVICE}/odd.yaml": ODD,
                               f"devices/{DEVICE}/unrendered.yaml": doc("File", "nope", {
                                   "path": "${values.missing}", "content": "x"}),
                               f"devices/{DEVICE}/bad-yaml.yaml": b"a: [1,\n",
                               f"devices/{DEVICE}/bad-api.yaml": b"apiVersion: v0\n",
                               f"devices/{DEVICE}/bad-name.yaml": doc("File", "Bad_Name", {}),
                               f"devices/{DEVICE}/twin-a.yaml": doc("File", "twin", {}),
                               f"devices/{DEVICE}/twin-b.yaml": doc("File", "twin", {})}
    for i, kind in enumerate(sorted(BUILTIN)):
        files[f"devices/{DEVICE}/k{i:02d}.yaml"] = doc(kind, f"k{i:02d}", {
            "n": i, "on": True, "list": ["a", 1, 2.5, None], "map": {"x": {"y": "z"}}})
    return build_tree(store, {p: (d, 0o100644) for p, d in files.items()}), base_files


@pytest.fixture
def parsed(tmp_path):
    store = MemoryObjectStore()
    tree, _ = spec_tree(store)
    return read_device_spec(store, tree, DEVICE, GROUPS)


def test_the_cache_gives_back_exactly_what_parsing_gives(tmp_path, parsed):
    # The spec really holds each case the cache must carry.
    by_key = parsed.by_key
    assert {k.split("/")[0] for k in by_key} >= set(BUILTIN)
    assert by_key["File/fleet-motd"].selector and by_key["File/fleet-motd"].overrides
    assert by_key["File/fleet-motd"].spec["content"] == "pi-01 at north: morning\n"
    assert by_key["File/held"].held and by_key["File/held"].spec["content"] == "v1"
    assert by_key["Command/odd"].generation == 7
    assert {i.reason for i in parsed.invalid} >= {"MissingValue", "InvalidYAML",
                                                  "UnsupportedAPIVersion"}
    assert len(parsed.invalid) >= 5
    cache = SpecCache(tmp_path, DEVICE, GROUPS)
    cache.save("c" * 40, parsed)
    path = tmp_path / FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # as private as the state file
    loaded = SpecCache(tmp_path, DEVICE, GROUPS).load("c" * 40)
    assert loaded is not None
    assert loaded.resources == parsed.resources and loaded.invalid == parsed.invalid
    assert shape(loaded.resources) == shape(parsed.resources)  # types too: bool != 1
    assert shape(loaded.invalid) == shape(parsed.invalid)


def shape(value: Any) -> Any:
    """``value`` with every leaf's type beside it (1 == True == 1.0 in Python)."""
    if hasattr(value, "_fields"):  # a record (NamedTuple): its fields by name
        return {f: shape(getattr(value, f)) for f in value._fields}
    if isinstance(value, list | tuple):
        return (type(value).__name__, [shape(v) for v in value])
    if isinstance(value, dict):
        return {repr(shape(k)): shape(v) for k, v in value.items()}
    return (type(value).__name__ if not isinstance(value, str) else "str", repr(value))


@pytest.mark.parametrize("other", [
    dict(commit="d" * 40), dict(device="pi-02"), dict(groups=("lobby", "hall")),
    dict(groups=())], ids=["commit", "device", "groups", "no-groups"])
def test_the_cache_holds_one_commit_for_one_device_and_group_list(tmp_path, parsed, other):
    SpecCache(tmp_path, DEVICE, GROUPS).save("c" * 40, parsed)
    cache = SpecCache(tmp_path, other.get("device", DEVICE), other.get("groups", GROUPS))
    assert cache.load(other.get("commit", "c" * 40)) is None


def test_a_torn_or_foreign_cache_file_is_a_miss(tmp_path, parsed):
    import msgpack

    SpecCache(tmp_path, DEVICE, GROUPS).save("c" * 40, parsed)
    path = tmp_path / FILE
    whole = path.read_bytes()
    cache = SpecCache(tmp_path, DEVICE, GROUPS)
    # A power cut can leave any prefix of the bytes (a file system that does not order
    # data before the rename) or zeros after it: none is taken for a spec.
    for cut in sorted({0, 1, 10, len(whole) // 3, len(whole) // 2, len(whole) - 1}):
        path.write_bytes(whole[:cut])
        assert cache.load("c" * 40) is None, cut
    path.write_bytes(whole[:len(whole) // 2] + bytes(len(whole) - len(whole) // 2))
    assert cache.load("c" * 40) is None
    raw = msgpack.unpackb(whole, raw=False, strict_map_key=False)
    for changed in ({**raw, "key": [FORMAT + 1, *raw["key"][1:]]},  # a format not known here
                    {**raw, "resources": [["x"]]},
                    {**raw, "resources": [[1] * 10]}, {**raw, "invalid": "no"}, [raw]):
        path.write_bytes(msgpack.packb(changed, use_bin_type=True))
        assert cache.load("c" * 40) is None, changed
    path.write_bytes(whole)
    assert cache.load("c" * 40) is not None and cache.loaded == 1


def test_a_spec_msgpack_cannot_carry_exactly_is_not_kept(tmp_path, parsed):
    SpecCache(tmp_path, DEVICE, GROUPS).save("c" * 40, parsed)
    import datetime

    first = parsed.resources[0]._replace(spec={"when": datetime.date(2026, 1, 1)})
    odd = type(parsed)(resources=[first, *parsed.resources[1:]], invalid=parsed.invalid)
    cache = SpecCache(tmp_path, DEVICE, GROUPS)
    cache.save("e" * 40, odd)
    assert not (tmp_path / FILE).exists() and cache.written == 0
    assert cache.load("c" * 40) is None


# ---- real processes: a steady one-shot sync and a daemon's pass worker -----------------

def files_spec(rig: Rig) -> dict[str, bytes | None]:
    return {f"f{i}.yaml": doc("File", f"f{i}", {"path": str(rig.root / f"f{i}"),
                                               "content": f"{i}\n"}) for i in range(5)}


def imported_yaml(log: Path) -> list[str]:
    """The modules of PyYAML a process imported, from its ``-X importtime`` lines."""
    names = [line.rsplit("|", 1)[-1].strip() for line in log.read_text().splitlines()
             if line.startswith("import time:")]
    return [n for n in names if n == "yaml" or n.startswith("yaml.")]


def test_a_steady_one_shot_sync_neither_parses_nor_imports_yaml(tmp_path, publisher):
    rig = Rig(tmp_path, publisher)
    rig.publish(files_spec(rig))
    bundle = rig.bundle()
    assert rig.cli("sync", "--bundle", bundle) == 0
    assert rig.cli("sync", "--bundle", bundle) == 0  # a one-shot's status settles here
    assert (rig.state_dir / FILE).exists()
    log = tmp_path / "importtime.log"
    with open(log, "w") as err:
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "giter_agent",
                               "-c", str(rig.config), "sync", "--bundle", str(bundle)],
                              stdout=subprocess.DEVNULL, stderr=err, check=False)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert imported_yaml(log) == []
    # Without the cache the same process parses the spec again, through PyYAML.
    (rig.state_dir / FILE).unlink()
    with open(log, "w") as err:
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "giter_agent",
                               "-c", str(rig.config), "sync", "--bundle", str(bundle)],
                              stdout=subprocess.DEVNULL, stderr=err, check=False)
    assert proc.returncode == 0 and "yaml" in imported_yaml(log)
    assert (rig.state_dir / FILE).exists()  # and keeps it for the next process
    # The status digest hides no change: a file corrected by a new process is reported.
    tip = rig.state().status_tip
    assert tip and rig.state().status_of[0] == tip
    (rig.root / "f1").write_text("changed by hand\n")
    proc = subprocess.run([sys.executable, "-m", "giter_agent", "-c", str(rig.config), "sync",
                           "--bundle", str(bundle)], capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (rig.root / "f1").read_text() == "1\n"
    assert rig.state().status_tip != tip
    assert rig.state().resources["File/f1"].status["drift"]["corrections"] == 1


def test_a_workers_timer_pass_neither_parses_nor_imports_yaml(tmp_path, publisher):
    from giter_agent.config.agent_toml import load
    from giter_agent.daemon.triggers import RECONCILE, Job
    from giter_agent.daemon.worker_passes import WorkerPasses
    from giter_agent.device.board import load_board

    rig = Rig(tmp_path, publisher)
    rig.publish(files_spec(rig))
    assert rig.cli("sync", "--bundle", rig.bundle()) == 0
    log = tmp_path / "importtime.log"
    python = tmp_path / "python"  # the worker's interpreter, telling what it imports
    python.write_text(f"#!/bin/sh\nexec {sys.executable} -X importtime \"$@\" 2>>{log}\n")
    python.chmod(0o755)
    config = load(rig.config)
    passes = WorkerPasses(config, rig.config, board=load_board(config.board),
                          pin_factory=MockFactory, python=str(python))
    try:
        state_file = rig.state_dir / "state.msgpack"
        before = os.stat(state_file).st_ino
        for _ in range(2):
            report = passes.run(Job(RECONCILE, reason="timer"))
            assert report.outcome == "up-to-date", report
        assert os.stat(state_file).st_ino == before  # a timer pass records nothing new
        assert "giter_agent.daemon.worker" in log.read_text()  # the worker really ran
        assert imported_yaml(log) == []
        # The proof runs both ways: with the cache gone, the worker parses with PyYAML.
        (rig.state_dir / FILE).unlink()
        passes.run(Job(RECONCILE, reason="timer"))
        assert "yaml" in imported_yaml(log)
    finally:
        passes.close()
