"""What a destination lacks of a first-parent chain, found without walking old history.

The device's status history is a first-parent chain: each status commit's first parent
is the previous status commit, its last the spec commit it observed, which the hub has
(it is on the spec branch the device took it from). To send the hub what it lacks, walk
first parents from the tip back to a commit the hub holds (its status ref, or what the
stick says it holds): the cost is the new commits, not the years of reports behind
them. dulwich's ``generate_pack_data`` instead collects every ancestor of every commit
the destination has first, so each export read the whole history.

The objects to send are found by comparing each new commit's tree with its parents'
trees path by path: a subtree or blob equal to the parent's at the same path is one the
destination has (a boundary parent is complete there; a new parent's is sent too), so
only changed paths are read. An object sent that the destination happened to have is
harmless; one left out that it lacks cannot happen, by induction over the chain.

Called by ``history.store`` (status bundles and pushes).
"""

from __future__ import annotations

import stat
from collections.abc import Collection, Iterator

from dulwich.objects import Commit, Tree
from dulwich.pack import UnpackedObject, full_unpacked_object

from giter_agent.core.errors import HistoryError
from giter_agent.history.objects import oid

_GITLINK_MODE = 0o160000


class Chain:
    """The new commits of a first-parent walk (newest first) and what they build on."""

    __slots__ = ("boundary", "commits", "commits_read", "reached")

    def __init__(self) -> None:
        self.commits: list[bytes] = []
        self.boundary: list[bytes] = []  # parents the destination has
        self.reached: bytes | None = None  # the stop commit the walk ended at; None: a root
        self.commits_read = 0  # commits parsed by the walk (tests count them)


def first_parent_chain(store: object, tip: bytes, stop: Collection[bytes], *,
                       status_shape: bool = True) -> Chain:
    """Walk first parents from ``tip`` until a commit in ``stop``, or the chain's start.

    A status commit's last parent is the spec commit it observed, which the destination
    has: every parent but the first is a boundary commit, and (``status_shape``) a commit
    with a single parent (the first status commit, which observed a spec and had no
    report before it) starts the chain, its parent a boundary too. So the walk never goes
    down the spec history, whichever spec the first report observed. Without
    ``status_shape`` the walk follows single parents too (a spec branch).
    """
    chain = Chain()
    boundary: dict[bytes, None] = {}
    sha: bytes | None = tip
    while sha is not None:
        if sha in stop:
            chain.reached = sha
            boundary[sha] = None
            break
        commit = _commit(store, sha)
        chain.commits_read += 1
        chain.commits.append(sha)
        parents = list(commit.parents)
        if status_shape and len(parents) == 1:
            boundary[parents[0]] = None  # the observed spec: the chain starts here
            break
        for other in parents[1:]:
            boundary[other] = None
        sha = parents[0] if parents else None
    new = set(chain.commits)
    chain.boundary = [b for b in boundary if b not in new]
    return chain


def reaches(store: object, tip: bytes, ancestor: bytes, *, status_shape: bool = True) -> bool:
    """Whether ``ancestor`` is ``tip``, on its first-parent chain, or (``status_shape``)
    the spec the chain starts from. Reads the chain back to it, or all of it."""
    chain = first_parent_chain(store, tip, {ancestor}, status_shape=status_shape)
    return chain.reached == ancestor or ancestor in chain.boundary


def new_objects(store: object, chain: Chain) -> list[bytes]:
    """The ids of the chain's commits and of what their trees hold that differs from
    their parents' trees, oldest commit first."""
    out: dict[bytes, None] = {}
    for sha in reversed(chain.commits):
        commit = _commit(store, sha)
        out[sha] = None
        bases = [_commit(store, p).tree for p in commit.parents]
        _tree_diff(store, commit.tree, bases, out)
    return list(out)


def records(store: object, ids: list[bytes]) -> Iterator[UnpackedObject]:
    """Pack records for ``ids``, read one at a time as the pack is written."""
    for sha in ids:
        yield full_unpacked_object(store[oid(sha)])  # type: ignore[index]


def _tree_diff(store: object, tree: bytes, bases: list[bytes], out: dict[bytes, None]
               ) -> None:
    todo = [(tree, bases)]
    while todo:
        sha, base_ids = todo.pop()
        if sha in out or sha in base_ids:
            continue
        out[sha] = None
        entries = _tree(store, sha)
        base_entries = [_tree(store, b) for b in base_ids]
        for name, mode, entry in entries.iteritems():
            if mode == _GITLINK_MODE:
                continue
            same = [b[name] for b in base_entries if name in b]
            if any(s[1] == entry for s in same):
                continue  # the parent has it at this path: so does the destination
            if stat.S_ISDIR(mode):
                todo.append((entry, [s[1] for s in same if stat.S_ISDIR(s[0])]))
            else:
                out[entry] = None


def _commit(store: object, sha: bytes) -> Commit:
    try:
        obj = store[oid(sha)]  # type: ignore[index]
    except KeyError:
        raise HistoryError(f"commit {sha.decode(errors='replace')} is missing from the "
                           "history", reason="UnknownCommit") from None
    if not isinstance(obj, Commit):
        raise HistoryError(f"{sha.decode(errors='replace')} is not a commit",
                           reason="UnknownCommit")
    return obj


def _tree(store: object, sha: bytes) -> Tree:
    obj = store[oid(sha)]  # type: ignore[index]
    if not isinstance(obj, Tree):
        raise HistoryError(f"{sha.decode(errors='replace')} is not a tree",
                           reason="CorruptObject")
    return obj
