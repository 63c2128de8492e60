"""The agent's durable state: accepted tip, applied spec, last sync, resource status.

One msgpack file in the state directory, replaced atomically (``core.durable``), so a
power cut at any instant leaves either the previous state or the next one. In memory
the per-resource records and the hub's are typed (``state.records``); on disk they are
the plain maps they have always been, converted here and nowhere else. The
accepted tip is what rollback protection compares against, so it must never be lost
or go backwards. ``StateLock`` makes the state directory single-writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from giter_agent.core.durable import atomic_write
from giter_agent.core.errors import GiterError, LockedError
from giter_agent.core.named_tuple import NamedTuple
from giter_agent.state.records import NetworkRecord, ResourceRecord

FORMAT = 1


class State:
    """Everything the agent must remember between runs."""

    __slots__ = ("accepted", "applied", "conditions", "expires", "last_sync", "network",
                 "resources", "status_of", "status_tip")

    def __init__(self, accepted: str | None = None, applied: str | None = None,
                 status_tip: str | None = None, expires: str | None = None,
                 last_sync: dict[str, Any] | None = None,
                 resources: dict[str, ResourceRecord] | None = None,
                 conditions: list[dict[str, Any]] | None = None,
                 network: NetworkRecord | None = None,
                 status_of: tuple[str, str] | None = None) -> None:
        self.accepted = accepted  # newest verified spec commit (rollback floor)
        self.applied = applied  # spec commit whose resources are applied
        self.status_tip = status_tip  # newest status commit on status/<device>
        self.expires = expires  # RFC 3339 from the accepted commit's Expires: trailer
        self.last_sync: dict[str, Any] = {} if last_sync is None else last_sync
        self.resources: dict[str, ResourceRecord] = {} if resources is None else resources
        # The device's own conditions.
        self.conditions: list[dict[str, Any]] = [] if conditions is None else conditions
        # The hub ([network]): online/offline since when and why, consecutive failures
        # (backoff), the hub's status/<device> (what it acknowledged). None: never
        # tried. See docs/network.md.
        self.network = network
        # What the status tip was made from: the tip and a digest of its documents'
        # inputs (``sync.applier``), so a new process that would make the same documents
        # knows the tip already holds them without serialising any. None: not known.
        self.status_of = status_of

    def to_plain(self) -> dict[str, Any]:
        """The msgpack map of the state file (``format`` aside): the same keys as ever,
        and ``status_of`` once known (a state without it is written as it always was)."""
        plain: dict[str, Any] = {
            "accepted": self.accepted, "applied": self.applied,
            "status_tip": self.status_tip, "expires": self.expires,
            "last_sync": self.last_sync,
            "resources": {k: r.to_plain() for k, r in self.resources.items()},
            "conditions": self.conditions,
            "network": self.network.to_plain() if self.network else {}}
        if self.status_of:
            plain["status_of"] = list(self.status_of)
        return plain

    def copy(self) -> State:
        """A copy whose maps and lists are its own; the records themselves are shared
        (they are values: ``state.records``)."""
        return State(accepted=self.accepted, applied=self.applied,
                     status_tip=self.status_tip, expires=self.expires,
                     last_sync=dict(self.last_sync), resources=dict(self.resources),
                     conditions=list(self.conditions), network=self.network,
                     status_of=self.status_of)

    def same_as(self, other: State) -> bool:
        """Does ``other`` hold what this holds? Cheap: a record that is the same object
        is the same (records are values), so only the records a pass made anew are
        compared field by field; a pass that kept the others costs what it visited."""
        if (self.accepted, self.applied, self.status_tip, self.expires, self.network) != (
                other.accepted, other.applied, other.status_tip, other.expires,
                other.network) or self.status_of != other.status_of:
            return False
        if self.last_sync != other.last_sync or self.conditions != other.conditions:
            return False
        # A dict comparison takes a value that is the same object as equal without
        # calling its __eq__, and runs its loop in C.
        return self.resources == other.resources

    @classmethod
    def from_plain(cls, raw: dict[str, Any]) -> State:
        """The state in a state file's map; keys this version does not know are ignored."""
        return cls(accepted=raw.get("accepted"), applied=raw.get("applied"),
                   status_tip=raw.get("status_tip"), expires=raw.get("expires"),
                   last_sync=dict(raw.get("last_sync") or {}),
                   resources={k: ResourceRecord.from_plain(r)
                              for k, r in (raw.get("resources") or {}).items()},
                   conditions=list(raw.get("conditions") or []),
                   network=NetworkRecord.from_plain(raw.get("network") or {}),
                   status_of=_status_of(raw.get("status_of")))


def _status_of(raw: Any) -> tuple[str, str] | None:
    """A state file's ``status_of``; anything but two strings (an older file has none)
    is not known."""
    if isinstance(raw, list) and len(raw) == 2 and all(isinstance(x, str) for x in raw):
        return raw[0], raw[1]
    return None


Identity = tuple[int, int, int, int, int]


def file_identity(st: os.stat_result) -> Identity:
    """What tells one write of a file replaced atomically from another: a new write is
    a new inode, and its times and size are taken with it."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _Known(NamedTuple):
    """The state file as this process last read or wrote it."""

    identity: Identity
    state: State  # a private copy: never handed out, only copied
    data: bytes  # the file's bytes


class StateStore:
    """Load and save ``State`` at ``<state_dir>/state.msgpack``.

    The store remembers the state file as it last read or wrote it, with the file's
    identity (``file_identity``). While the file keeps that identity, ``load`` hands out
    a copy of what it remembers without reading or unpacking anything, and ``save`` of a
    state that kept every record (``State.same_as``) writes nothing and packs nothing:
    the daemon's passes that change nothing cost what changed, not the size of the state.
    A write by another process (a `giter-agent sync` while the daemon runs) is a new
    identity, so the next ``load`` reads the file again.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "state.msgpack"
        self._known: _Known | None = None
        self.unpacked = 0  # times the file was read and unpacked (tests count it)
        self.packed = 0  # times a state was packed to be compared or written

    def _identity(self) -> Identity | None:
        try:
            return file_identity(os.stat(self.path))
        except FileNotFoundError:
            return None

    def load(self) -> State:
        known = self._known
        if known is not None and self._identity() == known.identity:
            return known.state.copy()
        try:
            with open(self.path, "rb") as f:
                identity = file_identity(os.fstat(f.fileno()))
                data = f.read()
        except FileNotFoundError:
            self._known = None
            return State()
        state = self._parse(data)
        self.unpacked += 1
        self._known = _Known(identity, state.copy(), data)
        return state

    def _parse(self, data: bytes) -> State:
        import msgpack

        try:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as exc:
            raise GiterError(f"{self.path}: state file is unreadable ({exc}); "
                             "restore it or remove it to start over",
                             reason="StateCorrupt") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise GiterError(f"{self.path}: unknown state format", reason="StateCorrupt")
        try:
            return State.from_plain(raw)
        except (TypeError, ValueError, AttributeError) as exc:
            raise GiterError(f"{self.path}: state file is unreadable ({exc}); "
                             "restore it or remove it to start over",
                             reason="StateCorrupt") from None

    def save(self, state: State) -> None:
        """Write ``state`` unless the file already holds exactly that.

        The daemon saves after every timer pass; most change nothing, and an SD card
        should not be rewritten (and fsynced) for them.
        """
        import msgpack

        known = self._known
        identity = self._identity()
        if known is not None and identity == known.identity and known.state.same_as(state):
            # Remember these very records: the next pass is likely to keep them.
            self._known = _Known(identity, state.copy(), known.data)
            return
        data = msgpack.packb({"format": FORMAT, **state.to_plain()}, use_bin_type=True)
        self.packed += 1
        if known is not None and identity == known.identity:
            same = known.data == data
        else:
            try:
                same = self.path.read_bytes() == data
            except OSError:
                same = False
        if not same:
            atomic_write(self.path, data, mode=0o600)
            identity = self._identity()
        # Remembered only once durable (or found already there): a failed write leaves
        # nothing remembered that the file does not hold.
        self._known = _Known(identity, state.copy(), data) if identity is not None else None


@contextlib.contextmanager
def state_lock(state_dir: Path, wait_s: float = 0.0, *,
               owner: int | None = None) -> Iterator[bool]:
    """Hold the state directory's writer lock, or raise ``LockedError``.

    ``wait_s`` 0 (the passes): refuse at once if another process holds it. A short wait
    suits a follow-up write (the status bundle after a sync released the lock).

    Yields whether another process held the lock last (its pid is in the lock file):
    that process may have died mid-write, and the new holder must recover the state
    directory (``giter_agent.state.recovery``) before anything reads it. ``owner``: the
    pid to write and compare instead of this process's own (the daemon's pass worker
    holds the lock for the daemon, whose pid a manual sync then names).
    """
    path = Path(state_dir) / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise LockedError(
                    f"another giter-agent (pid {holder}) is using {state_dir}; "
                    "wait for it to finish, or stop the service first") from None
        mine = f"{owner or os.getpid()}\n".encode()
        took_over = os.pread(fd, 32, 0) != mine
        if took_over:  # the daemon's every pass would write it again
            os.ftruncate(fd, 0)
            os.pwrite(fd, mine, 0)
        yield took_over
    finally:
        os.close(fd)
