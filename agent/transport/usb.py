"""The USB stick transport: ``giter/inbox/`` in, ``giter/outbox/<device-id>.*`` out.

One stick serves a whole fleet: the inbox holds the publisher's bundles for every
device, and each device writes its own status bundle and a receipt a person can read,
named by device id. Both are written atomically (temp file, fsync, rename), so a stick
pulled mid-write holds either the previous pair or the new one, never half a file.
"""

from __future__ import annotations

from pathlib import Path

from giter_agent.core.durable import atomic_write, mkdir_durable
from giter_agent.core.errors import GiterError, StickError, StorageError
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
    """Write ``<device-id>.bundle`` (status) and ``<device-id>.txt`` (receipt) to ``outbox``.

    ``hub_has``: the status commit the hub already holds (see ``read_hub_status``).
    A stick that refuses the write (full, failing) is a ``StorageError``; each file
    there is then the previous one or none, never half of one.
    """
    from giter_agent.state.recovery import sweep_outbox

    device = agent.config.device_id
    try:
        mkdir_durable(outbox)
        sweep_outbox(outbox, device)  # temp files of a write cut short last time
        agent.write_status_bundle(outbox / f"{device}.bundle", hub_has=hub_has)
        atomic_write(outbox / f"{device}.txt", receipt(agent, report).encode("utf-8"))
    except GiterError:
        raise
    except OSError as exc:
        applied = report.applied or agent.state_store.load().applied
        raise StorageError.of(exc, f"the outbox {outbox}",
                              f"spec {applied[:12]} is applied ({report.outcome}); the "
                              "status on the stick is the previous one" if applied else
                              "the status on the stick is the previous one") from None


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
        f"result:         {report.outcome.upper()} - {report.message}",
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
    return "\n".join(lines) + "\n"
