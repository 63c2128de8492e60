"""The USB stick transport: ``giter/inbox/`` in, ``giter/outbox/<device-id>.*`` out.

One stick serves a whole fleet: the inbox holds the publisher's bundles for every
device, and each device writes its own status bundle and a receipt a person can read,
named by device id. Both are written atomically (temp file, fsync, rename), so a stick
pulled mid-write holds either the previous pair or the new one, never half a file.

A stick is hostile input. Its root is pinned when a sync starts (``Stick``: the
filesystem it is on, ``st_dev``), and every later step goes through folders opened one
component at a time without following links and checked to be on that filesystem: a
``giter/outbox`` that is a symlink, or a stick pulled mid-sync (its mount point left
behind on the board's own filesystem), is refused with a typed error and nothing is
written anywhere else; the stick root is never created. Files read from it must be
regular files under a size cap (no FIFO, device or link), and names are shown escaped.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from giter_agent.core.durable import UnsafePath, atomic_write, mkdir_durable, open_dir_under, shown
from giter_agent.core.errors import GiterError, StickError, StickGone, StorageError, UnsafeStick
from giter_agent.core.layout import INBOX, OUTBOX
from giter_agent.core.log import get_logger
from giter_agent.status.report import SyncReport
from giter_agent.status.rows import resource_rows
from giter_agent.transport.device import SyncingDevice
from giter_agent.transport.hub_status import read_hub_status

log = get_logger("giter.usb")


class Stick:
    """A mounted stick, pinned to the filesystem its root was on when the sync began.

    ``folder()`` opens ``giter/inbox`` or ``giter/outbox`` relative to the root, one
    component at a time, refusing links and anything on another filesystem; a root
    that has gone, or is now on another filesystem, is ``StickGone``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            st = os.stat(self.root)  # the mount point itself may be reached by a link
        except OSError as exc:
            raise StickError(f"{shown(str(root))}: {exc.strerror or exc}") from None
        if not os.path.isdir(self.root):
            raise StickError(f"{shown(str(root))} is not a folder")
        self.dev = st.st_dev

    @property
    def display(self) -> str:
        return shown(str(self.root))

    @contextlib.contextmanager
    def folder(self, rel: Path, *, create: bool = False) -> Iterator[int]:
        """An open descriptor of the folder ``rel`` on the stick (``create``: make its
        last component if missing; never the stick root or anything above ``rel``)."""
        try:
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            raise self._gone() from None
        try:
            if os.fstat(root_fd).st_dev != self.dev:
                raise self._gone()
            *parents, last = rel.parts
            fd = open_dir_under(root_fd, parents, dev=self.dev)
            try:
                last_fd = open_dir_under(fd, [last], dev=self.dev, create=create)
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise self._gone() if self._is_gone() else StickError(
                f"{self.display}: no {rel}/ folder: this is not a giter stick (the "
                "publisher's `giter-bundle create` makes one)") from None
        except UnsafePath as exc:
            if exc.errno == errno.EXDEV and self._is_gone():
                raise self._gone() from None
            raise UnsafeStick(f"{self.display}/{rel}: {exc.strerror}: refused") from None
        finally:
            os.close(root_fd)
        try:
            yield last_fd
        finally:
            os.close(last_fd)

    def _is_gone(self) -> bool:
        try:
            return os.stat(self.root).st_dev != self.dev
        except OSError:
            return True

    def _gone(self) -> StickGone:
        return StickGone(f"{self.display}: the stick was removed during the sync; "
                         "nothing was written to it (sync it again)")

    def inbox_bundles(self) -> list[Path]:
        """The bundles in ``giter/inbox``: regular files named ``*.bundle`` (no links)."""
        with self.folder(INBOX) as fd:
            names = []
            with os.scandir(fd) as entries:
                for entry in entries:
                    # Dotfiles are temp files of an interrupted copy; never import half a
                    # bundle. Links (even into the stick) and FIFOs are never followed.
                    if (entry.name.endswith(".bundle") and not entry.name.startswith(".")
                            and entry.is_file(follow_symlinks=False)):
                        names.append(entry.name)
                    elif entry.name.endswith(".bundle") and not entry.name.startswith("."):
                        log.warning("%s: %s is not a regular file: skipped", self.display,
                                    shown(entry.name))
        return [self.root / INBOX / name for name in sorted(names)]

    def hub_status(self) -> dict[str, str]:
        """``read_hub_status`` of this stick's inbox, read through the pinned folder."""
        try:
            with self.folder(INBOX) as fd:
                return read_hub_status(self.root / INBOX, dir_fd=fd, dev=self.dev)
        except GiterError:
            return {}


def inbox_bundles(stick: Path) -> list[Path]:
    return Stick(stick).inbox_bundles()


def sync_stick(agent: SyncingDevice, stick: Path) -> SyncReport:
    """Import the stick's inbox, then write this device's status bundle and receipt.

    ``StickGone`` when the stick went away (or its outbox is unsafe) before both were
    written: the sync happened on the device, but the stick does not say so.
    """
    pinned = Stick(stick)
    report = agent.sync(pinned.inbox_bundles(), source=f"usb:{pinned.display}")
    hub_has = pinned.hub_status().get(agent.config.device_id)
    with pinned.folder(OUTBOX, create=True) as fd:
        write_outbox_at(agent, fd, report, hub_has=hub_has, where=f"{pinned.display}/{OUTBOX}")
    return report


def write_outbox(agent: SyncingDevice, outbox: Path, report: SyncReport,
                 hub_has: str | None = None) -> None:
    """Write ``<device-id>.bundle`` (status) and ``<device-id>.txt`` (receipt) to ``outbox``,
    and ``<device-id>.pub`` (its key, for ``giter-bundle enroll``) while the accepted spec
    does not enrol this device. ``outbox`` is a local folder here (``sync --outbox``, the
    serial session), made if missing; a stick's goes through ``write_outbox_at``.

    ``hub_has``: the status commit the hub already holds (see ``read_hub_status``).
    A stick that refuses the write (full, failing) is a ``StorageError``; each file
    there is then the previous one or none, never half of one.
    """
    mkdir_durable(outbox)
    fd = os.open(outbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        write_outbox_at(agent, fd, report, hub_has=hub_has, where=str(outbox))
    finally:
        os.close(fd)


def write_outbox_at(agent: SyncingDevice, dir_fd: int, report: SyncReport,
                    hub_has: str | None = None, where: str = "") -> None:
    """``write_outbox`` into an open folder: every write relative to ``dir_fd``.

    A disk that refuses a write (full, I/O error) is a ``StorageError``: the stick
    keeps the previous status and receipt whole, and temp files of a write cut short
    are swept at the next visit.
    """
    from giter_agent.state.recovery import sweep_outbox_at

    device = agent.config.device_id
    try:
        sweep_outbox_at(dir_fd, device)  # temp files of a write cut short last time
        agent.write_status_bundle(Path(f"{device}.bundle"), hub_has=hub_has, dir_fd=dir_fd)
        # A device its spec does not enrol hands its key over on the stick:
        # ``giter-bundle enroll <id> giter/outbox/<id>.pub`` reads the file as it is.
        if not agent.enrolled():
            atomic_write(Path(f"{device}.pub"),
                         (agent.public_key_line() + "\n").encode("utf-8"), dir_fd=dir_fd)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{device}.pub", dir_fd=dir_fd)
        atomic_write(Path(f"{device}.txt"), receipt(agent, report).encode("utf-8"),
                     dir_fd=dir_fd)
    except GiterError:
        raise
    except OSError as exc:
        applied = report.applied or agent.state_store.load().applied
        raise StorageError.of(exc, f"the outbox {shown(where)}".rstrip(),
                              f"spec {applied[:12]} is applied ({report.outcome}); the "
                              "status on the stick is the previous one" if applied else
                              "the status on the stick is the previous one") from None


def receipt(agent: SyncingDevice, report: SyncReport) -> str:
    """A short plain-text account of the sync, for the technician and the publisher."""
    from giter_agent.core.times import rfc3339
    from giter_agent.device.status_led import LEGEND, legend
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
        *([f"network:        {(report.network.state or 'never contacted').upper()}"
           f" since {report.network.since or '?'} - {report.network.message or ''}"]
          if report.network else []),
        f"status bundle:  {cfg.device_id}.bundle (carry it back to the publisher)"
        if report.status_commit else "status bundle:  none",
        f"state:          {words.line()}",
        f"status LED:     {LEGEND[words.state]}",
        "",
        "bundles on this stick:",
    ]
    # Names and messages come from the stick: escaped, so none can start a line of its own.
    lines += [f"  {shown(v.file):<28} {v.verdict:<11} {v.reason}: {shown(v.message)}"
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
    return f"{report.outcome.upper()} - {shown(report.message)}"


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
