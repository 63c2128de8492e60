"""The trust files in a commit's tree, and what the device trusts before any of them.

``TrustRoot`` is the device's pinned start (its allowed_signers file, root keys,
genesis). ``TrustFiles`` answers, for a commit, what its tree says about its children:
the keys ``.giter/trust/allowed_signers`` trusts and whether ``.giter/trust/policy.toml``
binds tips to their branch. Parsed files are cached by blob id and lookups by tree id,
so a history whose ``.giter`` subtree rarely changes parses each trust file once.
Used by ``trust.spec_rule``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from giter_agent.core.errors import TrustError
from giter_agent.core.layout import POLICY_FILE_PARTS, TRUST_FILE_PARTS
from giter_agent.trust import allowed_signers as signers_file
from giter_agent.trust.checked_objects import (
    DIR_MODE,
    FILE_MODES,
    CheckedReader,
    refuse,
    tree_entries,
)
from giter_agent.trust.sshsig import PublicKey

TRUST_FILE = TRUST_FILE_PARTS
POLICY_FILE = POLICY_FILE_PARTS
_ON_THE_WAY = frozenset(TRUST_FILE + POLICY_FILE)  # the names a lookup reads in a tree
KEEP_TREES = 4096  # trees whose entries are kept (a few hundred bytes each)


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


class TrustFiles:
    """What each commit's tree says about its children: the keys it trusts, and whether
    a tip built on it must name its branch.

    Consecutive commits mostly share their ``.giter`` subtree and trust file, so each
    tree is read once (its entries on the way to a trust file kept by tree id) and each
    file parsed once (by blob id).
    """

    def __init__(self, reader: CheckedReader, root: TrustRoot) -> None:
        self._reader = reader
        self._root = root
        self._trees: dict[bytes, bytes] = {}  # commit -> tree, from commits already parsed
        # tree -> its entries on the way to a trust file: each tree is read once
        self._entries: dict[bytes, dict[bytes, tuple[int, bytes]]] = {}
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
            data = self._reader.blob(blob)
            self._by_blob[blob] = signers_file.keys_for(signers_file.parse(data, source))
        return self._by_blob[blob]

    def binds_branch(self, commit: bytes) -> bool:
        """Whether ``commit``'s tree asks every tip built on it to name its branch."""
        blob = self._blob(commit, POLICY_FILE)
        if blob is None:
            return False
        if blob not in self._policies:
            where = f"{b'/'.join(POLICY_FILE).decode()}@{commit.decode()[:12]}"
            self._policies[blob] = parse_policy(self._reader.blob(blob), where)
        return self._policies[blob]

    def _blob(self, commit: bytes, path: tuple[bytes, ...]) -> bytes | None:
        try:
            return self._find(self._tree_of(commit), path)
        except ValueError as exc:
            raise refuse("InvalidTrustFile", f"{b'/'.join(path).decode()} in commit "
                          f"{commit.decode()}: {exc}", commit) from None

    def _tree_of(self, commit: bytes) -> bytes:
        if commit not in self._trees:
            raw = self._reader.commit(commit)
            if not raw.startswith(b"tree ") or raw[45:46] != b"\n":
                raise refuse("MalformedCommit", f"commit {commit.decode()} has no tree", commit)
            self._trees[commit] = raw[5:45]
        return self._trees[commit]

    def _find(self, tree: bytes, path: tuple[bytes, ...]) -> bytes | None:
        """The blob id of the regular file at ``path`` below ``tree``, or None."""
        entry = self._entry(tree, path[0])
        last = len(path) == 1
        if entry is None:
            return None
        if last and entry[0] in FILE_MODES:
            return entry[1]
        if not last and entry[0] == DIR_MODE:
            return self._find(entry[1], path[1:])
        # a symlink or submodule where the trust file or its folders belong
        raise ValueError(f"{path[0].decode(errors='replace')} has mode {entry[0]:o}")

    def _entry(self, tree: bytes, name: bytes) -> tuple[int, bytes] | None:
        """(mode, id) of ``name`` in ``tree``; each tree is read once, for every name
        on the way to either trust file (both lie in the same folder)."""
        entries = self._entries.get(tree)
        if entries is None:
            entries = {}
            try:
                for entry_name, mode, oid in tree_entries(self._reader.tree(tree)):
                    if entry_name in _ON_THE_WAY:
                        entries.setdefault(entry_name, (mode, oid))
            except ValueError:
                raise refuse("CorruptObject", f"tree {tree.decode()} is malformed") from None
            if len(self._entries) >= KEEP_TREES:
                self._entries.clear()  # a long history: its trees are asked about once
            self._entries[tree] = entries
        return entries.get(name)


def parse_policy(data: bytes, source: str) -> bool:
    """``.giter/trust/policy.toml``: whether tips must name their branch (``bind_branch``).

    Strict: an unknown key or a value of the wrong type refuses the whole file, so a typo
    can never switch a protection off without anyone noticing.
    """
    import tomllib

    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise refuse("InvalidTrustFile", f"{source}: not valid TOML ({exc})") from None
    unknown = sorted(set(doc) - {"bind_branch"})
    if unknown:
        raise refuse("InvalidTrustFile", f"{source}: unknown setting {unknown[0]!r}")
    bind = doc.get("bind_branch", False)
    if not isinstance(bind, bool):
        raise refuse("InvalidTrustFile", f"{source}: bind_branch must be true or false")
    return bind

