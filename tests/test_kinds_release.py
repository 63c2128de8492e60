"""The Release kind: lay down, switch, health-check, roll back, keep N, and a cut-short switch.

The spec tree is a real dulwich object store on disk, read as the applier hands it over
(``Context.artifacts``, ``history.artifacts.TreeArtifacts``), with a symlink or a
submodule where a test needs one; the units go through the fake
``systemctl`` (tests/support/systemd.py); the HTTP check talks to a real server on
127.0.0.1; the command check runs real programs from the device's allowlist.
"""

from __future__ import annotations

import http.server
import os
import threading

import pytest
from dulwich.object_store import DiskObjectStore
from support.kinds import condition, doc, ready, specset, tree_artifacts
from support.servers import free_port
from support.systemd import FakeSystemd, install

from giter_agent.config.agent_toml import Services
from giter_agent.kinds import builtin_kinds
from giter_agent.kinds.release import ReleaseKind
from giter_agent.reconcile.engine import reconcile
from giter_agent.state.release_journal import ReleaseJournal

KEY = "Release/app"


class Fleet:
    """The spec tree a pass reads: ``publish`` makes a new one with these artifacts."""

    def __init__(self, objects) -> None:
        objects.mkdir(parents=True)
        self.store = DiskObjectStore.init(objects)

    def publish(self, files: dict[str, bytes | tuple[bytes, int]], **caps):
        entries = {f"artifacts/app/{p}": (v if isinstance(v, tuple) else (v, 0o100644))
                   for p, v in files.items()}
        return tree_artifacts(self.store, entries, **caps)


V1 = {"run.sh": (b"#!/bin/sh\necho v1\n", 0o100755), "lib/data.txt": b"one\n"}
V2 = {"run.sh": (b"#!/bin/sh\necho v2\n", 0o100755), "lib/data.txt": b"two\n"}


@pytest.fixture
def systemd(tmp_path, monkeypatch) -> FakeSystemd:
    fake = install(tmp_path, monkeypatch)
    fake.add("app.service", active="active", sub="running")
    return fake


@pytest.fixture
def ctx(ctx, tmp_path, systemd):
    ctx.services = Services(allowed=("app.service", "app-*.service"))
    ctx.commands = {"healthy": ("/bin/true",), "broken": ("/bin/sh", "-c", "echo boom; exit 3"),
                    "hang": ("/bin/sleep", "30")}
    ctx.release_journal = ReleaseJournal(tmp_path / "releases.journal")
    return ctx


class Device:
    """Passes of the reconciler over one Release resource."""

    def __init__(self, ctx, root) -> None:
        self.ctx = ctx
        self.root = root / "app"
        self.records: dict = {}
        self.fleet = Fleet(root.parent / "fleet-objects")
        self.kinds = builtin_kinds()
        self.kinds["Release"] = ReleaseKind(sleep=lambda s: None)

    def apply(self, files, generation: int | None = None, caps=None, **spec) -> dict:
        self.ctx.artifacts = self.fleet.publish(files, **(caps or {}))
        body = {"source": "artifacts/app", "root": str(self.root),
                "restart": ["app.service"], "check": {"command": "healthy"}, **spec}
        result = reconcile(specset(doc("Release", "app", body, generation=generation)),
                           self.ctx, self.kinds, self.records, "c1")
        self.records = result.records
        return result.records[KEY]

    def current(self) -> str | None:
        link = self.root / "current"
        return os.readlink(link) if link.is_symlink() else None

    def releases(self) -> set[str]:
        folder = self.root / "releases"
        return {p.name for p in folder.iterdir()} if folder.exists() else set()

    def run_sh(self) -> bytes:
        return (self.root / "current" / "run.sh").read_bytes()


@pytest.fixture
def device(ctx, tmp_path) -> Device:
    return Device(ctx, tmp_path / "root")


def restarts(systemd: FakeSystemd) -> list[str]:
    return [c for c in systemd.acted() if c.startswith(("restart", "stop"))]


def test_a_working_release_is_laid_down_switched_in_and_its_units_restarted(device, systemd):
    rec = device.apply(V1, version="1.0")
    assert ready(rec) == (True, "Released")
    name = rec.status["observed"]["release"]
    assert name.startswith("1.0-") and device.current() == f"releases/{name}"
    assert device.run_sh() == b"#!/bin/sh\necho v1\n"
    assert os.stat(device.root / "current/run.sh").st_mode & 0o777 == 0o755
    assert (device.root / "current/lib/data.txt").read_bytes() == b"one\n"
    assert restarts(systemd) == ["restart app.service"]

    # Level-based: the next pass finds it in place and acts on nothing.
    rec = device.apply(V1, version="1.0")
    assert ready(rec) == (True, "Released")
    assert restarts(systemd) == ["restart app.service"]

    rec = device.apply(V2, version="2.0")
    assert ready(rec) == (True, "Released")
    assert device.run_sh() == b"#!/bin/sh\necho v2\n"
    assert rec.status["observed"]["previous"] == [name]
    assert len(restarts(systemd)) == 2


def test_a_failed_check_rolls_back_reports_and_is_not_retried(device, systemd):
    first = device.apply(V1).status["observed"]["release"]
    rec = device.apply(V2, check={"command": "broken", "tries": 2})
    ok, reason = ready(rec)
    assert (ok, reason) == (False, "RolledBack")
    observed = rec.status["observed"]
    assert observed["release"] == first and device.current() == f"releases/{first}"
    assert device.run_sh() == b"#!/bin/sh\necho v1\n"
    assert "exit 3: boom" in observed["checkOutput"]
    assert "failed 2 times" in condition(rec)["message"]
    # The failed release is gone; the previous one is kept; units restarted twice more.
    assert device.releases() == {first}
    assert len(restarts(systemd)) == 3

    # The next passes report it and do not try the same release again.
    for _ in range(2):
        rec = device.apply(V2, check={"command": "broken", "tries": 2})
        assert ready(rec) == (False, "RolledBack")
    assert len(restarts(systemd)) == 3 and device.current() == f"releases/{first}"

    # A new generation of the spec is a new attempt.
    rec = device.apply(V2, generation=2, check={"command": "healthy"})
    assert ready(rec) == (True, "Released")
    assert device.run_sh() == b"#!/bin/sh\necho v2\n"


def test_a_check_that_times_out_rolls_back(device):
    first = device.apply(V1).status["observed"]["release"]
    rec = device.apply(V2, check={"command": "hang", "timeout": 1, "tries": 1})
    assert ready(rec) == (False, "RolledBack")
    assert "timed out after 1 s" in rec.status["observed"]["checkOutput"]
    assert device.current() == f"releases/{first}"


def test_a_first_release_whose_check_fails_leaves_no_current_and_stops_the_units(device,
                                                                                  systemd):
    rec = device.apply(V1, check={"command": "broken", "tries": 1})
    assert ready(rec) == (False, "RolledBack")
    assert device.current() is None and device.releases() == set()
    assert restarts(systemd) == ["restart app.service", "stop app.service"]
    assert "rolled back to no release" in condition(rec)["message"]


def test_check_output_is_bounded_and_escaped(device, ctx):
    ctx.commands["noisy"] = ("/bin/sh", "-c", "printf 'x%.0s' $(seq 5000); printf '\\033[2J'; "
                             "exit 1")
    device.apply(V1)
    rec = device.apply(V2, check={"command": "noisy", "tries": 1})
    output = rec.status["observed"]["checkOutput"]
    assert len(output) <= 1024 and "\x1b" not in output and "\\x1b" in output


class _Health(http.server.BaseHTTPRequestHandler):
    code = 200

    def do_GET(self) -> None:
        self.send_response(self.code)
        self.end_headers()
        self.wfile.write(b"ok" if self.code == 200 else b"database down")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def health_server():
    port = free_port()
    server = http.server.HTTPServer(("127.0.0.1", port), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{port}/healthz"
    server.shutdown()
    server.server_close()


def test_http_check_on_localhost(device, health_server):
    server, url = health_server
    server.RequestHandlerClass.code = 200
    rec = device.apply(V1, check={"http": url})
    assert ready(rec) == (True, "Released")
    first = rec.status["observed"]["release"]
    server.RequestHandlerClass.code = 503
    try:
        rec = device.apply(V2, check={"http": url, "tries": 2})
    finally:
        server.RequestHandlerClass.code = 200
    assert ready(rec) == (False, "RolledBack")
    assert rec.status["observed"]["checkOutput"] == "HTTP 503: database down"
    assert device.current() == f"releases/{first}"


def test_unit_check(device, systemd):
    systemd.add("app-worker.service", active="active", sub="running")
    rec = device.apply(V1, restart=["app-worker.service"],
                       check={"unit": "app-worker.service"})
    assert ready(rec) == (True, "Released")
    systemd.add("app-worker.service", fails=True)  # restarting it now fails
    rec = device.apply(V2, restart=["app-worker.service"],
                       check={"unit": "app-worker.service"})
    assert ready(rec) == (False, "RolledBack")
    assert "app-worker.service" in rec.status["observed"]["checkOutput"]


@pytest.mark.parametrize("files, reason", [
    ({**V2, "lib/escape": (b"/etc/passwd", 0o120000)}, "UnsafeTreeEntry"),
    ({**V2, "Run.sh": b"x"}, "UnsafeTreeEntry"),   # collides with run.sh ignoring case
    ({**V2, "lib/..data": b"x"}, "UnsafeTreeEntry"),
])
def test_an_unsafe_release_tree_is_refused_and_the_previous_release_stays(
        device, systemd, files, reason):
    first = device.apply(V1).status["observed"]["release"]
    rec = device.apply(files)
    ok, got = ready(rec)
    assert (ok, got) == (False, reason)
    assert device.current() == f"releases/{first}" and device.releases() == {first}
    assert len(restarts(systemd)) == 1
    assert not (device.root / "current/lib/escape").exists()


def test_a_release_file_is_streamed_never_read_whole_and_the_cap_refuses_one(
        device, systemd, monkeypatch):
    """A large file of a release goes through ``TreeArtifacts.copy`` (blob_stream): the
    object store's whole-object reader is never asked for it; over ``[limits]
    max_artifact_mib`` the release is refused before anything is written."""
    from dulwich.objects import Blob

    big = os.urandom(3 * 2**20)
    asked: list[str] = []
    whole = DiskObjectStore.get_raw

    def get_raw(store, sha):
        asked.append(sha.hex() if len(sha) == 20 else sha.decode())
        return whole(store, sha)

    monkeypatch.setattr(DiskObjectStore, "get_raw", get_raw)
    rec = device.apply({**V1, "lib/big.bin": big})
    assert ready(rec) == (True, "Released")
    assert (device.root / "current/lib/big.bin").read_bytes() == big
    assert Blob.from_string(big).id.decode() not in asked
    first = rec.status["observed"]["release"]
    rec = device.apply({**V2, "lib/big.bin": big}, caps={"max_bytes": 2**20})
    assert ready(rec) == (False, "ArtifactTooLarge")
    assert "artifacts/app/lib/big.bin is 3145728 bytes" in condition(rec)["message"]
    assert device.current() == f"releases/{first}" and device.releases() == {first}


@pytest.mark.parametrize("spec, words", [
    ({"source": "devices/pi/secret"}, "must be a folder under artifacts/"),
    ({"source": "artifacts/../etc"}, "must be a folder under artifacts/"),
    ({"root": "/srv/giter/../etc"}, "spec.root must not contain '.', '..'"),
    ({"check": {"http": "http://10.0.0.5:80/"}}, "http://127.0.0.1:PORT"),
    ({"check": {"http": "http://localhost:80/"}}, "http://127.0.0.1:PORT"),
    ({"check": {"command": "a", "unit": "b.service"}}, "exactly one of command"),
    ({"check": {"timeout": 5}}, "exactly one of command"),
    ({"restart": ["not a unit"]}, "systemd unit names"),
])
def test_invalid_specs_are_refused_naming_the_field(device, spec, words):
    rec = device.apply(V1, **spec)
    assert ready(rec) == (False, "InvalidSpec")
    assert words in condition(rec)["message"]
    assert device.current() is None


def test_the_device_allowlists_decide(device, ctx, systemd):
    first = device.apply(V1).status["observed"]["release"]
    rec = device.apply(V2, check={"command": "rm-everything"})
    assert ready(rec) == (False, "CommandNotAllowed")
    rec = device.apply(V2, restart=["ssh.service"])
    assert ready(rec) == (False, "ServiceNotAllowed")
    rec = device.apply(V2, root="/etc/app")
    assert ready(rec) == (False, "PathNotAllowed")
    assert device.current() == f"releases/{first}"
    assert len(restarts(systemd)) == 1


def test_keep_n_previous_releases(device):
    names = []
    for i in range(5):
        rec = device.apply({"run.sh": f"v{i}\n".encode()}, keep=2)
        names.append(rec.status["observed"]["release"])
    assert device.releases() == set(names[-3:])
    assert device.current() == f"releases/{names[-1]}"
    # A rollback keeps them: the failed release goes, the kept ones stay.
    rec = device.apply({"run.sh": b"broken\n"}, keep=2, check={"command": "broken"})
    assert ready(rec) == (False, "RolledBack")
    assert device.releases() == set(names[-3:])
    assert device.current() == f"releases/{names[-1]}"


def test_a_symlink_below_the_files_root_is_not_followed(device, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    device.root.parent.mkdir(exist_ok=True)
    device.root.symlink_to(outside)
    rec = device.apply(V1)
    assert ready(rec) == (False, "PathNotAllowed")
    assert list(outside.iterdir()) == []


def test_a_switch_cut_short_puts_the_old_release_back_then_finishes(device, systemd):
    """A pass killed after the link moved (journal: switching) and before the check."""
    first = device.apply(V1).status["observed"]["release"]
    journal = device.ctx.release_journal
    kind = device.kinds["Release"]
    # Cut the pass right after the flip: the journal says switching, current is new.
    original = kind._restart_and_check

    def die(*args):
        raise KeyboardInterrupt  # stands in for the power cut

    kind._restart_and_check = die
    with pytest.raises(KeyboardInterrupt):
        device.apply(V2)
    kind._restart_and_check = original
    entry = journal.get(KEY)
    assert entry["phase"] == "switching" and entry["from"] == f"releases/{first}"
    assert device.current() == entry["to"] != f"releases/{first}"

    rec = device.apply(V2)
    assert ready(rec) == (True, "Released")
    assert device.run_sh() == b"#!/bin/sh\necho v2\n"
    # The old release was put back (and its units restarted) before the switch again.
    assert restarts(systemd) == ["restart app.service"] * 3


def test_a_switch_cut_short_twice_is_rolled_back_and_not_tried_again(device, systemd):
    first = device.apply(V1).status["observed"]["release"]
    kind = device.kinds["Release"]
    original = kind._restart_and_check

    def die(*args):
        raise KeyboardInterrupt

    kind._restart_and_check = die
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            device.apply(V2)
    kind._restart_and_check = original
    rec = device.apply(V2)
    assert ready(rec) == (False, "RolledBack")
    assert "cut short 2 times" in condition(rec)["message"]
    assert device.current() == f"releases/{first}"
    before = len(restarts(systemd))
    rec = device.apply(V2)
    assert ready(rec) == (False, "RolledBack") and len(restarts(systemd)) == before


def test_a_rollback_cut_short_is_finished_by_the_next_pass(device):
    first = device.apply(V1).status["observed"]["release"]
    kind = device.kinds["Release"]
    original = kind._roll_back
    calls = []

    def die(root, spec, ctx, before, failed):
        calls.append(before)
        raise KeyboardInterrupt

    kind._roll_back = die
    with pytest.raises(KeyboardInterrupt):
        device.apply(V2, check={"command": "broken", "tries": 1})
    kind._roll_back = original
    assert device.ctx.release_journal.get(KEY)["phase"] == "rolling-back"
    assert device.current() != f"releases/{first}"
    rec = device.apply(V2, check={"command": "broken", "tries": 1})
    assert ready(rec) == (False, "RolledBack")
    assert "exit 3: boom" in rec.status["observed"]["checkOutput"]
    assert device.current() == f"releases/{first}" and device.releases() == {first}


def test_plan_says_what_would_switch_and_changes_nothing(device):
    device.apply(V1)
    kind = device.kinds["Release"]
    spec = kind.validate({"source": "artifacts/app", "root": str(device.root),
                          "restart": ["app.service"], "check": {"command": "healthy"}})
    assert kind.plan(KEY, spec, device.ctx) is None
    before = device.current()
    device.ctx.artifacts = device.fleet.publish(V2)
    line = kind.plan(KEY, spec, device.ctx)
    assert line.startswith(f"would switch {device.root}/current from {before} to release ")
    assert "restart app.service, then check command healthy" in line
    assert device.current() == before


def test_prune_removes_the_link_and_the_releases(device):
    device.apply(V1)
    device.apply(V2)
    kind = device.kinds["Release"]
    spec = kind.validate({"source": "artifacts/app", "root": str(device.root)})
    kind.prune(KEY, spec, device.ctx)
    assert device.current() is None and device.releases() == set()


def test_through_the_agent_signed_artifacts_are_released_and_plan_shows_the_next(
        tmp_path, publisher, capsys):
    """Real git: the artifacts travel in the signed commit; sync lays them down; plan
    reads the spec's tree as the sync does."""
    from support.kinds import Rig

    rig = Rig(tmp_path, publisher, extra_config='[commands]\nallowed = { ok = ["/bin/true"] }\n')
    app = rig.root / "app"
    spec = {"source": "artifacts/app", "root": str(app), "check": {"command": "ok"}}

    def ship(text: str, message: str) -> None:
        (publisher.root / "artifacts/app").mkdir(parents=True, exist_ok=True)
        (publisher.root / "artifacts/app/run.sh").write_text(text)
        rig.publish({"app.yaml": doc("Release", "app", spec)}, message)

    ship("v1\n", "v1")
    assert rig.cli("sync", "--bundle", rig.bundle()) == 0
    assert (app / "current/run.sh").read_text() == "v1\n"
    first = os.readlink(app / "current")

    # plan reads the spec's tree as the sync does: nothing would change now.
    capsys.readouterr()
    assert rig.cli("plan", "--all", "--detailed-exitcode") == 0
    assert "Release/app" in capsys.readouterr().out

    ship("v2\n", "v2")
    assert rig.cli("sync", "--bundle", rig.bundle()) == 0
    assert (app / "current/run.sh").read_text() == "v2\n"
    assert sorted(p.name for p in (app / "releases").iterdir()) \
        == sorted([first.split("/")[1], os.readlink(app / "current").split("/")[1]])
