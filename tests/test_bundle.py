"""The bundle format: header parsing against bundles git made, strict refusals,
the pack scanner's checks, and bundles we write passing ``git bundle verify``."""

from __future__ import annotations

import hashlib
import io
import zlib
from pathlib import Path

import pytest

from giter_agent.core.errors import BundleError
from giter_agent.history.bundle import (
    MAX_LINE_BYTES,
    GatedPackReader,
    PackScanner,
    format_header,
    read_header,
    write_bundle,
)

A = "a" * 40
B = "b" * 40
ROOMY = {"max_objects": 1000, "max_object_bytes": 1 << 20}


def split_bundle(path: Path) -> tuple[bytes, bytes]:
    data = path.read_bytes()
    cut = data.index(b"\n\n") + 2
    return data[:cut], data[cut:]


@pytest.fixture
def two_commits(publisher):
    first = publisher.commit("first", sign=False, files={"devices/dev-1/a.yaml": "a: 1\n"})
    second = publisher.commit("second line\nwraps", sign=False,
                              files={"devices/dev-1/a.yaml": "a: 2\n"})
    return first, second


def test_reads_v2_full_bundle_made_by_git(publisher, two_commits, tmp_path):
    _, second = two_commits
    path = publisher.bundle(tmp_path / "full.bundle")
    with open(path, "rb", buffering=0) as fh:  # unbuffered: tell() shows what was read
        header = read_header(fh)
        assert fh.tell() == header.pack_offset
    assert header.version == 2
    assert header.capabilities == {}
    assert header.prerequisites == []
    assert header.refs == {b"refs/heads/main": second.encode()}
    assert path.read_bytes()[header.pack_offset:].startswith(b"PACK")


def test_reads_v3_incremental_bundle_made_by_git(publisher, two_commits, tmp_path):
    first, second = two_commits
    path = tmp_path / "inc.bundle"
    publisher.git("bundle", "create", "-q", "--version=3", path, "main~1..main")
    with open(path, "rb") as fh:
        header = read_header(fh)
    assert header.version == 3
    assert header.capabilities == {b"object-format": b"sha1"}
    assert header.prerequisites == [first.encode()]
    # git writes the subject after the id; the reader keeps it as a comment only.
    assert header.prerequisite_comments[first.encode()] == b"first"
    assert header.refs == {b"refs/heads/main": second.encode()}


def header_of(text: str) -> bytes:
    return text.encode() + b"PACK"


@pytest.mark.parametrize("data, reason, words", [
    (b"", "NotABundle", "not a git bundle"),
    (b"hello world\n\x00\x01", "NotABundle", "not a git bundle"),
    (b"PACK\x00\x00\x00\x02", "NotABundle", "not a git bundle"),
    (header_of(f"# v4 git bundle\n{A} refs/heads/main\n\n"), "UnsupportedBundle", "v4"),
    (header_of(f"# v3 git bundle\n@filter=blob:none\n{A} refs/heads/main\n\n"),
     "UnsupportedBundle", "partial"),
    (header_of(f"# v3 git bundle\n@object-format=sha256\n{A} refs/heads/main\n\n"),
     "UnsupportedBundle", "sha256"),
    (header_of(f"# v3 git bundle\n@shiny\n{A} refs/heads/main\n\n"),
     "UnsupportedBundle", "shiny"),
    (header_of(f"# v3 git bundle\n@bad_key=1\n{A} refs/heads/main\n\n"),
     "MalformedBundle", "capability name"),
    (header_of(f"# v2 git bundle\n@object-format=sha1\n{A} refs/heads/main\n\n"),
     "MalformedBundle", "only exist in v3"),
    (header_of(f"# v3 git bundle\n-{A} x\n@object-format=sha1\n{B} refs/heads/main\n\n"),
     "MalformedBundle", "capability after"),
    (header_of(f"# v2 git bundle\n{A} refs/heads/main\n-{B} x\n\n"),
     "MalformedBundle", "prerequisite after references"),
    (header_of("# v2 git bundle\nxyz refs/heads/main\n\n"), "MalformedBundle", "40-hex"),
    (header_of(f"# v2 git bundle\n{A.upper()} refs/heads/main\n\n"), "MalformedBundle",
     "40-hex"),
    (header_of(f"# v2 git bundle\n-{A[:39]} short\n{B} refs/heads/main\n\n"),
     "MalformedBundle", "prerequisite"),
    (header_of(f"# v2 git bundle\n{A}\n\n"), "MalformedBundle", "no refname"),
    (header_of(f"# v2 git bundle\n{A} refs/heads/a..b\n\n"), "MalformedBundle",
     "invalid refname"),
    (header_of(f"# v2 git bundle\n{A} main\n\n"), "MalformedBundle", "invalid refname"),
    (header_of(f"# v2 git bundle\n{A} refs/heads/main\n{B} refs/heads/main\n\n"),
     "MalformedBundle", "twice"),
    (header_of(f"# v2 git bundle\n-{A} only a prerequisite\n\n"), "MalformedBundle",
     "no references"),
    (header_of(f"# v2 git bundle\n{A} refs/heads/{'x' * MAX_LINE_BYTES}\n\n"),
     "MalformedBundle", "longer than"),
    (f"# v2 git bundle\n{A} refs/heads/main\n".encode(), "TruncatedBundle", "ends inside"),
    (f"# v2 git bundle\n{A} refs/hea".encode(), "TruncatedBundle", "ends inside"),
])
def test_refuses_bad_headers(data, reason, words):
    with pytest.raises(BundleError) as err:
        read_header(io.BytesIO(data))
    assert err.value.reason == reason
    assert words in str(err.value)


def test_header_size_cap():
    refs = "".join(f"{A} refs/heads/b{i}\n" for i in range(100))
    data = header_of(f"# v2 git bundle\n{refs}\n")
    with pytest.raises(BundleError) as err:
        read_header(io.BytesIO(data), max_header_bytes=1000)
    assert err.value.reason == "TooLarge"
    assert read_header(io.BytesIO(data)).refs[b"refs/heads/b99"] == A.encode()


def test_prerequisite_without_comment_and_head_ref_are_accepted():
    data = header_of(f"# v2 git bundle\n-{A}\n{B} HEAD\n{B} refs/heads/main\n\n")
    header = read_header(io.BytesIO(data))
    assert header.prerequisites == [A.encode()]
    assert header.refs == {b"HEAD": B.encode(), b"refs/heads/main": B.encode()}
    assert data[header.pack_offset:] == b"PACK"


@pytest.mark.parametrize("version", [2, 3])
def test_written_bundle_passes_git_bundle_verify(publisher, two_commits, tmp_path, version):
    first, second = two_commits
    _, pack = split_bundle(publisher.bundle(tmp_path / "git.bundle", "main~1..main"))
    out = tmp_path / "ours.bundle"
    write_bundle(out, refs={b"refs/heads/main": second.encode()},
                 prerequisites=[(first.encode(), b"first")],
                 pack_writer=lambda fh: fh.write(pack), version=version)
    publisher.git("bundle", "verify", "-q", out)
    with open(out, "rb") as fh:
        header = read_header(fh)
    assert (header.version, header.prerequisites) == (version, [first.encode()])
    assert header.refs == {b"refs/heads/main": second.encode()}
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_write_is_atomic_when_the_pack_writer_fails(tmp_path):
    out = tmp_path / "out.bundle"
    out.write_bytes(b"previous")

    def failing(fh):
        fh.write(b"PACK partial")
        raise OSError("stick pulled")

    with pytest.raises(OSError):
        write_bundle(out, refs={b"refs/heads/main": A.encode()}, pack_writer=failing)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bundle"]


def test_format_header_refuses_what_it_would_not_read():
    with pytest.raises(ValueError):
        format_header({b"main": A.encode()})
    with pytest.raises(ValueError):
        format_header({b"refs/heads/main": A.encode()}, [(B.encode(), b"two\nlines")])
    with pytest.raises(ValueError):
        format_header({}, [])


# -- the pack scanner ----------------------------------------------------------------


def pack_of(publisher, tmp_path, *revs) -> bytes:
    return split_bundle(publisher.bundle(tmp_path / "p.bundle", *revs))[1]


def raw_pack(objects: list[tuple[int, bytes]], *, declared: dict[int, int] | None = None) -> bytes:
    """A pack of whole objects; ``declared`` overrides an object's header size."""
    body = bytearray(b"PACK" + (2).to_bytes(4, "big") + len(objects).to_bytes(4, "big"))
    for i, (type_num, data) in enumerate(objects):
        size = (declared or {}).get(i, len(data))
        byte = (type_num << 4) | (size & 0x0F)
        size >>= 4
        header = bytearray()
        while size:
            header.append(byte | 0x80)
            byte = size & 0x7F
            size >>= 7
        header.append(byte)
        body += header + zlib.compress(data)
    return bytes(body) + hashlib.sha1(body).digest()


def test_scanner_accepts_git_pack_in_any_slicing(publisher, two_commits, tmp_path):
    pack = pack_of(publisher, tmp_path)
    for step in (len(pack), 4096, 7, 1):
        scanner = PackScanner(**ROOMY)
        for i in range(0, len(pack), step):
            scanner.feed(pack[i:i + step])
        scanner.finish()
        # 2 commits, 2 x 3 trees (root, devices, dev-1), 2 blobs
        assert scanner.done and scanner.object_count == 10
        assert scanner.offset == len(pack)


@pytest.mark.parametrize("damage, reason, words", [
    (lambda p: p[:40] + bytes([p[40] ^ 0xFF]) + p[41:], "CorruptBundle", ""),
    (lambda p: p[:-1] + bytes([p[-1] ^ 0x01]), "CorruptBundle", "checksum mismatch"),
    (lambda p: p + b"junk", "CorruptBundle", "junk after"),
    (lambda p: p[:-5], "TruncatedBundle", "pack checksum"),
    (lambda p: p[:len(p) // 2], "TruncatedBundle", "inside object"),
    (lambda p: p[:6], "TruncatedBundle", "pack header"),
    (lambda p: b"", "TruncatedBundle", "pack header"),
    (lambda p: b"KCAP" + p[4:], "CorruptBundle", "not a pack"),
])
def test_scanner_refuses_damaged_packs(publisher, two_commits, tmp_path, damage, reason, words):
    pack = damage(pack_of(publisher, tmp_path))
    scanner = PackScanner(**ROOMY)
    with pytest.raises(BundleError) as err:
        scanner.feed(pack)
        scanner.finish()
    assert err.value.reason == reason
    assert words in str(err.value)


def test_scanner_refuses_object_over_cap_from_its_header_alone():
    pack = raw_pack([(3, b"x" * 2000)])  # 2000 needs a 2-byte object header
    scanner = PackScanner(max_objects=10, max_object_bytes=1999)
    with pytest.raises(BundleError) as err:
        scanner.feed(pack[:12 + 2])  # the pack header and the object's 2-byte header only
    assert err.value.reason == "TooLarge"
    assert "max_object_bytes=1999" in str(err.value)


def test_scanner_refuses_too_many_objects():
    scanner = PackScanner(max_objects=1, max_object_bytes=100)
    with pytest.raises(BundleError) as err:
        scanner.feed(raw_pack([(3, b"a"), (3, b"b")])[:12])
    assert err.value.reason == "TooLarge"
    assert "max_objects=1" in str(err.value)


def test_scanner_stops_zlib_bomb_at_declared_size():
    pack = raw_pack([(3, b"\0" * (4 << 20))], declared={0: 10})
    scanner = PackScanner(max_objects=10, max_object_bytes=100)
    with pytest.raises(BundleError) as err:
        scanner.feed(pack)
    assert err.value.reason == "CorruptBundle"
    assert "past its declared 10 bytes" in str(err.value)


def test_scanner_refuses_size_mismatch():
    scanner = PackScanner(max_objects=10, max_object_bytes=100)
    with pytest.raises(BundleError, match="inflates to 3 bytes, its header says 5"):
        scanner.feed(raw_pack([(3, b"abc")], declared={0: 5}))


def test_scanner_refuses_delta_whose_result_is_over_cap(publisher, tmp_path):
    big = "".join(f"line {i} of a large generated file\n" for i in range(6000))  # ~200 KB
    publisher.commit("base", sign=False, files={"big.txt": big})
    publisher.commit("edit", sign=False, files={"big.txt": big + "one more\n"})
    pack = pack_of(publisher, tmp_path, "main~1..main")  # thin: a small delta on big.txt
    PackScanner(max_objects=10, max_object_bytes=len(big) + 100).feed(pack)
    with pytest.raises(BundleError) as err:
        PackScanner(max_objects=10, max_object_bytes=50_000).feed(pack)
    assert err.value.reason == "TooLarge"
    assert "builds an object of" in str(err.value)


def test_gate_hands_out_nothing_the_scanner_refused():
    pack = raw_pack([(3, b"x" * 5000)])
    reader = GatedPackReader(io.BytesIO(pack), len(pack),
                             PackScanner(max_objects=10, max_object_bytes=100))
    with pytest.raises(BundleError, match="max_object_bytes"):
        reader.read_all(1)


def test_gate_reports_truncation_before_the_consumer_sees_the_end():
    pack = raw_pack([(3, b"hello")])
    short = pack[:-3]
    reader = GatedPackReader(io.BytesIO(short), len(short), PackScanner(**ROOMY), chunk_size=8)
    got = b""
    with pytest.raises(BundleError) as err:
        while True:
            got += reader.read_some(100)
    assert err.value.reason == "TruncatedBundle"
    assert got == short[:len(got)] and len(got) < len(short)


def test_gate_passes_a_good_pack_through_unchanged(publisher, two_commits, tmp_path):
    pack = pack_of(publisher, tmp_path)
    reader = GatedPackReader(io.BytesIO(pack), len(pack), PackScanner(**ROOMY), chunk_size=100)
    got = reader.read_all(12)
    while len(got) < len(pack):
        got += reader.read_some(999)
    assert got == pack
    reader.drain()


def test_gate_time_check_runs_per_chunk():
    pack = raw_pack([(3, b"hello")])
    calls = []
    reader = GatedPackReader(io.BytesIO(pack), len(pack), PackScanner(**ROOMY), chunk_size=4,
                             check=lambda: calls.append(1))
    reader.drain()
    assert len(calls) == -(-len(pack) // 4)
