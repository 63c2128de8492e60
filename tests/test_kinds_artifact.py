"""A ``File`` whose content is an artifact of the verified tree (``spec.artifact``).

The tree is made by real git; the kind reads it through ``history.artifacts`` exactly as
the applier hands it over. Every refusal fails the resource alone, leaves the file in
place as it was and reports what is there. The last test is a whole signed sync.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from dulwich.object_store import DiskObjectStore
from gpiozero.pins.mock import MockFactory
from support.devices import SimDevice
from support.git import run
from support.kinds import doc, make_ctx, ready, specset

from giter_agent.history.artifacts import TreeArtifacts
from giter_agent.kinds import builtin_kinds
from giter_agent.reconcile.engine import reconcile

MiB = 2**20


def git(repo: Path, *args: str) -> bytes:
    return run("git", "-C", repo, *args).stdout


class Tree:
    """A git repository whose commits the tests lay artifacts down from."""

    def __init__(self, root: Path) -> None:
        self.root = root
        run("git", "init", "-q", "-b", "main", root)
        self.store = DiskObjectStore(str(root / ".git/objects"))

    def commit(self, files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
        for rel, data in files.items():
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for rel, to in (links or {}).items():
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(to, self.root / rel)
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "--allow-empty", "-m", "c")
        return git(self.root, "rev-parse", "HEAD^{tree}").strip()

    def artifacts(self, tree: bytes, max_bytes: int = 128 * MiB) -> TreeArtifacts:
        return TreeArtifacts(self.store, tree, max_bytes=max_bytes)


@pytest.fixture
def tree(tmp_path) -> Tree:
    return Tree(tmp_path / "fleet")


@pytest.fixture
def ctx(tmp_path):
    c = make_ctx(tmp_path, MockFactory())
    yield c
    c.close()


def artifact_doc(target: Path, artifact: str, **spec) -> bytes:
    return doc("File", "app", {"path": str(target), "artifact": artifact, **spec})


def run_pass(ctx, tree: Tree, tree_id: bytes, document: bytes, previous=None, **caps):
    ctx.artifacts = tree.artifacts(tree_id, **caps)
    result = reconcile(specset(document), ctx, builtin_kinds(), previous or {}, "c1")
    return result.records["File/app"]


def test_an_artifact_is_laid_down_byte_for_byte_and_reported(ctx, tree, tmp_path):
    data = os.urandom(3 * MiB + 17)
    tid = tree.commit({"artifacts/app/server.bin": data})
    target = tmp_path / "root/opt/server.bin"
    rec = run_pass(ctx, tree, tid, artifact_doc(target, "artifacts/app/server.bin",
                                                mode="0755"))
    assert ready(rec) == (True, "Applied")
    assert target.read_bytes() == data and target.stat().st_mode & 0o777 == 0o755
    observed = rec.status["observed"]
    assert observed["sha256"] == hashlib.sha256(data).hexdigest()
    assert observed["artifact"] == "artifacts/app/server.bin"
    assert observed["size"] == len(data)
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".giter-tmp")]


def test_an_unchanged_file_is_not_read_again_and_a_hand_edit_is_drift(ctx, tree, tmp_path,
                                                                      monkeypatch):
    from giter_agent.kinds import artifact_content

    data = os.urandom(2 * MiB)
    tid = tree.commit({"artifacts/a.bin": data})
    target = tmp_path / "root/a.bin"
    document = artifact_doc(target, "artifacts/a.bin")
    first = run_pass(ctx, tree, tid, document)
    hashed = []
    real = artifact_content._digests
    monkeypatch.setattr(artifact_content, "_digests",
                        lambda fd, size: hashed.append(size) or real(fd, size))
    second = run_pass(ctx, tree, tid, document, {"File/app": first})
    assert ready(second) == (True, "Applied") and hashed == []  # same file: nothing read
    target.write_bytes(b"edited by hand")
    third = run_pass(ctx, tree, tid, document, {"File/app": second})
    assert target.read_bytes() == data
    assert third.status["drift"]["corrections"] == 1


@pytest.mark.parametrize("case", ["mismatch", "too-large", "missing", "symlink", "folder",
                                  "outside"])
def test_each_refusal_fails_alone_and_leaves_the_previous_content(ctx, tree, tmp_path, case):
    old = os.urandom(MiB)
    new = os.urandom(2 * MiB)
    tid = tree.commit({"artifacts/app.bin": old})
    target = tmp_path / "root/app.bin"
    first = run_pass(ctx, tree, tid, artifact_doc(target, "artifacts/app.bin"))
    assert target.read_bytes() == old
    spec: dict = {}
    name, caps, reason = "artifacts/app.bin", {}, None
    if case == "mismatch":
        tid = tree.commit({"artifacts/app.bin": new})
        spec, reason = {"sha256": hashlib.sha256(b"something else").hexdigest()}, \
            "ArtifactMismatch"
    elif case == "too-large":
        tid = tree.commit({"artifacts/app.bin": new})
        caps, reason = {"max_bytes": MiB + 1}, "ArtifactTooLarge"
    elif case == "missing":
        name, reason = "artifacts/gone.bin", "ArtifactMissing"
    elif case == "symlink":
        tid = tree.commit({}, links={"artifacts/link.bin": "app.bin"})
        name, reason = "artifacts/link.bin", "ArtifactNotAFile"
    elif case == "folder":
        tid = tree.commit({"artifacts/dir/x.bin": new})
        name, reason = "artifacts/dir", "ArtifactNotAFile"
    else:
        tid = tree.commit({"secret/key.bin": new})
        name, reason = "secret/key.bin", "ArtifactNotAllowed"
    other = doc("File", "motd", {"path": str(tmp_path / "root/motd"), "content": "hi\n"})
    ctx.artifacts = tree.artifacts(tid, **caps)
    result = reconcile(specset(artifact_doc(target, name, **spec), other), ctx,
                       builtin_kinds(), {"File/app": first}, "c2")
    rec = result.records["File/app"]
    assert ready(rec) == (False, reason), rec.status["conditions"][0]["message"]
    message = rec.status["conditions"][0]["message"]
    assert "\n" not in message
    assert target.read_bytes() == old  # the previous content stays in place ...
    if reason != "ArtifactNotAllowed":  # (a spec refused at validation reports no file)
        assert "left as it was" in message  # ... and is reported
        assert rec.status["observed"]["sha256"] == hashlib.sha256(old).hexdigest()
    assert ready(result.records["File/motd"]) == (True, "Applied")  # the rest applies
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".giter-tmp")]


def test_a_pinned_artifact_that_matches_is_applied(ctx, tree, tmp_path):
    data = os.urandom(MiB)
    tid = tree.commit({"artifacts/fw.img": data})
    target = tmp_path / "root/fw.img"
    rec = run_pass(ctx, tree, tid, artifact_doc(target, "artifacts/fw.img",
                                                sha256=hashlib.sha256(data).hexdigest()))
    assert ready(rec) == (True, "Applied") and target.read_bytes() == data


def test_the_spec_names_exactly_one_source(ctx, tmp_path):
    from giter_agent.core.errors import ResourceError
    from giter_agent.kinds.file import FileKind

    for spec in ({"artifact": "artifacts/a", "content": "x"}, {"content": "x", "sha256": "0" * 64},
                 {"artifact": "artifacts/a", "sha256": "XYZ"}):
        with pytest.raises(ResourceError):
            FileKind().validate({"path": "/srv/a", **spec})


def test_plan_says_what_would_be_written_without_writing(ctx, tree, tmp_path):
    from giter_agent.kinds.file import FileKind

    tid = tree.commit({"artifacts/a.bin": b"x" * 1000})
    target = tmp_path / "root/a.bin"
    ctx.artifacts = tree.artifacts(tid)
    spec = FileKind().validate({"path": str(target), "artifact": "artifacts/a.bin"})
    assert "is missing (want artifacts/a.bin, 1000 bytes)" in FileKind().plan("File/a", spec,
                                                                              ctx)
    assert not target.exists()


def test_a_signed_sync_lays_down_an_artifact_and_a_delta_update(tmp_path, publisher):
    """Real git bundles into a simulated device: the update is a thin delta bundle."""
    device = SimDevice(tmp_path, "pi-01", publisher.allowed_signers)
    data = bytearray(os.urandom(4 * MiB))
    (publisher.root / "artifacts").mkdir()
    (publisher.root / "artifacts/app.bin").write_bytes(data)
    resource = (f"apiVersion: giter.dev/v1alpha1\nkind: File\nmetadata: {{name: app}}\n"
                f"spec:\n  path: {device.root}/app.bin\n  artifact: artifacts/app.bin\n")
    first = publisher.commit("app v1", files={f"devices/{device.id}/app.yaml": resource})
    publisher.bundle(tmp_path / "one.bundle")
    assert device.cli("sync", "--bundle", tmp_path / "one.bundle") == 0
    assert (device.root / "app.bin").read_bytes() == data
    data[1000:1100] = os.urandom(100)
    (publisher.root / "artifacts/app.bin").write_bytes(data)
    publisher.commit("app v2")
    publisher.bundle(tmp_path / "two.bundle", f"{first}..main")
    assert (tmp_path / "two.bundle").stat().st_size < 64 * 1024
    assert device.cli("sync", "--bundle", tmp_path / "two.bundle") == 0
    assert (device.root / "app.bin").read_bytes() == data
    record = device.state().resources["File/app"]
    assert record.status["observed"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert "drift" not in record.status  # a new artifact is a new spec, not drift


def test_a_release_tree_is_listed_with_sizes_and_modes_and_refused_with_a_symlink(tree):
    """``TreeArtifacts.listing``: what a kind that lays a whole folder down reads first."""
    from giter_agent.core.errors import ArtifactError

    tid = tree.commit({"artifacts/app/bin/run": b"#!/bin/sh\n", "artifacts/app/lib.py": b"x"})
    os.chmod(tree.root / "artifacts/app/bin/run", 0o755)
    git(tree.root, "add", "-A")
    git(tree.root, "commit", "-q", "-m", "exec")
    tid = git(tree.root, "rev-parse", "HEAD^{tree}").strip()
    listing = tree.artifacts(tid).listing("artifacts/app")
    assert listing.tree_id == git(tree.root, "rev-parse", "HEAD:artifacts/app").decode().strip()
    listed = listing.files
    assert [(a.path, a.size, a.executable) for a in listed] == [
        ("artifacts/app/bin/run", 10, True), ("artifacts/app/lib.py", 1, False)]
    assert [a.oid for a in listed] == [
        git(tree.root, "rev-parse", f"HEAD:{a.path}").decode().strip() for a in listed]
    tid = tree.commit({}, links={"artifacts/app/evil": "/etc/shadow"})
    with pytest.raises(ArtifactError) as caught:
        tree.artifacts(tid).listing("artifacts/app")
    assert caught.value.reason == "ArtifactNotAFile" and "evil" in str(caught.value)
