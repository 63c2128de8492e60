"""A loose ref's file read directly, so that a sync finding its refs as expected loads no dulwich.

A steady sync (nothing new, nothing changed) only reads refs: recovery checks that
they name what the state file names, and the import gate compares a bundle's tip with
the accepted one. The refs the agent writes are loose files holding one hex id and a
newline (``history.refs``, through dulwich's ``DiskRefsContainer``). ``read`` answers
for exactly that shape and for a ref that does not exist at all; anything else (a
symbolic ref, a ``packed-refs`` file, a file of another shape) raises ``Unknown`` and
the caller asks dulwich, which stays the one reader of every other case.
"""

from __future__ import annotations

import os
from pathlib import Path

_HEX = frozenset(b"0123456789abcdef")


class Unknown(Exception):
    """The ref is not a plain loose file (or may be packed): ask dulwich."""


def read(repo: Path, name: bytes) -> bytes | None:
    """The hex id the loose ref ``name`` (``refs/...``) holds, or None when neither a
    loose file nor a ``packed-refs`` file exists; ``Unknown`` otherwise."""
    parts = name.split(b"/")
    if parts[0] != b"refs" or any(p in (b"", b".", b"..") for p in parts):
        raise Unknown(name)
    try:
        with open(os.path.join(repo, *(p.decode("utf-8", "surrogateescape") for p in parts)),
                  "rb") as fh:
            data = fh.read(42)
    except FileNotFoundError:
        if os.path.lexists(os.path.join(repo, "packed-refs")):
            raise Unknown(name) from None
        return None
    except (NotADirectoryError, IsADirectoryError):
        raise Unknown(name) from None
    sha = data[:40]
    if len(data) == 41 and data[40:] == b"\n" and set(sha) <= _HEX:
        return sha
    raise Unknown(name)
