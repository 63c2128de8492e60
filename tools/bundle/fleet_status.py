"""The fleet at a glance, read from the hub's status branches (after ``import``).

Per device: the spec commit its newest status commit observed (the commit's last
parent) and how many commits of the spec branch it is behind; its resources, Ready or
not, from the ``status`` the device wrote into each resource file; when it reported
(the status commit's date, which is the device's own clock); and from its summary
``.giter/status/<id>.yaml``: a stale (expired) spec, bundles it refused, resource files
it found invalid. Only imported status is read, so every fact here was verified
against the device's enrolled key on the way in.

Called by ``giter-bundle status``.
"""

from __future__ import annotations

from typing import Any

from giter_agent.core.errors import GiterError
from giter_agent.core.times import rfc3339
from giter_bundle.exchange import Exchange


def reported_documents(exchange: Exchange, tree: bytes, device: str, groups: tuple[str, ...]
                       ) -> tuple[list[tuple[str, str, dict[str, Any]]], list[str]]:
    """([(path, "Kind/name", status)], problems): what the device reported in ``tree``.

    The resource files of the device's own folder, ``fleet/`` and its groups' folders that
    carry a ``status`` mapping; the report (``giter-bundle report``) reads sensors from these.
    """
    from giter_agent.core.layout import FLEET_FOLDER
    from giter_agent.history.tree import iter_files
    from giter_agent.spec.resources import load_yaml, prefixes

    found: list[tuple[str, str, dict[str, Any]]] = []
    problems: list[str] = []
    own, *group_prefixes = prefixes(device, groups)
    # fleet/ files carry status only where the device's selector matched (spec.targeting).
    for prefix in (own, FLEET_FOLDER, *group_prefixes):
        try:
            files = list(iter_files(exchange.history.object_store, tree, prefix, 2 * 2**20))
        except GiterError as exc:
            problems.append(str(exc))
            continue
        for path, data in files:
            try:
                doc = load_yaml(data)
            except GiterError:
                continue  # not a resource the device could have reported on
            status = doc.get("status") if isinstance(doc, dict) else None
            if not isinstance(status, dict):
                continue
            meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
            found.append((path, f"{doc.get('kind')}/{meta.get('name')}", status))
    return found, problems


def ready_condition(status: dict[str, Any]) -> dict[str, Any] | None:
    """The ``Ready`` condition of one resource's status, if it has one."""
    return next((c for c in status.get("conditions") or []
                 if isinstance(c, dict) and c.get("type") == "Ready"), None)


def _resources(exchange: Exchange, tree: bytes, device: str,
               groups: tuple[str, ...]) -> tuple[list[str], list[dict[str, str]], list[str]]:
    """(Ready keys, not-Ready entries, problems) from the status tree's resource files."""
    ready: list[str] = []
    not_ready: list[dict[str, str]] = []
    found, problems = reported_documents(exchange, tree, device, groups)
    for path, key, status in found:
        cond = ready_condition(status)
        if cond is not None and cond.get("status") == "True":
            ready.append(key)
        else:
            cond = cond or {}
            not_ready.append({"resource": key, "path": path,
                              "reason": str(cond.get("reason", "NoReadyCondition")),
                              "message": str(cond.get("message", ""))})
    return ready, not_ready, problems


def _summary(exchange: Exchange, tree: bytes, device: str) -> dict[str, Any]:
    from giter_agent.core.layout import summary_path
    from giter_agent.history.tree import read_file
    from giter_agent.spec.resources import load_yaml

    try:
        data = read_file(exchange.history.object_store, tree, summary_path(device))
        doc = load_yaml(data) if data is not None else None
    except GiterError:
        return {}
    status = doc.get("status") if isinstance(doc, dict) else None
    return status if isinstance(status, dict) else {}


def _device_row(exchange: Exchange, device: str, groups: tuple[str, ...], enrolled: bool,
                status_tip: bytes | None, on_branch: set[bytes],
                behind: dict[bytes, int]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "device": device, "enrolled": enrolled, "groups": list(groups),
        "statusCommit": None, "observedSpec": None, "onBranch": None, "behind": None,
        "reportedAt": None, "ready": [], "notReady": [], "stale": None, "refused": [],
        "invalid": [], "problems": [], "agentVersion": None,
    }
    if status_tip is None:
        return row
    commit = exchange.commit(status_tip)
    spec = commit.parents[-1]
    row.update(statusCommit=status_tip.decode(), observedSpec=spec.decode(),
               onBranch=spec in on_branch, reportedAt=rfc3339(commit.commit_time))
    if spec in on_branch:
        # Every ancestor of a commit on the branch is on it: the lag is a difference of
        # counts, walked once per distinct spec commit (a fleet observes a handful).
        if spec not in behind:
            behind[spec] = len(on_branch) - len(exchange.ancestors(spec))
        row["behind"] = behind[spec]
    ready, not_ready, problems = _resources(exchange, commit.tree, device, groups)
    row.update(ready=ready, notReady=not_ready, problems=problems)
    summary = _summary(exchange, commit.tree, device)
    for cond in summary.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "Stale" and cond.get("status") == "True":
            row["stale"] = str(cond.get("message", "the spec has expired"))
    if isinstance(summary.get("agentVersion"), str):
        row["agentVersion"] = summary["agentVersion"]  # the giter-agent that wrote it
    row["refused"] = [{"file": str(b.get("file")), "reason": str(b.get("reason")),
                       "message": str(b.get("message"))}
                      for b in summary.get("refused") or [] if isinstance(b, dict)]
    row["invalid"] = [{"path": str(i.get("path")), "reason": str(i.get("reason"))}
                      for i in summary.get("invalid") or [] if isinstance(i, dict)]
    return row


def fleet_status(exchange: Exchange) -> dict[str, Any]:
    """The whole table as plain data (what ``status --json`` prints)."""
    tip = exchange.require_tip()
    devices = exchange.devices(tip)
    tips = exchange.status_tips()
    on_branch = exchange.ancestors(tip)
    rows = []
    behind: dict[bytes, int] = {}
    for device in sorted(set(devices) | set(tips)):
        enrolled = devices.get(device)
        rows.append(_device_row(exchange, device, enrolled.groups if enrolled else (),
                                enrolled is not None, tips.get(device), on_branch, behind))
    return {"branch": exchange.branch, "tip": tip.decode(),
            "tipTime": rfc3339(exchange.commit(tip).commit_time), "devices": rows}


def notes(row: dict[str, Any]) -> str:
    notes = []
    if not row["enrolled"]:
        notes.append("NOT ENROLLED")
    if row["statusCommit"] is None:
        notes.append("never reported")
    elif not row["onBranch"]:
        notes.append(f"observed {row['observedSpec'][:12]}, not on the branch")
    if row["stale"]:
        notes.append(f"STALE: {row['stale']}")
    notes += [f"refused {r['file']}: {r['reason']}" for r in row["refused"]]
    notes += [f"not ready {r['resource']}: {r['reason']}" for r in row["notReady"]]
    notes += [f"invalid {i['path']}: {i['reason']}" for i in row["invalid"]]
    notes += row["problems"]
    return "; ".join(notes)


def render(doc: dict[str, Any]) -> str:
    """The table for a terminal."""
    lines = [f"spec branch {doc['branch']} at {doc['tip'][:12]} ({doc['tipTime']})", ""]
    header = ("DEVICE", "GROUPS", "OBSERVED", "BEHIND", "READY", "REPORTED", "NOTES")
    table = [header]
    for row in doc["devices"]:
        reported = row["statusCommit"] is not None
        total = len(row["ready"]) + len(row["notReady"])
        table.append((
            row["device"], ",".join(row["groups"]) or "-",
            row["observedSpec"][:12] if reported else "-",
            str(row["behind"]) if row["behind"] is not None else "-",
            f"{len(row['ready'])}/{total}" if reported else "-",
            row["reportedAt"] or "never",
            notes(row) or "-",
        ))
    if len(table) == 1:
        return "\n".join([*lines, "no devices enrolled (giter-bundle enroll)"]) + "\n"
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    for r in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    lines.append("")
    lines.append("REPORTED is the device's own clock; BEHIND counts spec commits it has not "
                 "observed.")
    return "\n".join(lines) + "\n"
