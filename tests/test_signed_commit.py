"""Canonical splitting of signed commits, and dulwich commits signed the way git signs them.

Real commits come from ``git commit -S``; the malleated ones are git's own commits with
their signature header re-laid-out, stored with ``git hash-object --literally``. For each
we record what ``git verify-commit`` says, so the rows where git accepts and we refuse are
visible as such.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dulwich.objects import Commit, Tree
from dulwich.repo import Repo
from support.git import (
    Publisher,
    cat_commit,
    git_verifies,
    pub_line,
    run,
    ssh_keygen,
    write_allowed_signers,
    write_commit,
)

from giter_agent.core.errors import TrustError
from giter_agent.trust import signed_commit, ssh_keyfile, sshsig

KEY_SPECS = {"ed25519": ("ed25519", None), "ecdsa256": ("ecdsa", 256),
             "ecdsa384": ("ecdsa", 384), "rsa2048": ("rsa", 2048)}


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    return {name: ssh_keygen(folder / name, kind, bits) for name, (kind, bits)
            in KEY_SPECS.items()}


def public(key: Path) -> sshsig.PublicKey:
    return sshsig.PublicKey.from_openssh(pub_line(key))


def test_real_git_commits_split_and_verify(tmp_path, keys):
    for name, key in keys.items():
        pub = Publisher(tmp_path / name, key)
        pub.trust(key)
        commit = pub.commit(f"signed by {name}", files={"a.txt": name})
        raw = cat_commit(pub.root, commit)
        payload, armour = signed_commit.split(raw, commit)
        assert sshsig.verify(armour, payload, [public(key)]) == public(key)
        assert pub.verify_commit(commit)
        # dulwich's own (lenient) reading of the same object agrees on what was signed.
        dulwich_payload, dulwich_sig, _ = Repo(str(pub.root))[commit.encode()].extract_signature()
        assert (payload, armour) == (dulwich_payload, dulwich_sig + b"\n")
        # ...and so does ssh-keygen, given our split.
        (tmp_path / "p").write_bytes(payload)
        (tmp_path / "p.sig").write_bytes(armour)
        run("ssh-keygen", "-Y", "check-novalidate", "-n", "git", "-s", tmp_path / "p.sig",
            input=payload)


def test_encoding_and_mergetag_headers_stay_in_the_payload(publisher, publisher_key):
    publisher.git("config", "i18n.commitEncoding", "ISO-8859-1")
    base = publisher.commit("base")
    publisher.git("checkout", "-q", "-b", "side")
    publisher.commit("side", files={"s.txt": "s"})
    publisher.git("tag", "-s", "-m", "release", "v1")
    publisher.git("checkout", "-q", "main")
    publisher.commit("main", files={"m.txt": "m"})
    publisher.git("merge", "-q", "-S", "--no-ff", "-m", "merge v1", "v1")
    merge = publisher.head()
    raw = cat_commit(publisher.root, merge)
    assert b"\nencoding ISO-8859-1\nmergetag object " in raw
    parts = signed_commit.parse(raw, merge)
    assert len(parts.parents) == 2 and parts.message.startswith(b"merge v1")
    header = parts.payload.split(b"\n\n")[0].split(b"\n")
    assert any(line.startswith(b"mergetag ") for line in header)
    assert not any(line.startswith(b"gpgsig") for line in header)
    assert sshsig.verify(parts.signature, parts.payload, [public(publisher_key)])
    assert publisher.verify_commit(merge)
    assert signed_commit.parse(cat_commit(publisher.root, base)).parents == ()


def test_unsigned_commit_is_refused(publisher):
    commit = publisher.commit("unsigned", sign=False)
    raw = cat_commit(publisher.root, commit)
    assert signed_commit.parse(raw).signature is None
    with pytest.raises(TrustError) as caught:
        signed_commit.split(raw, commit)
    assert (caught.value.reason, caught.value.commit) == ("UnsignedCommit", commit)
    assert not publisher.verify_commit(commit)


# --- malleations and malformed layouts -------------------------------------------------------

def _lines(edit):
    def apply(raw: bytes) -> bytes:
        head, _, body = raw.partition(b"\n\n")
        return b"\n".join(edit(head.split(b"\n"))) + b"\n\n" + body
    return apply


def _sig_index(lines: list[bytes]) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith(b"gpgsig "))


def _rewrap(lines):
    i = _sig_index(lines)
    lines[i + 1] += lines.pop(i + 2)[1:]
    return lines


def _duplicate(lines):
    i = _sig_index(lines)
    return lines + lines[i:]


def _before_committer(lines):
    i = _sig_index(lines)
    block = lines[i:]
    committer = next(j for j, line in enumerate(lines) if line.startswith(b"committer "))
    return lines[:committer] + block + lines[committer:i]


def _space_after_name(lines):
    i = _sig_index(lines)
    lines[i] = lines[i].replace(b"gpgsig ", b"gpgsig  ")
    return lines


# (name, edit of a good signed commit, git verify-commit's verdict on the result)
MALLEATED = [
    ("armour re-wrapped", _lines(_rewrap), True),
    ("trailing space on an armour line", _lines(lambda ls: [
        ls_ + b" " if ls_.startswith(b" U1NIU0lH") else ls_ for ls_ in ls]), True),
    ("space after END line", lambda r: r.replace(b"SIGNATURE-----\n\n", b"SIGNATURE----- \n\n"),
     True),
    ("double space after header name", _lines(_space_after_name), False),
    ("duplicated gpgsig header", _lines(_duplicate), True),
    ("gpgsig-sha256 beside gpgsig", _lines(lambda ls: [*ls, b"gpgsig-sha256 x"]), True),
    ("empty continuation line", _lines(lambda ls: [*ls, b" "]), True),
    ("gpgsig before committer", _lines(_before_committer), True),
    ("CR in armour", lambda r: r.replace(b"-----END SSH SIGNATURE-----",
                                         b"-----END SSH SIGNATURE-----\r"), True),
    ("unknown header", _lines(lambda ls: [*ls[:2], b"x-note hi", *ls[2:]]), False),
    ("continuation after author", _lines(lambda ls: [*ls[:2], b" x", *ls[2:]]), False),
    ("duplicated tree", _lines(lambda ls: [ls[0], *ls]), False),
    ("upper-case tree id", _lines(lambda ls: [ls[0].upper().replace(b"TREE", b"tree"),
                                              *ls[1:]]), False),
    ("no blank line before message", lambda r: r.replace(b"\n\n", b"\n"), False),
    ("NUL in a header", lambda r: r.replace(b"committer ", b"committer \0", 1), False),
]


@pytest.mark.parametrize("edit,git_accepts", [row[1:] for row in MALLEATED],
                         ids=[row[0] for row in MALLEATED])
def test_malleated_commit_is_refused(publisher, edit, git_accepts):
    original = publisher.commit("signed", files={"a.txt": "a"})
    raw = edit(cat_commit(publisher.root, original))
    assert raw != cat_commit(publisher.root, original)
    commit = write_commit(publisher.root, raw)
    assert publisher.verify_commit(commit) is git_accepts
    with pytest.raises(TrustError) as caught:
        signed_commit.parse(raw, commit)
    assert (caught.value.reason, caught.value.commit) == ("MalformedCommit", commit)
    assert commit in str(caught.value)


def test_pgp_signature_is_not_supported(publisher):
    raw = cat_commit(publisher.root, publisher.commit("unsigned", sign=False))
    pgp = b"gpgsig -----BEGIN PGP SIGNATURE-----\n \n abc\n -----END PGP SIGNATURE-----\n"
    raw = raw.replace(b"\n\n", b"\n" + pgp + b"\n", 1)
    with pytest.raises(TrustError) as caught:
        signed_commit.parse(raw)
    assert caught.value.reason == "UnsupportedSignatureFormat"


# --- sign_commit: dulwich commits git accepts -------------------------------------------------

def _dulwich_commit(repo: Repo, message: bytes = b"from dulwich\n") -> Commit:
    tree = Tree()
    repo.object_store.add_object(tree)
    commit = Commit()
    commit.tree = tree.id
    commit.author = commit.committer = b"Fleet Operator <ops@example.invalid>"
    commit.author_time = commit.commit_time = 1_700_000_000
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = message
    return commit


@pytest.mark.parametrize("name", KEY_SPECS)
def test_sign_commit_is_accepted_by_git(tmp_path, keys, name):
    repo = Repo.init(str(tmp_path / "repo"), mkdir=True)
    commit = _dulwich_commit(repo)
    signed_commit.sign_commit(commit, ssh_keyfile.load_private_key(keys[name]))
    repo.object_store.add_object(commit)
    signers = write_allowed_signers(tmp_path / "signers", pub_line(keys[name]))
    assert git_verifies(tmp_path / "repo", commit.id.decode(), signers)
    payload, armour = signed_commit.split(cat_commit(tmp_path / "repo", commit.id.decode()))
    assert sshsig.verify(armour, payload, [public(keys[name])]) == public(keys[name])


def test_sign_commit_makes_the_same_object_as_git(tmp_path, keys, monkeypatch):
    """ed25519 is deterministic, so dulwich + sign_commit must give git's commit id exactly."""
    repo = Repo.init(str(tmp_path / "repo"), mkdir=True)
    commit = _dulwich_commit(repo)
    signed_commit.sign_commit(commit, ssh_keyfile.load_private_key(keys["ed25519"]))
    for var in ("GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE"):
        monkeypatch.setenv(var, "@1700000000 +0000")
    made_by_git = run("git", "-C", tmp_path / "repo", "-c", "gpg.format=ssh", "-c",
                      f"user.signingkey={keys['ed25519']}", "commit-tree", "-S",
                      "-m", "from dulwich", commit.tree.decode()).stdout.decode().strip()
    assert made_by_git == commit.id.decode()


def test_sign_commit_replaces_an_old_signature(tmp_path, keys):
    repo = Repo.init(str(tmp_path / "repo"), mkdir=True)
    commit = _dulwich_commit(repo)
    signed_commit.sign_commit(commit, ssh_keyfile.load_private_key(keys["rsa2048"]))
    signed_commit.sign_commit(commit, ssh_keyfile.load_private_key(keys["ed25519"]))
    payload, armour = signed_commit.split(commit.as_raw_string())
    assert sshsig.verify(armour, payload, [public(keys["ed25519"])])
