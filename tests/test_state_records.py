"""The state file's records: typed in memory, the same msgpack maps on disk as before.

``tests/fixtures/state-before-typed-records.msgpack`` was written by the agent before
records were typed (a stick sync of a File, an Output, a File refused by its kind, an
unparsable file and one whose new version is invalid so its last good spec stays, then
an offline network sync). It must load into typed records and save back as the very
same map, so an upgraded board keeps its state.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import msgpack
import pytest

from giter_agent.core.errors import GiterError
from giter_agent.state.records import Backoff, NetworkRecord, ResourceRecord
from giter_agent.state.store import FORMAT, State, StateStore

FIXTURE = Path(__file__).parent / "fixtures" / "state-before-typed-records.msgpack"


def load_map(path: Path) -> dict:
    return msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=True)


def test_a_state_file_written_before_typed_records_loads_and_saves_unchanged(tmp_path):
    shutil.copy(FIXTURE, tmp_path / "state.msgpack")
    store = StateStore(tmp_path)
    state = store.load()

    motd = state.resources["file/devices/pi-01/motd.yaml"]
    assert isinstance(motd, ResourceRecord) and motd.kind == "File" and motd.name == "motd"
    assert motd.invalid and motd.spec is not None and motd.document is not None  # kept
    beacon = state.resources["Output/beacon"]
    assert beacon.ready and beacon.fingerprint and not beacon.invalid
    assert not state.resources["File/broken"].ready
    junk = state.resources["file/devices/pi-01/junk.yaml"]
    assert junk.invalid and junk.kind is None and junk.spec is None
    assert state.network == NetworkRecord(
        url="git://127.0.0.1:9/fleet.git", state="offline", reason="Offline",
        message="git://127.0.0.1:9/fleet.git: Connection refused",
        since=state.network.since if state.network else None, failures=1,
        last_attempt=state.network.last_attempt if state.network else None)

    (tmp_path / "state.msgpack").unlink()
    store.save(state)
    assert load_map(tmp_path / "state.msgpack") == load_map(FIXTURE)


def test_every_field_of_a_record_survives_the_state_file(tmp_path):
    record = ResourceRecord(
        "Sensor", "cpu", "devices/d/cpu.yaml",
        status={"specCommit": "c1", "conditions": [{"type": "Ready", "status": "False"}],
                "retryAfterSeconds": 60, "drift": {"corrections": 1}},
        spec={"source": "cpu-temperature"}, document={"kind": "Sensor"},
        fingerprint="0123456789abcdef", memory={"window": [1, 2]},
        backoff=Backoff(3, 1_800_000_060.5))
    net = NetworkRecord(url="https://hub/fleet.git", state="online", reason="Connected",
                        message="in contact", since="2027-01-01T00:00:00Z", failures=0,
                        last_attempt="2027-01-01T00:00:01Z",
                        last_contact="2027-01-01T00:00:01Z", hub_status="ab" * 20)
    store = StateStore(tmp_path)
    store.save(State(accepted="c1", applied="c1", resources={"Sensor/cpu": record},
                     network=net))
    raw = load_map(tmp_path / "state.msgpack")
    assert raw["format"] == FORMAT
    assert raw["resources"]["Sensor/cpu"]["backoff"] == {"attempts": 3,
                                                         "notBefore": 1_800_000_060.5}
    assert set(raw["network"]) == {"url", "state", "reason", "message", "since", "failures",
                                   "lastAttempt", "lastContact", "hubStatus"}
    again = StateStore(tmp_path).load()  # a fresh store: read back from the file
    assert again.resources == {"Sensor/cpu": record} and again.network == net
    assert not again.resources["Sensor/cpu"].ready


def test_a_hub_never_tried_is_an_empty_map_as_before(tmp_path):
    store = StateStore(tmp_path)
    store.save(State())
    assert load_map(tmp_path / "state.msgpack")["network"] == {}
    assert store.load().network is None


def test_a_record_of_the_wrong_shape_is_a_corrupt_state_not_a_traceback(tmp_path):
    data = msgpack.packb({"format": FORMAT, "resources": {"File/x": {"backoff": "soon"}}})
    (tmp_path / "state.msgpack").write_bytes(data)
    with pytest.raises(GiterError) as err:
        StateStore(tmp_path).load()
    assert err.value.reason == "StateCorrupt"


# -- the store remembers the file it last read or wrote ----------------------------------

def record(n: int, status: str = "True") -> ResourceRecord:
    return ResourceRecord("File", f"f{n}", f"devices/d/f{n}.yaml",
                          status={"conditions": [{"type": "Ready", "status": status}]})


def many(n: int) -> State:
    return State(accepted="c1", applied="c1",
                 resources={f"File/f{i}": record(i) for i in range(n)})


def test_a_record_is_a_value_that_cannot_be_changed_in_place():
    rec = record(1)
    with pytest.raises(AttributeError):
        rec.status = {}  # type: ignore[misc]
    assert rec.ready and not record(2, "False").ready
    # What a wakeup pass asks of every record, worked out when the record is made.
    assert rec.spec_commit is None
    moved = rec.with_status({**rec.status, "specCommit": "c2"})
    assert moved.spec_commit == "c2" and moved.ready and rec.spec_commit is None


def test_a_pass_that_keeps_every_record_reads_packs_and_writes_nothing(tmp_path):
    store = StateStore(tmp_path)
    store.save(many(100))
    path = tmp_path / "state.msgpack"
    written = os.stat(path)
    unpacked, packed = store.unpacked, store.packed
    for _ in range(3):
        state = store.load()
        state.resources = dict(state.resources)  # a pass makes a new map of the same records
        state.conditions = []
        store.save(state)
    assert (store.unpacked, store.packed) == (unpacked, packed)
    assert os.stat(path).st_ino == written.st_ino
    # A record made anew with the same contents is compared, still not packed.
    state = store.load()
    state.resources["File/f3"] = record(3)
    store.save(state)
    assert (store.unpacked, store.packed) == (unpacked, packed)
    assert os.stat(path).st_ino == written.st_ino


def test_a_changed_record_is_written_and_read_back(tmp_path):
    store = StateStore(tmp_path)
    store.save(many(10))
    state = store.load()
    state.resources["File/f3"] = record(3, "False")
    store.save(state)
    assert not StateStore(tmp_path).load().resources["File/f3"].ready
    assert not store.load().resources["File/f3"].ready


def test_a_copy_handed_out_does_not_change_what_the_store_remembers(tmp_path):
    store = StateStore(tmp_path)
    store.save(many(3))
    state = store.load()
    state.accepted = "c2"
    state.resources["File/f9"] = record(9)
    state.last_sync["time"] = "now"
    state.conditions.append({"type": "Stale"})
    again = store.load()  # the pass that changed its copy never saved it
    assert again.accepted == "c1" and "File/f9" not in again.resources
    assert again.last_sync == {} and again.conditions == []


def test_a_write_by_another_process_is_seen(tmp_path):
    daemon, other = StateStore(tmp_path), StateStore(tmp_path)
    daemon.save(many(3))
    assert daemon.load().accepted == "c1"
    state = other.load()
    state.accepted = "c2"
    state.resources["File/f1"] = record(1, "False")
    other.save(state)
    again = daemon.load()
    assert again.accepted == "c2" and not again.resources["File/f1"].ready
    assert daemon.unpacked == 1
    # And the daemon's next save starts from the file, not from what it remembered.
    again.applied = "c2"
    daemon.save(again)
    assert StateStore(tmp_path).load().accepted == "c2"


def test_a_write_that_failed_is_not_remembered(tmp_path, monkeypatch):
    from giter_agent.state import store as store_module

    store = StateStore(tmp_path)
    store.save(many(3))
    state = store.load()
    state.accepted = "c2"

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "atomic_write", full)
    with pytest.raises(OSError):
        store.save(state)
    monkeypatch.undo()
    assert store.load().accepted == "c1"  # what the file holds
    store.save(state)  # the same state again: written now, not taken for unchanged
    assert StateStore(tmp_path).load().accepted == "c2"
