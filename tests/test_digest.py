"""``core.digest``: the pass's SHA-256 digests, equal to hashlib's (and so to what
earlier versions stored: record fingerprints, status input digests)."""

from __future__ import annotations

import hashlib

import pytest

from giter_agent.core.digest import sha256_hex
from giter_agent.kinds.base import fingerprint


@pytest.mark.parametrize("data", [b"", b"abc", bytes(range(256)) * 4099, "é\n".encode()])
def test_the_digest_is_hashlibs(data):
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_a_spec_fingerprint_is_the_one_stored_before():
    """Fingerprints live in the state file: the same spec keeps the same one across an
    upgrade, or every resource would look changed once."""
    spec = {"path": "/etc/motd", "content": "hello\n", "mode": 420, "prune": True}
    # sha256 of '{"content":"hello\\n","mode":420,"path":"/etc/motd","prune":true}'
    assert fingerprint(spec) == "ed91ad4a06880789"
