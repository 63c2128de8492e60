"""The File kind beyond the basics of test_reconcile.py: owner/group, base64, plan, drift."""

from __future__ import annotations

import base64
import grp
import hashlib
import os
import pwd
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory
from support.kinds import Clock, doc, make_ctx, ready, specset

from giter_agent.kinds import builtin_kinds
from giter_agent.reconcile.engine import reconcile

NOBODY = pwd.getpwnam("nobody")
NOGROUP = grp.getgrgid(NOBODY.pw_gid)


@pytest.fixture
def ctx(tmp_path):
    c = make_ctx(tmp_path, MockFactory())
    yield c
    c.close()


def file_doc(name: str, path, **spec) -> bytes:
    return doc("File", name, {"path": str(path), **spec})


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_owner_and_group_are_set_before_the_file_appears(ctx, tmp_path):
    target = tmp_path / "root" / "app.conf"
    spec = specset(file_doc("conf", target, content="x=1\n", owner="nobody",
                            group=NOGROUP.gr_name, mode="0640"))
    result = reconcile(spec, ctx, builtin_kinds(), {}, "c1")
    rec = result.records["File/conf"]
    assert ready(rec) == (True, "Applied")
    st = target.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (NOBODY.pw_uid, NOGROUP.gr_gid, 0o640)
    assert rec.status["observed"]["owner"] == "nobody"
    # Someone chowns it back: that is drift, put right and recorded.
    os.chown(target, 0, 0)
    again = reconcile(spec, ctx, builtin_kinds(), result.records, "c1")
    assert target.stat().st_uid == NOBODY.pw_uid
    changes = again.records["File/conf"].status["drift"]["changes"]
    assert any("owner uid 0" in c for c in changes) and any("group gid 0" in c for c in changes)


def test_owner_needs_root_and_says_so(tmp_path):
    ctx = make_ctx(tmp_path, MockFactory(), euid=lambda: 1000)
    target = tmp_path / "root" / "app.conf"
    result = reconcile(specset(file_doc("conf", target, content="x", owner="nobody")),
                       ctx, builtin_kinds(), {}, "c1")
    rec = result.records["File/conf"]
    assert ready(rec) == (False, "RequiresRoot")
    assert "uid 1000" in rec.status["conditions"][0]["message"]
    assert not target.exists()


def test_unknown_owner_retries(ctx, tmp_path):
    result = reconcile(specset(file_doc("c", tmp_path / "root" / "c", content="x",
                                        owner="no-such-user-here")),
                       ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["File/c"]) == (False, "UnknownOwner")
    assert result.records["File/c"].status["retryAfterSeconds"] == 300


def test_base64_content_and_observed_hash(ctx, tmp_path):
    data = bytes(range(256))
    target = tmp_path / "root" / "blob.bin"
    result = reconcile(specset(file_doc("b", target,
                                        contentBase64=base64.b64encode(data).decode())),
                       ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["File/b"]) == (True, "Applied")
    assert target.read_bytes() == data
    assert result.records["File/b"].status["observed"]["sha256"] == \
        hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("extra", [{"owner": "-rf"}, {"owner": "Root Admin"},
                                   {"group": 0}, {"owner": ""}])
def test_owner_schema(ctx, tmp_path, extra):
    result = reconcile(specset(file_doc("c", tmp_path / "root" / "c", content="x", **extra)),
                       ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["File/c"]) == (False, "InvalidSpec")


def test_plan_reads_the_disk_and_changes_nothing(ctx, tmp_path):
    kind = builtin_kinds()["File"]
    target = tmp_path / "root" / "motd"
    spec = kind.validate({"path": str(target), "content": "hello\n", "mode": "0644"})
    assert kind.plan("File/motd", spec, ctx).startswith(f"would write: {target} is missing")
    assert not target.exists()
    target.write_text("hello\n")
    target.chmod(0o600)
    assert kind.plan("File/motd", spec, ctx) == f"would write: {target} mode 0600, want 0644"
    target.chmod(0o644)
    assert kind.plan("File/motd", spec, ctx) is None
    target.write_text("edited\n")
    assert "content sha256" in kind.plan("File/motd", spec, ctx)
    assert target.read_text() == "edited\n"
    outside = kind.validate({"path": "/etc/motd", "content": "x"})
    assert kind.plan("File/x", outside, ctx).startswith("would fail: PathNotAllowed")
    assert kind.plan_prune("File/motd", spec, ctx) == f"would remove {target}"


def test_a_new_spec_is_not_drift(ctx, tmp_path):
    target = tmp_path / "root" / "motd"
    first = reconcile(specset(file_doc("m", target, content="one\n")), ctx, builtin_kinds(),
                      {}, "c1")
    second = reconcile(specset(file_doc("m", target, content="two\n")), ctx, builtin_kinds(),
                       first.records, "c2")
    assert target.read_text() == "two\n"
    assert "drift" not in second.records["File/m"].status


def test_clock_does_not_leak_into_status(tmp_path):
    """Two passes an hour apart over an unchanged file give byte-identical status."""
    clock = Clock()
    ctx = make_ctx(tmp_path, MockFactory(), clock)
    spec = specset(file_doc("m", tmp_path / "root" / "m", content="x"))
    first = reconcile(spec, ctx, builtin_kinds(), {}, "c1")
    clock.advance(3600)
    second = reconcile(spec, ctx, builtin_kinds(), first.records, "c1")
    assert second.records == first.records


# -- a local process racing the agent inside a [files] root ----------------------------

def test_a_symlinked_folder_below_the_root_is_never_followed(ctx, tmp_path):
    """Even one pointing back inside the root: a link below the root is refused."""
    root = tmp_path / "root"
    (root / "real").mkdir()
    (root / "sub").symlink_to(root / "real")
    spec = specset(file_doc("f", root / "sub" / "f", content="x\n"))
    result = reconcile(spec, ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["File/f"]) == (False, "PathNotAllowed")
    assert list((root / "real").iterdir()) == []


def swap_on_touch(monkeypatch, names: tuple[str, ...], victim: Path, to: Path) -> list[str]:
    """Make ``victim`` (a folder) a symlink to ``to`` the first time the code under test
    touches the file named ``f`` through one of ``os.<names>``: the moment between the
    kind's checks and its write that a racing local process would aim for."""
    swapped: list[str] = []
    for name in names:
        real = getattr(os, name)

        def hooked(path, *args, _real=real, _name=name, **kwargs):
            if not swapped and os.path.basename(os.fspath(path)) == "f":
                os.rename(victim, victim.with_name("moved"))
                victim.symlink_to(to)
                swapped.append(_name)
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(os, name, hooked)
    return swapped


def test_a_folder_swapped_for_a_link_mid_write_writes_nothing_outside(ctx, tmp_path,
                                                                      monkeypatch):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir()
    outside.mkdir()
    spec = specset(file_doc("f", root / "sub" / "f", content="x\n"))
    swapped = swap_on_touch(monkeypatch, ("lstat", "open", "stat"), root / "sub", outside)
    reconcile(spec, ctx, builtin_kinds(), {}, "c1")
    monkeypatch.undo()
    assert swapped  # the race really happened
    assert list(outside.iterdir()) == []


def test_a_folder_swapped_for_a_link_mid_prune_deletes_nothing_outside(ctx, tmp_path,
                                                                       monkeypatch):
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("not the agent's\n")
    kinds = builtin_kinds()
    spec = specset(file_doc("f", root / "sub" / "f", content="x\n"))
    first = reconcile(spec, ctx, kinds, {}, "c1")
    assert ready(first.records["File/f"]) == (True, "Applied")
    swapped = swap_on_touch(monkeypatch, ("unlink",), root / "sub", outside)
    reconcile(specset(), ctx, kinds, first.records, "c2")  # the resource left the spec
    monkeypatch.undo()
    assert swapped
    assert (outside / "f").read_text() == "not the agent's\n"
