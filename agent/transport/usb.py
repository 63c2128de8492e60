"""The USB stick transport: ``giter/inbox/`` in, ``giter/outbox/<device-id>.*`` out.

One stick serves a whole fleet: the inbox holds the publisher's bundles for every
device, and each device writes its own status bundle and a receipt a person can read,
named by device id. Both are written atomically (temp file, fsync, rename), so a stick
pulled mid-write holds either the previous pair or the new one, never half a file.
"""

from __future__ import annotations

from pathlib import Path

from giter_agent.core.durable import atomic_write
from giter_agent.core.errors import StickError
from giter_agent.core.layout import INBOX, OUTBOX
from giter_agent.status.report import SyncReport
from giter_agent.status.rows import resource_rows
from giter_agent.transport.device import SyncingDevice
from giter_agent.transport.hub_status import read_hub_status


def inbox_bundles(stick: Path) -> list[Path]:
    inbox = stick / INBOX
    if not inbox.is_dir():
        raise StickError(f"{stick}: no {INBOX}/ folder: this is not a giter stick "
                         "(the publisher's `giter-bundle create` makes one)")
    # Dotfiles are temp files of an interrupted copy; never import half a bundle.
    return sorted(p for p in inbox.iterdir()
                  if p.is_file() and p.suffix == ".bundle" and not p.name.startswith("."))


def sync_stick(agent: SyncingDevice, stick: Path) -> SyncReport:
    """Import the stick's inbox, then write this device's status bundle and receipt."""
    report = agent.sync(inbox_bundles(stick), source=f"usb:{stick}")
    hub_has = read_hub_status(stick / INBOX).get(agent.config.device_id)
    write_outbox(agent, stick / OUTBOX, report, hub_has=hub_has)
    return report


def write_outbox(agent: SyncingDevice, outbox: Path, report: SyncReport,
                 hub_has: str | None = None) -> None:
    """Write ``<device-id>.bundle`` (status) and ``<device-id>.txt`` (receipt) to ``outbox``,
    and ``<device-id>.pub`` (its key, for ``giter-bundle enroll``) while the accepted spec
    does not enrol this device.

    ``hub_has``: the status commit the hub already holds (see ``read_hub_status``).
    """
    outbox.mkdir(parents=True, exist_ok=True)
    device = agent.config.device_id
    agent.write_status_bundle(outbox / f"{device}.bundle", hub_has=hub_has)
    # A device its spec does not enrol hands its key over on the stick:
    # ``giter-bundle enroll <id> giter/outbox/<id>.pub`` reads the file as it is.
    pub = outbox / f"{device}.pub"
    if not agent.enrolled():
        atomic_write(pub, (agent.public_key_line() + "\n").encode("utf-8"))
    else:
        pub.unlink(missing_ok=True)
    atomic_write(outbox / f"{device}.txt", receipt(agent, report).encode("utf-8"))


def receipt(agent: SyncingDevice, report: SyncReport) -> str:
    """A short plain-text account of the sync, for the technician and the publisher."""
    from giter_agent.device.status_led import LEGEND, legend
    from giter_agent.reconcile.engine import rfc3339
    from giter_agent.state.health import health

    cfg = agent.config
    words = health(agent.state_store.load())
    lines = [
        "giter-agent receipt",
        f"device:         {cfg.device_id}",
        f"time:           {rfc3339(agent.clock())} (device clock)",
        f"result:         {result_line(report)}",
        f"spec applied:   {report.applied or 'none yet'}",
        *([f"STALE SPEC:     {report.stale}"] if report.stale else []),
        f"status commit:  {report.status_commit or 'none yet'}",
        *([f"network:        {str(report.network.get('state', 'never contacted')).upper()}"
           f" since {report.network.get('since', '?')} - {report.network.get('message', '')}"]
          if report.network else []),
        f"status bundle:  {cfg.device_id}.bundle (carry it back to the publisher)"
        if report.status_commit else "status bundle:  none",
        f"state:          {words.line()}",
        f"status LED:     {LEGEND[words.state]}",
        "",
        "bundles on this stick:",
    ]
    lines += [f"  {v.file:<28} {v.verdict:<11} {v.reason}: {v.message}"
              for v in report.bundles] or ["  (none)"]
    lines += ["", "resources:"]
    lines += resource_rows(report.resources)
    if not report.resources:
        lines.append("  (none)")
    lines += ["", "status LED codes (while giter-agent runs as a service):"]
    lines += [f"  {row}" for row in legend()]
    lines += ["", f"NEXT: {next_step(report)}"]
    return "\n".join(lines) + "\n"


def result_line(report: SyncReport) -> str:
    """What the sync did, in one line. A stick that carried a good bundle and a bad one
    says both: the good one was applied, and which one was refused and why."""
    applied = [v for v in report.bundles if v.verdict == "applied"]
    refused = [v for v in report.bundles if v.verdict in ("refused", "unusable")]
    if applied and refused:
        spec = (report.accepted or "")[:12]
        return (f"APPLIED spec {spec} from {', '.join(v.file for v in applied)}; "
                + "; ".join(f"{v.verdict.upper()} {v.file} ({v.reason})" for v in refused))
    return f"{report.outcome.upper()} - {report.message}"


def next_step(report: SyncReport) -> str:
    """One plain sentence: what the person holding the stick does now."""
    bad = [v for v in report.bundles if v.verdict in ("refused", "unusable")]
    if bad or report.outcome in ("refused", "unusable", "invalid-spec", "error"):
        code = f"{bad[0].reason} ({bad[0].file})" if bad else report.reason
        return f"call the operator with this code: {code}, and carry the stick back"
    if report.not_ready:
        return (f"call the operator with this code: NotReady ({', '.join(report.not_ready)}),"
                " and carry the stick back")
    if report.stale:
        return "the spec has expired: carry the stick back and ask the operator for a newer one"
    if report.outcome == "no-bundles":
        return "nothing to do here: the stick carried no bundle; carry it back to the operator"
    if report.status_commit:
        return "nothing more to do here: carry the stick back to the operator"
    return "nothing to do"
