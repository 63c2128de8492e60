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
from giter_agent.core.layout import summary_path
from giter_agent.spec.resources import API_VERSION, dump_yaml
from giter_agent.state.records import ResourceRecord


def status_files(device_id: str, records: dict[str, ResourceRecord],
                 summary: dict[str, Any]) -> dict[str, bytes]:
    """Path -> file content for every resource document and the device summary."""
    files: dict[str, bytes] = {}
    for rec in records.values():
        if rec.invalid or not rec.document or rec.path is None:
            continue  # the file in the tree is not a usable document; the summary says why
        doc = copy.deepcopy(rec.document)
        doc["status"] = rec.status
        files[rec.path] = dump_yaml(doc)
    files[summary_path(device_id)] = dump_yaml({
        "apiVersion": API_VERSION,
        "kind": "DeviceStatus",
        "metadata": {"name": device_id},
        "status": summary,
    })
    return files


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
