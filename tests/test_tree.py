"""Reading a commit's tree from the object store through the allowlist, and writing new
trees; the trees come from real git and what we write is checked by ``git fsck``."""

from __future__ import annotations

import os

import pytest
from dulwich.object_store import DiskObjectStore

from giter_agent.core.errors import TreeError
from giter_agent.history.tree import iter_files, read_file, replace_files

DEVICE = "devices/dev-1"
LAYOUT = {
    "README.md": "# fleet\n",
    ".giter/trust/allowed_signers": "publisher ssh-ed25519 AAAA\n",
    f"{DEVICE}/led.yaml": "kind: Output\n",
    f"{DEVICE}/files/motd.yaml": "kind: File\n",
    f"{DEVICE}/z-last.yaml": "kind: File\n",
    "devices/dev-2/other.yaml": "kind: Output\n",
    "groups/all/f.yaml": "kind: File\n",
}


@pytest.fixture
def store(publisher):
    s = DiskObjectStore(str(publisher.root / ".git" / "objects"))
    yield s
    s.close()


def tree_of(publisher, rev="HEAD") -> bytes:
    return publisher.head(f"{rev}^{{tree}}").encode()


@pytest.fixture
def layout(publisher):
    publisher.commit("layout", sign=False, files=LAYOUT)
    return tree_of(publisher)


def test_iter_files_yields_the_prefix_only_sorted(store, layout):
    files = list(iter_files(store, layout, DEVICE, max_blob=1 << 20))
    assert files == [
        (f"{DEVICE}/files/motd.yaml", b"kind: File\n"),
        (f"{DEVICE}/led.yaml", b"kind: Output\n"),
        (f"{DEVICE}/z-last.yaml", b"kind: File\n"),
    ]
    assert [p for p, _ in iter_files(store, layout, "groups/all", 100)] == ["groups/all/f.yaml"]
    assert list(iter_files(store, layout, "/devices/dev-1/", 100)) == files


def test_missing_prefix_yields_nothing(store, layout):
    assert list(iter_files(store, layout, "devices/dev-9", 100)) == []
    assert list(iter_files(store, layout, "groups/none/deeper", 100)) == []


def test_prefix_that_is_a_file_is_refused(store, layout):
    with pytest.raises(TreeError, match=r"devices/dev-1/led\.yaml: is not a directory"):
        list(iter_files(store, layout, f"{DEVICE}/led.yaml", 100))


def test_executable_regular_files_are_allowed(publisher, store, layout):
    (publisher.root / DEVICE / "led.yaml").chmod(0o755)
    publisher.commit("exec", sign=False)
    assert dict(iter_files(store, tree_of(publisher), DEVICE, 100))[f"{DEVICE}/led.yaml"]


def symlink(publisher):
    os.symlink("/etc/shadow", publisher.root / DEVICE / "evil.yaml")
    publisher.git("add", "-A")


def submodule(publisher):
    publisher.git("update-index", "--add", "--cacheinfo",
                  f"160000,{publisher.head()},{DEVICE}/sub")


def named(name):
    def make(publisher):
        publisher.write(f"{DEVICE}/{name}", "x: 1\n")
        publisher.git("add", "-A")
    return make


def collision(publisher):
    publisher.write(f"{DEVICE}/Led.yaml", "x: 1\n")  # beside led.yaml
    publisher.git("add", "-A")


@pytest.mark.parametrize("make, path, words", [
    (symlink, f"{DEVICE}/evil.yaml", "symlink"),
    (submodule, f"{DEVICE}/sub", "submodule"),
    (named("Upper.yaml"), f"{DEVICE}/Upper.yaml", "name is not allowed"),
    (named(".hidden.yaml"), f"{DEVICE}/.hidden.yaml", "name is not allowed"),
    (named("files/.config/x.yaml"), f"{DEVICE}/files/.config", "name is not allowed"),
    (named("with space.yaml"), f"{DEVICE}/with space.yaml", "name is not allowed"),
    (named("-dash.yaml"), f"{DEVICE}/-dash.yaml", "name is not allowed"),
    (named("files/deeper/Bad.yaml"), f"{DEVICE}/files/deeper/Bad.yaml", "not allowed"),
    (named("caf\u00e9.yaml"), f"{DEVICE}/caf\u00e9.yaml", "name is not allowed"),
    (collision, f"{DEVICE}/led.yaml", "collides with 'devices/dev-1/Led.yaml'"),
], ids=["symlink", "submodule", "uppercase", "dotfile", "dot-dir", "space", "dash",
        "deep", "non-ascii", "case-collision"])
def test_allowlist_refuses_unsafe_entries(publisher, store, layout, make, path, words):
    make(publisher)
    publisher.git("commit", "-q", "--no-gpg-sign", "-m", "unsafe")
    tree = tree_of(publisher)
    with pytest.raises(TreeError) as err:
        list(iter_files(store, tree, DEVICE, 1 << 20))
    assert err.value.reason == "UnsafeTreeEntry"
    assert str(err.value).startswith(path + ":")
    assert words in str(err.value)
    # Another device's files are not affected by what sits under dev-1.
    assert [p for p, _ in iter_files(store, tree, "devices/dev-2", 100)] == [
        "devices/dev-2/other.yaml"]


def mktree(publisher, entries: list[tuple[str, str, str]]) -> str:
    """``git mktree``: trees git itself would never commit from a work tree."""
    text = "".join(f"{mode} {kind} {sha}\t{name}\n" for mode, kind, sha, name in entries)
    return publisher.git("mktree", input=text.encode()).stdout.decode().strip()


@pytest.mark.parametrize("name", ["..", ".git", ".", "con.yaml\\x"])
def test_hostile_names_crafted_with_mktree_are_refused(publisher, store, name):
    blob = publisher.git("hash-object", "-w", "--stdin", input=b"x\n").stdout.decode().strip()
    dev = mktree(publisher, [("100644", "blob", blob, name)])
    devices = mktree(publisher, [("040000", "tree", dev, "dev-1")])
    root = mktree(publisher, [("040000", "tree", devices, "devices")])
    with pytest.raises(TreeError) as err:
        list(iter_files(store, root.encode(), DEVICE, 100))
    assert err.value.reason == "UnsafeTreeEntry"


def test_unsafe_tree_yields_no_file_at_all(publisher, store, layout):
    publisher.write(f"{DEVICE}/zz/Bad.yaml", "x\n")  # sorts after every safe file
    publisher.commit("late bad", sign=False)
    files = iter_files(store, tree_of(publisher), DEVICE, 100)
    with pytest.raises(TreeError):
        next(files)


def test_blob_over_max_is_refused(store, layout):
    with pytest.raises(TreeError) as err:
        list(iter_files(store, layout, DEVICE, max_blob=5))
    assert err.value.reason == "FileTooLarge"
    assert "devices/dev-1/files/motd.yaml" in str(err.value)


def test_read_file_reads_caller_named_paths(store, layout):
    assert read_file(store, layout, ".giter/trust/allowed_signers") == (
        b"publisher ssh-ed25519 AAAA\n")
    assert read_file(store, layout, "README.md") == b"# fleet\n"
    assert read_file(store, layout, ".giter/trust/missing") is None
    assert read_file(store, layout, ".giter/none/x") is None
    with pytest.raises(TreeError, match="is a directory"):
        read_file(store, layout, ".giter/trust")
    with pytest.raises(TreeError, match="over the 3-byte limit"):
        read_file(store, layout, "README.md", max_blob=3)


def test_read_file_never_follows_a_symlink(publisher, store, layout):
    (publisher.root / ".giter/trust/allowed_signers").unlink()
    os.symlink("/etc/passwd", publisher.root / ".giter/trust/allowed_signers")
    publisher.commit("swap", sign=False)
    with pytest.raises(TreeError) as err:
        read_file(store, tree_of(publisher), ".giter/trust/allowed_signers")
    assert err.value.reason == "UnsafeTreeEntry"
    assert "symlink" in str(err.value)


def test_replace_files_builds_what_git_would(publisher, store, layout):
    (publisher.root / DEVICE / "z-last.yaml").chmod(0o755)
    publisher.commit("exec", sign=False)
    base = tree_of(publisher)
    new = replace_files(store, base, {
        f"{DEVICE}/led.yaml": b"kind: Output\nstatus: {ready: true}\n",
        f"{DEVICE}/z-last.yaml": b"kind: File\nstatus: {}\n",
        f"{DEVICE}/new/deep/x.yaml": b"x\n",
        "status/dev-1.yaml": b"seen: true\n",
    })
    publisher.git("fsck", "--strict", "--no-dangling")  # our objects, checked by git

    def listing(tree: bytes) -> dict[str, tuple[str, str]]:
        out = publisher.git("ls-tree", "-r", tree.decode()).stdout.decode()
        return {line.split("\t")[1]: tuple(line.split("\t")[0].split()[::2])
                for line in out.splitlines()}

    before, after = listing(base), listing(new)
    assert publisher.git("show", f"{new.decode()}:{DEVICE}/led.yaml").stdout == (
        b"kind: Output\nstatus: {ready: true}\n")
    assert after[f"{DEVICE}/z-last.yaml"][0] == "100755"  # a replaced file keeps its mode
    assert after[f"{DEVICE}/new/deep/x.yaml"][0] == "100644"
    assert after["status/dev-1.yaml"][0] == "100644"
    untouched = set(before) - {f"{DEVICE}/led.yaml", f"{DEVICE}/z-last.yaml"}
    assert {p: after[p] for p in untouched} == {p: before[p] for p in untouched}
    assert set(after) - set(before) == {f"{DEVICE}/new/deep/x.yaml", "status/dev-1.yaml"}
    # Reading back through the allowlist gives what was written.
    assert dict(iter_files(store, new, f"{DEVICE}/new", 100)) == {
        f"{DEVICE}/new/deep/x.yaml": b"x\n"}


def test_replace_files_writes_caller_named_dot_paths(store, layout):
    tree = replace_files(store, layout, {".giter/status/dev-1.yaml": b"ok: true\n"})
    assert read_file(store, tree, ".giter/status/dev-1.yaml") == b"ok: true\n"
    assert read_file(store, tree, ".giter/trust/allowed_signers") == (
        b"publisher ssh-ed25519 AAAA\n")


def test_replace_files_from_nothing(store):
    tree = replace_files(store, None, {"a/b.yaml": b"1\n"})
    assert read_file(store, tree, "a/b.yaml") == b"1\n"


@pytest.mark.parametrize("files, error", [
    ({DEVICE: b"x"}, "is a directory"),
    ({f"{DEVICE}/led.yaml/x": b"x"}, "is a file where a directory is needed"),
    ({f"{DEVICE}/.git/config": b"x"}, "not an allowed name"),
    ({f"{DEVICE}/.GIT": b"x"}, "not an allowed name"),
    ({f"{DEVICE}/a\0b": b"x"}, "not an allowed name"),
    ({f"{DEVICE}/../escape": b"x"}, "'..'"),
])
def test_replace_files_refuses_unsafe_writes(store, layout, files, error):
    with pytest.raises((TreeError, ValueError), match=error):
        replace_files(store, layout, files)
