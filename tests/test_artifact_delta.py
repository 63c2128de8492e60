"""Outgoing bundles carry a changed artifact as a delta (``history.artifact_delta``).

git is the oracle: the thin bundle passes ``git bundle verify`` in a clone that holds
the old version, ``git fetch`` takes it, and ``git cat-file`` returns the new bytes; the
agent's own import resolves it too.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest
from support.git import run

from giter_agent.history.artifact_delta import make_delta
from giter_agent.history.blob_stream import copy_blob
from giter_agent.history.store import Caps, History

MiB = 2**20


def git(repo: Path, *args: str | Path, input: bytes | None = None) -> bytes:
    return run("git", "-C", repo, *args, input=input).stdout


def commit(repo: Path, data: bytes, message: str) -> str:
    (repo / "artifacts").mkdir(exist_ok=True)
    (repo / "artifacts/app.bin").write_bytes(data)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").decode().strip()


def one_percent(data: bytes, seed: int) -> bytes:
    rnd = random.Random(seed)
    out = bytearray(data)
    for at in range(0, len(out) - 40, 4096):  # 40 bytes in every 4 KiB
        out[at:at + 40] = rnd.randbytes(40)
    return bytes(out)


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "fleet"
    run("git", "init", "-q", "-b", "main", root)
    return root


def apply_delta_with_git(tmp_path: Path, base: bytes, delta: bytes) -> bytes:
    """Have git itself build an object from ``delta``: a one-entry thin pack (a ref-delta
    against ``base``), completed by ``git index-pack --fix-thin`` in a repository that
    holds the base, then read back with ``git cat-file``."""
    import hashlib
    import struct
    import zlib

    repo = tmp_path / "oracle"
    run("git", "init", "-q", "--bare", repo)
    base_id = git(repo, "hash-object", "-w", "--stdin", input=base).decode().strip()
    size, head = len(delta), bytearray()
    byte = (7 << 4) | (size & 0x0F)  # REF_DELTA
    size >>= 4
    while size:
        head.append(byte | 0x80)
        byte, size = size & 0x7F, size >> 7
    head.append(byte)
    body = (b"PACK" + struct.pack(">LL", 2, 1) + bytes(head) + bytes.fromhex(base_id)
            + zlib.compress(delta))
    pack = body + hashlib.sha1(body).digest()
    git(repo, "index-pack", "--stdin", "--fix-thin", input=pack)
    listed = git(repo, "cat-file", "--batch-all-objects", "--batch-check").decode()
    new_id = next(line.split()[0] for line in listed.splitlines()
                  if line.split()[0] != base_id)
    return git(repo, "cat-file", "blob", new_id)


@pytest.mark.parametrize("shape", ["in-place", "appended", "truncated", "all-new"])
def test_git_builds_exactly_the_new_bytes_from_our_delta(tmp_path, shape):
    base = os.urandom(300_000)
    new = {"in-place": one_percent(base, 1), "appended": one_percent(base, 2) + b"tail" * 999,
           "truncated": base[:123_457], "all-new": os.urandom(200_000)}[shape]
    delta = make_delta(base, new)
    assert apply_delta_with_git(tmp_path, base, delta) == new
    if shape == "in-place":
        assert len(delta) < len(new) // 20


def test_an_incremental_bundle_carries_the_change_not_the_artifact(tmp_path, repo):
    v1 = os.urandom(4 * MiB)
    first = commit(repo, v1, "v1")
    v2 = one_percent(v1, 3)
    commit(repo, v2, "v2")
    with History(repo / ".git") as history:
        whole, small = tmp_path / "whole.bundle", tmp_path / "delta.bundle"
        tip = history.ref(b"refs/heads/main")
        assert tip is not None
        history.write_bundle(whole, {b"refs/heads/main": tip}, exclude=[first.encode()])
        history.write_bundle(small, {b"refs/heads/main": tip}, exclude=[first.encode()],
                             deltify_artifacts=True)
    assert whole.stat().st_size > 4 * MiB  # without: the artifact goes whole
    assert small.stat().st_size < 4 * MiB // 20
    # git takes it in a clone that holds v1, and builds v2 from it.
    clone = tmp_path / "clone"
    run("git", "clone", "-q", "--bare", "--single-branch", repo, clone)
    git(clone, "update-ref", "refs/heads/main", first)
    git(clone, "bundle", "verify", small)
    git(clone, "fetch", "-q", small, "main:main")
    assert git(clone, "cat-file", "blob", "main:artifacts/app.bin") == v2
    # And the agent's own import takes it from a store holding v1 only.
    device = History(tmp_path / "device.git", Caps())
    git(repo, "branch", "-f", "v1", first)
    git(repo, "bundle", "create", "-q", tmp_path / "v1.bundle", "v1")
    for bundle in (tmp_path / "v1.bundle", small):
        with device.quarantine(bundle) as q:
            q.promote()
    blob = git(repo, "rev-parse", "main:artifacts/app.bin").strip()
    out = io.BytesIO()
    copy_blob(device.object_store, blob, out, limit=2**30)
    assert out.getvalue() == v2
    device.close()
