"""The attack table again, end to end: each attack arrives as a bundle through `sync`.

``test_trust`` proves the verifier's verdicts; this proves the promise around them:
after every refusal the accepted tip, the applied spec, every file the agent wrote and
the object store's refs are exactly as before, nothing is left in quarantine, and the
refusal is recorded with the verifier's reason. An old tip offered again in a bundle
file (the verifier's ``Rollback``) changes nothing either, and is reported as nothing
new rather than refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.git import run
from test_trust import ATTACKS, World, keys  # noqa: F401 - keys is a fixture World needs

from giter_agent.cli.main import main
from giter_agent.state.store import StateStore

MOTD = ("apiVersion: giter.dev/v1alpha1\nkind: File\nmetadata:\n  name: motd\nspec:\n"
        "  path: {root}/motd\n  content: {text}\n")


@pytest.mark.parametrize("build,reason", [(b, r) for _, b, r in ATTACKS],
                         ids=[name for name, _, _ in ATTACKS])
def test_attack_bundle_changes_nothing(tmp_path, keys, build, reason):  # noqa: F811
    world = World(tmp_path, keys)
    root = tmp_path / "device-root"
    root.mkdir()
    # Every attack history starts from the publisher's good commits; give the device a
    # resource in the first one so there is applied state for a refusal to disturb.
    world.commit("resources", files={"devices/d1/motd.yaml":
                                     MOTD.format(root=root, text=json.dumps("good\n"))})
    attack = build(world)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'device_id = "d1"\nstate_dir = "state"\nboard = "generic-mock"\n'
        f'allowed_signers = "{world.pinned}"\nroot_keys = "{world.root_file}"\n'
        f'[files]\nroots = ["{root}"]\n')
    state_store = StateStore(tmp_path / "state")
    bundle = tmp_path / "offer.bundle"

    def offer(commit: str) -> int:
        world.git("update-ref", "refs/heads/main", commit)
        bundle.unlink(missing_ok=True)
        world.git("bundle", "create", "-q", bundle, "main")
        return main(["-c", str(config), "sync", "--bundle", str(bundle)])

    if attack.accepted:
        assert offer(attack.accepted) == 0
    before_state = state_store.load()
    before_files = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    repo = tmp_path / "state" / "repo.git"
    before_refs = {p: p.read_bytes() for p in (repo / "refs").rglob("*") if p.is_file()}

    after_code = offer(attack.new)
    after = state_store.load()
    if reason == "Rollback":
        # An ancestor of the accepted spec in a bundle file is yesterday's stick, not a
        # threat: nothing new (exit 0), and, like a refusal, nothing changes.
        assert after_code == 0
        assert after.last_sync["outcome"] == "up-to-date"
        assert after.last_sync["bundles"][0]["reason"] == "OlderSpec"
    else:
        assert after_code == 1
        assert after.last_sync["outcome"] == "refused"
        assert after.last_sync["reason"] == reason
    assert (after.accepted, after.applied) == (before_state.accepted, before_state.applied)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before_files
    refs = {p: p.read_bytes() for p in (repo / "refs").rglob("*") if p.is_file()
            if "status" not in p.parts}  # the status ref records the refusal itself
    assert refs == {p: v for p, v in before_refs.items() if "status" not in p.parts}
    assert not list((repo / "quarantine").glob("*"))


def _with_junk(world: World, bundle: Path, revs: str, tmp: Path, mib: float = 1.5
               ) -> tuple[Path, list[str]]:
    """``bundle`` with its pack re-made by ``git pack-objects`` to carry unreachable junk.

    What a courier can do without any key: the header (refs, prerequisites) is the same,
    the pack checksum is right, every ref's history is complete; only junk is added.
    """
    junk = []
    for i in range(2):
        blob = tmp / f"junk{i}"
        blob.write_bytes(os.urandom(int(mib * 2**20 / 2)))
        junk.append(world.git("hash-object", "-w", blob).stdout.decode().strip())
    pack = world.git("pack-objects", "--revs", "--stdout", "-q",
                     input=(revs + "\n" + "\n".join(junk) + "\n").encode()).stdout
    raw = bundle.read_bytes()
    header = raw[:raw.index(b"\n\n") + 2]
    out = tmp / "junk.bundle"
    out.write_bytes(header + pack)
    return out, junk


def test_unreachable_junk_in_a_valid_bundle_is_not_kept(tmp_path, keys):  # noqa: F811
    world = World(tmp_path, keys)
    first = world.commit("first", files={"devices/d1/a.txt": "a"})
    config = tmp_path / "agent.toml"
    config.write_text(f'device_id = "d1"\nstate_dir = "state"\nboard = "generic-mock"\n'
                      f'allowed_signers = "{world.pinned}"\n')
    repo = tmp_path / "state" / "repo.git"

    def has(sha: str) -> bool:
        return run("git", "--git-dir", repo, "cat-file", "-e", sha,
                   check=False).returncode == 0

    def sync(bundle: Path) -> int:
        return main(["-c", str(config), "sync", "--bundle", str(bundle)])

    # A full bundle, then an incremental (thin) one: junk rides along with both.
    full = world.pub.bundle(tmp_path / "full.bundle")
    offer, junk = _with_junk(world, full, "main", tmp_path)
    assert run("git", "-C", world.pub.root, "bundle", "verify", offer).returncode == 0
    assert sync(offer) == 0
    assert has(first) and not any(has(j) for j in junk)

    tip = world.commit("second", files={"devices/d1/b.txt": "b"})
    thin = world.pub.bundle(tmp_path / "thin.bundle", "main", f"^{first}")
    offer, junk = _with_junk(world, thin, f"main\n^{first}", tmp_path)
    assert sync(offer) == 0
    assert StateStore(tmp_path / "state").load().accepted == tip
    assert has(tip) and not any(has(j) for j in junk)
    run("git", "--git-dir", repo, "fsck", "--strict", "--no-dangling")
    assert run("git", "--git-dir", repo, "count-objects", "-v").stdout.count(b"garbage: 0")


def _tree(world: World, entries: list[tuple[str, str, str]]) -> str:
    """A tree object of exactly these (mode, name, id) entries, in this order."""
    raw = b"".join(mode.encode() + b" " + name.encode() + b"\0" + bytes.fromhex(sha)
                   for mode, name, sha in entries)
    return world.git("hash-object", "-t", "tree", "--literally", "-w", "--stdin",
                     input=raw).stdout.decode().strip()


BROKEN_TREES = [
    # git shows the first of two same-named entries; a checkout writes the second.
    ("duplicate names", lambda b, d: [("100644", "a.txt", b[0]), ("100644", "a.txt", b[1]),
                                      ("40000", "devices", d)]),
    ("a file and a folder of one name", lambda b, d: [("100644", "devices", b[0]),
                                                      ("40000", "devices", d)]),
    ("empty name", lambda b, d: [("100644", "", b[0]), ("40000", "devices", d)]),
    ("file mode naming a tree", lambda b, d: [("100644", "a.txt", d), ("40000", "devices", d)]),
    ("folder mode naming a blob", lambda b, d: [("40000", "a", b[0]), ("40000", "devices", d)]),
    ("out of order", lambda b, d: [("40000", "devices", d), ("100644", "a.txt", b[0])]),
    ("a .git entry", lambda b, d: [("40000", ".GIT", d), ("40000", "devices", d)]),
    ("zero-padded mode", lambda b, d: [("040000", "a", d), ("40000", "devices", d)]),
    ("mode git never writes", lambda b, d: [("100664", "a.txt", b[0]), ("40000", "devices", d)]),
    ("a slash in a name", lambda b, d: [("100644", "a/b", b[0]), ("40000", "devices", d)]),
]


@pytest.mark.parametrize("entries", [e for _, e in BROKEN_TREES],
                         ids=[n for n, _ in BROKEN_TREES])
def test_tree_git_calls_broken_is_refused_and_not_kept(tmp_path, keys, entries):  # noqa: F811
    world = World(tmp_path, keys)
    root = tmp_path / "device-root"
    root.mkdir()
    accepted = world.commit("resources", files={"devices/d1/motd.yaml": MOTD.format(
        root=root, text=json.dumps("good\n"))})
    devices = world.git("rev-parse", "HEAD:devices").stdout.decode().strip()
    blobs = [world.git("hash-object", "-w", "--stdin", input=t).stdout.decode().strip()
             for t in (b"one\n", b"two\n")]
    tree = _tree(world, entries(blobs, devices))
    bad = world.git("-c", f"user.signingkey={world.keys['A']}", "commit-tree", "-S", tree,
                    "-p", accepted, "-m", "a broken tree").stdout.decode().strip()
    config = tmp_path / "agent.toml"
    config.write_text(f'device_id = "d1"\nstate_dir = "state"\nboard = "generic-mock"\n'
                      f'allowed_signers = "{world.pinned}"\n[files]\nroots = ["{root}"]\n')
    repo = tmp_path / "state" / "repo.git"
    assert main(["-c", str(config), "sync", "--bundle",
                 str(world.pub.bundle(tmp_path / "good.bundle"))]) == 0
    state = StateStore(tmp_path / "state")
    before = state.load()

    # git bundle create refuses to walk some of these trees: list the objects instead.
    pack = world.git("pack-objects", "--stdout", "-q",
                     input=f"{bad}\n{tree}\n{blobs[0]}\n{blobs[1]}\n".encode()).stdout
    offer = tmp_path / "bad.bundle"
    offer.write_bytes(f"# v2 git bundle\n-{accepted} resources\n{bad} refs/heads/main\n\n"
                      .encode() + pack)
    assert main(["-c", str(config), "sync", "--bundle", str(offer)]) == 1
    after = state.load()
    assert (after.last_sync["outcome"], after.last_sync["reason"]) == ("refused", "BrokenTree")
    assert (after.accepted, after.applied) == (before.accepted, before.applied)
    for sha in (bad, tree):
        assert run("git", "--git-dir", repo, "cat-file", "-e", sha, check=False).returncode
    run("git", "--git-dir", repo, "fsck", "--strict", "--no-dangling")
