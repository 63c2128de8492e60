"""Decide whether a new spec tip may be taken in: every new commit signed by a trusted key.

The sync path calls ``verify_update`` after a fetch lands objects and before any ref moves;
``tools/bundle`` calls ``verify_status_commit`` before it takes a device's status commit
into the publisher's repository. See docs/trust.md for the model this implements.

The rule, in one sentence: a device takes a new commit only if every parent of it is
the accepted tip or another new commit, and its signer is trusted by the trust file of
every one of those parents (a root key: by any). In the order they are checked:

1. Shape (``new_commits``): walking down from ``new``, every parent is the accepted tip
   or a commit the device did not hold before (else Rollback or Fork); no new commit
   without parents, except the first commit of a first sync (NewRoot), which must be
   the pinned genesis when one is pinned (WrongGenesis). The walk reads new commits only.
2. Signatures (``_verify_commit``), parents first: signed by a key that the
   ``.giter/trust/allowed_signers`` of each parent's tree trusts (the pinned set when a
   tree has none, and for the first commit), or by a root key.
3. The new tip names its branch in a ``Giter-Branch:`` trailer: a different name is
   refused, and no name is refused when a parent's ``.giter/trust/policy.toml`` says
   ``bind_branch = true``.
4. The ``Expires:`` trailer of the new tip is parsed and returned; the caller compares it
   with its own clock. Committer dates are never read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from giter_agent.core.budget import Budget
from giter_agent.core.errors import ResourceError, TrustError
from giter_agent.core.layout import (
    BRANCH_TRAILER,
    POLICY_FILE_PARTS,
    TRUST_FILE_PARTS,
    summary_path,
)
from giter_agent.core.yaml_policy import load_yaml
from giter_agent.trust import allowed_signers as signers_file
from giter_agent.trust import signed_commit, sshsig
from giter_agent.trust.sshsig import PublicKey

TRUST_FILE = TRUST_FILE_PARTS
POLICY_FILE = POLICY_FILE_PARTS

_COMMIT, _TREE, _BLOB = 1, 2, 3
_TYPE_NAMES = {_COMMIT: b"commit", _TREE: b"tree", _BLOB: b"blob"}
_DIR_MODE = 0o040000
_FILE_MODES = (0o100644, 0o100755)


@dataclass(frozen=True)
class TrustRoot:
    """What the device trusts before it has seen any repository content."""

    signers: tuple[PublicKey, ...]        # from the device's pinned allowed_signers file
    root_keys: tuple[PublicKey, ...] = ()  # offline recovery keys: trusted for any commit
    genesis: bytes | None = None  # the repository's first commit, pinned at install

    @classmethod
    def load(cls, allowed_signers: Path, root_keys: Path | None = None,
             genesis: str | None = None) -> TrustRoot:
        """Both files in allowed_signers format; only entries admitting namespace git count."""
        signers = signers_file.load(allowed_signers)
        if not signers:
            raise TrustError(f"{allowed_signers}: no key is trusted for namespace git",
                             reason="InvalidTrustFile")
        roots = signers_file.load(root_keys) if root_keys is not None else ()
        return cls(signers, roots, genesis.encode() if genesis else None)


@dataclass(frozen=True)
class Verified:
    """The outcome of a successful ``verify_update``."""

    tip: bytes
    commits: tuple[bytes, ...]  # hex ids newly verified, oldest first
    signer_by_commit: dict[bytes, str] = field(default_factory=dict)  # id -> fingerprint
    expires: datetime | None = None  # the new tip's Expires: trailer, in UTC


def _refuse(reason: str, message: str, commit: bytes | None = None) -> TrustError:
    return TrustError(message, reason=reason, commit=commit.decode() if commit else None)


def _read(store, oid: bytes, type_num: int) -> bytes:
    """An object's stored bytes, checked against its id: we never trust the store's word."""
    try:
        actual_type, data = store.get_raw(oid)
    except KeyError:
        raise _refuse("MissingObject", f"object {oid.decode()} is not in the repository",
                      oid if type_num == _COMMIT else None) from None
    if actual_type != type_num:
        raise _refuse("CorruptObject", f"object {oid.decode()} is not a "
                      f"{_TYPE_NAMES[type_num].decode()}", oid)
    header = _TYPE_NAMES[type_num] + b" %d\0" % len(data)
    if hashlib.sha1(header + data).hexdigest().encode() != oid:
        raise _refuse("CorruptObject", f"object {oid.decode()} does not hash to its id", oid)
    return data


def _parents(raw: bytes) -> list[bytes]:
    """Parent ids from a commit's header: lenient, for walking; verification parses strictly."""
    end = raw.find(b"\n\n")
    head = raw if end < 0 else raw[:end]
    return [line[7:] for line in head.split(b"\n")
            if line.startswith(b"parent ") and len(line) == 47]


def ancestors(store: Any, tip: bytes) -> set[bytes]:
    """``tip`` and every commit reachable from it: a whole-history walk.

    For tools that judge a bundle against a commit they name (the publisher's
    ``inspect`` and ``create``) and for tests; the device never calls it, since it
    knows what it holds from its object store (``Quarantine.held``).
    """
    seen = {tip}
    todo = [tip]
    while todo:
        for parent in _parents(_read(store, todo.pop(), _COMMIT)):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def new_commits(store: Any, accepted: bytes | None, new: bytes, *,
                held: Callable[[bytes], bool], genesis: bytes | None = None,
                max_commits: int = 100_000) -> list[bytes]:
    """The commits ``new`` brings beyond ``accepted``, parents first, if their shape is one
    a device may take; TrustError otherwise. Reads commits only, never a signature.

    ``held(id)`` says whether the device held a commit before this import. The walk
    goes down from ``new`` and stops at ``accepted``; it refuses at once a parent the
    device held that is not ``accepted`` (``Fork``), so it reads only the new commits,
    however long the accepted history is. It also refuses a new commit without
    parents unless it is the first commit of a first sync (``NewRoot``), and on a first
    sync a history that does not start at the pinned ``genesis`` (``WrongGenesis``).
    """
    if accepted is not None and new != accepted and held(new):
        raise _refuse("Rollback", f"{new.decode()} is already in this device's history and "
                      f"is not the accepted tip {accepted.decode()}: an older state",
                      new)
    order: list[bytes] = []
    roots: list[bytes] = []
    seen = {new}
    reached = False

    def parents_of(oid: bytes) -> Iterator[bytes]:
        parents = _parents(_read(store, oid, _COMMIT))
        if not parents:
            roots.append(oid)
        return iter(parents)

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
                raise _refuse("Fork", f"{new.decode()} does not descend from the accepted "
                              f"tip {accepted.decode()} alone: commit {oid.decode()} has "
                              f"parent {parent.decode()}, an older commit", new)
            seen.add(parent)
            if len(seen) > max_commits:
                raise _refuse("TooManyCommits", f"update brings more than {max_commits} "
                              "new commits", new)
            stack.append((parent, parents_of(parent)))
    if accepted is not None:
        if not reached:
            raise _refuse("Fork", f"{new.decode()} does not descend from the accepted tip "
                          f"{accepted.decode()}", new)
        if roots:
            raise _refuse("NewRoot", f"commit {roots[0].decode()} has no parent: after the "
                          "first commit, every commit builds on the accepted history",
                          roots[0])
    elif genesis is not None and roots != [genesis]:
        # First sync: the history must grow from the pinned first commit, so that an old
        # image's pinned keys cannot be replayed into some other repository they signed.
        raise _refuse("WrongGenesis", f"history of {new.decode()} starts at "
                      f"{', '.join(r.decode() for r in roots)}, not at the pinned "
                      f"genesis commit {genesis.decode()}", new)
    elif len(roots) > 1:
        raise _refuse("NewRoot", f"history of {new.decode()} has {len(roots)} commits "
                      f"without a parent ({', '.join(r.decode()[:12] for r in roots)}); "
                      "a history has one first commit", new)
    return order


def _tree_entries(raw: bytes) -> Iterator[tuple[bytes, int, bytes]]:
    """(name, mode, hex id) for each entry of a tree object's stored bytes."""
    pos = 0
    while pos < len(raw):
        space = raw.index(b" ", pos)
        nul = raw.index(b"\0", space)
        if nul + 21 > len(raw):
            raise ValueError("truncated tree entry")
        yield raw[space + 1:nul], int(raw[pos:space], 8), raw[nul + 1:nul + 21].hex().encode()
        pos = nul + 21


def _tree_entry(store, tree: bytes, name: bytes) -> tuple[int, bytes] | None:
    try:
        for entry_name, mode, oid in _tree_entries(_read(store, tree, _TREE)):
            if entry_name == name:
                return mode, oid
    except ValueError:
        raise _refuse("CorruptObject", f"tree {tree.decode()} is malformed") from None
    return None


class _SignerSets:
    """What each commit's tree says about its children: the keys it trusts, and whether
    a tip built on it must name its branch.

    Consecutive commits mostly share their ``.giter`` subtree and trust file, so lookups
    are memoised by tree id and the parsed files by blob id.
    """

    def __init__(self, store: Any, root: TrustRoot) -> None:
        self._store = store
        self._root = root
        self._trees: dict[bytes, bytes] = {}  # commit -> tree, from commits already parsed
        self._found: dict[tuple[bytes, tuple[bytes, ...]], bytes | None] = {}
        self._by_blob: dict[bytes, tuple[PublicKey, ...]] = {}
        self._policies: dict[bytes, bool] = {}

    def note_tree(self, commit: bytes, tree: bytes) -> None:
        self._trees[commit] = tree

    def of(self, commit: bytes) -> tuple[PublicKey, ...]:
        """The keys ``commit``'s tree trusts (the pinned set when it has no trust file)."""
        blob = self._blob(commit, TRUST_FILE)
        if blob is None:
            return self._root.signers
        if blob not in self._by_blob:
            source = f"{b'/'.join(TRUST_FILE).decode()}@{commit.decode()[:12]}"
            data = _read(self._store, blob, _BLOB)
            self._by_blob[blob] = signers_file.keys_for(signers_file.parse(data, source))
        return self._by_blob[blob]

    def binds_branch(self, commit: bytes) -> bool:
        """Whether ``commit``'s tree asks every tip built on it to name its branch."""
        blob = self._blob(commit, POLICY_FILE)
        if blob is None:
            return False
        if blob not in self._policies:
            where = f"{b'/'.join(POLICY_FILE).decode()}@{commit.decode()[:12]}"
            self._policies[blob] = parse_policy(_read(self._store, blob, _BLOB), where)
        return self._policies[blob]

    def _blob(self, commit: bytes, path: tuple[bytes, ...]) -> bytes | None:
        try:
            return self._find(self._tree_of(commit), path)
        except ValueError as exc:
            raise _refuse("InvalidTrustFile", f"{b'/'.join(path).decode()} in commit "
                          f"{commit.decode()}: {exc}", commit) from None

    def _tree_of(self, commit: bytes) -> bytes:
        if commit not in self._trees:
            raw = _read(self._store, commit, _COMMIT)
            if not raw.startswith(b"tree ") or raw[45:46] != b"\n":
                raise _refuse("MalformedCommit", f"commit {commit.decode()} has no tree", commit)
            self._trees[commit] = raw[5:45]
        return self._trees[commit]

    def _find(self, tree: bytes, path: tuple[bytes, ...]) -> bytes | None:
        """The blob id of the regular file at ``path`` below ``tree``, or None."""
        key = (tree, path)
        if key not in self._found:
            entry = _tree_entry(self._store, tree, path[0])
            last = len(path) == 1
            if entry is None:
                found = None
            elif last and entry[0] in _FILE_MODES:
                found = entry[1]
            elif not last and entry[0] == _DIR_MODE:
                found = self._find(entry[1], path[1:])
            else:  # a symlink or submodule where the trust file or its folders belong
                raise ValueError(f"{path[0].decode(errors='replace')} has mode {entry[0]:o}")
            self._found[key] = found
        return self._found[key]


def parse_policy(data: bytes, source: str) -> bool:
    """``.giter/trust/policy.toml``: whether tips must name their branch (``bind_branch``).

    Strict: an unknown key or a value of the wrong type refuses the whole file, so a typo
    can never switch a protection off without anyone noticing.
    """
    import tomllib

    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _refuse("InvalidTrustFile", f"{source}: not valid TOML ({exc})") from None
    unknown = sorted(set(doc) - {"bind_branch"})
    if unknown:
        raise _refuse("InvalidTrustFile", f"{source}: unknown setting {unknown[0]!r}")
    bind = doc.get("bind_branch", False)
    if not isinstance(bind, bool):
        raise _refuse("InvalidTrustFile", f"{source}: bind_branch must be true or false")
    return bind


def _verify_commit(store: Any, oid: bytes, root: TrustRoot, sets: _SignerSets) -> PublicKey:
    """One commit: signed by a root key, or by a key the trust file of EVERY parent trusts
    (the pinned set for a commit without parents). Parent order plays no part."""
    name = oid.decode()
    parts = signed_commit.parse(_read(store, oid, _COMMIT), name)
    sets.note_tree(oid, parts.tree)
    if parts.signature is None:
        raise _refuse("UnsignedCommit", f"commit {name} is not signed", oid)
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
        key = sshsig.verify(parts.signature, parts.payload,
                            [*root.root_keys, *candidates.values()])
    except TrustError as exc:
        if trust_file_error is not None and exc.reason == "UnknownSigner":
            raise _refuse(trust_file_error.reason,
                          f"commit {name}: parent's {trust_file_error}", oid) from None
        raise _refuse(exc.reason, f"commit {name}: {exc}", oid) from None
    if key in root.root_keys:
        return key
    for parent, keys in in_force:
        if key not in keys:
            raise _refuse("UnknownSigner", f"commit {name}: signed by {key}, which the "
                          f"trust file of its parent {parent.decode() if parent else ''} "
                          "does not trust (a commit answers to every parent)", oid)
    return key


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))")
_EXPIRES = re.compile(r"expires[ \t]*:(.*)", re.IGNORECASE)
_BRANCH = re.compile(re.escape(BRANCH_TRAILER) + r"[ \t]*:(.*)", re.IGNORECASE)


def parse_rfc3339(value: str) -> datetime:
    """An RFC 3339 date-time with an explicit offset, as an aware UTC datetime."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not an RFC 3339 date-time with offset")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    micro = int((match[7] or "0")[:6].ljust(6, "0"))
    offset = timedelta(0)
    if match[9]:
        if int(match[10]) > 23 or int(match[11]) > 59:
            raise ValueError(f"{value!r} has an impossible offset")
        offset = timedelta(hours=int(match[10]), minutes=int(match[11]))
        offset = -offset if match[9] == "-" else offset
    when = datetime(year, month, day, hour, minute, second, micro, tzinfo=timezone(offset))
    return when.astimezone(UTC)


def trailer_values(message: bytes, pattern: re.Pattern[str]) -> list[str]:
    """Values of the lines matching ``pattern`` in the last paragraph of a commit message.

    Any matching line in that paragraph counts, even among non-trailer lines: a
    publisher who meant to freeze or bind a spec must never be ignored on a formatting
    detail. The first paragraph is the subject, never trailers.
    """
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", message.decode("utf-8", "replace").strip())
                  if p.strip()]
    if len(paragraphs) < 2:
        return []
    return [m[1].strip() for line in paragraphs[-1].split("\n")
            if (m := pattern.fullmatch(line.strip()))]


def expires_of(message: bytes, commit: bytes | None = None) -> datetime | None:
    """The ``Expires:`` trailer in the last paragraph of a commit message, if any.

    Two of them, or one that does not parse, is a rejection.
    """
    values = trailer_values(message, _EXPIRES)
    if not values:
        return None
    name = commit.decode() if commit else "the new tip"
    if len(values) > 1:
        raise _refuse("InvalidExpires", f"commit {name} has {len(values)} Expires: trailers",
                      commit)
    try:
        return parse_rfc3339(values[0])
    except ValueError as exc:
        raise _refuse("InvalidExpires", f"commit {name}: Expires: {exc}", commit) from None


URGENT_TRAILER = "Giter-Urgent"
_URGENT = re.compile(re.escape(URGENT_TRAILER) + r"[ \t]*:(.*)", re.IGNORECASE)


def urgent_of(message: bytes) -> str | None:
    """The ``Giter-Urgent:`` trailer's reason ("" when it gives none), or None: a spec
    commit that overrides maintenance windows (``spec.windows``)."""
    values = trailer_values(message, _URGENT)
    return values[0] if values else None


def branch_of(message: bytes, commit: bytes | None = None) -> str | None:
    """The branch a commit names in its ``Giter-Branch:`` trailer, if any (two: refused)."""
    values = trailer_values(message, _BRANCH)
    if len(values) > 1:
        name = commit.decode() if commit else "the new tip"
        raise _refuse("WrongBranch", f"commit {name} has {len(values)} {BRANCH_TRAILER}: "
                      "trailers", commit)
    return values[0] if values else None


def with_branch_trailer(message: str, branch: str) -> str:
    """``message`` with ``Giter-Branch: <branch>`` added as its last trailer (once).

    What ``git commit --trailer 'Giter-Branch: main'`` does: appended to the last
    paragraph when that paragraph is already trailers, else as a paragraph of its own.
    """
    if branch_of(message.encode()) is not None:
        return message if message.endswith("\n") else message + "\n"
    body = message.rstrip("\n")
    paragraphs = re.split(r"\n[ \t]*\n", body)
    last = paragraphs[-1].split("\n")
    is_trailers = len(paragraphs) > 1 and all(
        re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*[ \t]*:.*", line) for line in last)
    return f"{body}{chr(10) if is_trailers else chr(10) * 2}{BRANCH_TRAILER}: {branch}\n"


def _check_branch(store: Any, tip: bytes, branch: str, sets: _SignerSets) -> None:
    """The new tip names ``branch``; it must name it if a parent's policy binds branches."""
    parts = signed_commit.parse(_read(store, tip, _COMMIT), tip.decode())
    required = [sets.binds_branch(p) for p in parts.parents]  # a broken policy refuses
    named = branch_of(parts.message, tip)
    if named is not None and named != branch:
        raise _refuse("WrongBranch", f"commit {tip.decode()} was signed for branch "
                      f"{named!r}, not {branch!r}", tip)
    if named is None and any(required):
        raise _refuse("BranchNotBound", f"commit {tip.decode()} has no {BRANCH_TRAILER}: "
                      f"{branch} trailer, which {b'/'.join(POLICY_FILE).decode()} requires",
                      tip)


def verify_update(object_store: Any, accepted: bytes | None, new: bytes, root: TrustRoot, *,
                  held: Callable[[bytes], bool] | None = None, branch: str | None = None,
                  max_commits: int = 100_000, budget: Budget | None = None) -> Verified:
    """Verify everything ``new`` brings beyond ``accepted``; raise TrustError on any doubt.

    Ids are 40-digit hex ``bytes``. ``held(id)``: whether the device held a commit
    before this import (required with ``accepted``; see ``new_commits``). ``branch``:
    the branch ``new`` is offered as, checked against its ``Giter-Branch:`` trailer
    (None: not checked, for tools that look at a commit outside any branch). Nothing
    is written: the caller moves its refs only after this returns. ``budget`` (the
    sync's time budget) is checked before each commit's signature is verified:
    BundleError(TimeBudgetExceeded) once it is spent.
    """
    if accepted is not None and held is None:
        raise ValueError("verify_update needs held= to judge an update to an accepted tip")
    if accepted is not None and new == accepted:
        return Verified(new, (), {}, _tip_expires(object_store, new))
    order = new_commits(object_store, accepted, new, held=held or (lambda _: False),
                        genesis=root.genesis, max_commits=max_commits)
    sets = _SignerSets(object_store, root)
    signers: dict[bytes, str] = {}
    for oid in order:
        if budget is not None:
            budget.check()
        signers[oid] = _verify_commit(object_store, oid, root, sets).fingerprint()
    if branch is not None:
        _check_branch(object_store, new, branch, sets)
    return Verified(new, tuple(order), signers, _tip_expires(object_store, new))


class UpdateCheck:
    """The rule of ``verify_update``, one commit at a time, for tools that show a verdict
    per commit (``giter-bundle inspect``) rather than one for a whole update.

    ``commits`` is what ``new_commits`` returns (its TrustError propagates from the
    constructor); ``verify(id)`` checks one of them by exactly the rule a device applies.
    """

    def __init__(self, object_store: Any, accepted: bytes | None, new: bytes, root: TrustRoot, *,
                 held: Callable[[bytes], bool], branch: str | None = None,
                 max_commits: int = 100_000) -> None:
        self._store = object_store
        self._root = root
        self._sets = _SignerSets(object_store, root)
        self.tip = new
        self.branch = branch
        self.commits = new_commits(object_store, accepted, new, held=held,
                                   genesis=root.genesis, max_commits=max_commits)

    def verify(self, commit: bytes) -> PublicKey:
        key = _verify_commit(self._store, commit, self._root, self._sets)
        if commit == self.tip:
            if self.branch is not None:
                _check_branch(self._store, commit, self.branch, self._sets)
            _tip_expires(self._store, commit)
        return key


def _tip_expires(store, tip: bytes) -> datetime | None:
    parts = signed_commit.parse(_read(store, tip, _COMMIT), tip.decode())
    return expires_of(parts.message, tip)


# --- publisher side: a device's status commit ------------------------------------------

_YAML_SUFFIXES = (b".yaml", b".yml")
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _diff(store, old: bytes | None, new: bytes | None, prefix: bytes
          ) -> Iterator[tuple[bytes, tuple[int, bytes] | None, tuple[int, bytes] | None]]:
    """(path, old entry, new entry) for every blob-level difference between two trees."""
    def entries(tree: bytes | None) -> dict[bytes, tuple[int, bytes]]:
        if tree is None:
            return {}
        try:
            return {n: (m, o) for n, m, o in _tree_entries(_read(store, tree, _TREE))}
        except ValueError:
            raise _refuse("CorruptObject", f"tree {tree.decode()} is malformed") from None

    before, after = entries(old), entries(new)
    for name in sorted(before.keys() | after.keys()):
        a, b = before.get(name), after.get(name)
        if a == b:
            continue
        path = prefix + name
        a_tree = a[1] if a is not None and a[0] == _DIR_MODE else None
        b_tree = b[1] if b is not None and b[0] == _DIR_MODE else None
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
    data = _read(store, blob, _BLOB)
    try:
        doc = load_yaml(data)
    except ResourceError as exc:
        raise _refuse("OwnershipViolation", f"{path}: {exc}", commit) from None
    return {k: v for k, v in doc.items() if k != "status"} if isinstance(doc, dict) else doc


def _summary_path(device_id: str) -> bytes:
    """Where a device writes its own DeviceStatus summary (``core.layout``)."""
    return summary_path(device_id).encode()


def _check_summary(store, blob: bytes, device_id: str, path: str, commit: bytes) -> None:
    """A device summary holds one DeviceStatus document naming this device, plus status."""
    doc = _without_status(store, blob, path, commit)
    if (not isinstance(doc, dict) or set(doc) - {"apiVersion", "kind", "metadata"}
            or doc.get("kind") != "DeviceStatus" or doc.get("metadata") != {"name": device_id}):
        raise _refuse("OwnershipViolation", f"{path} must be one DeviceStatus document "
                      f"for {device_id} holding only status", commit)


def _status_path(path: bytes, device_id: str, groups: Collection[str] | None) -> bool:
    parts = path.split(b"/")
    if len(parts) < 3 or not path.endswith(_YAML_SUFFIXES):
        return False
    if parts[0] == b"devices":
        return parts[1] == device_id.encode()
    if parts[0] == b"groups":
        return groups is None or parts[1].decode(errors="replace") in groups
    return False


def verify_status_commit(object_store, status_commit: bytes, device_id: str,
                         device_key: PublicKey,
                         spec_tip_known: Callable[[bytes], bool] | None = None, *,
                         device_groups: Collection[str] | None = None) -> None:
    """Accept a device's status commit only if it is that device's, changing only status.

    The commit must be signed (namespace git) by ``device_key``; its last parent is the
    spec commit it observed (first parent: the previous status commit, if any). Its tree
    may differ from that spec commit's tree only in the top-level ``status`` of YAML
    documents under ``devices/<device_id>/`` and ``groups/<g>/`` (``g`` limited to
    ``device_groups`` when given), plus the device's own summary file
    ``.giter/status/<device_id>.yaml``, which it may create. Anything else is
    TrustError(OwnershipViolation).
    """
    name = status_commit.decode()
    if not _DEVICE_ID.fullmatch(device_id):
        raise ValueError(f"device id {device_id!r} is not a plain name")
    parts = signed_commit.parse(_read(object_store, status_commit, _COMMIT), name)
    if parts.signature is None:
        raise _refuse("UnsignedCommit", f"status commit {name} is not signed", status_commit)
    try:
        sshsig.verify(parts.signature, parts.payload, [device_key])
    except TrustError as exc:
        raise _refuse(exc.reason, f"status commit {name} from {device_id}: {exc}",
                      status_commit) from None
    if len(parts.parents) not in (1, 2):
        raise _refuse("OwnershipViolation", f"status commit {name} must have the observed "
                      "spec commit as its last parent", status_commit)
    spec = parts.parents[-1]
    if spec_tip_known is not None and not spec_tip_known(spec):
        raise _refuse("UnknownSpecCommit", f"status commit {name} claims to observe "
                      f"{spec.decode()}, which is not on the spec branch", status_commit)
    spec_parts = signed_commit.parse(_read(object_store, spec, _COMMIT), spec.decode())
    for path, old, new in _diff(object_store, spec_parts.tree, parts.tree, b""):
        shown = path.decode(errors="replace")
        if (new is not None and path == _summary_path(device_id)
                and new[0] in _FILE_MODES and (old is None or old[0] == new[0])):
            _check_summary(object_store, new[1], device_id, shown, status_commit)
            if old is None:
                continue  # a new summary: its shape was all there was to check
        elif (old is None or new is None or old[0] != new[0] or old[0] not in _FILE_MODES
                or not _status_path(path, device_id, device_groups)):
            raise _refuse("OwnershipViolation", f"status commit {name} from {device_id} "
                          f"changes {shown}, which is not its status", status_commit)
        assert old is not None and new is not None  # both files: checked just above
        if (_without_status(object_store, old[1], shown, status_commit)
                != _without_status(object_store, new[1], shown, status_commit)):
            raise _refuse("OwnershipViolation", f"status commit {name} from {device_id} "
                          f"changes {shown} beyond its status field", status_commit)
