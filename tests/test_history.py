"""History: bundles from git import through quarantine (full, thin, v2, v3); every
refusal leaves the store, the refs and the quarantine area exactly as they were; our
bundles satisfy ``git bundle verify``, ``git fetch`` and ``git clone``; refs move by CAS."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dulwich.objects import Commit
from support.git import run

from giter_agent.core.errors import BundleError, HistoryError
from giter_agent.history.store import Caps, History
from giter_agent.history.tree import read_file, replace_files
from giter_agent.state.recovery import sweep_repository

MAIN = b"refs/heads/main"
BIG = "".join(f"line {i} of a large generated file\n" for i in range(6000))  # ~200 KB


@pytest.fixture
def history(tmp_path) -> History:
    h = History(tmp_path / "state" / "history")
    yield h
    h.close()


def git_dir(history: History, *args: str) -> str:
    return run("git", "--git-dir", history.path, *args).stdout.decode().strip()


def import_bundle(history: History, path: Path) -> dict[bytes, bytes]:
    """Quarantine, promote, move main: what the sync code does after its own checks."""
    with history.quarantine(path) as q:
        q.promote()
        refs = q.refs
    history.set_ref(MAIN, history.ref(MAIN), refs[MAIN])
    return refs


def snapshot(history: History) -> dict[str, str]:
    """Every file of the repository with a hash of its content: store, refs, all."""
    out = {}
    for root, _dirs, files in os.walk(history.path):
        for name in files:
            p = Path(root, name)
            out[str(p.relative_to(history.path))] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def quarantine_entries(history: History) -> list[Path]:
    return list((history.path / "quarantine").rglob("*"))


def split_bundle(path: Path) -> tuple[bytes, bytes]:
    data = path.read_bytes()
    cut = data.index(b"\n\n") + 2
    return data[:cut], data[cut:]


def pack_objects(publisher, *shas: str) -> bytes:
    """A pack of exactly these objects, made by git."""
    data = "".join(f"{s}\n" for s in shas).encode()
    return publisher.git("pack-objects", "--stdout", input=data).stdout


# -- importing what git made ---------------------------------------------------------


@pytest.mark.parametrize("version", [2, 3])
def test_imports_full_bundle_from_git(publisher, history, tmp_path, version):
    publisher.commit("one", files={"devices/dev-1/led.yaml": "state: on\n"})
    tip = publisher.commit("two", files={"devices/dev-1/led.yaml": "state: off\n",
                                         "groups/all/f.yaml": "x: 1\n"})
    path = tmp_path / "full.bundle"
    publisher.git("bundle", "create", "-q", f"--version={version}", path, "main")

    with history.quarantine(path) as q:
        assert q.refs == {MAIN: tip.encode()}
        assert q.prerequisites == []
        tree = q.object_store[tip.encode()].tree
        assert read_file(q.object_store, tree, "devices/dev-1/led.yaml") == b"state: off\n"
        assert tip.encode() not in history.object_store  # not accepted before promote
        q.promote()
    assert tip.encode() in history.object_store
    history.set_ref(MAIN, None, tip.encode())

    assert quarantine_entries(history) == []
    run("git", "--git-dir", history.path, "fsck", "--strict", "--no-dangling")
    assert git_dir(history, "log", "--format=%H", "main") == publisher.git(
        "log", "--format=%H", "main").stdout.decode().strip()
    # The signature survived byte for byte: git verifies the commit in our store.
    run("git", "--git-dir", history.path, "-c",
        f"gpg.ssh.allowedSignersFile={publisher.allowed_signers}", "verify-commit", tip)


@pytest.mark.parametrize("version", [2, 3])
def test_imports_thin_incremental_bundle_from_git(publisher, history, tmp_path, version):
    publisher.commit("base", sign=False, files={"devices/dev-1/big.txt": BIG})
    import_bundle(history, publisher.bundle(tmp_path / "full.bundle"))
    base = publisher.head()
    tip = publisher.commit("edit", sign=False, files={"devices/dev-1/big.txt": BIG + "more\n"})
    path = tmp_path / "inc.bundle"
    publisher.git("bundle", "create", "-q", f"--version={version}", path, "main~1..main")

    # git made it thin: its pack alone does not index (a delta's base is the prerequisite).
    scratch = tmp_path / "scratch.git"
    run("git", "init", "-q", "--bare", scratch)
    alone = run("git", "-C", scratch, "index-pack", "--stdin", input=split_bundle(path)[1],
                check=False)
    assert b"unresolved delta" in alone.stderr

    with history.quarantine(path) as q:
        assert q.prerequisites == [base.encode()]
        assert q.is_ancestor(base.encode(), tip.encode())
        q.promote()
    history.set_ref(MAIN, base.encode(), tip.encode())
    tree = history.object_store[tip.encode()].tree
    assert read_file(history.object_store, tree, "devices/dev-1/big.txt") == (
        BIG + "more\n").encode()
    assert history.is_ancestor(base.encode(), tip.encode())
    assert not history.is_ancestor(tip.encode(), base.encode())
    run("git", "--git-dir", history.path, "fsck", "--strict", "--no-dangling")
    assert quarantine_entries(history) == []


def test_reimporting_the_same_bundle_is_harmless(publisher, history, tmp_path):
    publisher.commit("one", sign=False, files={"a.yaml": "a\n"})
    path = publisher.bundle(tmp_path / "full.bundle")
    import_bundle(history, path)
    packs = sorted(p.name for p in Path(history.object_store.pack_dir).iterdir())
    import_bundle(history, path)
    assert sorted(p.name for p in Path(history.object_store.pack_dir).iterdir()) == packs


def test_without_promote_nothing_is_accepted(publisher, history, tmp_path):
    tip = publisher.commit("one", sign=False, files={"a.yaml": "a\n"})
    before = snapshot(history)
    with history.quarantine(publisher.bundle(tmp_path / "full.bundle")) as q:
        assert tip.encode() in q.object_store
        assert list((history.path / "quarantine").iterdir())  # it was there meanwhile
    assert snapshot(history) == before
    assert quarantine_entries(history) == []
    assert tip.encode() not in history.object_store


def test_error_raised_by_the_caller_inside_quarantine_cleans_up(publisher, history, tmp_path):
    publisher.commit("one", sign=False, files={"a.yaml": "a\n"})
    before = snapshot(history)
    with pytest.raises(RuntimeError), history.quarantine(
            publisher.bundle(tmp_path / "full.bundle")):
        raise RuntimeError("signature check failed")
    assert snapshot(history) == before
    assert quarantine_entries(history) == []


# -- refusals: each typed, each leaving everything as it was ---------------------------


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1:]


@pytest.fixture
def accepted(publisher, history, tmp_path):
    """A history that already holds one commit on main, and a publisher one commit ahead."""
    publisher.commit("base", sign=False, files={"devices/dev-1/big.txt": BIG,
                                                "devices/dev-1/led.yaml": "state: on\n"})
    import_bundle(history, publisher.bundle(tmp_path / "base.bundle"))
    publisher.commit("next", sign=False, files={"devices/dev-1/big.txt": BIG + "more\n",
                                                "devices/dev-1/led.yaml": "state: off\n"})
    return publisher


def make_corrupt(pub, tmp):
    head, pack = split_bundle(pub.bundle(tmp / "b", "main~1..main"))
    return head + flip(pack, len(pack) // 2)


def make_bad_checksum(pub, tmp):
    data = pub.bundle(tmp / "b", "main~1..main").read_bytes()
    return flip(data, len(data) - 1)


def make_truncated(pub, tmp):
    return pub.bundle(tmp / "b", "main~1..main").read_bytes()[:-10]


def make_junk_tail(pub, tmp):
    return pub.bundle(tmp / "b", "main~1..main").read_bytes() + b"junk"


def make_header_only(pub, tmp):
    return split_bundle(pub.bundle(tmp / "b", "main~1..main"))[0]


def make_garbage(pub, tmp):
    return os.urandom(4096)


def make_missing_prerequisite(pub, tmp):
    pub.commit("beyond", sign=False, files={"x.yaml": "x\n"})
    return pub.bundle(tmp / "b", "main~1..main").read_bytes()  # needs "next"


def retarget(pub, tmp, rev):
    """A full bundle whose only ref points at ``rev`` (an object inside its pack)."""
    _, pack = split_bundle(pub.bundle(tmp / "b", "main"))
    sha = pub.head(rev)
    return f"# v2 git bundle\n{sha} refs/heads/main\n\n".encode() + pack


def make_ref_to_tree(pub, tmp):
    return retarget(pub, tmp, "main^{tree}")


def make_ref_to_blob(pub, tmp):
    return retarget(pub, tmp, "main:devices/dev-1/led.yaml")


def make_ref_to_nothing(pub, tmp):
    _, pack = split_bundle(pub.bundle(tmp / "b", "main~1..main"))
    base = pub.head("main~1")
    return (f"# v2 git bundle\n-{base} base\n{'c' * 40} refs/heads/main\n\n").encode() + pack


def make_commit_without_tree(pub, tmp):
    base, tip = pub.head("main~1"), pub.head("main")
    return (f"# v2 git bundle\n-{base} base\n{tip} refs/heads/main\n\n".encode()
            + pack_objects(pub, tip))


def make_tree_without_blob(pub, tmp):
    base, tip = pub.head("main~1"), pub.head("main")
    trees = [pub.head(f"main:{p}") for p in ("", "devices", "devices/dev-1")]
    # led.yaml's new content is left out; big.txt's is left out too.
    return (f"# v2 git bundle\n-{base} base\n{tip} refs/heads/main\n\n".encode()
            + pack_objects(pub, tip, *trees))


def make_commit_without_parent(pub, tmp):
    base = pub.head("main~1")
    # One more commit, sent whole (commit, every tree and blob), claiming to need only
    # "base": its parent "next" is in neither the bundle nor the history.
    tip = pub.commit("beyond", sign=False, files={"x.yaml": "x\n"})
    listing = pub.git("ls-tree", "-r", "-t", "--format=%(objectname)", "main").stdout
    return (f"# v2 git bundle\n-{base} base\n{tip} refs/heads/main\n\n".encode()
            + pack_objects(pub, tip, pub.head("main^{tree}"), *listing.decode().split()))


def incremental(pub, tmp):
    return pub.bundle(tmp / "b", "main~1..main").read_bytes()


def full(pub, tmp):
    return pub.bundle(tmp / "b", "main").read_bytes()


REFUSALS = [
    ("corrupt", make_corrupt, Caps(), BundleError, "CorruptBundle", "corrupt pack"),
    ("bad checksum", make_bad_checksum, Caps(), BundleError, "CorruptBundle",
     "checksum mismatch"),
    ("truncated", make_truncated, Caps(), BundleError, "TruncatedBundle", "truncated"),
    ("junk after pack", make_junk_tail, Caps(), BundleError, "CorruptBundle", "junk"),
    ("header only", make_header_only, Caps(), BundleError, "TruncatedBundle",
     "after 0 bytes"),
    ("garbage", make_garbage, Caps(), BundleError, "NotABundle", "not a git bundle"),
    ("missing prerequisite", make_missing_prerequisite, Caps(), HistoryError,
     "MissingPrerequisite", "does not have"),
    ("ref to a tree", make_ref_to_tree, Caps(), HistoryError, "RefTargetNotCommit",
     "refs/heads/main"),
    ("ref to a blob", make_ref_to_blob, Caps(), HistoryError, "RefTargetNotCommit",
     "not a commit"),
    ("ref to nothing", make_ref_to_nothing, Caps(), HistoryError, "RefTargetMissing",
     "c" * 40),
    ("commit without its tree", make_commit_without_tree, Caps(), HistoryError,
     "IncompleteBundle", "tree of commit"),
    ("tree without its blobs", make_tree_without_blob, Caps(), HistoryError,
     "IncompleteBundle", "blob 'big.txt'"),
    ("commit without its parent", make_commit_without_parent, Caps(), HistoryError,
     "IncompleteBundle", "parent of commit"),
    ("object over cap", full, Caps(max_object_bytes=50_000), BundleError, "TooLarge",
     "object at pack offset"),
    ("delta result over cap", incremental, Caps(max_object_bytes=50_000), BundleError,
     "TooLarge", "builds an object of"),
    ("bundle over cap", incremental, Caps(max_bundle_bytes=300), BundleError, "TooLarge",
     "max_bundle_bytes=300"),
    ("too many objects", incremental, Caps(max_objects=3), BundleError, "TooLarge",
     "max_objects=3"),
    ("time budget", incremental, Caps(time_budget_s=0.0), BundleError,
     "TimeBudgetExceeded", "time_budget_s=0"),
]


@pytest.mark.parametrize("name, make, caps, error, reason, words", REFUSALS,
                         ids=[r[0] for r in REFUSALS])
def test_refusal_leaves_everything_unchanged(accepted, history, tmp_path, name, make, caps,
                                             error, reason, words):
    path = tmp_path / "bad.bundle"
    path.write_bytes(make(accepted, tmp_path))
    before, main_before = snapshot(history), history.ref(MAIN)

    with History(history.path, caps) as capped, pytest.raises(error) as err, \
            capped.quarantine(path):
        pytest.fail("a refused bundle must not reach the caller")
    assert err.value.reason == reason, str(err.value)
    assert words in str(err.value)

    assert snapshot(history) == before
    assert history.ref(MAIN) == main_before
    assert quarantine_entries(history) == []


def test_refusals_name_what_is_wrong(accepted, history, tmp_path):
    path = tmp_path / "bad.bundle"
    path.write_bytes(make_commit_without_tree(accepted, tmp_path))
    tree = accepted.head("main^{tree}")
    with pytest.raises(HistoryError, match=f"tree of commit .* {tree} is missing"), \
            history.quarantine(path):
        pass
    path.write_bytes(incremental(accepted, tmp_path))
    with History(history.path, Caps(max_objects=3)) as capped, \
            pytest.raises(BundleError, match="max_objects=3"), capped.quarantine(path):
        pass
    path.write_bytes(make_missing_prerequisite(accepted, tmp_path))
    with pytest.raises(HistoryError, match=accepted.head("main~1")), history.quarantine(path):
        pass


def test_missing_bundle_file_is_a_bundle_error(history, tmp_path):
    with pytest.raises(BundleError) as err, history.quarantine(tmp_path / "nope.bundle"):
        pass
    assert err.value.reason == "UnreadableBundle"
    assert quarantine_entries(history) == []


# -- writing bundles that git reads ----------------------------------------------------


def test_written_incremental_bundle_verifies_and_fetches_with_git(accepted, history, tmp_path):
    base = history.ref(MAIN)
    import_bundle(history, accepted.bundle(tmp_path / "next.bundle", "main~1..main"))
    tip = history.ref(MAIN)
    out = tmp_path / "out" / "status.bundle"
    out.parent.mkdir()
    history.write_bundle(out, {MAIN: tip}, exclude=[base])

    header = split_bundle(out)[0].decode()
    subject = accepted.git("log", "-1", "--format=%s", base.decode()).stdout.decode().strip()
    assert f"-{base.decode()} {subject}\n" in header
    assert [p.name for p in out.parent.iterdir()] == ["status.bundle"]  # no temp left

    # A repo holding only the prerequisite: verify, fetch, log.
    peer = tmp_path / "peer"
    run("git", "init", "-q", "--bare", peer)
    run("git", "-C", peer, "fetch", "-q", accepted.root, f"{base.decode()}:refs/heads/main")
    run("git", "-C", peer, "bundle", "verify", "-q", out)
    run("git", "-C", peer, "fetch", "-q", out, "refs/heads/main:refs/heads/main")
    log = run("git", "-C", peer, "log", "--format=%H", "main").stdout.decode().split()
    assert log == [tip.decode(), base.decode()]
    run("git", "-C", peer, "fsck", "--strict", "--no-dangling")


def test_written_bundle_needs_its_prerequisite(accepted, history, tmp_path):
    base = history.ref(MAIN)
    import_bundle(history, accepted.bundle(tmp_path / "next.bundle", "main~1..main"))
    out = tmp_path / "status.bundle"
    history.write_bundle(out, {MAIN: history.ref(MAIN)}, exclude=[base])
    empty = tmp_path / "empty"
    run("git", "init", "-q", "--bare", empty)
    verdict = run("git", "-C", empty, "bundle", "verify", out, check=False)
    assert verdict.returncode != 0 and base.decode() in verdict.stderr.decode()


@pytest.mark.parametrize("version", [2, 3])
def test_written_full_bundle_clones_with_git_and_reimports(accepted, history, tmp_path,
                                                           version):
    import_bundle(history, accepted.bundle(tmp_path / "next.bundle", "main~1..main"))
    tip = history.ref(MAIN)
    out = tmp_path / "full.bundle"
    history.write_bundle(out, {MAIN: tip}, version=version)
    assert out.read_bytes().startswith(f"# v{version} git bundle\n".encode())

    clone = tmp_path / "clone"
    run("git", "clone", "-q", "--bare", out, clone)
    assert run("git", "-C", clone, "rev-parse", "main").stdout.decode().strip() == tip.decode()
    run("git", "-C", clone, "fsck", "--strict", "--no-dangling")

    again = History(tmp_path / "again")
    import_bundle(again, out)
    assert again.ref(MAIN) == tip
    again.close()


def test_status_commit_made_here_travels_to_git(accepted, history, tmp_path):
    spec = history.ref(MAIN)
    spec_tree = history.object_store[spec].tree
    tree = replace_files(history.object_store, spec_tree,
                         {"devices/dev-1/led.yaml": b"state: on\nstatus:\n  ready: true\n"})
    commit = Commit()
    commit.tree, commit.parents = tree, [spec]
    commit.author = commit.committer = b"dev-1 <dev-1@devices.invalid>"
    commit.author_time = commit.commit_time = int(time.time())
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = b"status of dev-1\n"
    history.object_store.add_object(commit)
    status_ref = b"refs/heads/status/dev-1"
    history.set_ref(status_ref, None, commit.id)

    out = tmp_path / "status.bundle"
    history.write_bundle(out, {status_ref: commit.id}, exclude=[spec])
    accepted.git("fetch", "-q", out, "refs/heads/status/dev-1:refs/heads/status/dev-1")
    shown = accepted.git("show", "status/dev-1:devices/dev-1/led.yaml").stdout
    assert shown == b"state: on\nstatus:\n  ready: true\n"
    assert accepted.git("rev-parse", "status/dev-1~1").stdout.decode().strip() == spec.decode()


def test_write_bundle_refuses_unknown_commits(history, tmp_path):
    with pytest.raises(HistoryError) as err:
        history.write_bundle(tmp_path / "x.bundle", {MAIN: b"d" * 40})
    assert err.value.reason == "UnknownCommit"
    assert not (tmp_path / "x.bundle").exists()


# -- refs ------------------------------------------------------------------------------


def test_set_ref_is_compare_and_swap(accepted, history, tmp_path):
    base = history.ref(MAIN)
    import_bundle(history, accepted.bundle(tmp_path / "next.bundle", "main~1..main"))
    tip = history.ref(MAIN)
    history.set_ref(MAIN, tip, base)  # rewind, to race from a known point

    other = History(history.path)  # a second writer on the same repository
    seen_by_both = history.ref(MAIN)
    history.set_ref(MAIN, seen_by_both, tip)
    with pytest.raises(HistoryError) as err:
        other.set_ref(MAIN, seen_by_both, base)
    assert err.value.reason == "RefChanged"
    assert history.ref(MAIN) == other.ref(MAIN) == tip
    assert git_dir(history, "rev-parse", "main") == tip.decode()

    with pytest.raises(HistoryError, match="changed under us") as err:
        history.set_ref(MAIN, None, base)  # "create" when it exists
    assert err.value.reason == "RefChanged"
    other.close()


def test_set_ref_refuses_while_another_writer_holds_the_lock(accepted, history):
    lock = history.path / "refs" / "heads" / "main.lock"
    lock.write_bytes(b"")
    current = history.ref(MAIN)
    with pytest.raises(HistoryError) as err:
        history.set_ref(MAIN, current, current)
    assert err.value.reason == "RefChanged"
    lock.unlink()


def test_set_ref_refuses_targets_that_are_not_accepted_commits(accepted, history):
    tree = history.object_store[history.ref(MAIN)].tree
    with pytest.raises(HistoryError) as err:
        history.set_ref(b"refs/heads/x", None, tree)
    assert err.value.reason == "RefTargetNotCommit"
    with pytest.raises(HistoryError) as err:
        history.set_ref(b"refs/heads/x", None, b"e" * 40)
    assert err.value.reason == "RefTargetMissing"
    with pytest.raises(ValueError):
        history.set_ref(b"HEAD", None, history.ref(MAIN))
    assert history.ref(b"refs/heads/x") is None


# -- crash leftovers ---------------------------------------------------------------------


def test_only_recovery_sweeps_what_a_crash_left_behind(history):
    stale = history.path / "quarantine" / "q-crashed"
    (stale / "pack").mkdir(parents=True)
    (stale / "tmp_pack_abc").write_bytes(b"PACK")
    (stale / "lock").write_bytes(b"")
    unlocked = history.path / "quarantine" / "q-died-before-locking"
    unlocked.mkdir()
    orphan = Path(history.object_store.pack_dir) / ("pack-" + "f" * 40 + ".pack")
    orphan.write_bytes(b"PACK")
    # Opening is reading: another process opening the repository deletes nothing (the
    # pack without an index may be a live writer's pack in the making).
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                    "from giter_agent.history.store import History; "
                    "History(Path(sys.argv[1])).close()", str(history.path)], check=True)
    History(history.path).close()
    assert orphan.exists() and stale.exists() and unlocked.exists()
    # The holder of the state lock recovers (giter_agent.state.recovery).
    sweep_repository(history.path)
    assert quarantine_entries(history) == []
    assert not orphan.exists()


def test_open_leaves_a_live_quarantine_alone(accepted, history, tmp_path):
    with history.quarantine(accepted.bundle(tmp_path / "n.bundle", "main~1..main")) as q:
        sweep_repository(history.path)  # a live quarantine is locked: left alone
        q.promote()  # its pack is still there to promote
        tip = q.refs[MAIN]
    assert tip in history.object_store
    assert quarantine_entries(history) == []


def test_refuses_a_directory_that_is_not_a_repository(tmp_path):
    (tmp_path / "notrepo").mkdir()
    (tmp_path / "notrepo" / "file").write_text("x")
    with pytest.raises(HistoryError) as err:
        History(tmp_path / "notrepo")
    assert err.value.reason == "NotARepository"


def test_pack_loose_packs_only_past_the_threshold(tmp_path):
    from dulwich.objects import Blob

    history = History(tmp_path / "repo.git")
    blobs = [Blob.from_string(f"status {i}\n".encode()) for i in range(5)]
    for blob in blobs:
        history.object_store.add_object(blob)
    assert history.pack_loose(threshold=6) == 0
    assert history.object_store.count_loose_objects() == 5
    assert history.pack_loose(threshold=5) == 5
    assert history.object_store.count_loose_objects() == 0
    assert all(history.object_store[b.id].data == b.data for b in blobs)
    run("git", "-C", tmp_path / "repo.git", "fsck", "--strict")
