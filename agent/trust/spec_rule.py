"""The spec-commit rule: whether a new spec tip may be taken in.

Every new commit signed by a key the trust in force lists (docs/trust.md). The device's
import gate (``trust.gate`` with ``SpecPolicy``) calls ``verify_update`` after a bundle
or fetch lands in quarantine and before any ref moves; ``giter-bundle create`` and
``inspect`` apply the same rule (``UpdateCheck`` one commit at a time).

The rule, in one sentence: a device takes a new commit only if every parent of it is
the accepted tip or another new commit, and its signer is trusted by the trust file of
every one of those parents (a root key: by any). In the order they are checked:

1. Shape (``new_commits``): walking down from ``new``, every parent is the accepted tip
   or a commit the device did not hold before (else Rollback or Fork); no new commit
   without parents, except the first commit of a first sync (NewRoot), which must be
   the pinned genesis when one is pinned (WrongGenesis). The walk reads new commits only.
2. Signatures (``verify_commit``), parents first: signed by a key that the
   ``.giter/trust/allowed_signers`` of each parent's tree trusts (the pinned set when a
   tree has none, and for the first commit), or by a root key (``trust.trust_files``).
3. The new tip names its branch in a ``Giter-Branch:`` trailer: a different name is
   refused, and no name is refused when a parent's ``.giter/trust/policy.toml`` says
   ``bind_branch = true``.
4. The ``Expires:`` trailer of the new tip is parsed and returned; the caller compares it
   with its own clock. Committer dates are never read.

Each commit is read and hashed once: the walk's reads are kept (``CheckedReader``) for
the signatures that follow. The signature arithmetic of a long update runs on a few
threads (``trust.signature_pool``), with the same outcome as one commit at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from giter_agent.core.budget import Budget
from giter_agent.core.errors import TrustError
from giter_agent.core.layout import BRANCH_TRAILER
from giter_agent.core.named_tuple import NamedTuple
from giter_agent.history.walk import parents as parents_in
from giter_agent.trust import signed_commit, sshsig
from giter_agent.trust.checked_objects import CheckedReader, refuse
from giter_agent.trust.signature_pool import check_in_order, default_workers
from giter_agent.trust.spec_policy import SpecPolicy  # the gate policy, light to import
from giter_agent.trust.sshsig import PublicKey
from giter_agent.trust.trailers import branch_of, expires_of
from giter_agent.trust.trust_files import POLICY_FILE, TrustFiles, TrustRoot

__all__ = ["SpecPolicy", "TrustRoot", "UpdateCheck", "Verified", "new_commits", "verify_update"]


class Verified(NamedTuple):
    """The outcome of a successful ``verify_update``."""

    tip: bytes
    commits: tuple[bytes, ...]  # hex ids newly verified, oldest first
    signer_by_commit: dict[bytes, str]  # id -> fingerprint
    expires: datetime | None = None  # the new tip's Expires: trailer, in UTC


def new_commits(store: Any, accepted: bytes | None, new: bytes, *,
                held: Callable[[bytes], bool], genesis: bytes | None = None,
                max_commits: int = 100_000, reader: CheckedReader | None = None
                ) -> list[bytes]:
    """The commits ``new`` brings beyond ``accepted``, parents first, if their shape is one
    a device may take; TrustError otherwise. Reads commits only, never a signature.

    ``held(id)`` says whether the device held a commit before this import. The walk
    goes down from ``new`` and stops at ``accepted``; it refuses at once a parent the
    device held that is not ``accepted`` (``Fork``), so it reads only the new commits,
    however long the accepted history is. It also refuses a new commit without
    parents unless it is the first commit of a first sync (``NewRoot``), and on a first
    sync a history that does not start at the pinned ``genesis`` (``WrongGenesis``).
    """
    read = reader or CheckedReader(store)
    if accepted is not None and new != accepted and held(new):
        raise refuse("Rollback", f"{new.decode()} is already in this device's history and "
                      f"is not the accepted tip {accepted.decode()}: an older state",
                      new)
    order: list[bytes] = []
    roots: list[bytes] = []
    seen = {new}
    reached = False

    def parents_of(oid: bytes) -> Iterator[bytes]:
        found = parents_in(read.commit(oid))
        if not found:
            roots.append(oid)
        return iter(found)

    stack = [(new, parents_of(new))] if new != accepted else []
    while stack:
        oid, pending = stack[-1]
        parent = next(pending, None)
        if parent is None:
            stack.pop()
            order.append(oid)
        elif parent == accepted:
            reached = True
        elif parent not in seen:
            if accepted is not None and held(parent):
                raise refuse("Fork", f"{new.decode()} does not descend from the accepted "
                              f"tip {accepted.decode()} alone: commit {oid.decode()} has "
                              f"parent {parent.decode()}, an older commit", new)
            seen.add(parent)
            if len(seen) > max_commits:
                raise refuse("TooManyCommits", f"update brings more than {max_commits} "
                              "new commits", new)
            stack.append((parent, parents_of(parent)))
    if accepted is not None:
        if not reached:
            raise refuse("Fork", f"{new.decode()} does not descend from the accepted tip "
                          f"{accepted.decode()}", new)
        if roots:
            raise refuse("NewRoot", f"commit {roots[0].decode()} has no parent: after the "
                          "first commit, every commit builds on the accepted history",
                          roots[0])
    elif genesis is not None and roots != [genesis]:
        # First sync: the history must grow from the pinned first commit, so that an old
        # image's pinned keys cannot be replayed into some other repository they signed.
        raise refuse("WrongGenesis", f"history of {new.decode()} starts at "
                      f"{', '.join(r.decode() for r in roots)}, not at the pinned "
                      f"genesis commit {genesis.decode()}", new)
    elif len(roots) > 1:
        raise refuse("NewRoot", f"history of {new.decode()} has {len(roots)} commits "
                      f"without a parent ({', '.join(r.decode()[:12] for r in roots)}); "
                      "a history has one first commit", new)
    return order


def verify_commit(read: CheckedReader, oid: bytes, root: TrustRoot,
                  sets: TrustFiles) -> PublicKey:
    """One commit: signed by a root key, or by a key the trust file of EVERY parent trusts
    (the pinned set for a commit without parents). Parent order plays no part."""
    return prepare_commit(read, oid, root, sets).finish()


class PendingCommit:
    """A commit whose every check but the signature arithmetic passed (``prepare_commit``);
    ``finish()`` makes that one, then refuses a signer a parent does not trust."""

    __slots__ = ("_check", "_oid", "_untrusted")

    def __init__(self, oid: bytes, check: sshsig.PendingCheck,
                 untrusted: TrustError | None) -> None:
        self._oid = oid
        self._check = check
        self._untrusted = untrusted  # refused once the signature itself holds

    def finish(self) -> PublicKey:
        """The signer; TrustError as ``verify_commit`` raises it."""
        try:
            key = self._check.finish()
        except TrustError as exc:
            raise refuse(exc.reason, f"commit {self._oid.decode()}: {exc}",
                         self._oid) from None
        if self._untrusted is not None:
            raise self._untrusted
        return key


def prepare_commit(read: CheckedReader, oid: bytes, root: TrustRoot,
                   sets: TrustFiles) -> PendingCommit:
    """``verify_commit`` up to the signature arithmetic, which ``finish()`` makes.

    Every refusal that does not depend on the arithmetic is raised here, in the order
    ``verify_commit`` checks; a signer some parent does not trust is refused by
    ``finish()`` after the arithmetic, so that a forged signature is still called one.
    """
    name = oid.decode()
    parts = signed_commit.parse(read.commit(oid), name)
    sets.note_tree(oid, parts.tree)
    if parts.signature is None:
        raise refuse("UnsignedCommit", f"commit {name} is not signed", oid)
    parents = list(dict.fromkeys(parts.parents))
    in_force: list[tuple[bytes | None, tuple[PublicKey, ...]]] = []
    trust_file_error = None
    try:
        in_force = [(p, sets.of(p)) for p in parents] or [(None, root.signers)]
    except TrustError as exc:
        # A root key may still sign here: that is how a broken trust file gets repaired.
        trust_file_error = exc
    candidates = {k.blob: k for _, keys in in_force for k in keys}
    try:
        check = sshsig.prepare(parts.signature, parts.payload,
                               [*root.root_keys, *candidates.values()])
    except TrustError as exc:
        if trust_file_error is not None and exc.reason == "UnknownSigner":
            raise refuse(trust_file_error.reason,
                          f"commit {name}: parent's {trust_file_error}", oid) from None
        raise refuse(exc.reason, f"commit {name}: {exc}", oid) from None
    key = check.key
    untrusted = None
    if key not in root.root_keys:
        for parent, keys in in_force:
            if key not in keys:
                untrusted = refuse("UnknownSigner", f"commit {name}: signed by {key}, which "
                                   f"the trust file of its parent "
                                   f"{parent.decode() if parent else ''} does not trust "
                                   "(a commit answers to every parent)", oid)
                break
    return PendingCommit(oid, check, untrusted)


def _check_branch(read: CheckedReader, tip: bytes, branch: str, sets: TrustFiles) -> None:
    """The new tip names ``branch``; it must name it if a parent's policy binds branches."""
    parts = signed_commit.parse(read.commit(tip), tip.decode())
    required = [sets.binds_branch(p) for p in parts.parents]  # a broken policy refuses
    named = branch_of(parts.message, tip)
    if named is not None and named != branch:
        raise refuse("WrongBranch", f"commit {tip.decode()} was signed for branch "
                      f"{named!r}, not {branch!r}", tip)
    if named is None and any(required):
        raise refuse("BranchNotBound", f"commit {tip.decode()} has no {BRANCH_TRAILER}: "
                      f"{branch} trailer, which {b'/'.join(POLICY_FILE).decode()} requires",
                      tip)


def verify_update(object_store: Any, accepted: bytes | None, new: bytes, root: TrustRoot, *,
                  held: Callable[[bytes], bool] | None = None, branch: str | None = None,
                  max_commits: int = 100_000, budget: Budget | None = None,
                  workers: int | None = None) -> Verified:
    """Verify everything ``new`` brings beyond ``accepted``; raise TrustError on any doubt.

    Ids are 40-digit hex ``bytes``. ``held(id)``: whether the device held a commit
    before this import (required with ``accepted``; see ``new_commits``). ``branch``:
    the branch ``new`` is offered as, checked against its ``Giter-Branch:`` trailer
    (None: not checked, for tools that look at a commit outside any branch). Nothing
    is written: the caller moves its refs only after this returns. ``budget`` (the
    sync's time budget) is checked before each commit's signature is verified:
    BundleError(TimeBudgetExceeded) once it is spent. ``workers``: threads for the
    signature arithmetic (``trust.signature_pool``; None: one per core, at most four;
    1: none); the outcome, refusals included, is the same for any number.
    """
    if accepted is not None and held is None:
        raise ValueError("verify_update needs held= to judge an update to an accepted tip")
    if accepted is not None and new == accepted:
        return Verified(new, (), {}, _tip_expires(CheckedReader(object_store), new))
    read = CheckedReader(object_store)
    order = new_commits(object_store, accepted, new, held=held or (lambda _: False),
                        reader=read,
                        genesis=root.genesis, max_commits=max_commits)
    sets = TrustFiles(read, root)
    keys = check_in_order(order, lambda oid: prepare_commit(read, oid, root, sets).finish,
                          workers=default_workers() if workers is None else workers,
                          before_each=budget.check if budget is not None else None)
    signers: dict[bytes, str] = {}
    prints: dict[PublicKey, str] = {}  # a fingerprint is a hash: once per key, not commit
    for oid, key in zip(order, keys, strict=True):
        signers[oid] = prints.get(key) or prints.setdefault(key, key.fingerprint())
    if branch is not None:
        _check_branch(read, new, branch, sets)
    return Verified(new, tuple(order), signers, _tip_expires(read, new))


class UpdateCheck:
    """The rule of ``verify_update``, one commit at a time, for tools that show a verdict
    per commit (``giter-bundle inspect``) rather than one for a whole update.

    ``commits`` is what ``new_commits`` returns (its TrustError propagates from the
    constructor); ``verify(id)`` checks one of them by exactly the rule a device applies.
    """

    def __init__(self, object_store: Any, accepted: bytes | None, new: bytes, root: TrustRoot, *,
                 held: Callable[[bytes], bool], branch: str | None = None,
                 max_commits: int = 100_000) -> None:
        self._read = CheckedReader(object_store)
        self._root = root
        self._sets = TrustFiles(self._read, root)
        self.tip = new
        self.branch = branch
        self.commits = new_commits(object_store, accepted, new, held=held,
                                   genesis=root.genesis, max_commits=max_commits,
                                   reader=self._read)

    def verify(self, commit: bytes) -> PublicKey:
        key = verify_commit(self._read, commit, self._root, self._sets)
        if commit == self.tip:
            if self.branch is not None:
                _check_branch(self._read, commit, self.branch, self._sets)
            _tip_expires(self._read, commit)
        return key


def _tip_expires(read: CheckedReader, tip: bytes) -> datetime | None:
    parts = signed_commit.parse(read.commit(tip), tip.decode())
    return expires_of(parts.message, tip)
