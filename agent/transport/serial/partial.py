"""The receiving end's disk: files half received over the serial line, resumable.

Each file is ``<sha>.part`` (chunks written at their offsets) beside ``<sha>.state``
(msgpack: chunk size, the cumulative point and the chunks held past it), checkpointed
data first, then state. A pulled cable costs nothing already received: the next offer
of the same file resumes. Only when the whole file's SHA-256 matches does it become
``<sha>.verified``, which is all anything else may read. One transfer at a time: an
offer of another file throws older partial files away.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from giter_agent.core.durable import atomic_write, fsync_dir
from giter_agent.core.errors import TransferError
from giter_agent.transport.serial.link import ProtocolError
from giter_agent.transport.serial.offer import MAX_CHUNK, Offer, chunks_in, hash_file

SACK_BITS = 64  # chunks past the cumulative point a receiver can report
_STATE_FORMAT = 1
_HEX64 = re.compile(r"[0-9a-f]{64}")


class Partial:
    """A file being received: ``<sha>.part`` (data at offsets) + ``<sha>.state`` (msgpack)."""

    def __init__(self, store: PartialStore, offer: Offer, chunk: int, next_seq: int,
                 extra: set[int]) -> None:
        self.store = store
        self.offer = offer
        self.chunk = chunk
        self.total = chunks_in(offer.size, chunk)
        self.next = next_seq  # every chunk below this is on disk
        self.extra = extra  # chunks at or past next that are on disk too
        self._fd: int | None = None
        self._dirty = False

    @property
    def complete(self) -> bool:
        return self.next >= self.total

    @property
    def held_bytes(self) -> int:
        held = min(self.next * self.chunk, self.offer.size)
        return held + sum(self._length(s) for s in self.extra)

    def _length(self, seq: int) -> int:
        return min(self.chunk, self.offer.size - seq * self.chunk)

    def has(self, seq: int) -> bool:
        return seq < self.next or seq in self.extra

    def sack(self) -> int:
        bits = 0
        for seq in self.extra:
            i = seq - self.next - 1
            if 0 <= i < SACK_BITS:
                bits |= 1 << i
        return bits

    def write(self, seq: int, payload: bytes) -> bool:
        """Store one chunk; False if it is out of range or already held (then ignored)."""
        if seq >= self.total or seq >= self.next + 1 + SACK_BITS or self.has(seq):
            return False
        if len(payload) != self._length(seq):
            raise ProtocolError(f"chunk {seq} is {len(payload)} bytes, "
                                f"expected {self._length(seq)}")
        if self._fd is None:
            self._fd = os.open(self.store.part(self.offer), os.O_WRONLY | os.O_CREAT, 0o600)
        os.pwrite(self._fd, payload, seq * self.chunk)
        self.extra.add(seq)
        while self.next in self.extra:
            self.extra.discard(self.next)
            self.next += 1
        self._dirty = True
        return True

    def checkpoint(self) -> None:
        """Make what is held durable: data first, so the state never claims lost bytes."""
        if not self._dirty:
            return
        if self._fd is not None:
            os.fdatasync(self._fd)
        self.store.save_state(self)
        self._dirty = False

    def close(self) -> None:
        try:
            self.checkpoint()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def finish(self) -> Path:
        """Check the whole file's SHA-256; on success it becomes ``<sha>.verified``."""
        self.close()
        part = self.store.part(self.offer)
        done = self.store.verified(self.offer.hex)
        if done.is_file() and not part.exists():
            part = done  # verified in an earlier session, not synced yet: check it again
        elif self.offer.size == 0:
            part.touch(mode=0o600)
        if hash_file(part) != self.offer.sha256:
            self.store.discard(self.offer.hex)
            raise TransferError(f"{self.offer.name}: SHA-256 of the received file does not "
                                "match the offer; it was thrown away", reason="HashMismatch")
        os.replace(part, done)
        with contextlib.suppress(FileNotFoundError):
            self.store.state_path(self.offer.hex).unlink()
        fsync_dir(self.store.root)
        return done


class PartialStore:
    """Partial and verified transfers in one folder, keyed by the file's SHA-256."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def part(self, offer: Offer) -> Path:
        return self.root / f"{offer.hex}.part"

    def state_path(self, hexdigest: str) -> Path:
        return self.root / f"{hexdigest}.state"

    def verified(self, hexdigest: str) -> Path:
        return self.root / f"{hexdigest}.verified"

    def open(self, offer: Offer) -> Partial:
        """Resume what is held of ``offer``'s file, or start it; throw away other files."""
        import msgpack

        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.discard_others(offer.hex)
        if self.verified(offer.hex).is_file():
            total = chunks_in(offer.size, offer.chunk)
            return Partial(self, offer, offer.chunk, total, set())
        try:
            raw = msgpack.unpackb(self.state_path(offer.hex).read_bytes(), raw=False)
            ok = (isinstance(raw, dict) and raw.get("format") == _STATE_FORMAT
                  and raw.get("size") == offer.size and self.part(offer).is_file()
                  and type(raw.get("chunk")) is int and 1 <= raw["chunk"] <= MAX_CHUNK
                  and type(raw.get("next")) is int and isinstance(raw.get("extra"), list))
        except (OSError, ValueError, msgpack.UnpackException):
            ok = False
        if not ok:
            self.discard(offer.hex)
            return Partial(self, offer, offer.chunk, 0, set())
        return Partial(self, offer, raw["chunk"], raw["next"],
                       {s for s in raw["extra"] if type(s) is int})

    def save_state(self, partial: Partial) -> None:
        import msgpack

        state = {"format": _STATE_FORMAT, "size": partial.offer.size, "name": partial.offer.name,
                 "chunk": partial.chunk, "next": partial.next, "extra": sorted(partial.extra)}
        atomic_write(self.state_path(partial.offer.hex), msgpack.packb(state), mode=0o600)

    def discard(self, hexdigest: str) -> None:
        for path in (self.root / f"{hexdigest}.part", self.state_path(hexdigest),
                     self.verified(hexdigest)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def discard_others(self, keep: str) -> None:
        """One transfer at a time: an offer of a different file makes older ones moot."""
        if not self.root.is_dir():
            return
        for path in self.root.iterdir():
            stem = path.name.split(".", 1)[0]
            if _HEX64.fullmatch(stem) and stem != keep:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def free_bytes(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return shutil.disk_usage(self.root).free
