"""The trust files in a commit's tree, and what the device trusts before any of them.

``TrustRoot`` is the device's pinned start (its allowed_signers file, root keys,
genesis). ``TrustFiles`` answers, for a commit, what its tree says about its children:
the keys ``.giter/trust/allowed_signers`` trusts and whether ``.giter/trust/policy.toml``
binds tips to their branch. Parsed files are cached by blob id and lookups by tree id,
so a history whose ``.giter`` subtree rarely changes parses each trust file once.
Used by ``trust.spec_rule``.
"""

from __future__ import annotations

from pathlib import Path

from giter_agent.core.errors import TrustError
from giter_agent.core.layout import POLICY_FILE_PARTS, TRUST_FILE_PARTS
from giter_agent.core.named_tuple import NamedTuple
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
# Both files lie in one folder: a lookup finds both in one descent.
_FOLDER = TRUST_FILE[:-1]
_NAMES = (TRUST_FILE[-1], POLICY_FILE[-1])
assert POLICY_FILE[:-1] == _FOLDER
KEEP_TREES = 4096  # lookups kept by tree id (about 200 bytes each)


class TrustRoot(NamedTuple):
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

    Consecutive commits mostly share their ``.giter`` subtree and trust file, so both
    files are found in one descent, each tree is read once (lookups kept by tree id) and
    each file parsed once (by blob id).
    """

    def __init__(self, reader: CheckedReader, root: TrustRoot) -> None:
        self._reader = reader
        self._root = root
        self._trees: dict[bytes, bytes] = {}  # commit -> tree, from commits already parsed
        # (tree, depth) -> both trust files' blob ids below it: each tree read once
        self._found: dict[tuple[bytes, int], tuple[bytes | ValueError | None, ...]] = {}
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
            found = self._files(self._tree_of(commit), 0)[_NAMES.index(path[-1])]
            if isinstance(found, ValueError):
                raise found
            return found
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

    def _files(self, tree: bytes, depth: int) -> tuple[bytes | ValueError | None, ...]:
        """The blob ids (or what is wrong with them) of both trust files below ``tree``,
        the folder ``_FOLDER[:depth]``: each tree is read once for both."""
        key = (tree, depth)
        found = self._found.get(key)
        if found is None:
            if depth == len(_FOLDER):
                entries = self._entries(tree, None)
                found = tuple(_regular(entries.get(name), name) for name in _NAMES)
            else:
                entry = self._entries(tree, _FOLDER[depth]).get(_FOLDER[depth])
                if entry is None:
                    found = (None,) * len(_NAMES)
                elif entry[0] == DIR_MODE:
                    found = self._files(entry[1], depth + 1)
                else:  # a file, symlink or submodule where a folder belongs
                    raise ValueError(f"{_FOLDER[depth].decode(errors='replace')} has "
                                     f"mode {entry[0]:o}")
            if len(self._found) >= KEEP_TREES:
                self._found.clear()  # a long history: each root tree is asked about once
            self._found[key] = found
        return found

    def _entries(self, tree: bytes, wanted: bytes | None) -> dict[bytes, tuple[int, bytes]]:
        """(mode, id) by name of ``tree``'s entries: all of them, or up to ``wanted``."""
        entries: dict[bytes, tuple[int, bytes]] = {}
        try:
            for name, mode, oid in tree_entries(self._reader.tree(tree)):
                entries.setdefault(name, (mode, oid))
                if name == wanted:
                    break
        except ValueError:
            raise refuse("CorruptObject", f"tree {tree.decode()} is malformed") from None
        return entries


def _regular(entry: tuple[int, bytes] | None, name: bytes) -> bytes | ValueError | None:
    """A trust file's blob id; what is wrong when it is not a regular file."""
    if entry is None:
        return None
    if entry[0] in FILE_MODES:
        return entry[1]
    return ValueError(f"{name.decode(errors='replace')} has mode {entry[0]:o}")


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

