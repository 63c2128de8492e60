"""Walks over commit history: the one walker the device and the publisher share.

- ``parents``: a commit's parent ids from its stored bytes (lenient, for walking; the
  strict parser is ``history.commit_layout``).
- ``ancestors``: a commit and everything it reaches (the publisher's view of the whole
  spec branch: ``giter-bundle status``, ``create``'s checks).
- ``is_ancestor``: whether one commit reaches another (stops as soon as it does).
- ``status_chain``: a device's status commits from a tip down along first parents, to a
  commit already held or the device's first report, bounded.
- ``HeldAt``: what a device that accepted a commit holds, asked about the commits a new
  tip brings, reading only those (``giter-bundle create`` and ``inspect``).

The walk over a spec update's new commits, which stops at the accepted tip and at
anything already held, is the trust rule's own (``trust.spec_rule.new_commits``); it
uses ``parents`` from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from giter_agent.core.errors import HistoryError, Reason

_COMMIT = 1


def parents(raw: bytes) -> list[bytes]:
    """Parent ids from a commit's stored bytes: lenient, for walking only."""
    end = raw.find(b"\n\n")
    head = raw if end < 0 else raw[:end]
    return [line[7:] for line in head.split(b"\n")
            if line.startswith(b"parent ") and len(line) == 47]


def commit_bytes(store: Any, sha: bytes) -> bytes:
    """A commit's stored bytes; HistoryError when it is missing or not a commit."""
    try:
        type_num, raw = store.get_raw(sha)
    except KeyError:
        raise HistoryError(f"commit {sha.decode(errors='replace')} is not in the repository",
                           reason=Reason.MissingObject) from None
    if type_num != _COMMIT:
        raise HistoryError(f"{sha.decode(errors='replace')} is not a commit",
                           reason=Reason.CorruptObject)
    return raw


def ancestors(store: Any, tip: bytes) -> set[bytes]:
    """``tip`` and every commit reachable from it: a whole-history walk."""
    seen = {tip}
    todo = [tip]
    while todo:
        for parent in parents(commit_bytes(store, todo.pop())):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def is_ancestor(store: Any, ancestor: bytes, descendant: bytes) -> bool:
    """True when ``ancestor`` is ``descendant`` or reachable through its parents."""
    if ancestor == descendant:
        return True
    seen = {descendant}
    todo = [descendant]
    while todo:
        for parent in parents(commit_bytes(store, todo.pop())):
            if parent == ancestor:
                return True
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return False


def status_chain(store: Any, tip: bytes, stop: Callable[[bytes], bool], *,
                 limit: int | None = None) -> tuple[list[bytes], bool]:
    """(status commits from ``tip`` down along first parents, oldest first; whether the
    chain begins with a first report).

    A status commit's parents are the previous status commit and the spec commit it
    observed; a device's first report has only the spec commit. The walk ends before
    the first commit ``stop`` accepts (one already held), or at a commit without
    exactly two parents, which is included and makes the flag True (the caller judges
    whether a chain may begin there). Reads only the chain's commits; more than
    ``limit`` of them is HistoryError(TooManyCommits).
    """
    chain: list[bytes] = []
    sha = tip
    while not stop(sha):
        if limit is not None and len(chain) >= limit:
            raise HistoryError(f"more than {limit} status commits",
                               reason=Reason.TooManyCommits)
        chain.append(sha)
        found = parents(commit_bytes(store, sha))
        if len(found) != 2:
            chain.reverse()
            return chain, True
        sha = found[0]
    chain.reverse()
    return chain, False


class HeldAt:
    """Whether a commit is ``start`` or one of its ancestors, for a walk down from ``tip``:
    what a device that accepted ``start`` holds, asked about the commits ``tip`` brings.

    The publisher holds every commit, so "held" cannot mean "in the store" as it does on
    a device. Answering it from ``ancestors(start)`` reads the whole history. Instead the
    commits reachable from ``tip`` without passing through ``start`` are walked first
    (``limit`` at most). When that walk meets no commit without parents, none of them is
    an ancestor of ``start`` (an ancestor's own ancestors would all be walked, down to the
    first commit), so the answer for each of them is no, and the walk read only the new
    commits. Otherwise (a fork, a rollback, a new root, more than ``limit``) the answer
    comes from the whole ``ancestors(start)``: exact, and the cost of a refusal.
    """

    def __init__(self, store: Any, start: bytes, tip: bytes, limit: int) -> None:
        self._store = store
        self._start = start
        self._all: set[bytes] | None = None
        self._new: set[bytes] = set()
        todo = [tip] if tip != start else []
        while todo:
            sha = todo.pop()
            if sha in self._new:
                continue
            self._new.add(sha)
            found = parents(commit_bytes(store, sha))
            if not found or len(self._new) > limit:
                self._new = set()
                self._all = ancestors(store, start)
                return
            todo.extend(p for p in found if p != start and p not in self._new)

    def __call__(self, sha: bytes) -> bool:
        if sha == self._start:
            return True
        if self._all is None:
            if sha in self._new:
                return False
            self._all = ancestors(self._store, self._start)  # asked beyond the walk
        return sha in self._all
