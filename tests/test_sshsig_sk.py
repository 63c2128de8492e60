"""FIDO security-key (``sk-``) signatures: our verifier against ``ssh-keygen`` and ``git``.

There is no hardware here: ``helpers.SoftSecurityKey`` signs what PROTOCOL.u2f says an
authenticator signs (application hash, flags, counter, message hash). ``ssh-keygen -Y
verify`` and ``git verify-commit`` check sk- signatures in software, so every verdict
below is also asked of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dulwich.objects import Commit
from support.git import SoftSecurityKey, run, write_allowed_signers

from giter_agent.core.errors import TrustError
from giter_agent.trust import allowed_signers, signed_commit, sshsig

MESSAGE = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nhello\n"
KINDS = ("ed25519", "ecdsa")


def keygen_verifies(tmp_path: Path, armour: bytes, signers: Path,
                    message: bytes = MESSAGE) -> bool:
    sig = tmp_path / "check.sig"
    sig.write_bytes(armour)
    return run("ssh-keygen", "-Y", "verify", "-f", signers, "-I", "signer0", "-n", "git",
               "-s", sig, check=False, input=message).returncode == 0


def trusted(path: Path, key: SoftSecurityKey, options: str = 'namespaces="git"'
            ) -> tuple[Path, tuple[sshsig.PublicKey, ...]]:
    write_allowed_signers(path, key.line(), options=options)
    return path, allowed_signers.load(path)


@pytest.mark.parametrize("kind", KINDS)
def test_a_touched_sk_signature_verifies_like_ssh_keygen(tmp_path, kind):
    key = SoftSecurityKey(kind)
    armour = key.sign_sshsig(MESSAGE)
    path, keys = trusted(tmp_path / "signers", key)
    assert sshsig.verify(armour, MESSAGE, keys) == key.public
    assert keygen_verifies(tmp_path, armour, path)


@pytest.mark.parametrize("kind", KINDS)
def test_flags_and_counter_are_signed(tmp_path, kind):
    key = SoftSecurityKey(kind, flags=0x05, counter=41)
    armour = key.sign_sshsig(MESSAGE)
    blob = sshsig.dearmor(armour)
    # the counter is the signature's last four bytes: claim another one
    forged = sshsig.armor(blob[:-4] + (42).to_bytes(4, "big"))
    path, keys = trusted(tmp_path / "signers", key)
    assert sshsig.verify(armour, MESSAGE, keys) == key.public
    with pytest.raises(TrustError) as caught:
        sshsig.verify(forged, MESSAGE, keys)
    assert caught.value.reason == "BadSignature"
    assert not keygen_verifies(tmp_path, forged, path)
    with pytest.raises(TrustError):
        sshsig.verify(armour, MESSAGE + b"x", keys)


@pytest.mark.parametrize("kind", KINDS)
def test_an_untouched_signature_is_refused(tmp_path, kind):
    """Stricter than ``ssh-keygen -Y verify``, which accepts it: nobody touched the key."""
    key = SoftSecurityKey(kind, flags=0x00)
    armour = key.sign_sshsig(MESSAGE)
    path, keys = trusted(tmp_path / "signers", key)
    with pytest.raises(TrustError) as caught:
        sshsig.verify(armour, MESSAGE, keys)
    assert caught.value.reason == "UserPresenceMissing"
    assert keygen_verifies(tmp_path, armour, path)  # the row we refuse on purpose


def test_user_verification_on_top_of_presence_is_accepted(tmp_path):
    key = SoftSecurityKey("ecdsa", flags=0x05)  # touched and PIN-verified
    armour = key.sign_sshsig(MESSAGE)
    path, keys = trusted(tmp_path / "signers", key)
    assert sshsig.verify(armour, MESSAGE, keys) == key.public
    assert keygen_verifies(tmp_path, armour, path)


def test_the_application_is_signed(tmp_path):
    """A key registered for another application cannot stand in for this one."""
    key = SoftSecurityKey("ed25519")
    other_app = SoftSecurityKey("ed25519", application=b"ssh:other")
    other_app._key = key._key  # same key pair, other application string
    armour = other_app.sign_sshsig(MESSAGE)
    import struct

    blob = sshsig.dearmor(armour)
    swapped = blob.replace(struct.pack(">I", len(other_app.public.blob)) + other_app.public.blob,
                           struct.pack(">I", len(key.public.blob)) + key.public.blob)
    _, keys = trusted(tmp_path / "signers", key)
    with pytest.raises(TrustError) as caught:
        sshsig.verify(sshsig.armor(swapped), MESSAGE, keys)
    assert caught.value.reason == "BadSignature"


@pytest.mark.parametrize("kind", KINDS)
def test_git_verify_commit_accepts_an_sk_signed_commit_we_accept(tmp_path, kind):
    key = SoftSecurityKey(kind)
    repo = tmp_path / "repo"
    run("git", "init", "-q", "-b", "main", repo)
    tree = run("git", "-C", repo, "mktree", input=b"").stdout.decode().strip()
    commit = Commit()
    commit.tree = tree.encode()
    commit.author = commit.committer = b"Op <op@example.org>"
    commit.author_time = commit.commit_time = 1_700_000_000
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = b"signed by a security key\n"
    signed_commit.sign_commit(commit, key)
    raw = commit.as_raw_string()
    sha = run("git", "-C", repo, "hash-object", "-t", "commit", "-w", "--stdin",
              input=raw).stdout.decode().strip()
    signers = write_allowed_signers(tmp_path / "signers", key.line())
    payload, armour = signed_commit.split(raw)
    assert sshsig.verify(armour, payload, allowed_signers.load(signers)) == key.public
    assert run("git", "-C", repo, "-c", "gpg.format=ssh", "-c",
               f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", sha,
               check=False).returncode == 0


def test_a_device_takes_in_a_history_signed_by_a_security_key(tmp_path):
    """The whole trust path, not only sshsig: verify_update over an sk-signed chain."""
    from dulwich.objects import Tree
    from dulwich.repo import Repo

    from giter_agent.trust.spec_rule import TrustRoot, verify_update

    key = SoftSecurityKey("ecdsa")
    repo = Repo.init_bare(str(tmp_path / "fleet.git"), mkdir=True)
    tree = Tree()
    repo.object_store.add_object(tree)
    parent: list[bytes] = []
    for n in range(3):
        commit = Commit()
        commit.tree = tree.id
        commit.parents = parent
        commit.author = commit.committer = b"Op <op@example.org>"
        commit.author_time = commit.commit_time = 1_700_000_000 + n
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = f"step {n}\n".encode()
        signed_commit.sign_commit(commit, key)
        repo.object_store.add_object(commit)
        parent = [commit.id]
    verified = verify_update(repo.object_store, None, parent[0], TrustRoot((key.public,)))
    assert len(verified.commits) == 3
    assert set(verified.signer_by_commit.values()) == {key.public.fingerprint()}
    untouched = SoftSecurityKey("ecdsa", flags=0)
    untouched._key, untouched.public = key._key, key.public
    commit = Commit()
    commit.tree = tree.id
    commit.parents = parent
    commit.author = commit.committer = b"Op <op@example.org>"
    commit.author_time = commit.commit_time = 1_700_000_100
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = b"nobody touched the key\n"
    signed_commit.sign_commit(commit, untouched)
    repo.object_store.add_object(commit)
    with pytest.raises(TrustError) as caught:
        verify_update(repo.object_store, parent[0], commit.id, TrustRoot((key.public,)),
                      held={parent[0]}.__contains__)
    assert caught.value.reason == "UserPresenceMissing"
