"""Outgoing bundles: what a destination lacks, from the accepted store straight to disk.

``write_bundle`` writes the objects reachable from some refs minus those reachable
from excluded commits (dulwich's walk, for the publisher's spec bundles);
``write_chain_bundle`` writes what a first-parent chain adds to commits the
destination holds (``history.chain_export``: the device's status, read back to what
the hub has, never the whole history). Either way the pack streams into a temp file
beside the target, which is fsynced and renamed into place (``history.bundle``).
Called by ``history.store``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from dulwich.objects import Commit
from dulwich.pack import write_pack_data

from giter_agent.core.errors import HistoryError
from giter_agent.history import bundle as bundle_format
from giter_agent.history import chain_export
from giter_agent.history.objects import oid


def _hex(sha: bytes) -> str:
    return sha.decode("ascii", errors="replace")


def _counted(records: Iterable, total: int,
             progress: Callable[[int, int], None]) -> Iterator:
    """``records`` unchanged, reporting (done, total) as each one is taken."""
    progress(0, total)
    for done, record in enumerate(records, 1):
        yield record
        progress(done, total)


def _subject(commit: Commit) -> bytes:
    """The subject line as git prints it: the first paragraph joined onto one line."""
    paragraph = commit.message.strip().split(b"\n\n", 1)[0] if commit.message else b""
    return b" ".join(line.strip() for line in paragraph.splitlines()).strip()



def write_bundle(store: Any, path: Path, refs: dict[bytes, bytes],
                 exclude: Iterable[bytes] = (), version: int = 2,
                 progress: Callable[[int, int], None] | None = None,
                 dir_fd: int | None = None, deltify_artifacts: bool = False) -> None:
    """Write a bundle of ``refs`` holding what is not reachable from ``exclude``.

    The exclude commits become the bundle's prerequisites (with their subject line,
    as git writes them). The pack streams straight into a temp file beside
    ``path``, which is fsynced and renamed into place. ``progress(done, total)`` is
    called as each object is written (the publisher shows it for large bundles).
    With ``dir_fd``, ``path`` is a name in that open folder. ``deltify_artifacts``:
    a changed file under ``artifacts/`` goes as a delta against the version the
    excluded commits hold (``history.artifact_delta``), as git's thin packs do.
    """
    for name, sha in refs.items():
        commit_of(store, sha, f"ref {name.decode(errors='replace')}")
    excluded = list(dict.fromkeys(exclude))
    prerequisites = [(sha, _subject(commit_of(store, sha, "excluded commit")))
                     for sha in excluded]
    count, records = store.generate_pack_data(
        [oid(sha) for sha in excluded], [oid(sha) for sha in dict.fromkeys(refs.values())])
    if deltify_artifacts and excluded:
        from giter_agent.history import artifact_delta

        found = artifact_delta.pairs(store, refs.values(), excluded)
        records = artifact_delta.deltify(store, records, found)
    if progress is not None:
        records = _counted(records, count, progress)

    def pack_writer(fh: BinaryIO) -> None:
        write_pack_data(fh.write, records, num_records=count,
                        object_format=store.object_format)

    bundle_format.write_bundle(Path(path), refs=refs, prerequisites=prerequisites,
                               pack_writer=pack_writer, version=version, dir_fd=dir_fd)

def write_chain_bundle(store: Any, path: Path, name: bytes, tip: bytes, stop: set[bytes], *,
                       dir_fd: int | None = None) -> chain_export.Chain:
    """Write a bundle of ``name`` at ``tip`` holding what ``tip``'s first-parent chain
    adds to ``stop`` (commits the destination has) and to the chain's other parents.

    The walk reads the new commits only (``history.chain_export``); the commits it
    builds on become the prerequisites. Otherwise as ``write_bundle``.
    """
    chain = chain_export.first_parent_chain(store, tip, stop)
    prerequisites = [(sha, _subject(commit_of(store, sha, "prerequisite commit")))
                     for sha in chain.boundary]
    ids = chain_export.new_objects(store, chain)

    def pack_writer(fh: BinaryIO) -> None:
        write_pack_data(fh.write, chain_export.records(store, ids), num_records=len(ids),
                        object_format=store.object_format)

    bundle_format.write_bundle(Path(path), refs={name: tip}, prerequisites=prerequisites,
                               pack_writer=pack_writer, version=2, dir_fd=dir_fd)
    return chain

def commit_of(store: Any, sha: bytes, what: str) -> Commit:
    """The commit ``sha`` of the accepted store; HistoryError(UnknownCommit) otherwise."""
    try:
        obj = store[oid(sha)]
    except KeyError:
        raise HistoryError(f"{what} {_hex(sha)} is not in the history",
                           reason="UnknownCommit") from None
    if not isinstance(obj, Commit):
        raise HistoryError(f"{what} {_hex(sha)} is not a commit", reason="UnknownCommit")
    return obj
