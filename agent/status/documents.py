"""The one status writer: status documents, the status tree, and the signed status commit.

A status commit's tree is the applied spec tree with ``status`` filled in for this
device's resources (one CR file holding spec and status, as GITER describes), plus a
device summary at ``.giter/status/<device-id>.yaml`` that tells the publisher how the
last sync went (refused bundles, invalid files). Its parents are the previous status
commit and the spec commit it observed. A new commit is made only when the tree
changed, so repeated syncs with nothing new do not grow the history.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from giter_agent import __version__
from giter_agent.core.digest import sha256_hex
from giter_agent.core.layout import summary_path
from giter_agent.spec.resources import API_VERSION, dump_yaml
from giter_agent.state.records import ResourceRecord


def status_files(device_id: str, records: dict[str, ResourceRecord],
                 summary: dict[str, Any]) -> dict[str, bytes]:
    """Path -> file content for every resource document and the device summary."""
    return StatusDocuments().files(device_id, records, summary)


class StatusDocuments:
    """``status_files`` with a memory: a document is serialised again only when it changed.

    The daemon keeps one across its passes. A timer pass that changes nothing hands the
    same documents and statuses again; comparing them with the last pass's costs far less
    than dumping them as YAML, so a pass costs what changed, not what exists. The memory
    holds the documents of the last call only (what was dropped from the spec is forgotten).
    """

    def __init__(self) -> None:
        # path -> (document, a copy of its status, the bytes written for them)
        self._last: dict[str, tuple[Any, Any, bytes]] = {}
        # path -> the record the last call rendered it from (records are values, so the
        # very same record needs no comparison at all: a wakeup pass keeps most of them)
        self._records: dict[str, ResourceRecord] = {}
        self.dumped = 0  # documents serialised so far (what a pass cost; tests count it)
        # The last call's records (by key), summary and result.
        self._records_in: dict[str, ResourceRecord] = {}
        self._summary_in: dict[str, Any] | None = None
        self._files: dict[str, bytes] = {}

    def files(self, device_id: str, records: dict[str, ResourceRecord],
              summary: dict[str, Any]) -> dict[str, bytes]:
        """Path -> file content for every resource document and the device summary."""
        if records == self._records_in and self._summary_in == summary:
            # The very records of the last call (a dict comparison: the same objects
            # compare equal in C without looking inside): the same files.
            self._records_in = dict(records)
            return dict(self._files)
        memo: dict[str, tuple[Any, Any, bytes]] = {}
        seen: dict[str, ResourceRecord] = {}
        last, last_records = self._last, self._records
        for rec in records.values():
            path = rec.path
            if rec.invalid or not rec.document or path is None:
                continue  # the file in the tree is not a usable document; the summary says why
            seen[path] = rec
            if last_records.get(path) is rec:
                memo[path] = last[path]
            else:
                memo[path] = self._render(path, rec.document, rec.status)
        summary_doc = {"apiVersion": API_VERSION, "kind": "DeviceStatus",
                       "metadata": {"name": device_id}}
        path = summary_path(device_id)
        memo[path] = self._render(path, summary_doc, summary)
        self._last, self._records = memo, seen
        self._files = {p: entry[2] for p, entry in memo.items()}
        # The summary is checked again by value: a copy, as a caller may change its own.
        self._records_in, self._summary_in = dict(records), copy.deepcopy(summary)
        return dict(self._files)

    def _render(self, path: str, document: dict[str, Any], status: Any
                ) -> tuple[Any, Any, bytes]:
        last = self._last.get(path)
        if last is not None and last[1] == status and last[0] == document:
            return last
        # Copies are kept for the next comparison, so no later change to a record can
        # make a stale document look current.
        document, status = copy.deepcopy(document), copy.deepcopy(status)
        self.dumped += 1
        return document, status, dump_yaml({**document, "status": status})


def inputs_digest(device_id: str, spec: str, records: dict[str, ResourceRecord],
                  summary: dict[str, Any]) -> str | None:
    """A digest of everything ``status_files`` renders (and of this agent's version,
    which decides how): two calls with equal digests give the same files, so a process
    that finds the status tip recorded with this digest need not serialise any YAML to
    know the tip holds them. None when the inputs hold a value msgpack cannot pack."""
    import msgpack

    docs = [[r.path, r.document, r.status] for r in records.values()
            if not (r.invalid or not r.document or r.path is None)]
    try:
        data = msgpack.packb([1, __version__, device_id, spec, docs, summary],
                             use_bin_type=True, strict_types=True)
    except (TypeError, ValueError, OverflowError):
        return None
    return sha256_hex(data)


def make_status_commit(object_store: Any, *, spec_commit: bytes, previous: bytes | None,
                       tree: bytes, device_id: str, message: str, sign: Callable[[Any], None],
                       now: int) -> bytes | None:
    """Create (and sign) a status commit unless ``previous`` already says the same.

    Returns the new commit id, or None when nothing changed.
    """
    from dulwich.objects import Commit

    from giter_agent.history.objects import oid, read_commit

    if previous is not None:
        prev = read_commit(object_store, previous)
        if prev.tree == tree and prev.parents[-1] == spec_commit:
            return None
    commit = Commit()
    commit.tree = oid(tree)
    commit.parents = [oid(previous), oid(spec_commit)] if previous else [oid(spec_commit)]
    ident = f"giter-agent {device_id} <{device_id}@devices.giter.invalid>".encode()
    commit.author = commit.committer = ident
    commit.author_time = commit.commit_time = now
    commit.author_timezone = commit.commit_timezone = 0
    commit.encoding = None
    commit.message = (f"{message}\n\nDevice: {device_id}\nObserved-Spec: {spec_commit.decode()}\n"
                      f"Agent-Version: {__version__}\n").encode()
    sign(commit)
    object_store.add_object(commit)
    return commit.id
