"""The publisher's toolkit through its command line, with simulated devices and real git.

An operator's exchange repository is made with ``giter-bundle init``, devices are
enrolled from what ``giter-agent key`` prints, specs are signed both ways (the
toolkit's pure-Python ``commit`` and plain ``git commit -S``), bundles go onto a stick
folder, devices sync from it through the agent's own CLI, and their status comes back
through ``import``. Real git is the oracle for everything the toolkit writes:
``git bundle verify``, ``git verify-commit`` and ``git fsck``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.fleet import API, BEACON, Device, bundle_verifies, capture, enrolled, motd
from support.git import run, ssh_keygen

from giter_agent.history.bundle import read_header
from giter_agent.transport.hub_status import read_hub_status
from giter_bundle.cli import main as bundle_main


def test_status_bundles_leave_out_what_the_hub_holds_and_only_that(tmp_path, fleet, stick):
    (pi_a,) = enrolled(fleet, tmp_path, "pi-a")
    fleet.write("devices/pi-a/motd.yaml", motd(pi_a, "hello\n"))
    fleet.ok("commit", "-m", "Welcome")
    spec = fleet.rev()
    outbox = stick / "giter/outbox/pi-a.bundle"

    def prerequisites() -> list[bytes]:
        with outbox.open("rb") as fh:
            return read_header(fh).prerequisites

    fleet.ok("create", stick)
    assert not (stick / "giter/inbox/hub-status.txt").exists()  # the hub holds nothing yet
    assert pi_a.cli("sync", "--usb", stick) == 0
    assert prerequisites() == [spec.encode()]
    assert "ACCEPTED" in fleet.ok("import", stick)
    reported = fleet.rev("status/pi-a")

    # Nothing new since: the hub holds the device's status tip, so the bundle carries no
    # commit at all; git and the hub read it all the same.
    fleet.ok("create", stick)
    assert pi_a.cli("sync", "--usb", stick) == 0
    assert pi_a.state().status_tip == reported
    # Its one prerequisite is what it builds on: the hub's status tip (the export walks
    # back to it and no further; the spec it observed is behind that tip).
    assert prerequisites() == [reported.encode()]
    assert bundle_verifies(outbox, fleet.root)
    assert "UP-TO-DATE" in fleet.ok("import", stick)

    # The file is not signed: a commit the device's status history does not reach is
    # ignored (the whole chain goes back), whatever else the file holds.
    (stick / "giter/inbox/hub-status.txt").write_text(
        "# hand-made\npi-a " + "ab" * 20 + "\npi-b not-a-commit\n")
    assert pi_a.cli("sync", "--usb", stick) == 0
    assert prerequisites() == [spec.encode()]
    assert bundle_verifies(outbox, tmp_path / "fresh.git") is False  # needs the spec, only
    assert "UP-TO-DATE" in fleet.ok("import", stick)


def test_sneakernet_cycle_two_devices_share_one_stick(tmp_path, fleet, stick):
    pi_a, pi_b = enrolled(fleet, tmp_path, "pi-a", "pi-b")
    # Edit, then sign without git: generations are bumped, lint runs first.
    fleet.write("devices/pi-a/motd.yaml", motd(pi_a, "hello a\n"))
    fleet.write("devices/pi-b/motd.yaml", motd(pi_b, "hello b\n"))
    # Flow style, as some operators write it: the generation goes into the same mapping.
    fleet.write("groups/lobby/beacon.yaml", f"{API}kind: Output\nmetadata: {{name: beacon}}\n"
                "spec: {pin: led1, state: on}\n")
    assert fleet.cli("lint")[0] == 0
    out = fleet.ok("commit", "-m", "Welcome files and the lobby beacon")
    assert "devices/pi-a/motd.yaml: metadata.generation -> 1" in out
    assert "metadata: {generation: 1, name: beacon}" in (fleet.root /
                                                          "groups/lobby/beacon.yaml").read_text()
    assert "  name: motd  # the welcome text\n  generation: 1\n" in \
        (fleet.root / "devices/pi-a/motd.yaml").read_text()
    assert fleet.git("status", "--porcelain").stdout == b""
    first = fleet.rev()

    # Create: nobody has reported yet, so the bundle is full; git reads it.
    fleet.ok("create", stick)
    bundle = stick / "giter/inbox/main.bundle"
    empty = tmp_path / "empty.git"
    run("git", "init", "-q", "--bare", empty)
    assert bundle_verifies(bundle, empty)
    with bundle.open("rb") as fh:
        assert read_header(fh).prerequisites == []

    # Carry, sync: one stick serves both devices; each writes its own outbox files.
    assert pi_a.cli("sync", "--usb", stick) == 0
    assert pi_b.cli("sync", "--usb", stick) == 0
    assert (pi_a.root / "motd").read_text() == "hello a\n"
    assert (pi_b.root / "motd").read_text() == "hello b\n"
    outbox = sorted(p.name for p in (stick / "giter/outbox").iterdir())
    assert outbox == ["pi-a.bundle", "pi-a.txt", "pi-b.bundle", "pi-b.txt"]

    # Carry back, import: both verified; git verifies them with the enrolled keys.
    out = fleet.ok("import", stick)
    assert out.count("ACCEPTED") == 2, out
    signers = fleet.device_signers()
    for d in (pi_a, pi_b):
        assert fleet.verify_with_git(f"status/{d.id}", signers)
        parents = fleet.git("rev-list", "--parents", "-n1", f"status/{d.id}").stdout.split()
        assert parents[1:] == [first.encode()]
    status = fleet.status()
    assert status["pi-a"]["observedSpec"] == first and status["pi-a"]["behind"] == 0
    assert sorted(status["pi-a"]["ready"]) == ["File/motd", "Output/beacon"]
    assert status["pi-a"]["notReady"] == [] and status["pi-a"]["refused"] == []
    # Importing the same stick again is normal and changes nothing.
    assert fleet.ok("import", stick).count("UP-TO-DATE") == 2

    # Round two, signed with plain git: only pi-b's spec changes, and only pi-b syncs.
    fleet.write("devices/pi-b/motd.yaml", motd(pi_b, "second\n", "  generation: 2\n"))
    fleet.git("commit", "-q", "-a", "-S", "--trailer", "Giter-Branch: main", "-m",
              "New welcome for pi-b")
    second = fleet.rev()
    fleet.ok("create", stick)
    with bundle.open("rb") as fh:
        assert read_header(fh).prerequisites == [first.encode()]
    assert bundle_verifies(bundle, fleet.root)
    # Beside it, what the hub holds of each device's status: pi-b's status bundle leaves
    # that out, so it carries its new report only, however long pi-b has reported.
    acks = read_hub_status(stick / "giter/inbox")
    assert acks == {d.id: fleet.rev(f"status/{d.id}") for d in (pi_a, pi_b)}
    assert pi_b.cli("sync", "--usb", stick) == 0
    assert (pi_b.root / "motd").read_text() == "second\n"
    with (stick / "giter/outbox/pi-b.bundle").open("rb") as fh:
        assert acks["pi-b"].encode() in read_header(fh).prerequisites
    assert bundle_verifies(stick / "giter/outbox/pi-b.bundle", fleet.root)
    assert "ACCEPTED" in fleet.ok("import", stick)
    status = fleet.status()
    assert (status["pi-a"]["behind"], status["pi-b"]["behind"]) == (1, 0)
    assert status["pi-b"]["observedSpec"] == second
    table = fleet.ok("status")
    assert "pi-a" in table and first[:12] in table and second[:12] in table

    # The status commit chain is the device's report history, as docs/decisions.md says.
    parents = fleet.git("rev-list", "--parents", "-n1", "status/pi-b").stdout.split()
    assert parents[2:] == [second.encode()]
    assert fleet.verify_with_git("status/pi-b", signers)

    # git reads every file the toolkit wrote: each spec commit verifies against the trust
    # file, the repository is sound, the README and layout are committed.
    for sha in fleet.git("rev-list", "main").stdout.decode().split():
        assert fleet.verify_with_git(sha, fleet.trust_file), sha
    fleet.git("fsck", "--strict", "--no-dangling")
    assert [p for p in fleet.git("ls-files").stdout.decode().split()
            if not p.startswith(".giter/schemas/")] == [
        ".giter/devices/pi-a.pub", ".giter/devices/pi-a.yaml", ".giter/devices/pi-b.pub",
        ".giter/devices/pi-b.yaml", ".giter/trust/allowed_signers",
        ".giter/trust/policy.toml", "README.md",
        "devices/README.md", "devices/pi-a/motd.yaml", "devices/pi-b/motd.yaml",
        "groups/README.md", "groups/lobby/beacon.yaml"]


def test_offline_device_catches_up_on_fifty_commits_with_one_bundle(tmp_path, fleet, stick):
    (pi_a,) = enrolled(fleet, tmp_path, "pi-a")
    fleet.write("devices/pi-a/motd.yaml", motd(pi_a, "day 0\n"))
    fleet.ok("commit", "-m", "day 0")
    seen = fleet.rev()
    fleet.ok("create", stick)
    assert pi_a.cli("sync", "--usb", stick) == 0
    fleet.ok("import", stick)

    for day in range(1, 51):  # pi-a is away while the publisher commits 50 times
        fleet.write("devices/pi-a/motd.yaml", motd(pi_a, f"day {day}\n"))
        fleet.git("commit", "-q", "-a", "-S", "--trailer", "Giter-Branch: main", "-m",
                  f"day {day}")
    tip = fleet.rev()
    assert fleet.status()["pi-a"]["behind"] == 50

    fleet.ok("create", stick)
    inbox = sorted((stick / "giter/inbox").iterdir())
    assert [p.name for p in inbox] == ["hub-status.txt", "main.bundle"]
    with inbox[1].open("rb") as fh:
        header = read_header(fh)
    assert header.prerequisites == [seen.encode()]
    assert header.refs == {b"refs/heads/main": tip.encode()}
    assert bundle_verifies(inbox[1], fleet.root)
    code, out = fleet.cli("inspect", inbox[1])
    assert code == 0 and "50 new" in out, out

    assert pi_a.cli("sync", "--usb", stick) == 0
    assert pi_a.state().accepted == tip
    assert (pi_a.root / "motd").read_text() == "day 50\n"
    fleet.ok("import", stick)
    assert fleet.status()["pi-a"]["behind"] == 0


def test_commit_bumps_generation_only_when_the_spec_changes(tmp_path, fleet):
    (pi_a,) = enrolled(fleet, tmp_path, "pi-a")
    path = fleet.root / "devices/pi-a/motd.yaml"
    fleet.write("devices/pi-a/motd.yaml", motd(pi_a, "one\n"))
    fleet.write("devices/pi-a/beacon.yaml", BEACON)
    fleet.ok("commit", "-m", "two resources")
    assert "generation: 1" in path.read_text()

    # A change outside spec bumps nothing (as in Kubernetes); a spec change bumps by one.
    fleet.write("devices/pi-a/beacon.yaml", BEACON.replace("  name: beacon\n",
                                                            "  name: beacon\n  labels:\n"
                                                            "    room: hall\n"))
    out = fleet.ok("commit", "-m", "label the beacon")
    assert "->" not in out
    fleet.write("devices/pi-a/motd.yaml", path.read_text().replace("one", "two"))
    out = fleet.ok("commit", "-m", "second motd")
    assert "devices/pi-a/motd.yaml: metadata.generation -> 2" in out
    assert "  generation: 2\n" in path.read_text() and "# the welcome text" in path.read_text()
    # An author who bumped it already is left alone.
    fleet.write("devices/pi-a/motd.yaml", path.read_text().replace("two", "three")
                .replace("generation: 2", "generation: 7"))
    assert "->" not in fleet.ok("commit", "-m", "third motd, generation by hand")
    assert "generation: 7" in path.read_text()

    # Deletions are committed too, and git agrees with the index and the signature.
    (fleet.root / "devices/pi-a/beacon.yaml").unlink()
    fleet.ok("commit", "-m", "retire the beacon")
    assert fleet.git("status", "--porcelain").stdout == b""
    assert "beacon" not in fleet.git("ls-files").stdout.decode()
    assert fleet.verify_with_git("HEAD", fleet.trust_file)
    head = fleet.rev()

    # Lint errors stop the commit before anything is written; so does an empty change.
    fleet.write("devices/pi-a/motd.yaml", path.read_text().replace("content", "contents"))
    before = path.read_bytes()
    code, out = fleet.cli("commit", "-m", "broken")
    assert code == 1 and "devices/pi-a/motd.yaml: InvalidSpec:" in out
    assert path.read_bytes() == before and fleet.rev() == head
    fleet.git("checkout", "-q", "--", ".")
    assert fleet.cli("commit", "-m", "nothing")[0] == 1
    # Without a usable key, nothing is staged or written.
    fleet.write("devices/pi-a/new.yaml", BEACON)
    code, out = fleet.cli("commit", "-m", "x", "--signing-key", tmp_path / "missing")
    assert code == 2 and "NoSigningKey" in out
    assert b"new.yaml" not in fleet.git("diff", "--cached", "--name-only").stdout


def test_lint_names_every_problem_the_agent_would_refuse(tmp_path, fleet):
    enrolled(fleet, tmp_path, "pi-a", groups=("lobby", "hall"))
    out = fleet.ok("lint")
    assert "0 error(s)" in out
    fleet.write("devices/pi-a/thing.yaml", f"{API}kind: Gizmo\nmetadata: {{name: g}}\nspec: {{}}\n")
    fleet.write("devices/pi-a/led.yaml", BEACON.replace("state: on", "state: sideways")
                .replace("name: beacon", "name: led"))
    fleet.write("devices/pi-a/dup.yaml", f"{API}kind: Output\nkind: File\n")
    fleet.write("groups/lobby/beacon.yaml", BEACON)
    fleet.write("groups/hall/beacon.yaml", BEACON)
    fleet.write("groups/hall/Upper.yaml", BEACON)
    fleet.write("groups/lobby/notes.txt", "not a resource\n")
    fleet.write("devices/pi-a/seen.yaml", BEACON.replace("name: beacon", "name: seen")
                + "status: {}\n")
    fleet.write("devices/ghost/x.yaml", BEACON)
    fleet.write(".giter/devices/pi-z.pub", "not a key\n")
    fleet.write(".giter/trust/policy.toml", "bind_branch = yes\n")
    os.symlink("/etc/passwd", fleet.root / "devices/pi-a/link.yaml")
    code, out = fleet.cli("lint")
    assert code == 1, out
    expected = [
        "devices/pi-a: UnsafeTreeEntry: devices/pi-a/link.yaml: is a symlink",
        "groups/hall: UnsafeTreeEntry: groups/hall/Upper.yaml: name is not allowed",
        ".giter/devices/pi-z.pub: InvalidTrustFile:",
        ".giter/trust/policy.toml: InvalidTrustFile: .giter/trust/policy.toml: not valid TOML",
        "groups/lobby/notes.txt: warning: NotAResource:",
        "devices/ghost: warning: NotEnrolled:",
    ]
    for line in expected:
        assert line in out, (line, out)
    os.unlink(fleet.root / "devices/pi-a/link.yaml")
    (fleet.root / "groups/hall/Upper.yaml").unlink()
    code, out = fleet.cli("lint")
    for line in [
        "devices/pi-a/thing.yaml: UnknownKind: no kind 'Gizmo'",
        "devices/pi-a/led.yaml: InvalidSpec: spec.state must be one of",
        "devices/pi-a/dup.yaml: YAMLDuplicateKey:",
        "groups/hall/beacon.yaml: DuplicateResource: Output/beacon is also defined in "
        "groups/lobby/beacon.yaml (both reach pi-a)",
        "devices/pi-a/seen.yaml: warning: StatusOnSpecBranch:",
    ]:
        assert line in out, (line, out)
    assert code == 1
    # A committed tree is linted the same way (here: the clean tip).
    assert fleet.cli("lint", "--rev", "main")[0] == 0
    # create refuses to ship a tip that fails lint.
    for rel in ("devices/pi-a/thing.yaml", "devices/pi-a/dup.yaml"):
        (fleet.root / rel).unlink()
    fleet.git("add", "-A")
    fleet.git("commit", "-q", "-S", "--trailer", "Giter-Branch: main", "-m",
              "ship the broken one")
    code, out = fleet.cli("create", "-o", tmp_path / "x.bundle")
    assert code == 1 and "not shipped" in out and not (tmp_path / "x.bundle").exists()


def test_init_adopts_a_signed_repository_and_refuses_an_unsigned_one(tmp_path, publisher,
                                                                     publisher_key):
    # A repository signed with the publisher key, by plain git: adopted as it is.
    publisher.commit("existing work", files={"notes.md": "kept\n"})
    code, out = capture(bundle_main, ["init", publisher.root, "--signing-key", publisher_key])
    assert code == 0, out
    assert "adopted" in out
    assert publisher.git("rev-list", "--count", "main").stdout.strip() == b"2"
    assert (publisher.root / "notes.md").read_text() == "kept\n"
    signers = tmp_path / "trusted"
    shutil.copy(publisher.root / ".giter/trust/allowed_signers", signers)
    assert publisher.git("-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit",
                         "HEAD", check=False).returncode == 0

    # One unsigned commit anywhere in the history: devices would refuse it all.
    other = tmp_path / "other"
    run("git", "init", "-q", "-b", "main", other)
    (other / "a.txt").write_text("a\n")
    run("git", "-C", other, "add", "-A")
    run("git", "-C", other, "commit", "-q", "--no-gpg-sign", "-m", "unsigned")
    head = run("git", "-C", other, "rev-parse", "HEAD").stdout
    code, out = capture(bundle_main, ["init", other, "--signing-key", publisher_key])
    assert code == 1 and "UnsignedCommit" in out and "--branch" in out
    assert run("git", "-C", other, "rev-parse", "HEAD").stdout == head
    assert not (other / ".giter").exists()
    # A fresh spec branch in the same repository starts signed.
    code, out = capture(bundle_main, ["--branch", "fleet", "init", other,
                                      "--signing-key", publisher_key])
    assert code == 0, out
    assert run("git", "-C", other, "cat-file", "-e",
               "fleet:.giter/trust/allowed_signers", check=False).returncode == 0


def test_enroll_guards_keys_and_groups(tmp_path, fleet):
    pi_a, pi_b = (Device(tmp_path, n, fleet) for n in ("pi-a", "pi-b"))
    line = pi_a.key_line()
    code, out = fleet.cli("enroll", "pi-b", line)
    assert code == 2 and "WrongDevice" in out
    fleet.ok("enroll", "pi-a", line, "--group", "lobby")
    # The plain .pub line from the device's state dir works too, given as a file.
    pi_b.key_line()
    pub = tmp_path / "pi-b.pub"
    shutil.copy(pi_b.dir / "state/device_key.pub", pub)
    fleet.ok("enroll", "pi-b", pub)
    code, out = fleet.cli("enroll", "pi-c", line)
    assert code == 2  # the line names pi-a
    plain = " ".join(line.split()[-2:])
    code, out = fleet.cli("enroll", "pi-c", plain)
    assert code == 1 and "DuplicateKey" in out
    # Same key again: only groups change; another key needs --replace.
    assert "nothing to do" in fleet.ok("enroll", "pi-a", line)
    fleet.ok("enroll", "pi-a", line, "--group", "lobby", "--group", "hall")
    assert "- hall" in (fleet.root / ".giter/devices/pi-a.yaml").read_text()
    new_key = ssh_keygen(tmp_path / "new_device_key")
    new_line = Path(f"{new_key}.pub").read_text()
    code, out = fleet.cli("enroll", "pi-a", new_line)
    assert code == 1 and "AlreadyEnrolled" in out
    fleet.ok("enroll", "pi-a", new_line, "--replace")
    assert fleet.status()["pi-a"]["groups"] == ["lobby", "hall"]
    for sha in fleet.git("rev-list", "main").stdout.decode().split():
        assert fleet.verify_with_git(sha, fleet.trust_file)


def test_create_plans_prunes_and_reports_progress(tmp_path, fleet, stick):
    pi_a, pi_b = enrolled(fleet, tmp_path, "pi-a", "pi-b")
    fleet.write("groups/lobby/beacon.yaml", BEACON)
    fleet.ok("commit", "-m", "beacon")
    first = fleet.rev()
    fleet.ok("create", stick)
    for d in (pi_a, pi_b):
        assert d.cli("sync", "--usb", stick) == 0
    fleet.ok("import", stick)

    # Everyone is at the tip: the bundle is empty but valid, and syncing it says so.
    fleet.ok("create", stick)
    bundle = stick / "giter/inbox/main.bundle"
    with bundle.open("rb") as fh:
        header = read_header(fh)
    assert header.prerequisites == [first.encode()]
    assert header.refs == {b"refs/heads/main": first.encode()}
    assert bundle_verifies(bundle, fleet.root)
    assert pi_a.cli("sync", "--usb", stick) == 0
    assert pi_a.state().last_sync["outcome"] == "up-to-date"

    # An older bundle of main left on the stick would be a rollback for devices ahead:
    # create removes it. Someone else's bundle is left alone.
    shutil.copy(bundle, stick / "giter/inbox/old.bundle")
    (stick / "giter/inbox/other.bundle").write_bytes(b"# v2 git bundle\n")
    fleet.write("devices/pi-a/motd.yaml", motd(pi_a, "hi\n"))
    fleet.ok("commit", "-m", "motd for pi-a")
    out = fleet.ok("create", stick, "--progress")
    assert "removed old.bundle" in out and "writing main.bundle: 100%" in out
    names = sorted(p.name for p in (stick / "giter/inbox").iterdir())
    assert names == ["hub-status.txt", "main.bundle", "other.bundle"]

    # --device narrows the targets; a device that never reported forces a full bundle.
    pi_c = Device(tmp_path, "pi-c", fleet)
    fleet.ok("enroll", "pi-c", pi_c.key_line())
    out = fleet.ok("create", "-o", tmp_path / "ab.bundle", "--device", "pi-a",
                   "--device", "pi-b")
    assert f"needs {first[:12]}" in out
    out = fleet.ok("create", "-o", tmp_path / "all.bundle")
    assert "full bundle" in out and "pi-c" in out and "never reported" in out
    assert bundle_verifies(tmp_path / "all.bundle", fleet.root)
    code, out = fleet.cli("create", "-o", tmp_path / "z.bundle", "--device", "pi-z")
    assert code == 2 and "UnknownDevice" in out


def test_a_bare_hub_that_git_gc_packed_with_bitmaps_still_works(tmp_path, fleet, stick):
    """The hub may be a bare repository a git server serves, repacked by git with bitmaps."""
    (pi_a,) = enrolled(fleet, tmp_path, "pi-a")
    fleet.write("devices/pi-a/motd.yaml", motd(pi_a, "hello\n"))
    fleet.ok("commit", "-m", "spec")
    fleet.ok("create", stick)
    assert pi_a.cli("sync", "--usb", stick) == 0
    hub = tmp_path / "hub.git"
    run("git", "clone", "-q", "--bare", fleet.root, hub)
    run("git", "-C", hub, "repack", "-q", "-a", "-d", "-b")
    run("git", "-C", hub, "pack-refs", "--all")
    assert list((hub / "objects/pack").glob("*.bitmap"))

    def cli(*args: str | Path) -> str:
        code, out = capture(bundle_main, ["-C", hub, *args])
        assert code == 0, out
        return out

    assert "ACCEPTED" in cli("import", stick)  # promotes a pack without a bitmap beside it
    assert cli("status", "--json").count('"behind": 0') == 1
    cli("create", "-o", tmp_path / "from-hub.bundle")
    assert bundle_verifies(tmp_path / "from-hub.bundle", hub)
    run("git", "-C", hub, "fsck", "--strict", "--no-dangling")


DEVICE_SIDE = ("gpiozero", "giter_agent.sync", "giter_agent.daemon", "giter_agent.reconcile",
               "giter_agent.device", "giter_agent.transport.usb", "giter_agent.transport.network")


@pytest.mark.parametrize("command", ["lint", "create", "status", "inspect", "report", "hub"])
def test_publisher_commands_load_no_device_code(tmp_path, fleet, stick, command):
    """The publisher's commands never load the device's sync, board, GPIO or transports:
    checked in the process that runs them, not only by the import contracts."""
    (pi,) = enrolled(fleet, tmp_path, "pi-a")
    fleet.write("devices/pi-a/motd.yaml", motd(pi, "hello\n"))
    fleet.write("groups/lobby/beacon.yaml", BEACON)
    fleet.ok("commit", "-m", "spec")
    fleet.ok("create", stick)
    args = {"lint": ["lint"], "create": ["create", str(tmp_path / "stick2")],
            "status": ["status"], "report": ["report", "--html", str(tmp_path / "page")],
            "hub": ["hub", "gitolite", str(tmp_path / "admin")],
            "inspect": ["inspect", str(stick / "giter" / "inbox" / "main.bundle")]}[command]
    (tmp_path / "admin/conf").mkdir(parents=True)
    (tmp_path / "admin/conf/gitolite.conf").write_text("repo gitolite-admin\n  RW+ = admin\n")
    if command == "create":
        (tmp_path / "stick2").mkdir()
    script = ("import sys\nfrom giter_bundle.cli import main\n"
              "code = main(sys.argv[1:])\n"
              f"loaded = sorted(m for m in sys.modules if m.startswith({DEVICE_SIDE!r}))\n"
              "print('LOADED', loaded)\nsys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", script, "-C", str(fleet.root), *args],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "LOADED []" in proc.stdout, proc.stdout


def test_a_missing_file_is_one_line_not_a_traceback(tmp_path, fleet):
    code, out = fleet.cli("inspect", tmp_path / "no-such.bundle")
    assert code == 1
    assert "Traceback" not in out and "no-such.bundle" in out and len(out.splitlines()) == 1


def test_init_binds_branches_and_create_refuses_what_devices_would(tmp_path, fleet, stick):
    """A new fleet binds tips to their branch: giter-bundle commit names it, a plain
    `git commit -S` must say `--trailer 'Giter-Branch: main'`, and create checks it (and
    the rest of the devices' rule) before it ships anything."""
    from giter_agent.trust.trailers import branch_of

    assert fleet.git("show", "main:.giter/trust/policy.toml").stdout.decode().endswith(
        "bind_branch = true\n")
    (pi_a,) = enrolled(fleet, tmp_path, "pi-a")
    fleet.write("devices/pi-a/motd.yaml", motd(pi_a, "hello\n"))
    fleet.ok("commit", "-m", "Welcome")
    message = fleet.git("log", "-1", "--format=%B").stdout
    assert branch_of(message) == "main"
    fleet.ok("create", stick)
    assert pi_a.cli("sync", "--usb", stick) == 0
    fleet.ok("import", stick)

    fleet.write("devices/pi-a/motd.yaml", motd(pi_a, "unbound\n", "  generation: 2\n"))
    fleet.git("commit", "-q", "-a", "-S", "-m", "forgot the trailer")
    code, out = fleet.cli("create", stick)
    assert code != 0 and "BranchNotBound" in out and "not shipped" in out, out
    fleet.git("commit", "-q", "--amend", "--no-edit", "-S", "--trailer", "Giter-Branch: main")
    fleet.ok("create", stick)
    assert pi_a.cli("sync", "--usb", stick) == 0
    assert (pi_a.root / "motd").read_text() == "unbound\n"

    # A side branch built on an older commit than pi-a holds: devices refuse it as a fork.
    fleet.git("checkout", "-q", "-b", "late", "main~1")
    fleet.write("devices/pi-a/late.txt", "late\n")
    fleet.git("add", "-A")
    fleet.git("commit", "-q", "-S", "--trailer", "Giter-Branch: main", "-m", "late work")
    fleet.git("checkout", "-q", "main")
    fleet.git("merge", "-q", "--no-ff", "--no-commit", "late")
    fleet.git("commit", "-q", "-S", "--trailer", "Giter-Branch: main", "-m", "merge late")
    fleet.ok("import", stick)
    code, out = fleet.cli("create", stick)
    assert code != 0 and "Fork" in out, out
    # inspect says the same of a bundle made with plain git for a device at pi-a's tip.
    held = pi_a.state().accepted
    offer = tmp_path / "late.bundle"
    fleet.git("bundle", "create", "-q", offer, "main", f"^{held}")
    code, out = fleet.cli("inspect", offer, "--json")
    doc = json.loads(out)
    assert code == 1 and not doc["ok"]
    assert any("Fork" in p for p in doc["problems"]), doc["problems"]
    # ...and the same work rebased onto main ships.
    fleet.git("reset", "-q", "--hard", "main~1")
    fleet.git("checkout", "-q", "late")
    fleet.git("rebase", "-q", "main")
    fleet.git("checkout", "-q", "main")
    fleet.git("merge", "-q", "--no-ff", "--no-commit", "late")
    fleet.git("commit", "-q", "-S", "--trailer", "Giter-Branch: main", "-m", "merge late")
    fleet.ok("create", stick)
    assert pi_a.cli("sync", "--usb", stick) == 0
