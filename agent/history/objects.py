"""Typed reads of the object store: where a bytes id becomes dulwich's ``ObjectID``.

dulwich types object ids and ref names as ``NewType``s of ``bytes``; the project passes
plain ``bytes`` (hex ids as git prints them). These helpers are the one boundary: they
name the id's type for the checker and check the object's type at run time, so a tree
id where a commit was expected is a typed refusal, not an ``AttributeError``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from dulwich.objects import Blob, Commit, ObjectID, Tree
from dulwich.refs import Ref

from giter_agent.core.errors import HistoryError, Reason

_T = TypeVar("_T", Commit, Tree, Blob)


def oid(sha: bytes) -> ObjectID:
    """``sha`` (40 hex digits) as dulwich's object id type."""
    return ObjectID(sha)


def ref_name(name: bytes) -> Ref:
    """``name`` (``refs/heads/...``) as dulwich's ref name type."""
    return Ref(name)


def has_object(store: Any, sha: bytes) -> bool:
    """Whether ``store`` holds ``sha`` (loose, packed, or through an alternate)."""
    return ObjectID(sha) in store


def _read(store: Any, sha: bytes, cls: type[_T], reason: str) -> _T:
    obj = store[ObjectID(sha)]
    if not isinstance(obj, cls):
        raise HistoryError(f"{sha.decode(errors='replace')} is a {obj.type_name.decode()}, "
                           f"not a {cls.type_name.decode()}", reason=reason)
    return obj


def read_commit(store: Any, sha: bytes) -> Commit:
    """The commit ``sha``; ``HistoryError(NotACommit)`` if it is another type."""
    return _read(store, sha, Commit, Reason.NotACommit)


def read_tree(store: Any, sha: bytes) -> Tree:
    """The tree ``sha``; ``HistoryError(CorruptObject)`` if it is another type."""
    return _read(store, sha, Tree, Reason.CorruptObject)


def read_blob(store: Any, sha: bytes) -> Blob:
    """The blob ``sha``; ``HistoryError(CorruptObject)`` if it is another type."""
    return _read(store, sha, Blob, Reason.CorruptObject)
