"""Unsigned hostile bytes beside a good bundle, end to end through ``giter-agent sync``.

Each case is a few hundred bytes nobody signed: a commit whose tree or parent id is
upper-case hex, a committer line with an empty time zone, a ref name that is not UTF-8.
Every one must be a typed refusal of that bundle alone: the good bundle on the same
stick is still applied and the receipt written; over the network the same commit on
the hub is a refusal (exit 1), not a hub problem (exit 4).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.devices import SimDevice
from support.git import Publisher, run
from support.servers import GitDaemon, Hub

from giter_agent.cli.main import main

API = "apiVersion: giter.dev/v1alpha1\n"
IDENT = b"Mallory <m@example.invalid> 1700000000 +0000"


def motd(root: Path, text: str) -> str:
    return (f"{API}kind: File\nmetadata:\n  name: motd\nspec:\n"
            f"  path: {root}/motd\n  content: {json.dumps(text)}\n")


def store_raw(repo: Path, kind: str, raw: bytes) -> str:
    """Write ``raw`` as an object of ``kind`` exactly as given (git checks nothing)."""
    return run("git", "-C", repo, "hash-object", "-t", kind, "-w", "--literally", "--stdin",
               input=raw).stdout.decode().strip()


def pack_objects(repo: Path, *oids: str) -> bytes:
    """A pack of exactly these objects, made by git (no walking, so nothing is checked)."""
    return run("git", "-C", repo, "pack-objects", "--stdout",
               input="".join(f"{o}\n" for o in oids).encode()).stdout


def hostile_commit(pub: Publisher, case: str) -> tuple[str, list[str]]:
    """A commit on top of the publisher's main, broken as ``case`` says; (id, objects)."""
    head = pub.head()
    tree = pub.git("rev-parse", "HEAD^{tree}").stdout.decode().strip()
    tree_line, parent_line, committer = tree, head, IDENT
    if case == "upper-tree":
        tree_line = tree.upper()
    elif case == "upper-parent":
        parent_line = head.upper()
    elif case == "empty-tz":
        committer = b"Mallory <m@example.invalid> 1700000000 "
    raw = (b"tree " + tree_line.encode() + b"\nparent " + parent_line.encode()
           + b"\nauthor " + IDENT + b"\ncommitter " + committer + b"\n\nhostile\n")
    return store_raw(pub.root, "commit", raw), [tree]


def hostile_bundle(pub: Publisher, case: str) -> bytes:
    """The bytes of one hostile bundle: a bad commit, or a header with a non-UTF-8 ref."""
    good = pub.head()
    if case in ("ref-missing", "ref-twice"):
        blob = store_raw(pub.root, "blob", b"x\n")
        name = b"refs/heads/\xff\xfe"
        if case == "ref-missing":
            refs = [(name, b"1" * 40), (b"refs/heads/main", good.encode())]
        else:
            refs = [(name, good.encode()), (name, good.encode())]
        header = b"".join(oid + b" " + ref + b"\n" for ref, oid in refs)
        return b"# v2 git bundle\n" + header + b"\n" + pack_objects(pub.root, blob)
    bad, objects = hostile_commit(pub, case)
    header = b"-" + good.encode() + b" good\n" + bad.encode() + b" refs/heads/main\n\n"
    return b"# v2 git bundle\n" + header + pack_objects(pub.root, bad, *objects)


CASES = ["upper-tree", "upper-parent", "empty-tz", "ref-missing", "ref-twice"]
REASONS = {"upper-tree": "MalformedCommit", "upper-parent": "MalformedCommit",
           "empty-tz": "MalformedCommit", "ref-missing": "RefTargetMissing",
           "ref-twice": "MalformedBundle"}


@pytest.mark.parametrize("case", CASES)
def test_hostile_bundle_beside_a_good_one_is_refused_alone(tmp_path, publisher, case, capsys):
    device = SimDevice(tmp_path, "d1", publisher.allowed_signers)
    root, config = device.root, device.config
    inbox = tmp_path / "stick" / "giter" / "inbox"
    inbox.mkdir(parents=True)
    # Prerequisite-free hostile cases need the good history on the device first.
    first = publisher.commit("first", files={"devices/d1/motd.yaml": motd(root, "one\n")})
    if case not in ("ref-missing", "ref-twice"):
        publisher.bundle(tmp_path / "first.bundle")
        assert main(["-c", str(config), "sync", "--bundle", str(tmp_path / "first.bundle")]) == 0
    good = publisher.commit("second", files={"devices/d1/motd.yaml": motd(root, "two\n")})
    publisher.bundle(inbox / "b-good.bundle", *(("main",) if case.startswith("ref")
                                                 else (f"{first}..main",)))
    # Sorted first, so today it stops the pass before the good bundle is tried.
    run("git", "-C", publisher.root, "reset", "-q", "--hard", first)
    (inbox / "a-hostile.bundle").write_bytes(hostile_bundle(publisher, case))
    capsys.readouterr()

    code = main(["-c", str(config), "sync", "--usb", str(tmp_path / "stick")])

    out = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in out.out + out.err
    state = device.state()
    verdicts = {b["file"]: (b["verdict"], b["reason"]) for b in state.last_sync["bundles"]}
    assert verdicts == {"a-hostile.bundle": ("refused", REASONS[case]),
                        "b-good.bundle": ("applied", "Verified")}
    assert state.accepted == state.applied == good
    assert (root / "motd").read_text() == "two\n"
    receipt = (tmp_path / "stick" / "giter" / "outbox" / "d1.txt").read_text()
    assert "a-hostile.bundle" in receipt and good in receipt
    repo = device.dir / "state" / "repo.git"
    assert not list((repo / "quarantine").glob("*"))
    # Nothing of the hostile bundle reached the store: git's own check agrees.
    assert run("git", "--git-dir", repo, "fsck", "--no-dangling", check=False).returncode == 0


@pytest.mark.parametrize("case", ["upper-parent", "empty-tz"])
def test_hostile_commit_on_the_hub_is_a_refusal_not_a_hub_problem(tmp_path, publisher, case):
    hub = Hub(tmp_path / "hub")
    gitd = GitDaemon(hub).start()
    try:
        dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers, {"url": gitd.url})
        first = publisher.commit("first", files=dev.spec_files("hello\n"))
        hub.publish(publisher)
        assert dev.sync().outcome == "applied"

        bad, _ = hostile_commit(publisher, case)
        # git itself walks the hostile commit to serve it: it is on the hub as bytes.
        publisher.git("push", "-q", "--force", str(hub.path), f"{bad}:refs/heads/main")
        report = dev.sync()
        assert (report.outcome, report.reason, report.exit_code) == (
            "refused", "MalformedCommit", 1), report.message
        state = dev.state()
        assert state.accepted == state.applied == first
        assert state.network.state == "online"
    finally:
        gitd.stop()

