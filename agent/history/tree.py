"""Read files of a verified commit's tree straight from the object store, and build trees.

There is never a work tree: ``iter_files`` and ``read_file`` read blobs through the
tree objects, and only entries on an allowlist come out (regular files; names
``[a-z0-9][a-z0-9._-]*``; no two names in a directory equal ignoring case). Anything
else - a symlink, a submodule, an odd name - is refused with ``TreeError`` naming the
path, so a hostile tree can never steer a write or a read outside what it looks like.
``replace_files`` writes new blobs and trees into a store, returning a new root tree:
the status layer uses it to fill ``status`` into the spec tree.

Called by the resources layer (reading specs), trust (the allowed_signers file) and
status (building the device's status tree).
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

from dulwich.object_store import BaseObjectStore
from dulwich.objects import Blob, ObjectID, Tree

from giter_agent.core.errors import TreeError
from giter_agent.core.layout import SAFE_NAME

if TYPE_CHECKING:
    from giter_agent.history.packs import PendingObjects

_T = TypeVar("_T", Blob, Tree)

REGULAR_MODES = (0o100644, 0o100755)
_SYMLINK_MODE = 0o120000
_GITLINK_MODE = 0o160000
# Deeper than any fleet layout; bounds the walk over a hostile, deeply nested tree.
MAX_DEPTH = 32


# The modes git writes, as it writes them: "40000" (never "040000"), and no 100664.
GIT_MODES = {b"100644": 0o100644, b"100755": 0o100755, b"120000": 0o120000,
             b"40000": 0o040000, b"160000": 0o160000}


def parse_tree(raw: bytes) -> list[tuple[bytes, int, bytes]]:
    """(name, mode, hex id) of each entry of a tree object's bytes, as ``git fsck --strict``
    would have it; ValueError names what git calls broken.

    Refused: a truncated entry, a mode git does not write (zero-padded, 100664, other),
    an empty name, a name with ``/``, ``.``, ``..`` or ``.git`` (any case), the null id,
    two entries of one name (a file and a folder included), and entries out of git's
    order. git reads the first of two same-named entries and a checkout writes the
    second, so a tree like that shows one thing and applies another.
    """
    entries: list[tuple[bytes, int, bytes]] = []
    previous: bytes | None = None
    names: set[bytes] = set()
    pos = 0
    while pos < len(raw):
        space = raw.find(b" ", pos, pos + 8)
        nul = raw.find(b"\0", space + 1) if space >= 0 else -1
        if space < 0 or nul < 0 or nul + 21 > len(raw):
            raise ValueError("truncated tree entry")
        mode_text, name, binsha = raw[pos:space], raw[space + 1:nul], raw[nul + 1:nul + 21]
        pos = nul + 21
        shown = name.decode("utf-8", "replace")
        mode = GIT_MODES.get(mode_text)
        if mode is None:
            raise ValueError(f"entry {shown!r} has mode {mode_text.decode('ascii', 'replace')!r}"
                             ", which git does not write")
        if not name or b"/" in name or name in (b".", b"..") or name.lower() == b".git":
            raise ValueError(f"entry name {shown!r} is not allowed in a tree")
        if binsha == bytes(20):
            raise ValueError(f"entry {shown!r} has the null id")
        if name in names:
            raise ValueError(f"two entries are named {shown!r}")
        names.add(name)
        key = name + b"/" if mode == 0o040000 else name  # git sorts a folder as "name/"
        if previous is not None and key <= previous:
            raise ValueError(f"entry {shown!r} is out of git's order")
        previous = key
        entries.append((name, mode, binsha.hex().encode()))
    return entries


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _split(path: str) -> list[str]:
    parts = [p for p in path.strip("/").split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"path {path!r} has a '.' or '..' component")
    return parts


def _load(object_store: BaseObjectStore | PendingObjects, sha: bytes, cls: type[_T],
          path: str) -> _T:
    try:
        obj = object_store[ObjectID(sha)]
    except KeyError:
        raise TreeError(f"{path or '/'}: object {sha.decode()} is missing",
                        reason="MissingObject") from None
    if not isinstance(obj, cls):
        raise TreeError(f"{path or '/'}: expected a {cls.type_name.decode()},"
                        f" found a {obj.type_name.decode()}", reason="UnsafeTreeEntry")
    return obj


def _unsafe(path: str, why: str) -> TreeError:
    return TreeError(f"{path}: {why}", reason="UnsafeTreeEntry")


def _describe_mode(mode: int) -> str:
    if mode == _SYMLINK_MODE:
        return "is a symlink (only regular files are allowed)"
    if mode == _GITLINK_MODE:
        return "is a submodule (only regular files are allowed)"
    return f"has mode {mode:o} (only regular files 100644/100755 are allowed)"


def _checked_entries(tree: Tree, path: str) -> list[tuple[str, int, bytes]]:
    """The entries of one directory, after the allowlist has passed every one of them."""
    entries: list[tuple[str, int, bytes]] = []
    named = [(raw.decode("utf-8", errors="replace"), mode, sha)
             for raw, mode, sha in tree.iteritems()]
    # Collisions first, so "A.yaml" beside "a.yaml" is reported as what it is.
    seen: dict[str, str] = {}
    for name, _mode, _sha in named:
        folded = name.casefold()
        if folded in seen:
            raise _unsafe(_join(path, name), f"collides with {_join(path, seen[folded])!r}"
                                             " when case is ignored")
        seen[folded] = name
    for name, mode, sha in named:
        entry_path = _join(path, name)
        if not SAFE_NAME.fullmatch(name):
            raise _unsafe(entry_path, "name is not allowed (must match [a-z0-9][a-z0-9._-]*)")
        if not stat.S_ISDIR(mode) and mode not in REGULAR_MODES:
            raise _unsafe(entry_path, _describe_mode(mode))
        entries.append((name, mode, sha))
    return entries


def _read_blob(object_store: BaseObjectStore, sha: bytes, path: str,
               max_blob: int | None) -> bytes:
    blob = _load(object_store, sha, Blob, path)
    data = blob.as_raw_string()
    if max_blob is not None and len(data) > max_blob:
        raise TreeError(f"{path}: {len(data)} bytes, over the {max_blob}-byte limit",
                        reason="FileTooLarge")
    return data


def _descend(object_store: BaseObjectStore, tree_id: bytes,
             parts: list[str]) -> tuple[Tree | None, str]:
    """Follow ``parts`` from the root; ``None`` when a component is absent."""
    tree = _load(object_store, tree_id, Tree, "")
    path = ""
    for part in parts:
        path = _join(path, part)
        try:
            mode, sha = tree[part.encode()]
        except KeyError:
            return None, path
        if not stat.S_ISDIR(mode):
            raise _unsafe(path, "is not a directory")
        tree = _load(object_store, sha, Tree, path)
    return tree, path


def iter_files(object_store: BaseObjectStore, tree_id: bytes, prefix: str,
               max_blob: int) -> Iterator[tuple[str, bytes]]:
    """Yield (path from the repo root, content) of every file under ``prefix``.

    The whole subtree is checked against the allowlist before the first file is
    yielded, so an unsafe tree yields nothing. A missing prefix yields nothing.
    """
    listed = list_files(object_store, tree_id, prefix)
    if listed is None:
        return
    for file_path, _mode, sha in listed[1]:
        yield file_path, _read_blob(object_store, sha, file_path, max_blob)


def list_files(object_store: BaseObjectStore, tree_id: bytes, prefix: str
               ) -> tuple[bytes, list[tuple[str, int, bytes]]] | None:
    """The id of the tree at ``prefix`` and (path, mode, blob id) of every file under it,
    sorted, without reading a blob; None when ``prefix`` is absent.

    The whole subtree passes the allowlist first (regular files and folders only, safe
    names, no case collisions, at most ``MAX_DEPTH`` deep), or ``TreeError`` names the
    first entry that does not.
    """
    start, path = _descend(object_store, tree_id, _split(prefix))
    if start is None:
        return None
    files: list[tuple[str, int, bytes]] = []
    stack: list[tuple[Tree, str, int]] = [(start, path, 0)]
    while stack:
        tree, tree_path, depth = stack.pop()
        subtrees = []
        for name, mode, sha in _checked_entries(tree, tree_path):
            entry_path = _join(tree_path, name)
            if stat.S_ISDIR(mode):
                if depth + 1 > MAX_DEPTH:
                    raise _unsafe(entry_path, f"nested deeper than {MAX_DEPTH} directories")
                subtrees.append((_load(object_store, sha, Tree, entry_path), entry_path,
                                 depth + 1))
            else:
                files.append((entry_path, mode, sha))
        stack.extend(reversed(subtrees))
    files.sort()
    return start.id, files


def file_id(object_store: BaseObjectStore, tree_id: bytes, path: str) -> bytes | None:
    """The blob id of the regular file at ``path``, or None when no such entry exists.

    The caller names the path (it may be ``.giter/...``), so only the entry's kind is
    checked: a symlink, submodule or directory there is a TreeError, never followed.
    Nothing is inflated but the trees on the way.
    """
    parts = _split(path)
    if not parts:
        raise ValueError("a file path is needed")
    parent, parent_path = _descend(object_store, tree_id, parts[:-1])
    if parent is None:
        return None
    entry_path = _join(parent_path, parts[-1])
    try:
        mode, sha = parent[parts[-1].encode()]
    except KeyError:
        return None
    if stat.S_ISDIR(mode):
        raise _unsafe(entry_path, "is a directory, not a file")
    if mode not in REGULAR_MODES:
        raise _unsafe(entry_path, _describe_mode(mode))
    return sha


def read_file(object_store: BaseObjectStore, tree_id: bytes, path: str, *,
              max_blob: int | None = None) -> bytes | None:
    """Content of the regular file at ``path``, or None when no such entry exists
    (``file_id``'s rules)."""
    sha = file_id(object_store, tree_id, path)
    if sha is None:
        return None
    return _read_blob(object_store, sha, "/".join(_split(path)), max_blob)


def replace_files(object_store: BaseObjectStore | PendingObjects, base_tree: bytes | None,
                  files: dict[str, bytes]) -> bytes:
    """Write ``files`` (path -> content) over ``base_tree``; return the new root tree id.

    Intermediate directories are created as needed; every other entry is kept as it
    is. A new file gets mode 100644, a replaced one keeps its mode. The caller names
    the paths (``.giter/status/...`` included), so only names git itself would refuse
    (``.git``, NUL) are checked; replacing a directory, symlink or submodule is refused.
    """
    changes: dict = {}
    for path, content in files.items():
        parts = _split(path)
        if not parts:
            raise ValueError("replace_files needs file paths")
        for part in parts:
            if part.casefold() == ".git" or "\0" in part:
                raise _unsafe(path, f"component {part!r} is not an allowed name")
        node = changes
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{path}: a parent of it is also given as a file")
        if isinstance(node.get(parts[-1]), dict):
            raise ValueError(f"{path}: also given as a directory")
        node[parts[-1]] = content
    return _write_tree(object_store, base_tree, changes, "")


def _write_tree(object_store: BaseObjectStore | PendingObjects, tree_id: bytes | None,
                changes: dict, path: str) -> bytes:
    tree = Tree()
    if tree_id is not None:
        for name, mode, sha in _load(object_store, tree_id, Tree, path).iteritems():
            tree.add(name, mode, sha)
    for name, change in changes.items():
        entry_path = _join(path, name)
        key = name.encode()
        try:
            existing: tuple[int, bytes] | None = tree[key]
        except KeyError:
            existing = None
        if isinstance(change, dict):
            if existing is not None and not stat.S_ISDIR(existing[0]):
                raise _unsafe(entry_path, "is a file where a directory is needed")
            subtree = _write_tree(object_store, existing[1] if existing else None, change,
                                  entry_path)
            tree.add(key, stat.S_IFDIR, ObjectID(subtree))
            continue
        mode = 0o100644
        if existing is not None:
            if existing[0] not in REGULAR_MODES:
                raise _unsafe(entry_path, "cannot replace: it " + (
                    "is a directory" if stat.S_ISDIR(existing[0])
                    else _describe_mode(existing[0])))
            mode = existing[0]
        blob = Blob.from_string(change)
        object_store.add_object(blob)
        tree.add(key, mode, blob.id)
    object_store.add_object(tree)
    return tree.id
