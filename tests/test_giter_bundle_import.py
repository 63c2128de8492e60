"""What comes back from the field is verified before the hub takes it; inspect imports nothing.

Forged status bundles are built with the agent's own status writer
(``giter_agent.status.documents.make_status_commit``) on top of a device's real status history, in a
scratch copy of the hub, so each one fails exactly one rule: the key that signed it,
the files it touches, or the spec it claims to observe. After every refusal the hub's
refs and object files are byte for byte what they were, and no quarantine is left.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from support.fleet import BEACON, Device, Fleet, capture, enrolled, motd
from support.git import run, ssh_keygen

from giter_agent.history.store import History
from giter_agent.history.tree import read_file, replace_files
from giter_agent.spec.resources import dump_yaml, load_yaml
from giter_agent.status.documents import make_status_commit
from giter_agent.trust import ssh_keyfile
from giter_agent.trust.signed_commit import sign_commit
from giter_bundle.cli import main as bundle_main


def hub_snapshot(fleet: Fleet) -> tuple:
    git = fleet.root / ".git"
    objects = sorted(p.relative_to(git).as_posix() for p in (git / "objects").rglob("*")
                     if p.is_file())
    quarantined = sorted(p.name for p in (git / "quarantine").iterdir())
    return fleet.git("for-each-ref").stdout, objects, quarantined


def reported(fleet: Fleet, tmp_path: Path, stick: Path) -> tuple[Device, Device]:
    """Two devices that synced a spec from one stick and were imported."""
    pi_a, pi_b = enrolled(fleet, tmp_path, "pi-a", "pi-b")
    fleet.write("devices/pi-a/motd.yaml", motd(pi_a, "hello a\n"))
    fleet.write("devices/pi-b/motd.yaml", motd(pi_b, "hello b\n"))
    fleet.write("groups/lobby/beacon.yaml", BEACON)
    fleet.ok("commit", "-m", "spec")
    fleet.ok("create", stick)
    for d in (pi_a, pi_b):
        assert d.cli("sync", "--usb", stick) == 0
    assert fleet.ok("import", stick).count("ACCEPTED") == 2
    return pi_a, pi_b


def edit_yaml(path: str, change: Callable[[dict], None]) -> Callable:
    def files(read: Callable[[str], bytes]) -> dict[str, bytes]:
        doc = load_yaml(read(path))
        change(doc)
        return {path: dump_yaml(doc)}
    return files


def forge(fleet: Fleet, tmp_path: Path, name: str, device: str, key: Path,
          files: Callable, *, fake_spec: bool = False) -> Path:
    """A status bundle continuing the hub's status/<device>, signed with ``key``."""
    scratch = tmp_path / f"forge-{name}.git"
    shutil.copytree(fleet.root / ".git", scratch)
    history = History(scratch)
    store = history.object_store
    ref = f"refs/heads/status/{device}".encode()
    previous = history.ref(ref)
    spec = store[previous].parents[-1]
    base = store[previous].tree
    exclude = spec
    if fake_spec:
        # A spec commit the hub never published, signed by the publisher key itself.
        from giter_bundle.publisher import PublisherRepo

        publisher = PublisherRepo(scratch, ssh_keyfile.load_private_key(fleet.key), history=history)
        spec = publisher.commit({"devices/pi-a/extra.yaml": BEACON.encode()}, "unpublished")
    tree = replace_files(store, base, files(lambda p: read_file(store, base, p)))
    private = ssh_keyfile.load_private_key(key)
    forged = make_status_commit(store, spec_commit=spec, previous=previous, tree=tree,
                                device_id=device, message="status: forged",
                                sign=lambda c: sign_commit(c, private), now=2_000_000_000)
    out = tmp_path / f"{name}.bundle"
    history.write_bundle(out, {ref: forged}, exclude=[exclude])
    history.close()
    return out


def test_forged_status_bundles_are_refused_and_the_hub_is_unchanged(tmp_path, fleet, stick):
    pi_a, pi_b = reported(fleet, tmp_path, stick)
    outbox = stick / "giter/outbox"
    real_a = outbox / "pi-a.bundle"
    shutil.copy(real_a, tmp_path / "real-a.bundle")

    def mark(doc: dict) -> None:
        doc["status"]["forged"] = True

    def respec(doc: dict) -> None:
        doc["spec"]["content"] = "owned\n"

    def claim(doc: dict) -> None:
        doc["status"] = {"conditions": []}

    forgeries = [
        # pi-b signs a report that claims to be pi-a's.
        ("wrong-key", pi_b.key_file, edit_yaml("devices/pi-a/motd.yaml", mark), False,
         "UnknownSigner"),
        # pi-a writes status into pi-b's resource.
        ("other-device", pi_a.key_file, edit_yaml("devices/pi-b/motd.yaml", claim), False,
         "OwnershipViolation"),
        # pi-a changes its own spec, not only its status.
        ("spec-changed", pi_a.key_file, edit_yaml("devices/pi-a/motd.yaml", respec), False,
         "OwnershipViolation"),
        # pi-a claims to have observed a spec the hub never published.
        ("unknown-spec", pi_a.key_file, edit_yaml("devices/pi-a/motd.yaml", mark), True,
         "UnknownSpecCommit"),
    ]
    before = hub_snapshot(fleet)
    for name, key, files, fake_spec, reason in forgeries:
        bundle = forge(fleet, tmp_path, name, "pi-a", key, files, fake_spec=fake_spec)
        shutil.copy(bundle, real_a)
        code, out = fleet.cli("import", stick)
        assert code == 1, (name, out)
        assert f"pi-a.bundle                  REFUSED     {reason}:" in out, (name, out)
        assert "pi-b.bundle                  UP-TO-DATE" in out  # the honest one still reads
        assert hub_snapshot(fleet) == before, name

    # A bundle under another device's name, and one from a device nobody enrolled.
    shutil.copy(outbox / "pi-b.bundle", real_a)
    shutil.copy(outbox / "pi-b.bundle", outbox / "pi-z.bundle")
    code, out = fleet.cli("import", stick, "--json")
    verdicts = {r["file"]: (r["verdict"], r["reason"]) for r in json.loads(out)}
    assert code == 1
    assert verdicts == {"pi-a.bundle": ("refused", "UnexpectedRefs"),
                        "pi-b.bundle": ("up-to-date", "UpToDate"),
                        "pi-z.bundle": ("refused", "UnknownDevice")}
    # A truncated copy: refused by the history layer before anything is looked at.
    data = (tmp_path / "real-a.bundle").read_bytes()
    real_a.write_bytes(data[: len(data) - 40])
    code, out = fleet.cli("import", stick)
    assert code == 1 and "pi-a.bundle                  REFUSED" in out
    assert hub_snapshot(fleet) == before
    (outbox / "pi-z.bundle").unlink()

    # Git agrees with the verdict on the wrong-key forgery, and on the honest report,
    # given pi-a's enrolment as the only signer (git knows keys, not which device is whom).
    signers = fleet.root / ".giter/devices/pi-a.pub"
    check = tmp_path / "check.git"
    run("git", "clone", "-q", "--bare", fleet.root, check)
    for bundle, ok in ((tmp_path / "wrong-key.bundle", False), (tmp_path / "real-a.bundle",
                                                                 True)):
        run("git", "-C", check, "fetch", "-q", bundle,
            "+refs/heads/status/pi-a:refs/heads/check")
        verified = run("git", "-C", check, "-c", "gpg.format=ssh", "-c",
                       f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", "check",
                       check=False).returncode == 0
        assert verified is ok

    # After all that, an honest new report is taken in as usual.
    fleet.write("devices/pi-a/motd.yaml", motd(pi_a, "again\n"))
    fleet.ok("commit", "-m", "again")
    fleet.ok("create", stick)
    assert pi_a.cli("sync", "--usb", stick) == 0
    assert "pi-a.bundle                  ACCEPTED" in fleet.ok("import", stick)
    fleet.git("fsck", "--strict", "--no-dangling")


def test_a_re_enrolled_device_starts_a_new_status_history(tmp_path, fleet, stick):
    (pi_a,) = enrolled(fleet, tmp_path, "pi-a")
    fleet.write("devices/pi-a/motd.yaml", motd(pi_a, "hello\n"))
    fleet.ok("commit", "-m", "spec")
    fleet.ok("create", stick)
    assert pi_a.cli("sync", "--usb", stick) == 0
    fleet.ok("import", stick)
    old_status = fleet.rev("status/pi-a")

    # The SD card is re-flashed: new state, new key. Its report is not pi-a's yet.
    shutil.rmtree(pi_a.dir / "state")
    assert pi_a.cli("sync", "--usb", stick) == 0
    code, out = fleet.cli("import", stick)
    assert code == 1 and "UnknownSigner" in out
    assert fleet.rev("status/pi-a") == old_status

    fleet.ok("enroll", "pi-a", pi_a.key_line(), "--replace")
    assert "ACCEPTED" in fleet.ok("import", stick)
    assert fleet.rev("status/pi-a") != old_status
    assert fleet.verify_with_git("status/pi-a", fleet.device_signers())
    # The next bundle builds on what the new device reported (its first report's only
    # parent is the spec it observed).
    out = fleet.ok("create", "-o", tmp_path / "next.bundle")
    assert f"observed {fleet.rev('status/pi-a^1')[:12]}" in out


def test_inspect_reports_signers_and_verdicts_without_importing(tmp_path, fleet, stick):
    reported(fleet, tmp_path, stick)
    tip = fleet.rev()
    # Someone else's clone grows three commits: signed, unsigned, and by a stranger.
    clone = tmp_path / "clone"
    run("git", "clone", "-q", fleet.root, clone)
    stranger = ssh_keygen(tmp_path / "stranger")

    def commit(*args: str) -> str:
        (clone / "devices/pi-a/note.txt").write_text(" ".join(args))
        run("git", "-C", clone, "add", "-A")
        run("git", "-C", clone, "-c", "gpg.format=ssh", *args)
        return run("git", "-C", clone, "rev-parse", "HEAD").stdout.decode().strip()

    good = commit("-c", f"user.signingkey={fleet.key}", "commit", "-q", "-S", "-m", "good")
    unsigned = commit("commit", "-q", "--no-gpg-sign", "-m", "unsigned")
    strange = commit("-c", f"user.signingkey={stranger}", "commit", "-q", "-S", "-m", "odd")
    bundle = tmp_path / "offer.bundle"
    run("git", "-C", clone, "bundle", "create", "-q", bundle, "main", f"^{tip}")

    before = fleet.git("for-each-ref").stdout
    code, out = fleet.cli("inspect", bundle, "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["prerequisites"][0]["commit"] == tip and doc["prerequisites"][0]["present"]
    verdicts = [(c["commit"], c["verdict"], c["reason"]) for c in doc["commits"]]
    assert verdicts == [(good, "good", "Verified"), (unsigned, "refused", "UnsignedCommit"),
                        (strange, "refused", "UnknownSigner")]
    assert doc["commits"][0]["signer"].startswith("publisher (SHA256:")
    assert doc["commits"][2]["signer"].startswith("SHA256:")
    assert {t["path"] for t in doc["touched"]} == {"devices/pi-a/note.txt"}
    # Nothing was imported: the hub does not have the commits, its refs are the same.
    assert fleet.git("cat-file", "-e", good, check=False).returncode != 0
    assert fleet.git("for-each-ref").stdout == before
    assert not list((fleet.root / ".git/quarantine").iterdir())

    # A device's status bundle: checked against its enrolment; the text report reads well.
    code, out = fleet.cli("inspect", stick / "giter/outbox/pi-a.bundle")
    assert code == 0, out
    assert "device pi-a (SHA256:" in out and "modify  devices/pi-a/motd.yaml  File/motd" in out
    assert "verdict: every commit verifies" in out
    # Without a hub, a full bundle is still checked against the keys given.
    full = tmp_path / "full.bundle"
    fleet.git("bundle", "create", "-q", full, "main")
    nowhere = ["-C", tmp_path / "nowhere", "inspect", full]
    code, out = capture(bundle_main, nowhere)
    assert code == 1 and "NoTrustFile" in out
    code, out = capture(bundle_main, [*nowhere, "--allowed-signers", fleet.trust_file])
    assert code == 0 and "commits (4 new" in out, out


# Written exactly as docs/kinds.md shows it: `state: on` unquoted. The device reads YAML 1.2
# (the string "on"); the hub's ownership check once read YAML 1.1 (the boolean True), so
# the device's honest status, re-serialised with the string quoted, was refused as a forgery.
BEACON_AS_DOCUMENTED = """\
apiVersion: giter.dev/v1alpha1
kind: Output
metadata:
  name: beacon
spec:
  pin: led1
  state: on
"""
DOOR_AS_DOCUMENTED = """\
apiVersion: giter.dev/v1alpha1
kind: Output
metadata:
  name: door
spec:
  pin: relay1
  state: off
"""


def test_unquoted_on_and_off_are_applied_and_their_status_imported(fleet, tmp_path, stick):
    (pi,) = enrolled(fleet, tmp_path, "pi-a")
    fleet.write("groups/lobby/beacon.yaml", BEACON_AS_DOCUMENTED)
    fleet.write("devices/pi-a/door.yaml", DOOR_AS_DOCUMENTED)
    fleet.ok("commit", "-m", "pins as the docs write them")
    fleet.ok("create", stick)
    assert pi.cli("sync", "--usb", stick) == 0
    out = fleet.ok("import", stick)
    assert "ACCEPTED" in out and "OwnershipViolation" not in out, out
    # The hub now holds the device's status, which names the string the device applied.
    shown = fleet.git("show", "status/pi-a:groups/lobby/beacon.yaml").stdout.decode()
    assert "state: 'on'" in shown or 'state: "on"' in shown, shown
    assert "pi-a" in fleet.ok("status")


def test_a_status_bundle_stuffed_with_unreachable_objects_keeps_only_what_it_reaches(
        tmp_path, fleet, stick):
    """A correctly signed status commit whose pack also carries blobs nothing reaches
    (filler to grow the hub): the report is taken, the filler is not."""
    import os

    from giter_agent.history import bundle as bundle_format

    pi_a, _pi_b = reported(fleet, tmp_path, stick)
    fleet.write("devices/pi-a/motd.yaml", motd(pi_a, "again\n"))
    fleet.ok("commit", "-m", "again")
    fleet.ok("create", stick)
    assert pi_a.cli("sync", "--usb", stick) == 0
    honest = stick / "giter/outbox/pi-a.bundle"
    with honest.open("rb") as fh:
        header = bundle_format.read_header(fh)
    (tip,) = header.refs.values()

    scratch = tmp_path / "stuff.git"
    run("git", "clone", "-q", "--bare", fleet.root, scratch)
    run("git", "-C", scratch, "fetch", "-q", honest, "refs/heads/status/pi-a:refs/heads/x")
    filler = [run("git", "-C", scratch, "hash-object", "-w", "--stdin",
                  input=os.urandom(256 * 1024)).stdout.strip() for _ in range(3)]
    wanted = run("git", "-C", scratch, "rev-list", "--objects", "x", "--not",
                 *[p.decode() for p in header.prerequisites]).stdout.split(b"\n")
    ids = b"\n".join([line.split(b" ")[0] for line in wanted if line] + filler) + b"\n"
    pack = run("git", "-C", scratch, "pack-objects", "--stdout", "-q", input=ids).stdout
    bundle_format.write_bundle(
        honest, refs=header.refs,
        prerequisites=[(p, header.prerequisite_comments.get(p, b""))
                       for p in header.prerequisites],
        pack_writer=lambda out: out.write(pack))
    run("git", "-C", fleet.root, "bundle", "verify", "-q", honest)  # git takes it too

    assert "pi-a.bundle                  ACCEPTED" in fleet.ok("import", stick)
    assert fleet.rev("status/pi-a") == tip.decode()
    for blob in filler:
        assert fleet.git("cat-file", "-e", blob.decode(), check=False).returncode != 0
    fleet.git("fsck", "--strict", "--no-dangling")


def test_a_linked_status_bundle_on_the_stick_is_not_followed(tmp_path, fleet, stick):
    reported(fleet, tmp_path, stick)
    outbox = stick / "giter/outbox"
    elsewhere = tmp_path / "workstation-file.bundle"
    (outbox / "pi-a.bundle").rename(elsewhere)
    (outbox / "pi-a.bundle").symlink_to(elsewhere)
    before = hub_snapshot(fleet)
    code, out = fleet.cli("import", stick)
    assert code == 1
    assert "pi-a.bundle                  REFUSED     NotARegularFile:" in out, out
    assert hub_snapshot(fleet) == before
