"""The state file's records: typed in memory, the same msgpack maps on disk as before.

``tests/fixtures/state-before-typed-records.msgpack`` was written by the agent before
records were typed (a stick sync of a File, an Output, a File refused by its kind, an
unparsable file and one whose new version is invalid so its last good spec stays, then
an offline network sync). It must load into typed records and save back as the very
same map, so an upgraded board keeps its state.
"""

from __future__ import annotations

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
    again = store.load()
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
