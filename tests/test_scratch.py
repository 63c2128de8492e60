"""Scratch files and folders (``core.durable``): what the quarantine and the pack writers
make and remove, as tempfile's mkstemp and mkdtemp and shutil's rmtree would."""

from __future__ import annotations

import os
import stat

from giter_agent.core.durable import remove_scratch, scratch_dir, scratch_file


def test_a_scratch_file_is_new_private_and_open_for_both_ways(tmp_path):
    made = set()
    for _ in range(20):
        fd, path = scratch_file(tmp_path, "tmp_pack_")
        with os.fdopen(fd, "w+b") as fh:
            fh.write(b"pack")
            fh.seek(0)
            assert fh.read() == b"pack"
        assert os.path.dirname(path) == str(tmp_path)
        assert os.path.basename(path).startswith("tmp_pack_")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        made.add(path)
    assert len(made) == 20


def test_a_scratch_file_never_opens_what_is_there(tmp_path, monkeypatch):
    """A name already taken (a file, or a link an attacker planted) is passed over."""
    (tmp_path / "elsewhere").write_bytes(b"keep")
    names = iter([b"\x00" * 6, b"\x00" * 6, b"\x01" * 6])
    monkeypatch.setattr(os, "urandom", lambda n: next(names))
    taken = tmp_path / ("p-" + "00" * 6)
    taken.symlink_to(tmp_path / "elsewhere")
    fd, path = scratch_file(tmp_path, "p-")
    os.close(fd)
    assert path == str(tmp_path / ("p-" + "01" * 6))
    assert (tmp_path / "elsewhere").read_bytes() == b"keep"


def test_a_scratch_dir_is_new_and_private(tmp_path):
    one, two = scratch_dir(tmp_path, "q-"), scratch_dir(tmp_path, "q-")
    assert one != two and os.path.basename(one).startswith("q-")
    assert stat.S_IMODE(os.stat(one).st_mode) == 0o700


def test_removing_a_scratch_dir_takes_all_in_it_and_follows_no_link(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"x")
    q = tmp_path / scratch_dir(tmp_path, "q-")
    (q / "pack").mkdir()
    (q / "pack" / "pack-1.pack").write_bytes(b"p")
    os.chmod(q / "pack" / "pack-1.pack", 0o444)  # packs are written read-only
    (q / "info" / "deeper").mkdir(parents=True)
    (q / "info" / "deeper" / "f").write_bytes(b"f")
    (q / "link").symlink_to(outside)
    (q / "pack" / "link").symlink_to(outside / "precious")
    remove_scratch(q)
    assert not q.exists()
    assert (outside / "precious").read_bytes() == b"x"
    remove_scratch(q)  # gone already: nothing to do, no error
