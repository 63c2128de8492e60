"""The status-commit ownership rule: a device's status commit changes only its own status.

The publisher's import gate (``trust.gate`` with ``StatusPolicy``, run by ``giter-bundle
import``) and ``giter-bundle inspect`` call ``verify_status_commit`` on every status
commit a device's bundle brings: signed by the device's enrolled key, observing a spec
commit on the branch, and differing from that spec commit's tree only in the
``status`` of the device's own resources (and its summary). Status documents are read
by the device's own YAML policy (``core.yaml_policy``), so an honest status is never
taken for a forgery.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any

from giter_agent.core.errors import BundleError, Reason, ResourceError, TrustError
from giter_agent.core.layout import summary_path
from giter_agent.core.yaml_policy import load_yaml
from giter_agent.trust import signed_commit, sshsig
from giter_agent.trust.checked_objects import (
    BLOB,
    COMMIT,
    DIR_MODE,
    FILE_MODES,
    TREE,
    read,
    refuse,
    tree_entries,
)
from giter_agent.trust.gate import Admitted, NothingNew
from giter_agent.trust.sshsig import PublicKey

if TYPE_CHECKING:
    from giter_agent.history.store import Quarantine

_YAML_SUFFIXES = (b".yaml", b".yml")
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _diff(store, old: bytes | None, new: bytes | None, prefix: bytes
          ) -> Iterator[tuple[bytes, tuple[int, bytes] | None, tuple[int, bytes] | None]]:
    """(path, old entry, new entry) for every blob-level difference between two trees."""
    def entries(tree: bytes | None) -> dict[bytes, tuple[int, bytes]]:
        if tree is None:
            return {}
        try:
            return {n: (m, o) for n, m, o in tree_entries(read(store, tree, TREE))}
        except ValueError:
            raise refuse("CorruptObject", f"tree {tree.decode()} is malformed") from None

    before, after = entries(old), entries(new)
    for name in sorted(before.keys() | after.keys()):
        a, b = before.get(name), after.get(name)
        if a == b:
            continue
        path = prefix + name
        a_tree = a[1] if a is not None and a[0] == DIR_MODE else None
        b_tree = b[1] if b is not None and b[0] == DIR_MODE else None
        a_dir, b_dir = a_tree is not None, b_tree is not None
        if a_dir or b_dir:
            yield from _diff(store, a_tree, b_tree, path + b"/")
            # A file replaced by a directory (or back) is a change of its own.
            if (a is not None and not a_dir) or (b is not None and not b_dir):
                yield path, None if a_dir else a, None if b_dir else b
        else:
            yield path, a, b


def _without_status(store, blob: bytes, path: str, commit: bytes) -> Any:
    """The document minus its top-level ``status``, read as the device reads it.

    The one YAML policy (``core.yaml_policy``): ``state: on`` is the string the device
    applied, not YAML 1.1's boolean, so an honest status is never taken for a forgery.
    """
    data = read(store, blob, BLOB)
    try:
        doc = load_yaml(data)
    except ResourceError as exc:
        raise refuse("OwnershipViolation", f"{path}: {exc}", commit) from None
    return {k: v for k, v in doc.items() if k != "status"} if isinstance(doc, dict) else doc


def _summary_path(device_id: str) -> bytes:
    """Where a device writes its own DeviceStatus summary (``core.layout``)."""
    return summary_path(device_id).encode()


def _check_summary(store, blob: bytes, device_id: str, path: str, commit: bytes) -> None:
    """A device summary holds one DeviceStatus document naming this device, plus status."""
    doc = _without_status(store, blob, path, commit)
    if (not isinstance(doc, dict) or set(doc) - {"apiVersion", "kind", "metadata"}
            or doc.get("kind") != "DeviceStatus" or doc.get("metadata") != {"name": device_id}):
        raise refuse("OwnershipViolation", f"{path} must be one DeviceStatus document "
                      f"for {device_id} holding only status", commit)


def _status_path(path: bytes, device_id: str, groups: Collection[str] | None) -> bool:
    parts = path.split(b"/")
    if len(parts) < 2 + (parts[0] != b"fleet") or not path.endswith(_YAML_SUFFIXES):
        return False
    if parts[0] == b"devices":
        return parts[1] == device_id.encode()
    if parts[0] == b"groups":
        return groups is None or parts[1].decode(errors="replace") in groups
    return parts[0] == b"fleet"  # fleet/ resources are chosen by selector (spec.targeting)


def verify_status_commit(object_store, status_commit: bytes, device_id: str,
                         device_key: PublicKey,
                         spec_tip_known: Callable[[bytes], bool] | None = None, *,
                         device_groups: Collection[str] | None = None) -> None:
    """Accept a device's status commit only if it is that device's, changing only status.

    The commit must be signed (namespace git) by ``device_key``; its last parent is the
    spec commit it observed (first parent: the previous status commit, if any). Its tree
    may differ from that spec commit's tree only in the top-level ``status`` of YAML
    documents under ``devices/<device_id>/``, ``fleet/`` and ``groups/<g>/`` (``g``
    limited to ``device_groups`` when given), plus the device's own summary file
    ``.giter/status/<device_id>.yaml``, which it may create. Anything else is
    TrustError(OwnershipViolation).
    """
    name = status_commit.decode()
    if not _DEVICE_ID.fullmatch(device_id):
        raise ValueError(f"device id {device_id!r} is not a plain name")
    parts = signed_commit.parse(read(object_store, status_commit, COMMIT), name)
    if parts.signature is None:
        raise refuse("UnsignedCommit", f"status commit {name} is not signed", status_commit)
    try:
        sshsig.verify(parts.signature, parts.payload, [device_key])
    except TrustError as exc:
        raise refuse(exc.reason, f"status commit {name} from {device_id}: {exc}",
                      status_commit) from None
    if len(parts.parents) not in (1, 2):
        raise refuse("OwnershipViolation", f"status commit {name} must have the observed "
                      "spec commit as its last parent", status_commit)
    spec = parts.parents[-1]
    if spec_tip_known is not None and not spec_tip_known(spec):
        raise refuse("UnknownSpecCommit", f"status commit {name} claims to observe "
                      f"{spec.decode()}, which is not on the spec branch", status_commit)
    spec_parts = signed_commit.parse(read(object_store, spec, COMMIT), spec.decode())
    for path, old, new in _diff(object_store, spec_parts.tree, parts.tree, b""):
        shown = path.decode(errors="replace")
        if (new is not None and path == _summary_path(device_id)
                and new[0] in FILE_MODES and (old is None or old[0] == new[0])):
            _check_summary(object_store, new[1], device_id, shown, status_commit)
            if old is None:
                continue  # a new summary: its shape was all there was to check
        elif (old is None or new is None or old[0] != new[0] or old[0] not in FILE_MODES
                or not _status_path(path, device_id, device_groups)):
            raise refuse("OwnershipViolation", f"status commit {name} from {device_id} "
                          f"changes {shown}, which is not its status", status_commit)
        assert old is not None and new is not None  # both files: checked just above
        if (_without_status(object_store, old[1], shown, status_commit)
                != _without_status(object_store, new[1], shown, status_commit)):
            raise refuse("OwnershipViolation", f"status commit {name} from {device_id} "
                          f"changes {shown} beyond its status field", status_commit)


class StatusPolicy:
    """The publisher's import-gate policy (``trust.gate``): the status-commit ownership rule.

    The bundle must carry exactly ``ref`` (``refs/heads/status/<id>``). A tip the hub
    already has, or one its status history already passed, is "up to date" (the same
    stick is often imported twice). Otherwise the tip must continue the hub's status
    chain along first parents (``history.walk.status_chain``), or, for a device never
    imported or re-enrolled since (``restarted(old)``: its last report is signed by
    another key), begin a new one with a first report; every commit of the chain must
    pass ``verify_status_commit`` (the tip first, so a stranger's bundle is refused for
    its key, not its shape). More than ``max_commits`` is ``TooManyCommits``.
    """

    def __init__(self, device_id: str, device_key: PublicKey, *,
                 spec_tip_known: Callable[[bytes], bool] | None,
                 device_groups: Collection[str] | None, max_commits: int,
                 restarted: Callable[[Any, bytes], bool]) -> None:
        self.device_id = device_id
        self.device_key = device_key
        self.spec_tip_known = spec_tip_known
        self.device_groups = device_groups
        self.max_commits = max_commits
        self.restarted = restarted

    def tip(self, q: Quarantine, ref: bytes, old: bytes | None) -> bytes:
        if set(q.refs) != {ref}:
            names = ", ".join(sorted(r.decode(errors="replace") for r in q.refs))
            raise BundleError(f"expected only {ref.decode()}, found {names}",
                              reason=Reason.UnexpectedRefs)
        tip = q.refs[ref]
        # Only a commit the hub holds can be in its history: the walk is for re-imports.
        if tip == old:
            raise self.nothing_new(tip)
        if old is not None and q.held(tip) and q.is_ancestor(tip, old):
            raise NothingNew("UpToDate", f"the hub already has status {tip.decode()[:12]} "
                             f"(and newer: {old.decode()[:12]})", tip)
        return tip

    def nothing_new(self, tip: bytes) -> NothingNew:
        return NothingNew("UpToDate", f"the hub already has status {tip.decode()[:12]}", tip)

    def verify(self, q: Quarantine, ref: bytes, old: bytes | None, tip: bytes) -> Admitted:
        from giter_agent.history.walk import status_chain

        store = q.object_store

        def verify(sha: bytes) -> None:
            verify_status_commit(store, sha, self.device_id, self.device_key,
                                 self.spec_tip_known, device_groups=self.device_groups)

        verify(tip)  # first, so a stranger's bundle is refused for its key, not its shape
        restart = old is not None and self.restarted(store, old)
        chain, first_report = status_chain(store, tip, lambda sha: sha == old,
                                           limit=self.max_commits)
        if first_report and old is not None and not restart:
            raise refuse("Fork", f"status/{self.device_id} in the bundle does not continue "
                         f"the hub's status/{self.device_id} ({old.decode()[:12]})")
        for sha in chain[:-1]:
            verify(sha)
        return Admitted(len(chain))
