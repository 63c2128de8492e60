"""What one side proposes to send across the serial line: the OFFER of a file.

An offer names the file (transfer number, kind, name), its size and SHA-256, and the
chunk size the sender will use; the receiver keys what it holds by that hash
(``transport.serial.partial``) and the sender streams the chunks it lacks
(``transport.serial.transfer``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from giter_agent.transport.serial.link import OFFER, Message, ProtocolError, control

CHUNK = 1024  # bytes of file per DATA frame; see docs/serial.md for why
MAX_CHUNK = 4096


@dataclass(frozen=True)
class Offer:
    """A file one side proposes to send: what the OFFER message carries."""

    x: int  # transfer number within the session
    kind: str  # spec | status | receipt
    name: str
    size: int
    sha256: bytes
    chunk: int = CHUNK
    tip: str | None = None  # the spec commit a bundle brings, when it is one
    # The laptop's offer of a spec: the status commit its hub holds of this device, which
    # the device's status bundle then leaves out (giter-bundle serial --hub).
    hub_has: str | None = None

    @property
    def hex(self) -> str:
        return self.sha256.hex()

    def message(self) -> Message:
        extra = {"hub_has": self.hub_has} if self.hub_has else {}
        return control(OFFER, x=self.x, kind=self.kind, name=self.name, size=self.size,
                       sha256=self.sha256, chunk=self.chunk, tip=self.tip, **extra)

    @classmethod
    def from_message(cls, msg: Message) -> Offer:
        b = msg.body
        size, digest, chunk = b.get("size"), b.get("sha256"), b.get("chunk")
        name, tip = b.get("name", ""), b.get("tip")
        if type(size) is not int or size < 0:
            raise ProtocolError("OFFER: size must be a non-negative integer")
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise ProtocolError("OFFER: sha256 must be 32 bytes")
        if type(chunk) is not int or not 1 <= chunk <= MAX_CHUNK:
            raise ProtocolError(f"OFFER: chunk must be 1..{MAX_CHUNK}")
        if not isinstance(name, str) or (tip is not None and not isinstance(tip, str)):
            raise ProtocolError("OFFER: name and tip must be strings")
        return cls(b["x"], b["kind"], name[:200], size, digest, chunk, tip)

    @classmethod
    def of_file(cls, path: Path, x: int, kind: str, *, chunk: int = CHUNK,
                tip: str | None = None) -> Offer:
        h = hashlib.sha256()
        size = 0
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
                size += len(block)
        return cls(x, kind, Path(path).name, size, h.digest(), chunk, tip)


def chunks_in(size: int, chunk: int) -> int:
    return -(-size // chunk)


def hash_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.digest()
