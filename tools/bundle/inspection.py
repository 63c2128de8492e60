"""What a bundle holds, and what a device or the hub would make of it, without importing it.

The bundle goes through the same door as every import, ``History.quarantine`` (header,
caps, pack checksum, completeness), into the hub repository's quarantine, and the
quarantine is dropped at the end: ``promote`` is never called, so neither the hub's
objects nor its refs change. Without a hub repository a scratch one in a temporary
folder serves, which can only open bundles without prerequisites.

Each commit the bundle brings gets a verdict from the agent's own verifiers:

- spec commits (any ref but ``refs/heads/status/*``): ``trust.spec_rule.UpdateCheck``, the
  rule a device applies to an update, for a device whose accepted tip is the bundle's
  prerequisite (no prerequisite: a device's first sync): every parent is that tip or a
  new commit, and each commit is signed by a key every parent's trust file trusts; a
  first commit against the hub's current trust file (or ``--allowed-signers``),
  standing in for a device's pinned file. A shape the device would refuse (a fork, a
  new root commit) is reported as a problem of that ref;
- status commits (``refs/heads/status/<id>``): ``trust.status_rule.verify_status_commit``
  against the device's enrolled key and groups, as ``import`` would check them.

"Resources touched" is what changes between the bundle's prerequisite (what a device
is assumed to hold) and each ref's tip; "artifacts carried" the files under
``artifacts/`` added or changed there, with their sizes.

Called by ``giter-bundle inspect``.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dulwich.objects import Commit

from giter_agent.config.agent_toml import Limits
from giter_agent.core.errors import GiterError
from giter_bundle.exchange import STATUS_PREFIX, Exchange

_WATCHED = (b"devices/", b"groups/", b".giter/")
# The walk over what a bundle brings stops here (a device's default [limits] max_commits).
MAX_WALK = Limits().max_commits


def _subject(commit: Commit) -> str:
    return commit.message.decode("utf-8", "replace").strip().split("\n", 1)[0]


def _status_commits(store: Any, tip: bytes, held: Callable[[bytes], bool]) -> list[bytes]:
    """The status chain (first parents) down to ``held`` or the first report, oldest first."""
    from giter_agent.history.walk import status_chain

    return status_chain(store, tip, held)[0]


def _names(exchange: Exchange | None) -> dict[bytes, str]:
    """Key blob -> who it is, from the hub's trust file and enrolments (for display)."""
    from giter_agent.history.tree import read_file
    from giter_agent.trust import allowed_signers
    from giter_bundle.exchange import TRUST_FILE

    names: dict[bytes, str] = {}
    if exchange is None or exchange.tip is None:
        return names
    tree = exchange.commit(exchange.tip).tree
    with contextlib.suppress(GiterError):
        data = read_file(exchange.history.object_store, tree, TRUST_FILE)
        for entry in allowed_signers.parse(data or b"", TRUST_FILE):
            names.setdefault(entry.key.blob, ",".join(entry.principals))
    for device in exchange.devices().values():
        names.setdefault(device.key.blob, f"device {device.id}")
    return names


def _signer(store: Any, sha: bytes, names: dict[bytes, str]) -> str | None:
    """Who a commit claims to be signed by (checked or not), for display."""
    from giter_agent.trust import signed_commit, sshsig

    try:
        parts = signed_commit.parse(store.get_raw(sha)[1], sha.decode())
        if parts.signature is None:
            return None
        key = sshsig.signer_of(parts.signature)
    except GiterError:
        return None
    who = names.get(key.blob)
    return f"{who} ({key.fingerprint()})" if who else key.fingerprint()


def _verdict(check: Any) -> tuple[str, str, str]:
    try:
        check()
    except GiterError as exc:
        return "refused", exc.reason, str(exc)
    return "good", "Verified", ""


def _touched(q: Any, base: bytes | None, tip: bytes) -> list[dict[str, str]]:
    from dulwich.diff_tree import tree_changes

    from giter_agent.spec.resources import load_yaml

    store = q.object_store
    old_tree = store[base].tree if base is not None else None
    out = []
    for change in tree_changes(store, old_tree, store[tip].tree):
        entry = change.new if change.new is not None and change.new.path is not None \
            else change.old
        if entry is None or entry.path is None or entry.sha is None \
                or not entry.path.startswith(_WATCHED):
            continue
        resource = ""
        if entry.path.endswith((b".yaml", b".yml")):
            with contextlib.suppress(GiterError, KeyError, TypeError, AttributeError):
                doc = load_yaml(store[entry.sha].as_raw_string())
                resource = f"{doc['kind']}/{doc['metadata']['name']}"
        out.append({"change": change.type, "path": entry.path.decode("utf-8", "replace"),
                    "resource": resource})
    return out


@contextlib.contextmanager
def _history_for(exchange: Exchange | None) -> Iterator[Any]:
    if exchange is not None:
        yield exchange.history
        return
    from giter_agent.history.store import History

    with tempfile.TemporaryDirectory(prefix="giter-inspect-") as tmp, \
            History(Path(tmp) / "scratch.git") as history:
        yield history


def inspect_bundle(path: Path, exchange: Exchange | None,
                   allowed_signers: Path | None = None) -> dict[str, Any]:
    """Everything ``inspect`` prints, as plain data; ``ok`` is False if anything is refused."""
    from giter_agent.history.bundle import read_header
    from giter_agent.history.walk import HeldAt, ancestors
    from giter_agent.trust.status_rule import verify_status_commit
    from giter_bundle.artifacts import carried

    with path.open("rb") as fh:
        header = read_header(fh)
    doc: dict[str, Any] = {
        "file": str(path), "version": header.version, "bytes": path.stat().st_size,
        "refs": {n.decode(errors="replace"): s.decode() for n, s in header.refs.items()},
        "prerequisites": [], "commits": [], "touched": [], "artifacts": [], "ok": True,
        "problems": [],
    }
    with _history_for(exchange) as history:
        missing = []
        for sha in header.prerequisites:
            present = sha in history.object_store
            missing += [] if present else [sha]
            doc["prerequisites"].append({
                "commit": sha.decode(), "present": present,
                "subject": header.prerequisite_comments.get(sha, b"").decode("utf-8", "replace")})
        if missing:
            where = "the hub repository" if exchange else "a scratch repository (use -C HUB)"
            doc["ok"] = False
            doc["problems"].append(f"MissingPrerequisite: {where} lacks "
                                   f"{', '.join(m.decode()[:12] for m in missing)}; "
                                   "commits cannot be checked")
            return doc
        root = None
        try:
            root = (exchange.trust_root(allowed_signers=allowed_signers) if exchange
                    else _load_root(allowed_signers))
        except GiterError as exc:
            doc["problems"].append(f"{exc.reason}: {exc} (spec commits are not checked)")
        names = _names(exchange)
        devices = exchange.devices() if exchange else {}
        on_branch = exchange.on_branch(exchange.tip) if exchange and exchange.tip else None
        base = header.prerequisites[0] if header.prerequisites else None
        with history.quarantine(path) as q:
            # What a device holding the prerequisites would receive: everything else.
            held_all: set[bytes] = set()
            for sha in header.prerequisites if len(header.prerequisites) > 1 else ():
                held_all |= ancestors(q.object_store, sha)
            for ref, tip in header.refs.items():
                held: Callable[[bytes], bool] = held_all.__contains__
                if len(header.prerequisites) == 1:  # read only what the tip brings
                    held = HeldAt(q.object_store, header.prerequisites[0], tip, MAX_WALK)
                refname = ref.decode(errors="replace")
                device = (ref[len(STATUS_PREFIX):].decode(errors="replace")
                          if ref.startswith(STATUS_PREFIX) else None)
                if device is not None:
                    commits = _status_commits(q.object_store, tip, held)
                    check = None
                else:
                    try:
                        commits, check = _spec_check(q.object_store, base, tip, ref, root,
                                                     held)
                    except GiterError as exc:
                        doc["ok"] = False
                        doc["problems"].append(f"{refname}: {exc.reason}: {exc}")
                        continue
                for sha in commits:
                    entry = {"commit": sha.decode(), "ref": refname,
                             "subject": _subject(q.object_store[sha]),
                             "signer": _signer(q.object_store, sha, names)}
                    if device is not None:
                        enrolled = devices.get(device)
                        if enrolled is None:
                            result = ("unchecked", "UnknownDevice",
                                      f"{device} is not enrolled in the hub")
                        else:
                            result = _verdict(lambda s=sha, d=enrolled: verify_status_commit(
                                q.object_store, s, d.id, d.key, on_branch,
                                device_groups=d.groups))
                    elif check is None:
                        result = ("unchecked", "NoTrustFile", "no publisher keys to check with")
                    else:
                        result = _verdict(lambda s=sha, c=check: c.verify(s))
                    entry.update(zip(("verdict", "reason", "message"), result, strict=True))
                    doc["ok"] = doc["ok"] and result[0] == "good"
                    doc["commits"].append(entry)
                start = base if base is not None and q.is_ancestor(base, tip) else None
                doc["touched"] += [{"ref": refname, **t} for t in _touched(q, start, tip)]
                if device is None:
                    doc["artifacts"] += [{"ref": refname, **a} for a in carried(
                        q.object_store, q.object_store[start].tree if start else None,
                        q.object_store[tip].tree)]
    return doc


def _spec_check(store: Any, base: bytes | None, tip: bytes, ref: bytes, root: Any,
                held: Callable[[bytes], bool]) -> tuple[list[bytes], Any]:
    """The commits a device at ``base`` would verify for ``tip``, and the check to apply
    to each (None without publisher keys). TrustError when their shape is refused."""
    from giter_agent.trust.spec_rule import UpdateCheck, new_commits

    branch = ref[len(b"refs/heads/"):].decode() if ref.startswith(b"refs/heads/") else None
    if root is None:
        return new_commits(store, base, tip, held=held), None
    check = UpdateCheck(store, base, tip, root, held=held, branch=branch)
    return check.commits, check


def _load_root(allowed_signers: Path | None) -> Any:
    from giter_agent.trust.trust_files import TrustRoot
    from giter_bundle.errors import UsageError

    if allowed_signers is None:
        raise UsageError("no hub repository and no --allowed-signers", reason="NoTrustFile")
    return TrustRoot.load(allowed_signers)


def render(doc: dict[str, Any]) -> str:
    """The report for a terminal."""
    lines = [f"bundle  {doc['file']}  (v{doc['version']}, {doc['bytes']} bytes)"]
    for name, sha in doc["refs"].items():
        lines.append(f"ref     {sha[:12]}  {name}")
    for p in doc["prerequisites"]:
        state = "present" if p["present"] else "MISSING"
        lines.append(f"needs   {p['commit'][:12]}  {p['subject']}  ({state})")
    if not doc["prerequisites"]:
        lines.append("needs   nothing (a full bundle)")
    lines.append("")
    lines.append(f"commits ({len(doc['commits'])} new, parents first)")
    for c in doc["commits"]:
        verdict = "ok" if c["verdict"] == "good" else f"{c['verdict'].upper()} {c['reason']}"
        lines.append(f"  {c['commit'][:12]}  {verdict:<24} {c['signer'] or 'unsigned':<40} "
                     f"{c['subject']}")
        if c["verdict"] != "good":
            lines.append(f"      {c['message']}")
    if doc["touched"]:
        lines.append("")
        lines.append("resources touched")
        for t in doc["touched"]:
            lines.append(f"  {t['change']:<7} {t['path']}  {t['resource']}")
    if doc["artifacts"]:
        from giter_bundle.artifacts import human

        lines.append("")
        lines.append(f"artifacts carried ({human(sum(a['bytes'] for a in doc['artifacts']))}"
                     " when laid down)")
        for a in doc["artifacts"]:
            lines.append(f"  {a['change']:<7} {a['path']}  {a['bytes']} bytes "
                         f"({human(a['bytes'])})")
    for problem in doc["problems"]:
        lines.append(f"problem: {problem}")
    lines.append("")
    lines.append("verdict: every commit verifies" if doc["ok"]
                 else "verdict: REFUSED or unchecked: see above")
    return "\n".join(lines) + "\n"
