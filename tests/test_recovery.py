"""Crash recovery (giter_agent.state.recovery): the lock holder's sweep; refs follow the state.

What a kill leaves is planted by hand here, the way tests/test_death.py's kills
leave it; the death tests show the same through real kills.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from support.git import Publisher

from giter_agent.cli.main import main
from giter_agent.core.durable import atomic_write, temp_name
from giter_agent.core.errors import StorageError
from giter_agent.history.store import History
from giter_agent.state.recovery import recover, sweep_outbox
from giter_agent.state.store import StateStore, state_lock

API = "apiVersion: giter.dev/v1alpha1\n"
STATUS = b"refs/heads/status/pi-01"


class Device:
    def __init__(self, tmp: Path, publisher: Publisher) -> None:
        self.dir = tmp / "pi-01"
        self.root = self.dir / "root"
        self.root.mkdir(parents=True)
        self.state_dir = self.dir / "state"
        self.config = self.dir / "agent.toml"
        self.config.write_text(
            f'device_id = "pi-01"\nstate_dir = "state"\nboard = "generic-mock"\n'
            f'allowed_signers = "{publisher.allowed_signers}"\n'
            f'[files]\nroots = ["{self.root}"]\n')
        self.publisher = publisher
        self.stick = tmp / "stick"
        (self.stick / "giter/inbox").mkdir(parents=True)

    def publish(self, text: str) -> str:
        tip = self.publisher.commit(text, files={"devices/pi-01/motd.yaml": (
            f"{API}kind: File\nmetadata:\n  name: motd\nspec:\n"
            f"  path: {self.root}/motd\n  content: {json.dumps(text)}\n")})
        self.publisher.bundle(self.stick / "giter/inbox/fleet.bundle")
        return tip

    def sync(self) -> int:
        return main(["-c", str(self.config), "sync", "--usb", str(self.stick)])

    def state(self):
        return StateStore(self.state_dir).load()

    @property
    def repo(self) -> Path:
        return self.state_dir / "repo.git"


@pytest.fixture
def device(tmp_path, publisher) -> Device:
    return Device(tmp_path, publisher)


def test_a_stale_ref_lock_from_a_kill_does_not_wedge_later_syncs(device):
    device.publish("one\n")
    assert device.sync() == 0
    for lock in ("refs/heads/main.lock", "refs/heads/status/pi-01.lock"):
        (device.repo / lock).write_text("")  # what a kill before the rename leaves
    tip = device.publish("two\n")
    assert device.sync() == 0
    assert device.state().applied == tip
    assert (device.root / "motd").read_text() == "two\n"
    assert not list(device.repo.rglob("*.lock"))


def test_the_first_status_commit_cut_before_the_state_was_saved(device, tmp_path):
    tip = device.publish("one\n")
    assert device.sync() == 0
    # A kill after the first status commit moved its ref, before the state was saved.
    store = StateStore(device.state_dir)
    state = store.load()
    state.status_tip = None
    store.save(state)
    assert device.sync() == 0
    state = device.state()
    assert state.applied == tip and state.status_tip is not None
    with History(device.repo) as history:
        assert history.ref(STATUS) == state.status_tip.encode()


def test_recover_removes_what_a_crash_leaves_and_nothing_else(device):
    device.publish("one\n")
    assert device.sync() == 0
    repo, state_dir = device.repo, device.state_dir
    objects = repo / "objects"
    # A loose objects' folder (status commits are packed, so there may be none yet).
    some = next((p for p in objects.iterdir() if len(p.name) == 2), objects / "e0")
    debris = [repo / "refs/heads/main.lock", repo / "packed-refs.lock",
              some / ("e" * 38 + ".lock"), objects / "tmp_pack_Xy12", objects / "pack/tmpab.pack",
              objects / "pack" / ("pack-" + "f" * 40 + ".pack"),
              repo / "quarantine/q-dead/pack/x.pack", repo / "quarantine/q-born",
              state_dir / temp_name("state.msgpack"), state_dir / ".device_key.123.tmp",
              state_dir / ".repo.git.init-x1y2/HEAD", device.root / temp_name("motd"),
              device.root / "sub" / temp_name("conf")]
    for path in debris:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if path.name == "q-born" else path.write_bytes(b"x")
    keep = [device.root / ".motd.bak", device.root / "notes.tmp", device.root / "motd",
            state_dir / "state.msgpack", state_dir / "device_key"]
    (device.root / ".motd.bak").write_text("a user's file")
    (device.root / "notes.tmp").write_text("a user's file")
    with state_lock(state_dir):
        done = recover(state_dir, files_roots=[device.root])
    assert [p for p in debris if p.exists()] == []
    assert all(p.exists() for p in keep)
    assert len(done.removed) >= len(debris) - 1  # q-dead's file goes with its folder
    assert device.sync() == 0


def test_recover_remakes_the_folders_a_power_cut_took_from_a_new_repository(device):
    device.publish("one\n")
    assert device.sync() == 0
    for rel in ("refs/tags", "objects/info"):
        (device.repo / rel).rmdir()
    with state_lock(device.state_dir):
        done = recover(device.state_dir)
    assert sorted(Path(p).name for p in done.made) == ["info", "tags"]


def test_a_ref_the_state_file_does_not_know_is_removed(device):
    device.publish("one\n")
    assert device.sync() == 0
    tip = device.state().status_tip
    with state_lock(device.state_dir):
        done = recover(device.state_dir, refs=[(STATUS, None)], sweep=False)
    assert done.refs == ["refs/heads/status/pi-01 removed"]
    with History(device.repo) as history:
        assert history.ref(STATUS) is None
    with state_lock(device.state_dir):
        recover(device.state_dir, refs=[(STATUS, tip)], sweep=False)
    with History(device.repo) as history:
        assert history.ref(STATUS) == tip.encode()


def test_opening_a_new_repository_is_all_or_nothing(tmp_path, monkeypatch):
    # The repository is built aside: a failure half-way leaves no repository at all
    # (and no init folder), so the next try starts clean.
    import giter_agent.history.store as history_module

    def fail(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(history_module, "fsync_tree", fail)
    with pytest.raises(OSError):
        History(tmp_path / "repo.git")
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    History(tmp_path / "repo.git").close()
    assert (tmp_path / "repo.git/objects/pack").is_dir()


def test_only_this_devices_outbox_temp_files_are_swept(tmp_path):
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    mine = [outbox / temp_name("pi-01.bundle"), outbox / temp_name("pi-01.txt")]
    theirs = [outbox / temp_name("pi-02.bundle"), outbox / "pi-01.bundle"]
    for path in mine + theirs:
        path.write_bytes(b"x")
    assert sorted(sweep_outbox(outbox, "pi-01")) == sorted(map(str, mine))
    assert all(p.exists() for p in theirs)


def test_a_full_state_disk_is_a_typed_error_and_the_last_spec_stays(device, monkeypatch, capsys):
    tip = device.publish("one\n")
    assert device.sync() == 0
    device.publish("two\n")
    import giter_agent.state.store as state_module

    def full(path, data, mode=0o644):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(state_module, "atomic_write", full)
    assert device.sync() == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("giter-agent: DiskFull: cannot write to ")
    assert f"spec {tip[:12]} stays applied" in err[-1]
    assert device.state().applied == tip
    monkeypatch.setattr(state_module, "atomic_write", atomic_write)
    assert device.sync() == 0
    assert (device.root / "motd").read_text() == "two\n"


def test_storage_error_is_an_oserror_with_its_errno():
    exc = StorageError.of(OSError(errno.EIO, "Input/output error"), "the outbox /m")
    assert isinstance(exc, OSError) and exc.errno == errno.EIO
    assert exc.reason == "StorageFailed" and "cannot write the outbox /m" in str(exc)
