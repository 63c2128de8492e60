"""The verified round trip, end to end, through the command line.

A publisher signs with real ``git commit -S`` (gpg.format=ssh), bundles with
``git bundle create`` onto a USB folder; the agent syncs; real git then checks the
status bundle on the stick (``git bundle verify``, ``git fetch``, ``git verify-commit``).
Every refusal must leave the applied state, the accepted tip and the files unchanged.
"""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest
from support.devices import SimDevice
from support.git import Publisher, run, ssh_keygen
from support.resources import API, BEACON

from giter_agent.cli.demo import run_demo
from giter_agent.cli.main import main


def motd(device: SimDevice, text: str) -> str:
    return (f"{API}kind: File\nmetadata:\n  name: motd\n  generation: 1\nspec:\n"
            f"  path: {device.root}/motd\n  content: {json.dumps(text)}\n  mode: \"0640\"\n")




@pytest.fixture
def stick(tmp_path) -> Path:
    inbox = tmp_path / "stick" / "giter" / "inbox"
    inbox.mkdir(parents=True)
    return tmp_path / "stick"


@pytest.fixture
def device(tmp_path, publisher) -> SimDevice:
    return SimDevice(tmp_path, "pi-01", publisher.allowed_signers)


def first_spec(publisher: Publisher, device: SimDevice, text: str = "hello\n") -> str:
    return publisher.commit("first spec", files={
        f"devices/{device.id}/motd.yaml": motd(device, text),
        f"devices/{device.id}/beacon.yaml": BEACON,
    })


def device_signers(tmp_path: Path, device: SimDevice) -> Path:
    """An allowed_signers file holding the device's key, as `giter-agent key` prints it."""
    path = tmp_path / f"{device.id}.signers"
    with pytest.MonkeyPatch.context() as mp:
        buf = io.StringIO()
        mp.setattr("sys.stdout", buf)
        assert device.cli("key") == 0
    path.write_text(buf.getvalue())
    return path


def test_round_trip_over_usb(tmp_path, publisher, device, stick):
    tip = first_spec(publisher, device)
    publisher.bundle(stick / "giter/inbox/fleet.bundle")
    assert device.cli("sync", "--usb", stick) == 0

    target = device.root / "motd"
    assert target.read_text() == "hello\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    state = device.state()
    assert state.accepted == state.applied == tip
    assert state.last_sync["outcome"] == "applied"
    key = device.dir / "state" / "device_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    outbox = stick / "giter/outbox"
    # The spec does not enrol pi-01: its key rides along for `giter-bundle enroll`.
    assert sorted(p.name for p in outbox.iterdir()) == ["pi-01.bundle", "pi-01.pub",
                                                        "pi-01.txt"]
    receipt = (outbox / "pi-01.txt").read_text()
    assert "APPLIED" in receipt and "File/motd" in receipt and tip in receipt

    # Real git agrees on everything the device wrote.
    bundle = outbox / "pi-01.bundle"
    publisher.git("bundle", "verify", bundle)
    publisher.git("fetch", "-q", bundle, "refs/heads/status/pi-01:refs/heads/status/pi-01")
    signers = device_signers(tmp_path, device)
    publisher.git("-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit",
                  "status/pi-01")
    parents = publisher.git("rev-list", "--parents", "-n1", "status/pi-01").stdout.split()
    assert parents[1:] == [tip.encode()]
    shown = publisher.git("show", "status/pi-01:devices/pi-01/motd.yaml").stdout.decode()
    assert "status:" in shown and "observedGeneration: 1" in shown and tip in shown
    assert f"path: {device.root}/motd" in shown  # the spec is kept as observed
    summary = publisher.git("show", "status/pi-01:.giter/status/pi-01.yaml").stdout.decode()
    assert f"appliedCommit: {tip}" in summary and "refused: []" in summary


def test_incremental_bundles_and_status_chain(tmp_path, publisher, device, stick):
    first = first_spec(publisher, device)
    publisher.bundle(stick / "giter/inbox/fleet.bundle")
    assert device.cli("sync", "--usb", stick) == 0
    status1 = device.state().status_tip
    second = publisher.commit("new motd", files={
        f"devices/{device.id}/motd.yaml": motd(device, "second\n")})
    (stick / "giter/inbox/fleet.bundle").unlink()
    publisher.bundle(stick / "giter/inbox/fleet.bundle", f"{first}..main")
    assert device.cli("sync", "--usb", stick) == 0
    assert (device.root / "motd").read_text() == "second\n"
    state = device.state()
    assert state.accepted == second
    assert publisher.git("cat-file", "-p", second).returncode == 0
    # The new status commit has the previous status commit and the new spec as parents.
    publisher.git("fetch", "-q", stick / "giter/outbox/pi-01.bundle",
                  "refs/heads/status/pi-01:refs/heads/status/pi-01")
    parents = publisher.git("rev-list", "--parents", "-n1", "status/pi-01").stdout.split()
    assert [p.decode() for p in parents[1:]] == [status1, second]
    # Same stick again: nothing new, still exit 0, no new status commit.
    assert device.cli("sync", "--usb", stick) == 0
    assert device.state().status_tip == state.status_tip


def test_one_stick_serves_many_devices(tmp_path, publisher, stick):
    devices = [SimDevice(tmp_path, name, publisher.allowed_signers, groups=["lobby"])
               for name in ("pi-a", "pi-b")]
    files = {f"groups/lobby/motd-{d.id}.yaml": motd(d, f"hi {d.id}\n").replace(
        "name: motd", f"name: motd-{d.id}") for d in devices}
    publisher.commit("lobby", files=files)
    publisher.bundle(stick / "giter/inbox/fleet.bundle")
    for d in devices:
        assert d.cli("sync", "--usb", stick) in (0, 3)
    names = sorted(p.name for p in (stick / "giter/outbox").iterdir())
    assert names == ["pi-a.bundle", "pi-a.pub", "pi-a.txt", "pi-b.bundle", "pi-b.pub",
                     "pi-b.txt"]  # .pub: neither is enrolled by this spec


def tamper(publisher: Publisher, rev: str) -> str:
    """Rewrite a signed commit's message, keeping its signature: a forged commit."""
    raw = publisher.git("cat-file", "commit", rev).stdout
    forged = raw.replace(b"first spec", b"first spec, trust me")
    new = publisher.git("hash-object", "-t", "commit", "-w", "--stdin", "--literally",
                        input=forged).stdout.decode().strip()
    publisher.git("update-ref", "refs/heads/main", new)
    return new


def test_refusals_change_nothing(tmp_path, publisher, device, stick):
    """Each row: a bad bundle is refused with a reason, and git's verdict agrees."""
    good = first_spec(publisher, device)
    publisher.bundle(stick / "giter/inbox/fleet.bundle")
    assert device.cli("sync", "--usb", stick) == 0
    before = device.snapshot()
    stranger = ssh_keygen(tmp_path / "stranger")
    inbox = stick / "giter/inbox"

    def offer(bundle_args: tuple[str, ...], expected_reason: str, git_ok: bool | None,
              rev: str = "main") -> None:
        for p in inbox.iterdir():
            p.unlink()
        publisher.bundle(inbox / "offer.bundle", *bundle_args)
        if git_ok is not None:
            assert publisher.verify_commit(rev) is git_ok
        code = device.cli("sync", "--usb", stick)
        state = device.state()
        assert code == 1, expected_reason
        assert state.last_sync["reason"] == expected_reason, state.last_sync
        assert device.snapshot() == before
        assert not list((device.dir / "state/repo.git").rglob("quarantine/*"))

    # An unsigned commit on top of the good one.
    publisher.commit("unsigned", sign=False, files={
        f"devices/{device.id}/motd.yaml": motd(device, "evil\n")})
    offer(("main",), "UnsignedCommit", git_ok=False)
    publisher.git("reset", "-q", "--hard", good)

    # Signed, but by a key the device does not trust.
    publisher.git("-c", f"user.signingkey={stranger}", "commit", "-q", "--allow-empty", "-S",
                  "-m", "stranger")
    offer(("main",), "UnknownSigner", git_ok=False)
    publisher.git("reset", "-q", "--hard", good)

    # A signed commit whose content was changed after signing.
    publisher.commit("first spec", files={f"devices/{device.id}/motd.yaml":
                                          motd(device, "changed\n")})
    tamper(publisher, "main")
    offer(("main",), "BadSignature", git_ok=False)
    publisher.git("reset", "-q", "--hard", good)

    # A fork: history that does not descend from the accepted tip.
    publisher.git("checkout", "-q", "--orphan", "fork")
    publisher.commit("fork", files={f"devices/{device.id}/motd.yaml": motd(device, "fork\n")})
    publisher.git("branch", "-f", "main", "fork")
    offer(("main",), "Fork", git_ok=True)
    publisher.git("checkout", "-q", "-f", "-B", "main", good)

    # A rollback: a newer spec is accepted, then the old bundle is offered again.
    newer = publisher.commit("newer", files={f"devices/{device.id}/motd.yaml":
                                             motd(device, "newer\n")})
    for p in inbox.iterdir():
        p.unlink()
    publisher.bundle(inbox / "fleet.bundle")
    assert device.cli("sync", "--usb", stick) == 0
    before = device.snapshot()
    assert before["accepted"] == newer
    publisher.git("update-ref", "refs/heads/main", good)
    # The older bundle again (yesterday's stick): nothing new, not a refusal; the device
    # keeps the newer spec.
    for p in inbox.iterdir():
        p.unlink()
    publisher.bundle(inbox / "offer.bundle", "main")
    assert device.cli("sync", "--usb", stick) == 0
    assert device.state().last_sync["reason"] == "UpToDate"
    assert "nothing new" in device.state().last_sync["message"]
    assert device.snapshot()["accepted"] == newer


def test_corrupt_and_unusable_bundles(tmp_path, publisher, device, stick):
    first = first_spec(publisher, device)
    second = publisher.commit("second", files={f"devices/{device.id}/motd.yaml":
                                               motd(device, "2\n")})
    inbox = stick / "giter/inbox"
    # Incremental bundle whose prerequisite the device lacks.
    publisher.bundle(inbox / "incremental.bundle", f"{first}..main")
    assert device.cli("sync", "--usb", stick) == 1
    assert device.state().last_sync["reason"] == "MissingPrerequisite"
    assert device.state().accepted is None
    # A truncated bundle, and one with a flipped byte in the pack.
    full = publisher.bundle(tmp_path / "full.bundle")
    data = full.read_bytes()
    (inbox / "incremental.bundle").unlink()
    (inbox / "truncated.bundle").write_bytes(data[: len(data) // 2])
    assert device.cli("sync", "--usb", stick) == 1
    (inbox / "truncated.bundle").unlink()
    flipped = bytearray(data)
    flipped[-30] ^= 0xFF
    (inbox / "flipped.bundle").write_bytes(bytes(flipped))
    assert device.cli("sync", "--usb", stick) == 1
    assert device.state().accepted is None and not (device.root / "motd").exists()
    assert device.state().last_sync["outcome"] == "refused"
    # Not a stick at all.
    assert device.cli("sync", "--usb", tmp_path / "nothing") == 2
    # The right bundle applies after all that.
    (inbox / "flipped.bundle").unlink()
    (inbox / "full.bundle").write_bytes(data)
    assert device.cli("sync", "--usb", stick) == 0
    assert device.state().accepted == second


def test_sync_bundle_file_and_status_output(tmp_path, publisher, device, capsys):
    tip = first_spec(publisher, device)
    bundle = publisher.bundle(tmp_path / "one.bundle")
    assert device.cli("sync", "--bundle", bundle) == 0
    capsys.readouterr()
    assert device.cli("status", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["appliedCommit"] == tip and doc["lastSync"]["outcome"] == "applied"
    conds = doc["resources"]["File/motd"]["status"]["conditions"]
    assert conds[0]["type"] == "Ready" and conds[0]["status"] == "True"
    assert device.cli("status") == 0
    text = capsys.readouterr().out
    assert tip in text and "File/motd" in text and "Ready" in text


def test_dulwich_made_bundles_import(tmp_path, device):
    """Bundles our own publisher code writes import too, and git reads them."""
    from giter_agent.trust import sshsig
    from giter_bundle.publisher import PublisherRepo

    key = sshsig.generate_ed25519()
    signers = tmp_path / "signers"
    signers.write_text(f'ops namespaces="git" {sshsig.public_key_of(key).openssh()}\n')
    dev = SimDevice(tmp_path, "pi-02", signers)
    repo = PublisherRepo(tmp_path / "pub.git", key)
    first = repo.commit({f"devices/{dev.id}/motd.yaml": motd(dev, "py\n").encode()}, "one")
    b1 = repo.bundle(tmp_path / "b1.bundle")
    repo.commit({f"devices/{dev.id}/motd.yaml": motd(dev, "py2\n").encode()}, "two")
    b2 = repo.bundle(tmp_path / "b2.bundle", since=[first])
    clone = tmp_path / "clone"
    run("git", "init", "-q", "--bare", clone)
    run("git", "-C", clone, "bundle", "verify", b1)
    assert dev.cli("sync", "--bundle", b1) == 0
    assert dev.cli("sync", "--bundle", b2) == 0
    assert (dev.root / "motd").read_text() == "py2\n"


def test_cli_errors_are_one_line(tmp_path, capsys):
    cfg = tmp_path / "agent.toml"
    cfg.write_text('device_id = "x"\nwat = 1\n')
    assert main(["-c", str(cfg), "status"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "wat" in err


def test_demo_runs_clean(tmp_path):
    out = io.StringIO()
    assert run_demo(tmp_path / "demo", out=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "Demo complete" in text and "NO " not in text
    assert "refused: UnsignedCommit" in text
    # A secret goes to one board and not the other; plan shows it without the value.
    assert "Secret/wifi: would write the secret (ciphertext sha256" in text
    assert "value not shown" in text
    assert "demo-pi wrote" in text and "demo-pi-2 refused it: NotARecipient" in text
    psk = tmp_path / "demo" / "device-root" / "etc" / "wifi.psk"
    assert psk.stat().st_mode & 0o777 == 0o600 and psk.read_text().strip() not in text
    assert (tmp_path / "demo" / "usb-stick" / "giter" / "outbox" / "demo-pi.txt").is_file()


def test_expired_spec_stays_applied_and_is_reported_stale(tmp_path, publisher, device, stick,
                                                          capsys):
    publisher.write(f"devices/{device.id}/motd.yaml", motd(device, "frozen\n"))
    publisher.git("add", "-A")
    publisher.git("commit", "-q", "-S", "-m", "freeze", "-m", "Expires: 2001-01-01T00:00:00Z")
    publisher.bundle(stick / "giter/inbox/fleet.bundle")
    assert device.cli("sync", "--usb", stick) == 0
    assert "STALE" in capsys.readouterr().out
    assert (device.root / "motd").read_text() == "frozen\n"  # the state is kept
    state = device.state()
    assert state.conditions[0]["type"] == "Stale" and state.conditions[0]["status"] == "True"
    assert state.conditions[0]["reason"] == "SpecExpired"
    assert "STALE SPEC" in (stick / "giter/outbox/pi-01.txt").read_text()
    assert device.cli("status") == 5  # stale
    assert "STALE SPEC" in capsys.readouterr().out
    # A newer commit without the trailer lifts the freeze.
    publisher.commit("thaw")
    (stick / "giter/inbox/fleet.bundle").unlink()
    publisher.bundle(stick / "giter/inbox/fleet.bundle")
    assert device.cli("sync", "--usb", stick) == 0
    assert device.state().conditions[0]["reason"] == "NoExpiry"


@pytest.mark.parametrize("limit, reason", [
    ("max_commits = 2", "TooManyCommits"),
    ("max_objects = 3", "TooLarge"),
    ("max_bundle_mib = 1", "TooLarge"),
])
def test_limits_refuse_oversized_syncs(tmp_path, publisher, device, limit, reason):
    with device.config.open("a") as fh:
        fh.write(f"[limits]\n{limit}\n")
    for i in range(3):
        publisher.commit(f"c{i}", files={f"devices/{device.id}/n{i}.txt": "x" * 10})
    if "bundle" in limit:  # over a mebibyte of incompressible data
        publisher.commit("big", files={"blob.bin": os.urandom(1_200_000).hex()})
    bundle = publisher.bundle(tmp_path / "b.bundle")
    assert device.cli("sync", "--bundle", bundle) == 1
    state = device.state()
    assert state.last_sync["reason"] == reason and state.accepted is None
