"""The history verifier against a table of attacks, each verdict cross-checked with git.

Every row builds a small history with real ``git commit -S`` (and, for attacks git cannot
make, by splicing raw commit objects), runs ``trust.spec_rule.verify_update`` on it, and asks
``git verify-commit`` the same question with the same signer set: the trust file in the
commit's first parent's tree, or the device's pinned file, plus the root keys.
Rows where git's answer differs from ours on purpose (malleated commits git accepts) say so.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo
from support.git import (
    Publisher,
    cat_commit,
    craft_sshsig,
    git_verifies,
    low_s,
    pub_line,
    run,
    ssh_keygen,
    write_allowed_signers,
    write_commit,
)

from giter_agent.core.errors import TrustError
from giter_agent.history.walk import ancestors, parents
from giter_agent.trust import signed_commit, ssh_keyfile, sshsig
from giter_agent.trust.spec_rule import TrustRoot, Verified, verify_update
from giter_agent.trust.status_rule import verify_status_commit
from giter_agent.trust.trailers import expires_of

TRUST_PATH = ".giter/trust/allowed_signers"


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    # A: the publisher; B, C: rotation targets; R: the offline root key; M: mallory.
    return {name: ssh_keygen(folder / name) for name in ("A", "B", "C", "R", "M")}


class World:
    """A publisher repository signing as A, and a device pinned to A with root key R."""

    def __init__(self, tmp: Path, keys: dict[str, Path]) -> None:
        self.tmp = tmp
        self.keys = keys
        self.pub = Publisher(tmp / "fleet", keys["A"])
        self.pinned = write_allowed_signers(tmp / "pinned_signers", pub_line(keys["A"]))
        self.root_file = write_allowed_signers(tmp / "root_keys", pub_line(keys["R"]))
        self.root = TrustRoot.load(self.pinned, self.root_file)
        self._n = 0

    def git(self, *args, **kw) -> subprocess.CompletedProcess:
        return self.pub.git(*args, **kw)

    def commit(self, message: str, *, key: str | None = "A",
               files: dict[str, str | None] | None = None) -> str:
        """Commit ``files`` (None deletes) signed by ``key`` (None: unsigned)."""
        for rel, text in (files or {}).items():
            if text is None:
                (self.pub.root / rel).unlink()
            else:
                self.pub.write(rel, text)
        self.git("add", "-A")
        sign = ["-S"] if key else ["--no-gpg-sign"]
        signing = ("-c", f"user.signingkey={self.keys[key or 'A']}")
        self.git(*signing, "commit", "-q", "--allow-empty", "-m", message, *sign)
        if key:
            low_s(self.git, *signing)
        return self.pub.head()

    def trust_text(self, *names: str, options: str = 'namespaces="git"') -> str:
        return "".join(f"{n.lower()}@fleet {options} {pub_line(self.keys[n])}\n" for n in names)

    def signers_for(self, commit: str) -> Path:
        """git's allowed_signers for ``commit``: its first parent's trust file + root keys."""
        parent_ids = parents(cat_commit(self.pub.root, commit))
        text = self.pinned.read_text()
        if parent_ids:
            shown = self.git("show", f"{parent_ids[0].decode()}:{TRUST_PATH}", check=False)
            if shown.returncode == 0:
                text = shown.stdout.decode()
        self._n += 1
        path = self.tmp / f"git_signers_{self._n}"
        path.write_text(text + self.root_file.read_text())
        return path

    def git_accepts(self, commit: str) -> bool:
        return git_verifies(self.pub.root, commit, self.signers_for(commit))

    def store(self):
        return Repo(str(self.pub.root)).object_store

    def verify(self, accepted: str | None, new: str, **kw) -> Verified:
        """``verify_update`` as a device at ``accepted`` runs it: it holds that history."""
        store = self.store()
        held = ancestors(store, accepted.encode()) if accepted else set()
        return verify_update(store, accepted.encode() if accepted else None,
                             new.encode(), self.root, held=held.__contains__, **kw)

    # -- raw surgery for attacks git will not make itself ---------------------------
    def payload(self, commit: str) -> bytes:
        return signed_commit.parse(cat_commit(self.pub.root, commit)).payload

    def splice(self, payload: bytes, armour: bytes) -> str:
        """Store ``payload`` with ``armour`` as its gpgsig header, the way git places it."""
        end = payload.index(b"\n\n") + 1
        header = b"gpgsig " + armour[:-1].replace(b"\n", b"\n ") + b"\n"
        return write_commit(self.pub.root, payload[:end] + header + payload[end:])

    def rewrite(self, commit: str, edit) -> str:
        """Store ``edit(raw)`` of an existing commit as a new commit object."""
        return write_commit(self.pub.root, edit(cat_commit(self.pub.root, commit)))

    def ssh_keygen_sign(self, payload: bytes, key: str, *options: str) -> bytes:
        self._n += 1
        path = self.tmp / f"payload_{self._n}"
        path.write_bytes(payload)
        run("ssh-keygen", "-Y", "sign", "-q", "-f", self.keys[key], *options, path)
        return Path(f"{path}.sig").read_bytes()


@pytest.fixture
def world(tmp_path, keys) -> World:
    return World(tmp_path, keys)


# --- accepted histories ------------------------------------------------------------

def test_first_sync_verifies_every_commit_oldest_first(world):
    ids = [world.commit(f"c{i}") for i in range(4)]
    result = world.verify(None, ids[-1])
    assert result.tip == ids[-1].encode()
    assert result.commits == tuple(i.encode() for i in ids)
    fingerprint = sshsig.PublicKey.from_openssh(pub_line(world.keys["A"])).fingerprint()
    assert set(result.signer_by_commit.values()) == {fingerprint}
    assert result.expires is None
    assert all(world.git_accepts(c) for c in ids)


def test_incremental_sync_verifies_only_the_new_range(world):
    ids = [world.commit(f"c{i}") for i in range(4)]
    assert world.verify(ids[1], ids[3]).commits == (ids[2].encode(), ids[3].encode())


def test_same_tip_has_nothing_to_verify(world):
    tip = world.commit("c0")
    assert world.verify(tip, tip).commits == ()


def test_merge_brings_in_both_sides_parents_first(world):
    base = world.commit("base")
    world.git("checkout", "-q", "-b", "side")
    side = world.commit("side", files={"s.txt": "s"})
    world.git("checkout", "-q", "main")
    main = world.commit("main", files={"m.txt": "m"})
    world.git("-c", f"user.signingkey={world.keys['A']}", "merge", "-q", "-S", "--no-ff",
              "-m", "merge", "side")
    merge = world.pub.head()
    result = world.verify(base, merge)
    assert set(result.commits) == {side.encode(), main.encode(), merge.encode()}
    assert result.commits[-1] == merge.encode()
    assert all(world.git_accepts(c) for c in (side, main, merge))


@pytest.mark.parametrize("keytype,bits", [("ecdsa", 256), ("ecdsa", 384), ("rsa", 2048)])
def test_other_key_types_from_real_git(world, tmp_path, keytype, bits):
    key = ssh_keygen(tmp_path / f"{keytype}{bits}", keytype, bits)
    world.keys["K"] = key
    start = world.commit("genesis", files={TRUST_PATH: world.trust_text("A", "K")})
    tip = world.commit("by K", key="K")
    assert world.verify(start, tip).commits == (tip.encode(),)
    assert world.git_accepts(tip)


def test_sha256_message_hash_is_accepted(world):
    base = world.commit("c0")
    unsigned = world.commit("c1", key=None)
    armour = world.ssh_keygen_sign(world.payload(unsigned), "A", "-n", "git",
                                   "-O", "hashalg=sha256")
    spliced = world.splice(world.payload(unsigned), armour)
    assert world.verify(base, spliced).commits == (spliced.encode(),)
    assert world.git_accepts(spliced)


# --- the attack table ----------------------------------------------------------------

@dataclass
class Attack:
    accepted: str | None
    new: str
    bad: str | None           # the commit the error must name (None: the tip itself)
    git_accepts: bool | None  # git's verdict on ``bad`` (None: not a signature question)


def unsigned_in_middle(w: World) -> Attack:
    base = w.commit("c0")
    bad = w.commit("c1", key=None)
    return Attack(base, w.commit("c2"), bad, False)


def unknown_key(w: World) -> Attack:
    base = w.commit("c0")
    bad = w.commit("c1", key="M")
    return Attack(base, w.commit("c2"), bad, False)


def tampered_message(w: World) -> Attack:
    base = w.commit("c0")
    good = w.commit("pay 10")
    bad = w.rewrite(good, lambda raw: raw.replace(b"pay 10", b"pay 99"))
    return Attack(base, bad, bad, False)


def signature_over_other_payload(w: World) -> Attack:
    base = w.commit("c0")
    signed = w.commit("harmless")
    w.git("reset", "-q", "--hard", base)
    unsigned = w.commit("evil", key=None, files={"evil.txt": "x"})
    stolen = signed_commit.parse(cat_commit(w.pub.root, signed)).signature
    bad = w.splice(w.payload(unsigned), stolen)
    return Attack(base, bad, bad, False)


def wrong_namespace(w: World) -> Attack:
    base = w.commit("c0")
    unsigned = w.commit("c1", key=None)
    bad = w.splice(w.payload(unsigned), w.ssh_keygen_sign(w.payload(unsigned), "A", "-n", "file"))
    return Attack(base, bad, bad, False)


def wrong_hash_algorithm(w: World) -> Attack:
    base = w.commit("c0")
    unsigned = w.commit("c1", key=None)
    key = ssh_keyfile.load_private_key(w.keys["A"])
    bad = w.splice(w.payload(unsigned), craft_sshsig(key, w.payload(unsigned), hash_alg=b"sha1"))
    return Attack(base, bad, bad, False)


def _malleate(edit):
    def attack(w: World) -> Attack:
        base = w.commit("c0")
        bad = w.rewrite(w.commit("c1"), edit)
        return Attack(base, bad, bad, True)  # git still says "Good signature"
    return attack


def _rewrap(raw: bytes) -> bytes:
    lines = raw.split(b"\n")
    first = next(i for i, line in enumerate(lines) if line.startswith(b"gpgsig "))
    lines[first + 1] += lines.pop(first + 2)[1:]
    return b"\n".join(lines)


def _duplicate_gpgsig(raw: bytes) -> bytes:
    head, _, body = raw.partition(b"\n\n")
    block = head[head.index(b"gpgsig "):]
    return head + b"\n" + block + b"\n\n" + body


def signed_unknown_header(w: World) -> Attack:
    """Signed over an extra header git ignores: git says good, we refuse the odd layout."""
    base = w.commit("c0")
    payload = w.payload(w.commit("c1", key=None))
    end = payload.index(b"\n\n") + 1
    payload = payload[:end] + b"x-extra hello\n" + payload[end:]
    bad = w.splice(payload, sshsig.sign(ssh_keyfile.load_private_key(w.keys["A"]), payload))
    return Attack(base, bad, bad, True)


def trust_change_signed_by_new_key(w: World) -> Attack:
    base = w.commit("c0")
    bad = w.commit("add B", key="B", files={TRUST_PATH: w.trust_text("A", "B")})
    return Attack(base, bad, bad, False)


def revoked_key(w: World) -> Attack:
    base = w.commit("c0", files={TRUST_PATH: w.trust_text("A", "B")})
    w.commit("revoke A", key="B", files={TRUST_PATH: w.trust_text("B")})
    bad = w.commit("A after revocation", key="A")
    return Attack(base, bad, bad, False)


def key_removed_then_reused(w: World) -> Attack:
    base = w.commit("c0", files={TRUST_PATH: w.trust_text("A", "B")})
    w.commit("remove B", key="A", files={TRUST_PATH: w.trust_text("A")})
    w.commit("later", key="A")
    bad = w.commit("B again", key="B")
    return Attack(base, w.commit("on top"), bad, False)


def trust_file_namespace_excludes_git(w: World) -> Attack:
    base = w.commit("c0", files={TRUST_PATH: w.trust_text("A") + w.trust_text(
        "B", options='namespaces="file"')})
    bad = w.commit("by B", key="B")
    return Attack(base, bad, bad, False)


def genesis_trusts_its_own_tree(w: World) -> Attack:
    bad = w.commit("genesis", key="M", files={TRUST_PATH: w.trust_text("M")})
    return Attack(None, w.commit("next", key="M"), bad, False)


def unsigned_side_branch_merged(w: World) -> Attack:
    base = w.commit("base")
    w.git("checkout", "-q", "-b", "side")
    bad = w.commit("side", key=None, files={"s.txt": "s"})
    w.git("checkout", "-q", "main")
    w.commit("main", files={"m.txt": "m"})
    w.git("-c", f"user.signingkey={w.keys['A']}", "merge", "-q", "-S", "--no-ff", "-m", "merge",
          "side")
    return Attack(base, w.pub.head(), bad, False)


def rollback(w: World) -> Attack:
    old = w.commit("c0")
    w.commit("c1")
    return Attack(w.commit("c2"), old, None, None)


def replay_of_old_tip(w: World) -> Attack:
    w.commit("c0")
    old_bundle_tip = w.commit("c1")
    w.commit("c2")
    return Attack(w.commit("c3"), old_bundle_tip, None, None)


def fork(w: World) -> Attack:
    base = w.commit("c0")
    accepted = w.commit("c1")
    w.git("checkout", "-q", "-b", "other", base)
    return Attack(accepted, w.commit("c1 elsewhere"), None, None)


def unrelated_history(w: World) -> Attack:
    accepted = w.commit("c0")
    w.git("checkout", "-q", "--orphan", "stranger")
    return Attack(accepted, w.commit("another genesis"), None, None)


ATTACKS = [
    ("unsigned commit in the middle", unsigned_in_middle, "UnsignedCommit"),
    ("unknown key", unknown_key, "UnknownSigner"),
    ("tampered message, same signature", tampered_message, "BadSignature"),
    ("signature over a different payload", signature_over_other_payload, "BadSignature"),
    ("wrong namespace", wrong_namespace, "WrongNamespace"),
    ("wrong hash algorithm", wrong_hash_algorithm, "UnsupportedHashAlgorithm"),
    ("malleated: re-wrapped armour", _malleate(_rewrap), "MalformedCommit"),
    ("malleated: duplicated gpgsig header", _malleate(_duplicate_gpgsig), "MalformedCommit"),
    ("malleated: gpgsig-sha256 beside gpgsig",
     _malleate(lambda r: r.replace(b"\n\n", b"\ngpgsig-sha256 x\n\n", 1)), "MalformedCommit"),
    ("malleated: trailing space in armour",
     _malleate(lambda r: r.replace(b"-----END SSH SIGNATURE-----",
                                   b"-----END SSH SIGNATURE----- ")), "MalformedCommit"),
    ("malleated: empty continuation line",
     _malleate(lambda r: r.replace(b"\n\n", b"\n \n\n", 1)), "MalformedCommit"),
    ("signed unknown header", signed_unknown_header, "MalformedCommit"),
    ("trust-file change signed by the new key only", trust_change_signed_by_new_key,
     "UnknownSigner"),
    ("revoked key", revoked_key, "UnknownSigner"),
    ("key removed then reused", key_removed_then_reused, "UnknownSigner"),
    ("trust entry not for namespace git", trust_file_namespace_excludes_git, "UnknownSigner"),
    ("genesis trusting its own tree", genesis_trusts_its_own_tree, "UnknownSigner"),
    ("unsigned commit merged from a side branch", unsigned_side_branch_merged, "UnsignedCommit"),
    ("rollback", rollback, "Rollback"),
    ("replay of an old tip", replay_of_old_tip, "Rollback"),
    ("fork", fork, "Fork"),
    ("unrelated history", unrelated_history, "Fork"),
]


@pytest.mark.parametrize("build,reason", [(b, r) for _, b, r in ATTACKS],
                         ids=[name for name, _, _ in ATTACKS])
def test_attack_is_refused(world, build, reason):
    attack = build(world)
    refs_before = world.git("for-each-ref").stdout
    with pytest.raises(TrustError) as caught:
        world.verify(attack.accepted, attack.new)
    assert caught.value.reason == reason, caught.value
    assert caught.value.commit == (attack.bad or attack.new)
    assert (attack.bad or attack.new) in str(caught.value)
    assert world.git("for-each-ref").stdout == refs_before  # verifying moves nothing
    if attack.git_accepts is not None:
        assert world.git_accepts(attack.bad) is attack.git_accepts


def test_commit_cap(world):
    base = world.commit("c0")
    for i in range(3):
        world.commit(f"c{i + 1}")
    assert len(world.verify(base, world.pub.head(), max_commits=3).commits) == 3
    with pytest.raises(TrustError) as caught:
        world.verify(base, world.pub.head(), max_commits=2)
    assert caught.value.reason == "TooManyCommits"


def test_first_bad_commit_is_named(world):
    base = world.commit("c0")
    first = world.commit("c1", key=None)
    world.commit("c2", key="M")
    with pytest.raises(TrustError) as caught:
        world.verify(base, world.pub.head())
    assert caught.value.commit == first


# --- rotation and recovery -------------------------------------------------------------

def test_rotation_signed_by_old_key_then_new_key_signs(world):
    base = world.commit("c0")
    rotate = world.commit("A hands over to B", key="A", files={TRUST_PATH: world.trust_text("B")})
    by_b = world.commit("by B", key="B")
    result = world.verify(base, by_b)
    assert result.commits == (rotate.encode(), by_b.encode())
    assert world.git_accepts(rotate) and world.git_accepts(by_b)
    assert result.signer_by_commit[by_b.encode()] == sshsig.PublicKey.from_openssh(
        pub_line(world.keys["B"])).fingerprint()


def test_root_key_resets_a_compromised_signer_set(world):
    base = world.commit("c0", files={TRUST_PATH: world.trust_text("M")})  # M took over
    reset = world.commit("recovery", key="R", files={TRUST_PATH: world.trust_text("C")})
    by_c = world.commit("by C", key="C")
    assert world.verify(base, by_c).commits == (reset.encode(), by_c.encode())
    assert world.git_accepts(reset) and world.git_accepts(by_c)
    late = world.commit("M after reset", key="M")
    with pytest.raises(TrustError) as caught:
        world.verify(by_c, late)
    assert caught.value.reason == "UnknownSigner"
    assert not world.git_accepts(late)


def test_root_key_repairs_a_broken_trust_file(world):
    base = world.commit("c0", files={TRUST_PATH: "this is not a trust file\n"})
    broken = world.commit("by A", key="A")
    with pytest.raises(TrustError) as caught:
        world.verify(base, broken)
    assert (caught.value.reason, caught.value.commit) == ("InvalidTrustFile", broken)
    world.git("reset", "-q", "--hard", base)
    fixed = world.commit("repair", key="R", files={TRUST_PATH: world.trust_text("A")})
    assert world.verify(base, world.commit("by A", key="A")).commits[0] == fixed.encode()


def test_deleting_the_trust_file_falls_back_to_the_pinned_set(world):
    base = world.commit("c0", files={TRUST_PATH: world.trust_text("A", "B")})
    world.commit("drop trust file", key="B", files={TRUST_PATH: None})
    tip = world.commit("by B", key="B")
    with pytest.raises(TrustError) as caught:
        world.verify(base, tip)
    assert (caught.value.reason, caught.value.commit) == ("UnknownSigner", tip)
    assert not world.git_accepts(tip)


def test_trust_file_must_be_a_regular_file(world):
    world.git("config", "core.symlinks", "true")
    (world.pub.root / ".giter" / "trust").mkdir(parents=True)
    (world.pub.root / TRUST_PATH).symlink_to("/etc/passwd")
    base = world.commit("c0")
    tip = world.commit("c1")
    with pytest.raises(TrustError) as caught:
        world.verify(base, tip)
    assert caught.value.reason == "InvalidTrustFile"


def test_trust_root_needs_a_git_signer(tmp_path, keys):
    empty = write_allowed_signers(tmp_path / "s", pub_line(keys["A"]), options='namespaces="file"')
    with pytest.raises(TrustError) as caught:
        TrustRoot.load(empty)
    assert caught.value.reason == "InvalidTrustFile"


# --- objects the store lies about ------------------------------------------------------

class LyingStore:
    """A real store, except that one object's bytes are swapped for other bytes."""

    def __init__(self, store, oid: bytes, raw: bytes) -> None:
        self._store, self._oid, self._raw = store, oid, raw

    def get_raw(self, oid: bytes):
        type_num, raw = self._store.get_raw(oid)
        return (type_num, self._raw) if oid == self._oid else (type_num, raw)


def test_object_that_does_not_hash_to_its_id_is_refused(world):
    base = world.commit("c0")
    tip = world.commit("pay 10")
    raw = cat_commit(world.pub.root, tip).replace(b"pay 10", b"pay 99")
    store = LyingStore(world.store(), tip.encode(), raw)
    with pytest.raises(TrustError) as caught:
        verify_update(store, base.encode(), tip.encode(), world.root,
                      held={base.encode()}.__contains__)
    assert caught.value.reason == "CorruptObject"


def test_missing_parent_is_refused(world):
    tip = world.commit("c0")
    orphan = world.rewrite(tip, lambda r: r.replace(b"author", b"parent " + b"1" * 40
                                                    + b"\nauthor", 1))
    with pytest.raises(TrustError) as caught:
        world.verify(None, orphan)
    assert caught.value.reason == "MissingObject"


# --- freeze: the Expires trailer ---------------------------------------------------------

UTC_NOON = datetime(2030, 1, 2, 12, 0, tzinfo=UTC)

EXPIRES = [
    ("subject only", b"freeze\n", None),
    ("trailer", b"freeze\n\nExpires: 2030-01-02T12:00:00Z\n", UTC_NOON),
    ("offset", b"freeze\n\nExpires: 2030-01-02T14:30:00+02:30\n", UTC_NOON),
    ("fraction, lower case", b"f\n\nexpires: 2030-01-02t12:00:00.5z\n",
     UTC_NOON.replace(microsecond=500000)),
    ("among other trailers", b"f\n\nbody\n\nSigned-off-by: x\nExpires: 2030-01-02T12:00:00Z\n",
     UTC_NOON),
    ("not in the last paragraph", b"f\n\nExpires: 2030-01-02T12:00:00Z\n\nmore text\n", None),
    ("subject line is never a trailer", b"Expires: garbage\n", None),
    ("no offset", b"f\n\nExpires: 2030-01-02T12:00:00\n", "InvalidExpires"),
    ("date only", b"f\n\nExpires: 2030-01-02\n", "InvalidExpires"),
    ("impossible date", b"f\n\nExpires: 2030-02-30T12:00:00Z\n", "InvalidExpires"),
    ("impossible offset", b"f\n\nExpires: 2030-01-02T12:00:00+24:00\n", "InvalidExpires"),
    ("empty", b"f\n\nExpires:\n", "InvalidExpires"),
    ("twice", b"f\n\nExpires: 2030-01-02T12:00:00Z\nExpires: 2031-01-02T12:00:00Z\n",
     "InvalidExpires"),
]


@pytest.mark.parametrize("message,expected", [(m, e) for _, m, e in EXPIRES],
                         ids=[name for name, _, _ in EXPIRES])
def test_expires_trailer(message, expected):
    if isinstance(expected, str):
        with pytest.raises(TrustError) as caught:
            expires_of(message)
        assert caught.value.reason == expected
    else:
        assert expires_of(message) == expected


def test_expires_comes_from_the_newest_commit_only(world):
    base = world.commit("c0")
    world.commit("freeze\n\nExpires: 2030-01-02T12:00:00Z")
    assert world.verify(base, world.pub.head()).expires == UTC_NOON
    assert world.verify(base, world.commit("unfreeze")).expires is None
    bad = world.commit("oops\n\nExpires: next tuesday")
    with pytest.raises(TrustError) as caught:
        world.verify(base, bad)
    assert (caught.value.reason, caught.value.commit) == ("InvalidExpires", bad)


def test_commit_dates_are_not_consulted(world, monkeypatch):
    """Signed commits dated 2100, then 1970, verify like any other."""
    base = world.commit("c0")
    for date in ("@4102444800 +0000", "@1 +0000"):  # 2100, then 1970
        monkeypatch.setenv("GIT_AUTHOR_DATE", date)
        monkeypatch.setenv("GIT_COMMITTER_DATE", date)
        world.commit(f"dated {date}")
    assert len(world.verify(base, world.pub.head()).commits) == 2


# --- ownership: a device's status commit, on the publisher side ---------------------------

SPEC = {
    "devices/d1/app.yaml": "kind: App\nspec:\n  image: web:1\nstatus:\n  phase: Pending\n",
    "devices/d2/app.yaml": "kind: App\nspec:\n  image: web:1\n",
    "groups/lab/net.yaml": "kind: Network\nspec:\n  vlan: 3\n",
    TRUST_PATH: "",
}


class StatusWorld:
    """A spec commit in a dulwich repository, and device keys to write status with."""

    def __init__(self, tmp: Path, keys: dict[str, Path]) -> None:
        self.repo = Repo.init(str(tmp / "pub"), mkdir=True)
        self.store = self.repo.object_store
        self.publisher = ssh_keyfile.load_private_key(keys["A"])
        self.device_keys = {"d1": ssh_keyfile.load_private_key(keys["B"]),
                            "d2": ssh_keyfile.load_private_key(keys["C"])}
        self.spec = self.commit(SPEC, (), self.publisher)

    def tree(self, files: dict[str, str]) -> bytes:
        nested: dict = {}
        for path, text in files.items():
            *dirs, name = path.split("/")
            node = nested
            for d in dirs:
                node = node.setdefault(d, {})
            node[name] = text
        return self._store_tree(nested)

    def _store_tree(self, node: dict) -> bytes:
        tree = Tree()
        for name, value in node.items():
            if isinstance(value, dict):
                tree.add(name.encode(), 0o040000, self._store_tree(value))
            else:
                blob = Blob.from_string(value.encode())
                self.store.add_object(blob)
                tree.add(name.encode(), 0o100644, blob.id)
        self.store.add_object(tree)
        return tree.id

    def commit(self, files: dict[str, str], parents: tuple[bytes, ...], key) -> bytes:
        commit = Commit()
        commit.tree = self.tree(files)
        commit.parents = list(parents)
        commit.author = commit.committer = b"Device <device@example.invalid>"
        commit.author_time = commit.commit_time = 1_700_000_000
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = b"status\n"
        if key is not None:
            signed_commit.sign_commit(commit, key)
        self.store.add_object(commit)
        return commit.id

    def status(self, device: str, changes: dict[str, str | None], *,
               previous: bytes | None = None, key: str | None = "own") -> bytes:
        files = {p: t for p, t in {**SPEC, **changes}.items() if t is not None}
        signer = None if key is None else self.device_keys[device if key == "own" else key]
        parents = (previous, self.spec) if previous else (self.spec,)
        return self.commit(files, parents, signer)

    def check(self, commit: bytes, device: str = "d1", **kw) -> None:
        key = sshsig.public_key_of(self.device_keys[device])
        verify_status_commit(self.store, commit, device, key, **kw)


SUMMARY = ("apiVersion: giter/v1\nkind: DeviceStatus\nmetadata: {{name: {}}}\n"
           "status: {{lastSync: ok}}\n")
D1_STATUS = "kind: App\nspec:\n  image: web:1\nstatus:\n  phase: Running\n"

OWNERSHIP = [
    ("own status", "d1", {"devices/d1/app.yaml": D1_STATUS}, "own", None),
    ("status added to a group resource", "d1",
     {"groups/lab/net.yaml": "kind: Network\nspec:\n  vlan: 3\nstatus: {up: true}\n"},
     "own", None),
    ("same content, other YAML layout", "d1",
     {"devices/d1/app.yaml": "{kind: App, spec: {image: 'web:1'}, status: {phase: Done}}\n"},
     "own", None),
    ("device changing spec", "d1",
     {"devices/d1/app.yaml": D1_STATUS.replace("web:1", "web:2")}, "own",
     "OwnershipViolation"),
    ("status of another device's resource", "d1",
     {"devices/d2/app.yaml": "kind: App\nspec:\n  image: web:1\nstatus: {x: 1}\n"}, "own",
     "OwnershipViolation"),
    ("device signing another device's status", "d1", {"devices/d1/app.yaml": D1_STATUS},
     "d2", "UnknownSigner"),
    ("unsigned status", "d1", {"devices/d1/app.yaml": D1_STATUS}, None, "UnsignedCommit"),
    ("new file under its own folder", "d1", {"devices/d1/extra.yaml": "kind: App\n"}, "own",
     "OwnershipViolation"),
    ("deleting its own resource", "d1", {"devices/d1/app.yaml": None}, "own",
     "OwnershipViolation"),
    ("changing the trust file", "d1", {TRUST_PATH: "d1 ssh-ed25519 AAAA\n"}, "own",
     "OwnershipViolation"),
    ("non-YAML file in its folder", "d1", {"devices/d1/app.yaml": D1_STATUS,
                                           "devices/d1/notes.txt": "x"}, "own",
     "OwnershipViolation"),
    ("unparseable YAML", "d1", {"devices/d1/app.yaml": "kind: [\n"}, "own",
     "OwnershipViolation"),
    ("YAML aliases", "d1", {"devices/d1/app.yaml": D1_STATUS + "x: &a [1]\ny: *a\n"}, "own",
     "OwnershipViolation"),
    # Two `spec:` keys: a lenient parser keeps the last (the published spec), another
    # the first; the device's loader refuses, and so must the hub.
    ("duplicate key", "d1", {"devices/d1/app.yaml": "spec: {image: evil}\n" + D1_STATUS},
     "own", "OwnershipViolation"),
    ("own summary created", "d1", {".giter/status/d1.yaml": SUMMARY.format("d1")}, "own", None),
    ("summary naming another device", "d1", {".giter/status/d1.yaml": SUMMARY.format("d2")},
     "own", "OwnershipViolation"),
    ("another device's summary", "d1", {".giter/status/d2.yaml": SUMMARY.format("d2")},
     "own", "OwnershipViolation"),
    ("summary carrying more than status", "d1",
     {".giter/status/d1.yaml": SUMMARY.format("d1") + "spec: {x: 1}\n"}, "own",
     "OwnershipViolation"),
]


@pytest.mark.parametrize("device,changes,key,reason", [row[1:] for row in OWNERSHIP],
                         ids=[row[0] for row in OWNERSHIP])
def test_status_commit_ownership(tmp_path, keys, device, changes, key, reason):
    world = StatusWorld(tmp_path, keys)
    commit = world.status(device, changes, key=key)
    if reason is None:
        world.check(commit, device)
        return
    with pytest.raises(TrustError) as caught:
        world.check(commit, device)
    assert (caught.value.reason, caught.value.commit) == (reason, commit.decode())


def test_status_signatures_agree_with_git(tmp_path, keys):
    world = StatusWorld(tmp_path, keys)
    own = world.status("d1", {"devices/d1/app.yaml": D1_STATUS})
    foreign = world.status("d1", {"devices/d1/app.yaml": D1_STATUS}, key="d2")
    d1_only = write_allowed_signers(tmp_path / "d1.signers", pub_line(keys["B"]))
    assert git_verifies(tmp_path / "pub", own.decode(), d1_only)
    assert not git_verifies(tmp_path / "pub", foreign.decode(), d1_only)


def test_status_chain_and_spec_tip_check(tmp_path, keys):
    world = StatusWorld(tmp_path, keys)
    first = world.status("d1", {"devices/d1/app.yaml": D1_STATUS})
    second = world.status("d1", {"devices/d1/app.yaml": D1_STATUS.replace("Running", "Done")},
                          previous=first)
    world.check(second, spec_tip_known=lambda spec: spec == world.spec)
    with pytest.raises(TrustError) as caught:
        world.check(second, spec_tip_known=lambda spec: False)
    assert caught.value.reason == "UnknownSpecCommit"


def test_status_summary_may_change_only_its_status(tmp_path, keys):
    world = StatusWorld(tmp_path, keys)
    world.spec = world.commit({**SPEC, ".giter/status/d1.yaml": SUMMARY.format("d1")},
                              (world.spec,), world.publisher)
    world.check(world.status("d1", {".giter/status/d1.yaml": SUMMARY.format("d1").replace(
        "ok", "refused")}))
    with pytest.raises(TrustError) as caught:
        world.check(world.status("d1", {".giter/status/d1.yaml": None}))
    assert caught.value.reason == "OwnershipViolation"


def test_status_groups_can_be_limited(tmp_path, keys):
    world = StatusWorld(tmp_path, keys)
    commit = world.status("d1", {"groups/lab/net.yaml": "kind: Network\nspec:\n  vlan: 3\n"
                                                        "status: {up: true}\n"})
    world.check(commit, device_groups={"lab"})
    with pytest.raises(TrustError) as caught:
        world.check(commit, device_groups={"kitchen"})
    assert caught.value.reason == "OwnershipViolation"


def test_pinned_genesis_is_required_on_first_sync(world):
    first = world.commit("genesis")
    tip = world.commit("c1")
    pinned = TrustRoot(world.root.signers, world.root.root_keys, first.encode())
    assert verify_update(world.store(), None, tip.encode(), pinned).tip == tip.encode()
    # The same signer's commits in another repository: a different first commit.
    world.git("checkout", "-q", "--orphan", "other")
    other = world.commit("another repository")
    with pytest.raises(TrustError) as caught:
        verify_update(world.store(), None, other.encode(), pinned)
    assert caught.value.reason == "WrongGenesis"
    assert first in str(caught.value)
    # Once a tip is accepted, the pin has done its work: fast-forward rules from there.
    assert verify_update(world.store(), first.encode(), tip.encode(), pinned,
                         held={first.encode()}.__contains__).commits
