"""Publisher keys as operators hold them: ssh-agent, passphrases, literals; init and create.

``giter-bundle`` signs through ``ssh-keygen -Y sign`` as ``git commit -S`` does, so a key
in a real ``ssh-agent`` (started here, on a socket in the test's folder) and a key with a
passphrase (given through ``SSH_ASKPASS``, as a desktop would) sign. ``git verify-commit``
is the oracle. ``init`` is all or nothing and never invents an author; ``create`` refuses
to write a bundle a device would refuse.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fleet import API, BEACON, Fleet, capture
from support.git import run, ssh_keygen

from giter_bundle.cli import main as bundle_main

PASSPHRASE = "correct horse battery staple"


def askpass(tmp_path: Path, answer: str | None) -> dict[str, str]:
    """Environment that makes OpenSSH ask ``answer`` (None: the user cancels)."""
    script = tmp_path / ("askpass-ok" if answer is not None else "askpass-cancel")
    body = f"printf '%s\\n' '{answer}'" if answer is not None else "exit 1"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return {"SSH_ASKPASS": str(script), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}


def encrypted_key(path: Path) -> Path:
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-C", "locked", "-f", path)
    return path


@pytest.fixture
def agent(tmp_path, monkeypatch) -> Iterator[dict[str, str]]:
    """A real ssh-agent for this test only; its socket is exported as SSH_AUTH_SOCK."""
    import shutil
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="gsa-"))  # a socket path must stay under 108 bytes
    sock = short / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):  # the socket appears once the agent listens
            if sock.exists() or proc.poll() is not None:
                break
            time.sleep(0.01)
        assert sock.exists(), "ssh-agent did not start"
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield {"SSH_AUTH_SOCK": str(sock)}
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(short, ignore_errors=True)


def ssh_add(key: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, **env},
                          stdin=subprocess.DEVNULL, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()


def trust(fleet: Fleet) -> Path:
    return fleet.trust_file


def commit_motd(fleet: Fleet, text: str, *key_args: str | Path) -> tuple[int, str]:
    fleet.write("groups/lobby/motd.yaml",
                f"{API}kind: File\nmetadata:\n  name: motd\nspec:\n  path: /tmp/motd\n"
                f"  content: {text}\n")
    return fleet.cli("commit", "-m", f"motd: {text}", *key_args)


# --- item: signing through ssh-keygen ---------------------------------------------------

def test_a_key_held_only_by_ssh_agent_signs_commits(tmp_path, publisher_key, agent):
    fleet = Fleet(tmp_path, publisher_key)
    ssh_add(publisher_key, agent)
    publisher_key.unlink()  # only the agent (and the .pub beside it) hold the key now
    code, out = commit_motd(fleet, "hello")
    assert code == 0, out
    assert fleet.verify_with_git("main", trust(fleet))


def test_a_passphrase_key_in_ssh_agent_signs_init_and_commit(tmp_path, agent):
    key = encrypted_key(tmp_path / "locked")
    ssh_add(key, {**agent, **askpass(tmp_path, PASSPHRASE)})
    code, out = capture(bundle_main, ["init", tmp_path / "fleet", "--signing-key", key])
    assert code == 0, out
    fleet = Fleet.__new__(Fleet)
    fleet.tmp, fleet.root, fleet.key = tmp_path, tmp_path / "fleet", key
    assert fleet.verify_with_git("main", trust(fleet))
    code, out = commit_motd(fleet, "agent")
    assert code == 0, out
    assert fleet.verify_with_git("main", trust(fleet))
    # git commit -S works with what init configured, through the same agent
    fleet.write("groups/lobby/other.yaml", "# nothing\n")
    fleet.git("add", "-A")
    fleet.git("commit", "-q", "-m", "by git")
    assert fleet.verify_with_git("main", trust(fleet))


def test_a_passphrase_key_file_signs_when_the_passphrase_is_given(tmp_path, monkeypatch):
    key = encrypted_key(tmp_path / "locked")
    for name, value in askpass(tmp_path, PASSPHRASE).items():
        monkeypatch.setenv(name, value)
    code, out = capture(bundle_main, ["init", tmp_path / "fleet", "--signing-key", key])
    assert code == 0, out
    assert run("git", "-C", tmp_path / "fleet", "-c", "gpg.ssh.allowedSignersFile="
               f"{tmp_path / 'fleet/.giter/trust/allowed_signers'}", "verify-commit",
               "main", check=False).returncode == 0


def test_a_public_key_literal_in_user_signingkey_signs_through_the_agent(
        tmp_path, publisher_key, agent):
    fleet = Fleet(tmp_path, publisher_key)
    ssh_add(publisher_key, agent)
    line = " ".join(Path(f"{publisher_key}.pub").read_text().split()[:2])
    fleet.git("config", "user.signingkey", f"key::{line}")
    publisher_key.unlink()
    Path(f"{publisher_key}.pub").unlink()
    code, out = commit_motd(fleet, "literal")
    assert code == 0, out
    assert fleet.verify_with_git("main", trust(fleet))


def test_a_key_nobody_holds_is_a_one_line_usage_error(tmp_path, publisher_key, monkeypatch):
    fleet = Fleet(tmp_path, publisher_key)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    publisher_key.unlink()
    tip = fleet.rev()
    code, out = commit_motd(fleet, "nobody")
    assert code == 2
    assert out.startswith("giter-bundle: NoSigningKey: ") and "ssh-agent" in out
    assert out.count("\n") == 1
    assert fleet.rev() == tip


# --- item: init is all or nothing, never invents an author -----------------------------

def test_a_failed_init_leaves_nothing_behind(tmp_path, monkeypatch):
    key = encrypted_key(tmp_path / "locked")
    for name, value in askpass(tmp_path, None).items():  # the user cancels the prompt
        monkeypatch.setenv(name, value)
    code, out = capture(bundle_main, ["init", tmp_path / "fleet", "--signing-key", key])
    assert code == 1, out
    assert "SigningFailed" in out
    assert not (tmp_path / "fleet").exists()

    existing = tmp_path / "existing"
    run("git", "init", "-q", "-b", "main", existing)
    code, out = capture(bundle_main, ["init", existing, "--signing-key", key])
    assert code == 1, out
    config = run("git", "-C", existing, "config", "--local", "--list").stdout.decode()
    assert "signingkey" not in config and "gpg" not in config, config
    assert not (existing / ".giter").exists()


def test_a_second_init_with_another_key_does_not_keep_the_first(tmp_path, publisher_key):
    other = ssh_keygen(tmp_path / "other")
    existing = tmp_path / "existing"
    run("git", "init", "-q", "-b", "main", existing)
    # a signing key left over from before (another tool, a failed attempt)
    run("git", "-C", existing, "config", "user.signingkey", str(other))
    code, out = capture(bundle_main, ["init", existing, "--signing-key", publisher_key])
    assert code == 0, out
    assert "the trust file does not list that key" in out
    configured = run("git", "-C", existing, "config", "user.signingkey").stdout.decode()
    assert configured.strip() == str(publisher_key)
    # and again with a key the committed trust file does not list: refused, unchanged
    code, out = capture(bundle_main, ["init", existing, "--signing-key", other])
    assert code == 1 and "UntrustedSigningKey" in out, out
    configured = run("git", "-C", existing, "config", "user.signingkey").stdout.decode()
    assert configured.strip() == str(publisher_key)


def test_init_asks_for_an_author_instead_of_inventing_one(tmp_path, publisher_key,
                                                          monkeypatch):
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME",
                 "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(name, raising=False)
    code, out = capture(bundle_main, ["init", tmp_path / "fleet", "--signing-key",
                                      publisher_key])
    assert code == 2, out
    assert out.startswith("giter-bundle: NoAuthor: ")
    assert "git config --global user.name" in out and "--author" in out
    assert not (tmp_path / "fleet").exists()
    code, out = capture(bundle_main, ["init", tmp_path / "fleet", "--signing-key",
                                      publisher_key, "--author", "Ada <ada@example.org>"])
    assert code == 0, out
    author = run("git", "-C", tmp_path / "fleet", "log", "-1", "--format=%an <%ae>")
    assert author.stdout.decode().strip() == "Ada <ada@example.org>"


# --- item: create ships only what devices accept ------------------------------------------

def test_create_refuses_commits_a_device_would_refuse(tmp_path, publisher_key):
    fleet = Fleet(tmp_path, publisher_key)
    stranger = ssh_keygen(tmp_path / "stranger")
    fleet.write("groups/lobby/a.yaml", BEACON)
    fleet.git("add", "-A")
    fleet.git("-c", f"user.signingkey={stranger}", "commit", "-q", "-S", "-m", "wrong key")
    out_file = tmp_path / "out.bundle"
    code, out = fleet.cli("create", "-o", out_file)
    assert code == 1, out
    assert "UnknownSigner" in out and "a device would refuse" in out
    assert not out_file.exists()

    fleet.git("reset", "-q", "--hard", "HEAD~1")
    fleet.write("groups/lobby/b.yaml", BEACON.replace("beacon", "b"))
    fleet.git("add", "-A")
    fleet.git("commit", "-q", "--no-gpg-sign", "-m", "unsigned")
    code, out = fleet.cli("create", "-o", out_file)
    assert code == 1 and "UnsignedCommit" in out, out
    assert not out_file.exists()

    fleet.git("reset", "-q", "--hard", "HEAD~1")
    code, out = fleet.cli("create", "-o", out_file)
    assert code == 0, out
    assert out_file.exists()


def test_create_refuses_an_expired_tip(tmp_path, publisher_key):
    fleet = Fleet(tmp_path, publisher_key)
    fleet.write("groups/lobby/a.yaml", BEACON)
    code, out = fleet.cli("commit", "-m", "short-lived\n\nExpires: 2001-01-01T00:00:00Z")
    assert code == 0, out
    code, out = fleet.cli("create", "-o", tmp_path / "out.bundle")
    assert code == 1 and "Expired" in out, out
    assert not (tmp_path / "out.bundle").exists()
