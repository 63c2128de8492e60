"""The trust rule's signature arithmetic on a few threads (``trust.signature_pool``): the
same outcome as one commit at a time, refusals included (the first failure in walk
order, the same typed error), every signature checked, and every object of an update
read once. Counted and compared, never timed."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest
from dulwich.objects import Blob, Tree
from support.git import ops_commit, run

from giter_agent.core.errors import BundleError, TrustError
from giter_agent.history.store import History
from giter_agent.trust import checked_objects, signed_commit, sshsig
from giter_agent.trust.signature_pool import check_in_order
from giter_agent.trust.spec_rule import TrustRoot, verify_update

pytestmark = pytest.mark.unit


# -- the pool itself, on plain items ---------------------------------------------------


class Item:
    """A prepared item whose ``finish`` records the thread it ran on, or fails."""

    def __init__(self, n: int, fails: bool, log: list) -> None:
        self.n, self.fails, self.log = n, fails, log

    def finish(self) -> int:
        self.log.append((self.n, threading.current_thread()))
        if self.fails:
            raise TrustError(f"item {self.n} is bad", reason="BadSignature")
        return self.n * 10


def run_pool(count: int, *, finish_fails=(), prepare_fails=(), budget_at=None,
             workers: int = 3, window: int = 32):
    """(outcome, finish log); the outcome is the results or the exception raised."""
    log: list = []
    prepared: list[int] = []

    def prepare(n: int):
        if n in prepare_fails:
            raise TrustError(f"item {n} cannot be prepared", reason="MalformedCommit")
        prepared.append(n)
        return Item(n, n in finish_fails, log).finish

    def before_each() -> None:
        if len(prepared) == budget_at:
            raise BundleError("out of time", reason="TimeBudgetExceeded")

    try:
        outcome = check_in_order(range(count), prepare, workers=workers,
                                 before_each=before_each, window=window)
    except (TrustError, BundleError) as exc:
        outcome = exc
    return outcome, log


def test_every_item_is_finished_once_in_order_on_worker_threads():
    outcome, log = run_pool(200)
    assert outcome == [n * 10 for n in range(200)]
    assert sorted(n for n, _ in log) == list(range(200))
    assert {thread for _, thread in log} - {threading.main_thread()}  # threads did it


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("case, expected", [
    ({"finish_fails": {70, 100}}, "item 70 is bad"),  # two windows, several slices
    ({"finish_fails": {65}, "prepare_fails": {66}}, "item 65 is bad"),
    ({"finish_fails": {150}, "prepare_fails": {90}}, "item 90 cannot be prepared"),
    ({"prepare_fails": {130}}, "item 130 cannot be prepared"),
    ({"finish_fails": {99}, "budget_at": 120}, "item 99 is bad"),
    ({"budget_at": 120}, "out of time"),
])
def test_the_first_failure_in_order_is_raised(workers, case, expected):
    outcome, log = run_pool(200, workers=workers, **case)
    assert isinstance(outcome, Exception) and str(outcome) == expected
    first = min([*case.get("finish_fails", ()), *case.get("prepare_fails", ()),
                 case.get("budget_at") or 200])
    # Everything before the failure was checked, whichever thread checked it.
    assert set(range(first)) <= {n for n, _ in log}


# -- the trust rule on a real signed history ------------------------------------------


def signed_history(repo: Path, count: int, key, signers: bytes, *, forged=(), unsigned=(),
                   policy: bytes | None = None, tip_branch: str | None = None
                   ) -> list[bytes]:
    """``count`` commits, each changing one file beside the trust folder; ``forged``
    ones carry a signature over other bytes, ``unsigned`` ones none."""
    h = History(repo)
    store = h.object_store
    trust = Tree()
    for name, data in ((b"allowed_signers", signers), (b"policy.toml", policy)):
        if data is not None:
            blob = Blob.from_string(data)
            store.add_object(blob)
            trust.add(name, 0o100644, blob.id)
    store.add_object(trust)
    giter = Tree()
    giter.add(b"trust", 0o040000, trust.id)
    store.add_object(giter)
    parent, ids = None, []
    for i in range(count):
        blob = Blob.from_string(b"kind: App\nspec:\n  image: web:%d\n" % i)
        store.add_object(blob)
        tree = Tree()
        tree.add(b".giter", 0o040000, giter.id)
        tree.add(b"app.yaml", 0o100644, blob.id)
        store.add_object(tree)
        commit = ops_commit(tree.id, parent, i, b"roll web to %d\n" % i)
        if i == count - 1 and tip_branch:
            commit.message += b"\nGiter-Branch: %s\n" % tip_branch.encode()
        if i not in unsigned:
            signed_commit.sign_commit(commit, key)
        if i in forged:
            commit.message = b"roll web to %d, and something else\n" % i
        store.add_object(commit)
        parent = commit.id
        ids.append(commit.id)
    h.set_ref(b"refs/heads/main", None, parent)
    h.close()
    run("git", "--git-dir", repo, "repack", "-adq")
    return ids


@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    key = sshsig.generate_ed25519()
    line = f'ops namespaces="git" {sshsig.public_key_of(key).openssh()}\n'
    path = tmp_path_factory.mktemp("signer") / "signers"
    path.write_text(line)
    return key, line.encode(), TrustRoot.load(path)


def outcome_of(repo: Path, tip: bytes, root: TrustRoot, workers: int):
    with History(repo) as h:
        try:
            return verify_update(h.object_store, None, tip, root, workers=workers)
        except TrustError as exc:
            return type(exc), exc.reason, exc.commit, str(exc)


def test_threads_verify_a_history_as_one_thread_does(tmp_path, signer):
    key, line, root = signer
    ids = signed_history(tmp_path / "repo.git", 300, key, line)  # two windows
    serial = outcome_of(tmp_path / "repo.git", ids[-1], root, workers=1)
    assert serial.commits == tuple(ids)
    assert outcome_of(tmp_path / "repo.git", ids[-1], root, workers=3) == serial


@pytest.mark.parametrize("forged, unsigned, named", [
    ({150}, (), 150),          # one bad signature in the middle
    ({120, 260}, (), 120),     # two: the first in walk order is the one named
    ({200}, {100}, 100),       # an unsigned commit before a forged one
    ({100}, {200}, 100),       # a forged commit before an unsigned one
])
def test_a_bad_commit_is_refused_alike_with_and_without_threads(tmp_path, signer, forged,
                                                               unsigned, named):
    key, line, root = signer
    ids = signed_history(tmp_path / "repo.git", 300, key, line, forged=forged,
                         unsigned=unsigned)
    serial = outcome_of(tmp_path / "repo.git", ids[-1], root, workers=1)
    reason = "UnsignedCommit" if named in unsigned else "BadSignature"
    assert serial[:3] == (TrustError, reason, ids[named].decode())
    assert outcome_of(tmp_path / "repo.git", ids[-1], root, workers=3) == serial


def test_every_object_of_an_update_is_read_once(tmp_path, signer, monkeypatch):
    key, line, root = signer
    ids = signed_history(tmp_path / "repo.git", 80, key, line,
                         policy=b"bind_branch = true\n", tip_branch="main")
    reads: Counter[bytes] = Counter()
    read = checked_objects.CheckedReader._read

    def counted(self, oid: bytes, type_num: int) -> bytes:
        reads[oid] += 1
        return read(self, oid, type_num)

    monkeypatch.setattr(checked_objects.CheckedReader, "_read", counted)
    with History(tmp_path / "repo.git") as h:
        verified = verify_update(h.object_store, None, ids[-1], root, branch="main")
    assert verified.commits == tuple(ids)
    assert all(reads[oid] == 1 for oid in ids)  # each commit: read, inflated, hashed once
    assert max(reads.values()) == 1, [oid for oid, n in reads.items() if n > 1]
