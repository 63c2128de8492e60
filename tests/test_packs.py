"""Packs: a batch of new objects is one pack with a constant number of fsyncs; packs are
consolidated so their number stays logarithmic, deltas and all; an object already packed
is never written again loose; a status export reads only the commits the hub lacks."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from dulwich.objects import Blob, Commit
from support.git import run

from giter_agent.history import chain_export
from giter_agent.history.packs import (
    capped_split,
    consolidate,
    geometric_split,
    pack_file_name,
    settled,
    write_merging,
)
from giter_agent.history.store import History
from giter_agent.history.tree import replace_files

STATUS = b"refs/heads/status/pi-01"


@pytest.fixture
def history(tmp_path) -> History:
    h = History(tmp_path / "repo.git")
    yield h
    h.close()


def fsck(history: History) -> None:
    proc = run("git", "--git-dir", history.path, "fsck", "--strict", "--no-dangling",
               check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-500:]


def blobs(i: int, n: int = 3) -> list[Blob]:
    return [Blob.from_string(f"report {i} file {j}\n".encode() * 20) for j in range(n)]


def pack_sizes(history: History) -> list[int]:
    return sorted(len(p.index) for p in history.object_store.packs)


@pytest.mark.parametrize("sizes", [[1, 1], [1, 2, 4, 100], [5, 5, 5, 5, 5], [1, 3, 9, 27],
                                   [10], [], [2, 3, 100, 150, 1000]])
def test_after_the_split_every_pack_outweighs_all_smaller_ones_twice(sizes):
    k = geometric_split(sorted(sizes))
    assert k != 1  # merging one pack would only rewrite it
    rest = [sum(sorted(sizes)[:k])] if k else []
    rest += sorted(sizes)[k:]
    for i in range(1, len(rest)):
        assert rest[i] >= 2 * sum(rest[:i])


def test_a_batch_of_new_objects_is_one_pack_with_a_constant_number_of_fsyncs(
        history, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    for n in (1, 50):
        calls.clear()
        with history.new_objects() as store:
            for blob in blobs(n, n):
                store.add_object(blob)
        assert len(calls) <= 3, f"{len(calls)} fsyncs for {n} objects"
    assert history.object_store.count_loose_objects() == 0
    assert pack_sizes(history) == [1, 50]
    fsck(history)


class Written:
    """Every ``os.fsync`` (by what the descriptor names) and every pack renamed into
    ``objects/pack/`` by this process."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fsyncs: list[str] = []
        self.packs: list[str] = []
        fsync, replace = os.fsync, os.replace

        def counted_fsync(fd: int) -> None:
            self.fsyncs.append(os.readlink(f"/proc/self/fd/{fd}"))
            fsync(fd)

        def counted_replace(src, dst, **kw) -> None:
            if str(dst).endswith(".pack"):
                self.packs.append(os.path.basename(dst))
            replace(src, dst, **kw)

        monkeypatch.setattr(os, "fsync", counted_fsync)
        monkeypatch.setattr(os, "replace", counted_replace)


def test_new_objects_a_merge_would_take_are_written_once_in_the_merged_pack(
        history, monkeypatch):
    """A status commit's objects on a device with small packs: one pack holds them and
    the small packs' objects (copied), written with the fsyncs of one merge (pack,
    index, folder; the folder again once the old packs are gone), and the consolidation
    after it finds nothing left to merge. Before, the batch was written as a pack of
    its own (3 fsyncs) and then rewritten by the merge (4 more)."""
    for i in (1, 2):
        with history.new_objects() as store:
            for blob in blobs(i):
                store.add_object(blob)
    assert pack_sizes(history) == [3, 3]
    written = Written(monkeypatch)
    new = blobs(3, 2)
    with history.new_objects(merge=True) as store:
        for blob in new:
            store.add_object(blob)
    assert len(written.packs) == 1, written.packs
    assert len(written.fsyncs) == 4, written.fsyncs
    pack_dir = str(history.path / "objects/pack")
    assert written.fsyncs.count(pack_dir) == 2, written.fsyncs
    assert pack_sizes(history) == [8]
    assert history.consolidate().merged_packs == 0
    assert len(written.packs) == 1  # nothing rewritten after it
    assert all(history.object_store[b.id].data == b.data
               for i in (1, 2) for b in blobs(i)) and history.object_store[new[0].id]
    assert not list((history.path / "objects" / "pack").glob("tmp*"))
    fsck(history)


def test_new_objects_a_merge_would_not_take_are_a_pack_of_their_own(history, monkeypatch):
    """When the split leaves the new pack out (it outweighs the small ones twice), it is
    written alone, as before, and the merge of the small ones is consolidate()'s."""
    for i in (1, 2):
        with history.new_objects() as store:
            store.add_object(blobs(i, 1)[0])
    written = Written(monkeypatch)
    with history.new_objects(merge=True) as store:
        for blob in blobs(3, 20):
            store.add_object(blob)
    assert pack_sizes(history) == [1, 1, 20] and len(written.fsyncs) == 3
    assert history.consolidate().merged_packs == 2
    assert pack_sizes(history) == [2, 20]
    fsck(history)


def test_a_damaged_small_pack_leaves_the_new_objects_a_pack_of_their_own(history):
    """A merged pack's entry that fails its checksum: the new objects are written as a
    pack of their own (never lost with the merge), the damaged pack stays, and the
    consolidation after says why it merged nothing."""
    for i in (1, 2):
        with history.new_objects() as store:
            for blob in blobs(i):
                store.add_object(blob)
    damaged = sorted((history.path / "objects/pack").glob("*.pack"))[0]
    damaged.chmod(0o644)
    with damaged.open("r+b") as fh:  # a bit flipped in the first entry's stored bytes
        fh.seek(14)
        byte = fh.read(1)
        fh.seek(14)
        fh.write(bytes([byte[0] ^ 0x40]))
    new = blobs(3, 2)
    with history.new_objects(merge=True) as store:
        for blob in new:
            store.add_object(blob)
    assert pack_sizes(history) == [2, 3, 3]
    assert all(history.object_store[b.id].data == b.data for b in new)
    done = history.consolidate()
    assert done.merged_packs == 0 and (done.skipped or "").startswith("CorruptObject")
    assert not list((history.path / "objects" / "pack").glob("tmp*"))


def test_an_object_already_packed_is_never_written_loose_again(history):
    with history.new_objects() as store:
        for blob in blobs(0):
            store.add_object(blob)
    for blob in blobs(0):
        history.object_store.add_object(blob)  # e.g. a status tree that did not change
    with history.new_objects() as store:
        for blob in blobs(0):
            store.add_object(blob)
    assert history.object_store.count_loose_objects() == 0
    assert pack_sizes(history) == [3]


def test_packs_stay_logarithmic_and_every_object_stays_readable(history):
    written = []
    for i in range(300):
        with history.new_objects() as store:
            for blob in blobs(i):
                store.add_object(blob)
                written.append(blob)
        history.consolidate()
    sizes = pack_sizes(history)
    assert sum(sizes) == len(written) == 900
    assert len(sizes) <= math.log2(900) + 1, sizes
    for i in range(1, len(sizes)):
        assert sizes[i] >= 2 * sum(sizes[:i])
    assert all(history.object_store[b.id].data == b.data for b in written)
    assert not list((history.path / "objects" / "pack").glob("tmp*"))
    fsck(history)


def test_consolidation_keeps_git_made_deltas_and_packs_loose_objects(tmp_path):
    work = tmp_path / "work"
    run("git", "init", "-q", "-b", "main", work)
    text = "".join(f"line {i} of a file that changes a little\n" for i in range(400))
    for i in range(6):
        (work / "big.txt").write_text(text + f"change {i}\n")
        run("git", "-C", work, "add", "big.txt")
        run("git", "-C", work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm",
            f"c{i}")
        # The first three in one pack, with deltas between them; then a pack per commit.
        if i >= 2:
            run("git", "-C", work, "repack", "-q", "-d", *(["-a"] if i == 2 else []))
    repo = work / ".git"
    with History(repo) as history:
        for blob in blobs(0, 300):
            history.object_store.add_object(blob)  # loose, past the threshold
        before = len(history.object_store.packs)
        result = history.consolidate()
        assert result.packed_loose == 300
        assert result.merged_packs >= 2
        assert len(history.object_store.packs) < before
        assert history.object_store.count_loose_objects() == 0
    proc = run("git", "--git-dir", repo, "fsck", "--strict", "--no-dangling")
    assert proc.returncode == 0
    verify = run("git", "--git-dir", repo, "verify-pack", "-v",
                 *sorted(str(p) for p in (repo / "objects/pack").glob("*.idx")))
    assert b"chain length = 1" in verify.stdout  # the deltas were kept, not inflated


# -- the status export reads only what the hub lacks -----------------------------------

def status_history(history: History, n: int) -> tuple[bytes, list[bytes]]:
    """A spec commit and ``n`` status commits on it (first parent: the previous one)."""
    with history.new_objects() as store:
        spec_tree = replace_files(store, None, {"devices/pi-01/motd.yaml": b"kind: File\n"})
        spec = Commit()
        spec.tree, spec.parents = spec_tree, []
        spec.author = spec.committer = b"p <p@p>"
        spec.author_time = spec.commit_time = 1_700_000_000
        spec.author_timezone = spec.commit_timezone = 0
        spec.message = b"spec\n"
        store.add_object(spec)
    chain: list[bytes] = []
    for i in range(n):
        with history.new_objects() as store:
            tree = replace_files(store, spec_tree, {
                ".giter/status/pi-01.yaml": f"report {i}\n".encode(),
                "devices/pi-01/motd.yaml": f"kind: File\nstatus: {i % 2}\n".encode()})
            commit = Commit()
            commit.tree = tree
            commit.parents = [chain[-1], spec.id] if chain else [spec.id]
            commit.author = commit.committer = b"d <d@d>"
            commit.author_time = commit.commit_time = 1_700_000_000 + i
            commit.author_timezone = commit.commit_timezone = 0
            commit.message = f"status {i}\n".encode()
            store.add_object(commit)
        chain.append(commit.id)
    history.set_ref(b"refs/heads/main", None, spec.id)
    history.set_ref(STATUS, None, chain[-1])
    return spec.id, chain


def count_commit_reads(monkeypatch, history: History) -> list[bytes]:
    store = history.object_store
    seen: list[bytes] = []
    real = type(store).get_raw

    def get_raw(self, sha):
        type_num, raw = real(self, sha)
        if type_num == Commit.type_num:
            seen.append(sha)
        return type_num, raw

    monkeypatch.setattr(type(store), "get_raw", get_raw)
    return seen


def test_a_status_bundle_after_one_new_commit_reads_a_constant_number_of_commits(
        tmp_path, history, monkeypatch):
    from giter_agent.state.store import State
    from giter_agent.sync.export import write_status_bundle

    spec, chain = status_history(history, 400)
    # The hub: everything but the newest status commit.
    hub = tmp_path / "hub.git"
    run("git", "init", "-q", "--bare", hub)
    run("git", "--git-dir", history.path, "push", "-q", hub,
        f"{chain[-2].decode()}:{STATUS.decode()}", f"{spec.decode()}:refs/heads/main")
    state = State(applied=spec.decode(), accepted=spec.decode(),
                  status_tip=chain[-1].decode())
    reads = count_commit_reads(monkeypatch, history)
    out = tmp_path / "pi-01.bundle"
    assert write_status_bundle(history, state, STATUS, out, hub_has=chain[-2].decode())
    assert len(reads) <= 8, f"{len(reads)} commit reads for one new status commit"
    run("git", "--git-dir", hub, "bundle", "verify", out)
    run("git", "--git-dir", hub, "fetch", "-q", out, f"{STATUS.decode()}:{STATUS.decode()}")
    assert run("git", "--git-dir", hub, "rev-parse", STATUS.decode()).stdout.strip() \
        == chain[-1]
    proc = run("git", "--git-dir", hub, "fsck", "--strict", "--no-dangling", check=False)
    assert proc.returncode == 0


def test_without_the_hubs_word_the_whole_chain_goes_and_git_takes_it(tmp_path, history):
    spec, chain = status_history(history, 30)
    out = tmp_path / "all.bundle"
    result = history.write_chain_bundle(out, STATUS, chain[-1], {spec})
    assert result.commits == chain[::-1] and result.boundary == [spec]
    hub = tmp_path / "hub.git"
    run("git", "init", "-q", "--bare", hub)
    run("git", "--git-dir", history.path, "push", "-q", hub,
        f"{spec.decode()}:refs/heads/main")
    run("git", "--git-dir", hub, "fetch", "-q", out, f"{STATUS.decode()}:{STATUS.decode()}")
    proc = run("git", "--git-dir", hub, "fsck", "--strict", "--no-dangling", check=False)
    assert proc.returncode == 0


def test_reaches_follows_first_parents_only(history):
    _spec, chain = status_history(history, 5)
    store = history.object_store
    assert chain_export.reaches(store, chain[-1], chain[0])
    assert chain_export.reaches(store, chain[-1], chain[-1])
    assert not chain_export.reaches(store, chain[0], chain[-1])


def test_a_status_push_reads_only_the_new_commits(tmp_path, history, monkeypatch):
    from dulwich.client import LocalGitClient

    spec, chain = status_history(history, 300)
    hub = tmp_path / "hub.git"
    run("git", "init", "-q", "--bare", hub)
    run("git", "--git-dir", history.path, "push", "-q", hub,
        f"{chain[-2].decode()}:{STATUS.decode()}", f"{spec.decode()}:refs/heads/main")
    reads = count_commit_reads(monkeypatch, history)
    old = history.push_ref(LocalGitClient(), str(hub), STATUS, chain[-1],
                           may_replace=lambda old: old == chain[-2], first_parent=True)
    assert old == chain[-2]
    assert len(reads) <= 10, f"{len(reads)} commit reads for one new status commit"
    assert run("git", "--git-dir", hub, "rev-parse", STATUS.decode()).stdout.strip() \
        == chain[-1]
    proc = run("git", "--git-dir", hub, "fsck", "--strict", "--no-dangling", check=False)
    assert proc.returncode == 0


def test_a_push_building_on_a_spec_the_server_lacks_sends_it(tmp_path, history):
    from dulwich.client import LocalGitClient

    spec, chain = status_history(history, 3)
    hub = tmp_path / "hub.git"
    run("git", "init", "-q", "--bare", hub)  # has neither the spec nor any status
    history.push_ref(LocalGitClient(), str(hub), STATUS, chain[-1],
                     may_replace=lambda old: old is None, first_parent=True)
    proc = run("git", "--git-dir", hub, "fsck", "--strict", "--no-dangling", check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert run("git", "--git-dir", hub, "cat-file", "-t", spec.decode()).stdout.strip() \
        == b"commit"


def test_the_hub_import_holds_the_writer_lock(tmp_path, history):
    from giter_agent.core.errors import HistoryError

    with history.writer_lock():
        other = History(history.path)
        with pytest.raises(HistoryError) as err, other.writer_lock():
            pass
        assert err.value.reason == "RepositoryLocked"
        other.close()
    with history.writer_lock():
        pass




def test_the_whole_chain_stops_at_the_spec_the_first_report_observed(tmp_path, history):
    """Reports that observed two specs: the bundle holds the reports, never the spec
    history below them (the hub has it), and git takes it with only the spec branch."""
    spec1, chain = status_history(history, 3)
    with history.new_objects() as store:
        spec2 = Commit()
        spec2.tree = store[spec1].tree
        spec2.parents = [spec1]
        spec2.author = spec2.committer = b"p <p@p>"
        spec2.author_time = spec2.commit_time = 1_700_000_100
        spec2.author_timezone = spec2.commit_timezone = 0
        spec2.message = b"spec 2\n"
        store.add_object(spec2)
        report = Commit()
        report.tree = store[chain[-1]].tree
        report.parents = [chain[-1], spec2.id]
        report.author = report.committer = b"d <d@d>"
        report.author_time = report.commit_time = 1_700_000_200
        report.author_timezone = report.commit_timezone = 0
        report.message = b"status on spec 2\n"
        store.add_object(report)
    history.set_ref(b"refs/heads/main", spec1, spec2.id)
    out = tmp_path / "all.bundle"
    result = history.write_chain_bundle(out, STATUS, report.id, {spec2.id})
    assert result.commits == [report.id, *chain[::-1]]
    assert sorted(result.boundary) == sorted([spec1, spec2.id])
    hub = tmp_path / "hub.git"
    run("git", "init", "-q", "--bare", hub)
    run("git", "--git-dir", history.path, "push", "-q", hub, "refs/heads/main")
    run("git", "--git-dir", hub, "fetch", "-q", out, f"{STATUS.decode()}:{STATUS.decode()}")
    listed = run("git", "bundle", "list-heads", out).stdout
    assert listed.count(b"\n") == 1
    proc = run("git", "--git-dir", hub, "fsck", "--strict", "--no-dangling", check=False)
    assert proc.returncode == 0


def test_a_hub_packed_by_git_gc_loses_no_object_and_leaves_no_orphan(tmp_path):
    hub = tmp_path / "hub.git"
    pack_dir = hub / "objects/pack"
    run("git", "init", "-q", "--bare", hub)
    with History(hub) as history:
        status_history(history, 3)
    run("git", "--git-dir", hub, "repack", "-q", "-a", "-d", "-b")  # a pack with a bitmap
    assert list(pack_dir.glob("*.bitmap"))
    with History(hub) as history:
        for i in range(5):
            with history.new_objects() as store:
                for blob in blobs(i, 6):
                    store.add_object(blob)
        total = sum(pack_sizes(history))
        assert history.consolidate().merged_packs == 6
        assert pack_sizes(history) == [total]
    assert sorted(p.suffix for p in pack_dir.iterdir()) == [".idx", ".pack"]
    fsck(history)


def test_a_backlog_of_packs_is_merged_over_several_calls_each_bounded(history):
    # A device upgraded after a year of one pack per status commit: 40 packs of 3.
    written = []
    for i in range(40):
        with history.new_objects() as store:
            for blob in blobs(i):
                store.add_object(blob)
                written.append(blob)
    assert capped_split([3] * 40, max_objects=30) == 10
    assert capped_split([50, 60, 500], max_objects=30) == 0  # the bound is never passed
    calls = []
    while (result := consolidate(history.object_store, max_objects=30)).merged_packs:
        assert result.objects_written <= 30
        calls.append(result.merged_packs)
    assert len(calls) > 1  # not one unbounded merge
    sizes = pack_sizes(history)
    small = [size for size in sizes if not settled(size, 30)]
    for i in range(1, len(small)):
        assert small[i] >= 2 * sum(small[:i])
    assert len(sizes) - len(small) <= sum(sizes) // 15  # settled: over half the bound each
    assert all(history.object_store[b.id].data == b.data for b in written)
    fsck(history)


def test_new_status_packs_never_drag_a_settled_pack_into_a_merge(history):
    """A year-old device whose smallest old packs are each over half a merge's bound: the
    new pack of every status commit is the smallest, so "merge the two smallest" would
    rewrite the same old pack at every sync, for ever. It merges only among the small."""
    for i, n in enumerate((20, 20, 60)):  # settled under a bound of 30
        with history.new_objects() as store:
            for blob in blobs(1000 + i, n):
                store.add_object(blob)
    old = {pack_file_name(p) for p in history.object_store.packs}
    written = 0
    for i in range(12):
        objects = blobs(i)
        if i % 2:  # as a status commit on a device writes: merged in the same write
            write_merging(history.object_store, objects, max_objects=30)
        else:
            with history.new_objects() as store:
                for blob in objects:
                    store.add_object(blob)
        written += consolidate(history.object_store, max_objects=30).objects_written
        assert old <= {pack_file_name(p) for p in history.object_store.packs}, i
    assert written <= 12 * 3 * 3  # each small object rewritten a few times, not 20 each
    small = [size for size in pack_sizes(history) if not settled(size, 30)]
    for i in range(1, len(small)):
        assert small[i] >= 2 * sum(small[:i])
    fsck(history)


def test_a_kept_pack_is_never_merged_away(history):
    for i in range(4):
        with history.new_objects() as store:
            for blob in blobs(i):
                store.add_object(blob)
    kept = history.object_store.packs[0]
    Path(kept._basename + ".keep").write_text("")
    assert history.consolidate().merged_packs == 3
    assert Path(kept._data_path).exists() and Path(kept._idx_path).exists()
    assert pack_sizes(history) == [3, 9]
    fsck(history)


def test_loose_objects_are_counted_from_the_folders_that_exist(history, monkeypatch):
    """Consolidation (after every status commit) counts loose objects by listing the
    fan-out folders that exist, never by trying all 256 of a store that packs all."""
    from giter_agent.history.packs import count_loose

    objects = Path(history.object_store.path)
    with history.new_objects() as store:
        for blob in blobs(0):
            store.add_object(blob)
    assert count_loose(objects) == 0 == history.object_store.count_loose_objects()
    missing: list[str] = []
    listdir = os.listdir

    def counted(path="."):
        try:
            return listdir(path)
        except FileNotFoundError:
            missing.append(str(path))
            raise

    monkeypatch.setattr(os, "listdir", counted)
    consolidate(history.object_store)
    assert missing == []
    monkeypatch.undo()
    for blob in blobs(1, 5):
        history.object_store.add_object(blob)  # loose, as dulwich writes one
    (objects / "ab").mkdir(exist_ok=True)  # an empty fan-out folder, as git leaves them
    (objects / "ab" / "not-an-object").write_bytes(b"")
    assert count_loose(objects) == 5 == history.object_store.count_loose_objects()
    assert count_loose(objects / "nowhere") == 0


def test_consolidation_reads_pack_names_from_files_never_from_their_ids(history, monkeypatch):
    """After every status commit: dulwich's ``Pack.name()`` hashes every id of a pack, so
    asking it of a device's big old pack would make each commit cost the whole history."""
    from dulwich.pack import Pack

    with history.new_objects() as store:
        for blob in blobs(0, 200):
            store.add_object(blob)
    for i in (1, 2):
        with history.new_objects() as store:
            for blob in blobs(i, 4):
                store.add_object(blob)
    names_before = {pack_file_name(p) for p in history.object_store.packs}
    # This module names a pack by its ids, as dulwich does: the same names, unhashed.
    assert names_before == {f"pack-{p.name().decode()}" for p in history.object_store.packs}
    asked: list[str] = []
    monkeypatch.setattr(Pack, "name", lambda self: asked.append(self._basename) or b"")
    assert history.consolidate().merged_packs == 2
    assert asked == []
    monkeypatch.undo()
    assert pack_sizes(history) == [8, 200]
    fsck(history)


def test_a_lookup_probes_the_newest_pack_first(tmp_path, monkeypatch):
    """As git does: on a device the recent objects (the status tip, the spec just applied)
    are in the newest packs, and a lookup that probed every old pack first would cost
    more the older the device."""
    from dulwich.pack import Pack

    h = History(tmp_path / "repo.git")
    newest: list[Blob] = []
    for i in range(6):
        with h.new_objects() as store:
            newest = blobs(i, 40 - 6 * i)  # sizes 40 .. 10: nothing to merge
            for blob in newest:
                store.add_object(blob)
    pack_dir = h.path / "objects" / "pack"
    for age, pack in enumerate(sorted(pack_dir.glob("*.pack"),
                                      key=lambda p: p.stat().st_size)):
        os.utime(pack, ns=(10**18 - age * 10**12,) * 2)  # the smallest is the newest
    h.close()
    asked: list[str] = []
    get_raw = Pack.get_raw
    monkeypatch.setattr(Pack, "get_raw", lambda self, sha: (asked.append(self._basename),
                                                            get_raw(self, sha))[1])
    h = History(tmp_path / "repo.git")
    try:
        assert h.object_store[newest[0].id].data == newest[0].data
        assert len(asked) == 1
    finally:
        h.close()
