"""Secrets across a fleet, end to end: ``giter-bundle secret``, lint, a shared stick, import.

Two devices enrolled in one group share one stick. What ``secret set`` seals, the real
``age -d -i <device key>`` opens for its device only; what the real ``age -R`` seals, the
device opens. A secret put in the group's folder for one member by mistake is refused
by lint and ``create``; shipped anyway, the other member writes nothing and says why,
and the rest of its spec applies. After the whole cycle the value is in no file of the
state directories, the stick, or the fleet repository's history (status included).
Re-enrolment and removal are then repaired by ``secret rekey``, which names what to
rotate.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
from pathlib import Path

import pytest
from support.fleet import Device, capture, enrolled, motd
from support.git import run, ssh_keygen

from giter_agent.cli.main import main as agent_main
from giter_agent.core import age
from giter_agent.state.records import ResourceRecord
from giter_agent.trust import sshsig

WIFI = b"wifi-psk=Tr0ub4dor&3-only-for-pi-a\n"
TOKEN = b"api-token: 5f1e8a0c-lobby-shared\n"
HAND = b"sealed-by-the-age-tool-for-pi-b\n"


def give_stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def ciphertext_of(path: Path) -> bytes:
    text = path.read_text()
    start = text.index(age.ARMOR_BEGIN)
    armored = "\n".join(line.strip() for line in text[start:].splitlines())
    return age.dearmor(armored)


def age_open(sealed: bytes, key: Path, tmp: Path) -> bytes | None:
    f = tmp / "sealed.age"
    f.write_bytes(sealed)
    proc = run("age", "-d", "-i", key, f, check=False)
    return proc.stdout if proc.returncode == 0 else None


def resource(device: Device, key: str) -> ResourceRecord:
    return device.state().resources[key]


def reason(device: Device, key: str) -> str:
    (ready,) = [c for c in resource(device, key).status["conditions"] if c["type"] == "Ready"]
    return ready["reason"]


def files_under(*roots: Path):
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                yield Path(dirpath) / name


@pytest.fixture
def fleet(tmp_path, publisher_key):
    from support.fleet import Fleet

    return Fleet(tmp_path, publisher_key)


def test_secrets_reach_only_their_devices_and_leave_no_trace(tmp_path, fleet, monkeypatch):
    stick = tmp_path / "stick"
    stick.mkdir()
    pi_a, pi_b = enrolled(fleet, tmp_path, "pi-a", "pi-b")
    secrets_key = tmp_path / "operator" / "secrets_ed25519"
    shared = tmp_path / "shared"  # a folder both devices may write (say, an NFS share)
    shared.mkdir()
    for d in (pi_a, pi_b):
        d.config.write_text(d.config.read_text().replace(
            f'roots = ["{d.root}"]', f'roots = ["{d.root}", "{shared}"]'))

    # 1. Seal one value for pi-a and one for the whole lobby, from standard input.
    give_stdin(monkeypatch, WIFI)
    out = fleet.ok("secret", "set", "wifi", "--device", "pi-a", "--path",
                   f"{pi_a.root}/wifi.psk", "--secrets-key", secrets_key)
    assert "sealed devices/pi-a/wifi.yaml for pi-a (+ 1 publisher key(s))" in out
    assert secrets_key.stat().st_mode & 0o777 == 0o600
    assert (secrets_key.parent.stat().st_mode & 0o777) == 0o700
    give_stdin(monkeypatch, TOKEN)
    fleet.ok("secret", "set", "token", "--group", "lobby", "--path", "/srv/never/token",
             "--secrets-key", secrets_key)
    value_file = tmp_path / "token.txt"
    value_file.write_bytes(TOKEN)
    for d in (pi_a, pi_b):  # a second set moves the path; --from-file this time
        fleet.write(f"devices/{d.id}/motd.yaml", motd(d, f"hello {d.id}\n"))
    fleet.ok("commit", "-m", "Welcome files")
    fleet.ok("secret", "set", "token", "--group", "lobby", "--from-file", value_file,
             "--path", "/tmp/placeholder", "--secrets-key", secrets_key)
    group_doc = (fleet.root / "groups/lobby/token.yaml").read_text()
    assert "generation: 2" in group_doc and 'recipients: ["pi-a", "pi-b"]' in group_doc

    # The real age opens each for exactly its devices and the publisher secrets key.
    wifi = ciphertext_of(fleet.root / "devices/pi-a/wifi.yaml")
    token = ciphertext_of(fleet.root / "groups/lobby/token.yaml")
    assert age_open(wifi, pi_a.key_file, tmp_path) == WIFI
    assert age_open(wifi, pi_b.key_file, tmp_path) is None
    assert age_open(wifi, secrets_key, tmp_path) == WIFI
    assert age_open(token, pi_a.key_file, tmp_path) == TOKEN
    assert age_open(token, pi_b.key_file, tmp_path) == TOKEN
    assert fleet.cli("lint")[0] == 0

    # 2. The group path is per device: each member writes under its own root. A member's
    # own Secret of the same name overrides the group's, so the devices' roots differ:
    # pi-b gets a token in its folder, sealed with the real age tool, from pi-b's .pub.
    hand = run("age", "-a", "-R", pi_b.key_file.with_name("device_key.pub"),
               input=HAND).stdout.decode()
    fleet.write("devices/pi-b/token.yaml", (
        "apiVersion: giter.dev/v1alpha1\nkind: Secret\nmetadata: {name: token}\nspec:\n"
        f"  path: {pi_b.root}/token\n  ciphertext: |\n"
        + "".join(f"    {line}\n" for line in hand.splitlines())))
    # pi-a's token goes to its own root: re-set with the path, for pi-a only now.
    code, out = fleet.cli("lint")
    assert code == 1 and "groups/lobby/token.yaml: ReadableOutsideScope: still readable " \
        "by pi-b (not in its scope)" in out, out
    assert "/tmp/placeholder" in group_doc
    fleet.ok("commit", "--no-lint", "-m", "pi-b's own token, sealed with age")
    fleet.ok("secret", "rekey", "--secrets-key", secrets_key)
    fleet.ok("secret", "set", "token", "--group", "lobby", "--from-file", value_file,
             "--path", f"{pi_a.root}/token", "--secrets-key", secrets_key)
    assert fleet.cli("lint")[0] == 0

    # 3. A mistake: pi-a's second secret in the shared group folder, sealed to pi-a only.
    only_a = age.armor(age.encrypt([sshsig.PublicKey.from_openssh(
        pi_a.key_file.with_name("device_key.pub").read_text())], b"for pi-a's eyes\n"))
    fleet.write("groups/lobby/mistake.yaml", (
        "apiVersion: giter.dev/v1alpha1\nkind: Secret\nmetadata: {name: mistake}\nspec:\n"
        f"  path: {shared}/mistake\n  ciphertext: |\n"
        + "".join(f"    {line}\n" for line in only_a.splitlines())))
    code, out = fleet.cli("commit", "-m", "oops")
    assert code == 1 and "groups/lobby/mistake.yaml: NotARecipient: pi-b cannot decrypt " \
        "it" in out, out
    fleet.git("add", "-A")
    fleet.git("commit", "-q", "-S", "--trailer", "Giter-Branch: main", "-m",
              "the mistake, committed with plain git")
    code, out = fleet.cli("create", stick)
    assert code == 1 and "pi-b cannot decrypt it" in out and "not shipped" in out
    fleet.ok("create", "--no-lint", stick)

    # 4. Carry, sync: one stick, two devices.
    assert pi_a.cli("sync", "--usb", stick) == 0
    assert (shared / "mistake").read_bytes() == b"for pi-a's eyes\n"
    assert pi_b.cli("sync", "--usb", stick) == 3  # not Ready: one secret it cannot open
    assert (pi_a.root / "wifi.psk").read_bytes() == WIFI
    assert (pi_a.root / "wifi.psk").stat().st_mode & 0o777 == 0o600
    assert (pi_a.root / "token").read_bytes() == TOKEN
    assert (pi_b.root / "token").read_bytes() == HAND
    assert (pi_b.root / "motd").read_text() == "hello pi-b\n"  # the rest applied
    assert reason(pi_b, "Secret/mistake") == "NotARecipient"
    assert reason(pi_a, "Secret/mistake") == "Applied"
    # pi-b neither wrote nor removed what pi-a wrote there.
    assert (shared / "mistake").read_bytes() == b"for pi-a's eyes\n"
    assert not (pi_b.root / "wifi.psk").exists()
    observed = resource(pi_a, "Secret/wifi").status["observed"]
    assert observed["ciphertext"] == hashlib.sha256(wifi).hexdigest()
    out = capture(agent_main, ["-c", pi_a.config, "status"])[1]
    assert "Secret/wifi" in out and "Tr0ub4dor" not in out
    # Someone edits the file on the board: `plan` says what would change, not the value.
    (pi_a.root / "wifi.psk").write_bytes(b"guessed-by-hand\n")
    code, out = capture(agent_main, ["-c", pi_a.config, "plan"])
    assert code == 0 and "Secret/wifi" in out and "value not shown" in out, out
    assert "content is not the secret's value" in out
    assert "Tr0ub4dor" not in out and "guessed-by-hand" not in out

    # 5. A changed value: plan shows the change, not the value.
    value_file.write_bytes(b"new-token-value-for-lobby\n")
    fleet.ok("secret", "set", "token", "--group", "lobby", "--from-file", value_file,
             "--secrets-key", secrets_key)
    fleet.git("rm", "-q", "groups/lobby/mistake.yaml")
    fleet.git("commit", "-q", "-S", "--trailer", "Giter-Branch: main", "-m",
              "no more mistake")
    fleet.ok("create", stick)
    shutil.copy(stick / "giter/inbox/main.bundle", tmp_path / "main.bundle")
    assert capture(agent_main, ["-c", pi_a.config, "sync", "--bundle",
                                tmp_path / "main.bundle", "--outbox", tmp_path / "x"])[0] == 0
    value_file.unlink()

    # 6. Back: import. Then the value is nowhere: state dirs, stick, repository history.
    assert pi_b.cli("sync", "--usb", stick) == 0
    assert pi_a.cli("sync", "--usb", stick) == 0
    assert "ACCEPTED" in fleet.ok("import", stick)
    history = fleet.git("log", "-p", "--all").stdout
    # Git objects are compressed: read every history through git, the hub's and each
    # device's own, as well as every file byte for byte.
    device_histories = [run("git", "-C", d.dir / "state/repo.git", "log", "-p", "--all").stdout
                        for d in (pi_a, pi_b)]
    assert b"status/pi-a" in fleet.git("branch", "-a").stdout
    needles = [WIFI.strip(), TOKEN.strip(), HAND.strip(), b"new-token-value-for-lobby",
               b"for pi-a's eyes"]
    for needle in needles:
        assert needle not in history
        assert all(needle not in h for h in device_histories)
        for f in files_under(pi_a.dir / "state", pi_b.dir / "state", stick, fleet.root):
            assert needle not in f.read_bytes(), f
    # ... except the targets themselves.
    assert (pi_a.root / "token").read_bytes() == b"new-token-value-for-lobby\n"
    # The status history does report the secrets: by their ciphertext's digest.
    assert hashlib.sha256(wifi).hexdigest().encode() in history


def test_rekey_follows_enrolment_and_names_what_to_rotate(tmp_path, fleet, monkeypatch):
    pi_a, pi_b, pi_c = enrolled(fleet, tmp_path, "pi-a", "pi-b", "pi-c")
    secrets_key = tmp_path / "secrets_ed25519"
    give_stdin(monkeypatch, TOKEN)
    fleet.ok("secret", "set", "token", "--group", "lobby", "--path", "/srv/giter/token",
             "--secrets-key", secrets_key)
    assert "no key that left" in fleet.ok("secret", "rekey", "--rotate-hint")
    old_b = pi_b.key_file.with_name("device_key.pub").read_text()

    # pi-b gets a new key, pi-c leaves, pi-d joins.
    shutil.rmtree(pi_b.dir / "state")
    fleet.ok("enroll", "pi-b", pi_b.key_line(), "--replace")
    fleet.git("rm", "-q", ".giter/devices/pi-c.pub", ".giter/devices/pi-c.yaml")
    fleet.git("commit", "-q", "-S", "--trailer", "Giter-Branch: main", "-m",
              "pi-c retired")
    (pi_d,) = enrolled(fleet, tmp_path, "pi-d")
    fp_c = sshsig.PublicKey.from_openssh(
        pi_c.key_file.with_name("device_key.pub").read_text()).fingerprint()
    code, out = fleet.cli("lint")
    tag_c = age.key_tag(sshsig.PublicKey.from_openssh(
        pi_c.key_file.with_name("device_key.pub").read_text()).blob[-32:]).hex()
    assert code == 1
    assert "groups/lobby/token.yaml: NotARecipient: pi-b, pi-d cannot decrypt it" in out
    # pi-c's enrolment is gone from the tree; the branch's history still names it.
    fp_b = sshsig.PublicKey.from_openssh(old_b).fingerprint()
    assert f"still readable by pi-b ({fp_b}): a key no longer enrolled, " \
        f"pi-c ({fp_c}): a key no longer enrolled" in out, out
    assert tag_c not in out
    assert "RecipientsMismatch" in out
    code, out = fleet.cli("create", tmp_path / "stick0")
    assert code != 0

    # Without the secrets key, nothing can be re-sealed; with it, everything is.
    code, out = fleet.cli("secret", "rekey", "--secrets-key", tmp_path / "nope")
    assert code == 2 and "NoSecretsKey" in out
    out = fleet.ok("secret", "rekey", "--secrets-key", secrets_key)
    assert "re-sealed groups/lobby/token.yaml for pi-a, pi-b, pi-d" in out
    assert fleet.cli("lint")[0] == 0
    token = ciphertext_of(fleet.root / "groups/lobby/token.yaml")
    for d in (pi_a, pi_b, pi_d):
        assert age_open(token, d.key_file, tmp_path) == TOKEN
    assert age_open(token, pi_c.key_file, tmp_path) is None
    # What re-sealing cannot undo: the old versions in history. The hint names them.
    fp_c = sshsig.PublicKey.from_openssh(
        pi_c.key_file.with_name("device_key.pub").read_text()).fingerprint()
    assert f"pi-c ({fp_c})" in out and f"pi-b ({fp_b})" in out
    hint = fleet.ok("secret", "rekey", "--rotate-hint")
    assert "groups/lobby/token.yaml" in hint and f"pi-c ({fp_c})" in hint
    assert "pi-a (" not in hint and "pi-d (" not in hint
    # Nothing left to do: a second rekey changes nothing.
    tip = fleet.rev()
    assert "every secret is sealed to exactly" in fleet.ok("secret", "rekey", "--secrets-key",
                                                           secrets_key)
    assert fleet.rev() == tip


def test_secret_set_refuses_bad_input_and_changes_nothing(tmp_path, fleet, monkeypatch):
    enrolled(fleet, tmp_path, "pi-a")
    key = tmp_path / "k"
    tip = fleet.rev()
    give_stdin(monkeypatch, b"x")
    for args, words in (
            (["--device", "pi-z", "--path", "/srv/x"], "NotEnrolled"),
            (["--group", "nobody", "--path", "/srv/x"], "NoMembers"),
            (["--device", "pi-a"], "needs --path"),
            (["--device", "pi-a", "--path", "relative"], "absolute"),
            (["--device", "pi-a", "--path", "/srv/x", "--mode", "4755"], "setuid")):
        code, out = fleet.cli("secret", "set", "s", *args, "--secrets-key", key)
        assert code != 0 and words in out, (args, out)
    big = tmp_path / "big"
    big.write_bytes(bytes(age.MAX_PLAINTEXT_BYTES + 1))
    code, out = fleet.cli("secret", "set", "s", "--device", "pi-a", "--path", "/srv/x",
                          "--from-file", big, "--secrets-key", key)
    assert code != 0 and "SecretTooLarge" in out
    code, out = fleet.cli("secret", "set", "Bad_Name", "--device", "pi-a", "--path", "/srv/x")
    assert code == 2 and "InvalidName" in out
    assert fleet.rev() == tip and not (fleet.root / "devices/pi-a/s.yaml").exists()
    # A secrets key that others can read is refused, as ssh refuses one.
    other = ssh_keygen(tmp_path / "loose")
    other.chmod(0o644)
    code, out = fleet.cli("secret", "set", "s", "--device", "pi-a", "--path", "/srv/x",
                          "--secrets-key", other)
    assert code == 2 and "chmod 600" in out
