"""history.ref_files: a plain loose ref read without dulwich, with git as the oracle;
every other shape is left to dulwich, and ``History.ref`` answers as git does in all."""

from __future__ import annotations

import os
import subprocess

import pytest

from giter_agent.history import ref_files
from giter_agent.history.bundle import _check_refname
from giter_agent.history.store import History

ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
       "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


def git(repo, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), *args], check=True, env=ENV,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    history = History(tmp_path / "repo.git")  # made as the device makes it
    history.close()
    tree = git(history.path, "hash-object", "-t", "tree", "-w", "/dev/null")
    tip = git(history.path, "commit-tree", tree, "-m", "one")
    git(history.path, "update-ref", "refs/heads/main", tip)
    return history.path, tip


def test_a_plain_loose_ref_and_a_missing_one(repo):
    path, tip = repo
    assert ref_files.read(path, b"refs/heads/main") == tip.encode()
    assert ref_files.read(path, b"refs/heads/status/pi-01") is None
    with pytest.raises(ref_files.Unknown):  # main is a file, not a folder
        ref_files.read(path, b"refs/heads/main/below")
    with History(path) as history:
        assert history.ref(b"refs/heads/main") == tip.encode()
        assert history.ref(b"refs/heads/none") is None
        assert "object_store" not in vars(history)  # read without opening the store


def test_packed_and_symbolic_refs_are_left_to_dulwich(repo):
    path, tip = repo
    git(path, "symbolic-ref", "refs/heads/alias", "refs/heads/main")
    with pytest.raises(ref_files.Unknown):
        ref_files.read(path, b"refs/heads/alias")  # "ref: refs/heads/main"
    git(path, "pack-refs", "--all", "--prune")
    assert not (path / "refs" / "heads" / "main").exists()
    for name in (b"refs/heads/main", b"refs/heads/none"):
        with pytest.raises(ref_files.Unknown):  # may be in packed-refs
            ref_files.read(path, name)
    with History(path) as history:
        assert history.ref(b"refs/heads/main") == git(path, "rev-parse",
                                                      "refs/heads/main").encode() == \
            tip.encode()
        assert history.ref(b"refs/heads/none") is None


@pytest.mark.parametrize("name", [b"refs/../HEAD", b"refs//x", b"HEAD", b"refs/heads/./x",
                                  b"objects/pack"])
def test_names_outside_refs_are_not_read_as_files(repo, name):
    path, _ = repo
    with pytest.raises(ref_files.Unknown):
        ref_files.read(path, name)


def test_a_file_of_another_shape_is_left_to_dulwich(repo):
    path, tip = repo
    (path / "refs" / "heads" / "odd").write_text(tip.upper() + "\n")
    (path / "refs" / "heads" / "long").write_text(tip + "\nmore\n")
    for name in (b"refs/heads/odd", b"refs/heads/long"):
        with pytest.raises(ref_files.Unknown):
            ref_files.read(path, name)


@pytest.mark.parametrize("name", [
    "refs/heads/main", "refs/heads/status/pi-01", "refs/tags/v1", "refs/heads/a_b-c",
    "refs/heads/v1.0", "refs/heads/x.lock", "refs/heads/.hidden", "refs/heads/a..b",
    "refs/heads/a//b", "refs/heads/end/", "refs/heads/end.", "refs/heads/a@{1}",
    "refs/heads/sp ace", "refs/heads/col:on", "refs/heads/t~1", "refs/heads/q?",
    "refs/heads/a\\b", "refs/x", "refs", "refs/heads/-dash"])
def test_bundle_ref_names_are_judged_as_git_judges_them(name):
    """The header's fast path for plain names and dulwich's check for the rest agree
    with ``git check-ref-format`` (HEAD aside, which a bundle may name)."""
    git_says = subprocess.run(["git", "check-ref-format", name], env=ENV,
                              capture_output=True).returncode == 0
    assert _check_refname(name.encode()) == git_says
