"""The fleet over time, read from the hub's status branches (after ``import``).

``fleet_report`` is ``fleet_status``'s table plus, per device, the history of its
reports: walking ``refs/heads/status/<id>`` back along the first parent (a status
commit's parents are the previous report and the spec it observed), newest first, at
most ``history`` reports. For each report: when (the device's clock), which spec
commit and whether it is on the branch, how many resources were Ready, and every
sensor reading it carried (``status.observed``: value, and the report window's
min/max/mean, as ``giter_agent.kinds.sensor`` writes them). Only status commits that were
verified on import are on these branches, so the report shows nothing unverified.

Called by ``giter-bundle report``; ``giter_bundle.report_html`` renders it.
"""

from __future__ import annotations

from typing import Any

from giter_bundle.exchange import Exchange
from giter_bundle.fleet_status import fleet_status, ready_condition, reported_documents

DEFAULT_HISTORY = 500


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _sensor_point(status: dict[str, Any], when: int) -> dict[str, Any] | None:
    observed = status.get("observed")
    if not isinstance(observed, dict) or _number(observed.get("value")) is None:
        return None
    window = observed.get("window")
    if not isinstance(window, dict):
        window = {}
    point: dict[str, Any] = {"t": when, "value": _number(observed["value"])}
    for key in ("min", "max", "mean"):
        point[key] = _number(window.get(key))
    return point


def device_history(exchange: Exchange, device: str, groups: tuple[str, ...], tip: bytes,
                   on_branch: set[bytes], limit: int) -> dict[str, Any]:
    """The device's last ``limit`` reports (oldest first) and its sensor series."""
    reports: list[dict[str, Any]] = []
    sensors: dict[str, dict[str, Any]] = {}
    sha: bytes | None = tip
    while sha is not None and len(reports) < limit:
        commit = exchange.commit(sha)
        spec = commit.parents[-1] if commit.parents else None
        found, _problems = reported_documents(exchange, commit.tree, device, groups)
        not_ready = []
        for _path, key, status in found:
            cond = ready_condition(status)
            if cond is None or cond.get("status") != "True":
                not_ready.append(f"{key}: {(cond or {}).get('reason', 'NoReadyCondition')}")
            if key.startswith("Sensor/"):
                point = _sensor_point(status, commit.commit_time)
                if point is not None:
                    series = sensors.setdefault(key, {"unit": "", "points": []})
                    unit = status["observed"].get("unit")
                    series["unit"] = unit if isinstance(unit, str) else series["unit"]
                    series["points"].append(point)
        reports.append({"commit": sha.decode(), "t": commit.commit_time,
                        "spec": spec.decode() if spec else None,
                        "onBranch": spec in on_branch, "total": len(found),
                        "ready": len(found) - len(not_ready), "notReady": not_ready})
        sha = commit.parents[0] if len(commit.parents) == 2 else None
    reports.reverse()
    for series in sensors.values():
        series["points"].reverse()
    return {"reports": reports, "sensors": dict(sorted(sensors.items())),
            "truncated": sha is not None}


def fleet_report(exchange: Exchange, history: int = DEFAULT_HISTORY) -> dict[str, Any]:
    """``fleet_status`` with a ``history`` entry per device that has reported."""
    doc = fleet_status(exchange)
    on_branch = exchange.ancestors(exchange.require_tip())
    for row in doc["devices"]:
        if row["statusCommit"] is None:
            row["history"] = {"reports": [], "sensors": {}, "truncated": False}
            continue
        row["history"] = device_history(exchange, row["device"], tuple(row["groups"]),
                                        row["statusCommit"].encode(), on_branch, history)
    return doc
