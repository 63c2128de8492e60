"""Trust over any history shape, end to end through `giter-agent sync`.

The rule under test (docs/trust.md): a device takes a new commit only if every parent of
it is the accepted tip or another new commit, and its signer is trusted by the trust
file of every one of those parents; no commit without parents after the first one.
Each attack below is a history a signer can make with plain `git commit-tree -S`; each
is offered as a bundle to a device through the real CLI, and must be refused with the
accepted tip, the applied spec, the files the agent wrote and the refs unchanged, and
with nothing of it left in the object store. The normal shapes (linear, a merged
feature branch that forked from the accepted tip) still apply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.git import pub_line, run, write_allowed_signers
from test_trust import TRUST_PATH, World, keys  # noqa: F401 - keys is a fixture World needs

from giter_agent.cli.main import main
from giter_agent.core.errors import TrustError
from giter_agent.history.walk import ancestors
from giter_agent.state.store import StateStore
from giter_agent.trust.spec_rule import TrustRoot, verify_update
from giter_agent.trust.trailers import branch_of, expires_of, with_branch_trailer

MOTD = ("apiVersion: giter.dev/v1alpha1\nkind: File\nmetadata:\n  name: motd\nspec:\n"
        "  path: {root}/motd\n  content: {text}\n")


def craft(w: World, parents: list[str], key: str, files: dict[str, str] | None = None,
          message: str = "crafted") -> str:
    """A commit with exactly these parents (any order, any number), signed by ``key``.

    The tree is the work tree with ``files`` written over it: what a signer who holds
    ``key`` can make with plain git, whatever the branch looks like.
    """
    for rel, text in (files or {}).items():
        w.pub.write(rel, text)
    w.git("add", "-A")
    tree = w.git("write-tree").stdout.decode().strip()
    args = [a for p in parents for a in ("-p", p)]
    return w.git("-c", f"user.signingkey={w.keys[key]}", "commit-tree", "-S", tree, *args,
                 "-m", message).stdout.decode().strip()


@dataclass
class Case:
    accepted: str        # what the device holds
    new: str             # what the attacker offers as main
    reason: str
    pinned: tuple[str, ...] = ("A",)
    genesis: str | None = None
    repin: tuple[str, ...] | None = None  # the pinned file after the first sync


def _revoked_b(w: World) -> tuple[str, str]:
    """c0 trusts A and B; the accepted tip removes B. Returns (c0, accepted)."""
    c0 = w.commit("trust A and B", files={TRUST_PATH: w.trust_text("A", "B")})
    return c0, w.commit("revoke B", files={TRUST_PATH: w.trust_text("A")})


def first_parent_old(w: World) -> Case:
    c0, tip = _revoked_b(w)
    evil = {TRUST_PATH: w.trust_text("B", "M")}
    return Case(tip, craft(w, [c0, tip], "B", evil), "Fork")


def second_parent_old(w: World) -> Case:
    c0, tip = _revoked_b(w)
    return Case(tip, craft(w, [tip, c0], "A", {"devices/d1/x.txt": "old"}), "Fork")


def both_parents_new(w: World) -> Case:
    """B, still trusted at the accepted tip, merges the publisher's revocation of B."""
    tip = w.commit("trust A and B", files={TRUST_PATH: w.trust_text("A", "B")})
    revoke = w.commit("revoke B", files={TRUST_PATH: w.trust_text("A")})
    w.git("checkout", "-q", TRUST_PATH)
    own = craft(w, [tip], "B", {TRUST_PATH: w.trust_text("A", "B")}, "B's own line")
    return Case(tip, craft(w, [own, revoke], "B", {TRUST_PATH: w.trust_text("B", "M")}),
                "UnknownSigner")


def octopus(w: World) -> Case:
    tip = w.commit("trust A and B", files={TRUST_PATH: w.trust_text("A", "B")})
    revoke = w.commit("revoke B", files={TRUST_PATH: w.trust_text("A")})
    own = craft(w, [tip], "B", {TRUST_PATH: w.trust_text("A", "B")}, "B's own line")
    side = craft(w, [tip], "A", {"devices/d1/y.txt": "y"}, "a side line")
    return Case(tip, craft(w, [own, side, revoke], "B", {TRUST_PATH: w.trust_text("B", "M")}),
                "UnknownSigner")


def octopus_with_old_parent(w: World) -> Case:
    c0, tip = _revoked_b(w)
    side = craft(w, [tip], "A", {"devices/d1/y.txt": "y"}, "a side line")
    return Case(tip, craft(w, [c0, side, tip], "B", {TRUST_PATH: w.trust_text("B")}), "Fork")


def parentless_merged_in(w: World) -> Case:
    """B is retired in the repository but still in the device's pinned file."""
    w.commit("trust A and B", files={TRUST_PATH: w.trust_text("A", "B")})
    tip = w.commit("retire B", files={TRUST_PATH: w.trust_text("A")})
    root = craft(w, [], "B", {TRUST_PATH: w.trust_text("M")}, "a new root")
    return Case(tip, craft(w, [root, tip], "M", {TRUST_PATH: w.trust_text("M")}), "NewRoot",
                pinned=("A", "B"))


def revoked_key_signs_merge(w: World) -> Case:
    """A side line B started before its revocation, merged by B onto the accepted tip."""
    c0, tip = _revoked_b(w)
    side = craft(w, [c0], "B", {TRUST_PATH: w.trust_text("B", "M")}, "B's side line")
    return Case(tip, craft(w, [side, tip], "B"), "Fork")


def pinned_to_new_key_only(w: World) -> Case:
    c0 = w.commit("trust A", files={TRUST_PATH: w.trust_text("A")})
    tip = w.commit("hand over to C", files={TRUST_PATH: w.trust_text("C")})
    # Installed when both keys were current; the image's file now names C alone.
    return Case(tip, craft(w, [c0, tip], "A", {TRUST_PATH: w.trust_text("A", "M")}), "Fork",
                pinned=("A", "C"), repin=("C",))


def genesis_pinned(w: World) -> Case:
    c0, tip = _revoked_b(w)
    genesis = w.git("rev-list", "--max-parents=0", "HEAD").stdout.decode().strip()
    return Case(tip, craft(w, [c0, tip], "B", {TRUST_PATH: w.trust_text("B")}), "Fork",
                genesis=genesis)


def after_root_recovery(w: World) -> Case:
    taken = w.commit("M took over", files={TRUST_PATH: w.trust_text("M")})
    tip = w.commit("recovery", key="R", files={TRUST_PATH: w.trust_text("C")})
    return Case(tip, craft(w, [taken, tip], "M", {TRUST_PATH: w.trust_text("M")}), "Fork")


def parentless_after_root_recovery(w: World) -> Case:
    w.commit("M took over", files={TRUST_PATH: w.trust_text("M")})
    tip = w.commit("recovery", key="R", files={TRUST_PATH: w.trust_text("C")})
    root = craft(w, [], "A", {TRUST_PATH: w.trust_text("M")}, "a new root")
    return Case(tip, craft(w, [root, tip], "M"), "NewRoot")


SHAPES = [
    ("first parent old", first_parent_old),
    ("second parent old", second_parent_old),
    ("both parents new", both_parents_new),
    ("octopus", octopus),
    ("octopus with an old parent", octopus_with_old_parent),
    ("parentless commit merged in", parentless_merged_in),
    ("revoked key signs a merge", revoked_key_signs_merge),
    ("device pinned to the new key only", pinned_to_new_key_only),
    ("genesis-pinned device", genesis_pinned),
    ("right after a root-key recovery", after_root_recovery),
    ("parentless commit right after a root-key recovery", parentless_after_root_recovery),
]


class Device:
    """A device configured through agent.toml, synced with the real CLI."""

    def __init__(self, tmp: Path, world: World, pinned: tuple[str, ...] = ("A",),
                 genesis: str | None = None) -> None:
        self.world = world
        self.files = tmp / "device-root"
        self.files.mkdir()
        self.signers = tmp / "device_signers"
        self.pin(*pinned)
        self.config = tmp / "agent.toml"
        self.config.write_text(
            f'device_id = "d1"\nstate_dir = "state"\nboard = "generic-mock"\n'
            f'allowed_signers = "{self.signers}"\nroot_keys = "{world.root_file}"\n'
            + (f'genesis = "{genesis}"\n' if genesis else "")
            + f'[files]\nroots = ["{self.files}"]\n')
        self.state = StateStore(tmp / "state")
        self.repo = tmp / "state" / "repo.git"
        self.bundle = tmp / "offer.bundle"

    def pin(self, *names: str) -> None:
        write_allowed_signers(self.signers, *(pub_line(self.world.keys[k]) for k in names))

    def offer(self, commit: str) -> int:
        self.world.git("update-ref", "refs/heads/main", commit)
        self.bundle.unlink(missing_ok=True)
        self.world.git("bundle", "create", "-q", self.bundle, "main")
        return main(["-c", str(self.config), "sync", "--bundle", str(self.bundle)])

    def snapshot(self) -> tuple:
        state = self.state.load()
        files = {p: p.read_bytes() for p in self.files.rglob("*") if p.is_file()}
        refs = {p: p.read_bytes() for p in (self.repo / "refs").rglob("*")
                if p.is_file() and "status" not in p.parts}
        return state.accepted, state.applied, files, refs

    def has(self, sha: str) -> bool:
        return run("git", "--git-dir", self.repo, "cat-file", "-e", sha,
                   check=False).returncode == 0


def with_resource(world: World, root: Path) -> None:
    world.commit("resources", files={"devices/d1/motd.yaml":
                                     MOTD.format(root=root, text=json.dumps("good\n"))})


@pytest.mark.parametrize("build", [b for _, b in SHAPES], ids=[n for n, _ in SHAPES])
def test_shape_is_refused_and_changes_nothing(tmp_path, keys, build):  # noqa: F811
    world = World(tmp_path, keys)
    with_resource(world, tmp_path / "device-root")
    case = build(world)
    device = Device(tmp_path, world, case.pinned, case.genesis)
    assert device.offer(case.accepted) == 0
    if case.repin:
        device.pin(*case.repin)
    before = device.snapshot()

    assert device.offer(case.new) == 1
    after = device.state.load()
    assert (after.last_sync["outcome"], after.last_sync["reason"]) == ("refused", case.reason)
    assert device.snapshot() == before
    assert not device.has(case.new)  # nothing of the refused update stays in the store
    run("git", "--git-dir", device.repo, "fsck", "--strict", "--no-dangling")
    assert not list((device.repo / "quarantine").glob("*"))


def test_linear_update_applies(tmp_path, keys):  # noqa: F811
    world = World(tmp_path, keys)
    with_resource(world, tmp_path / "device-root")
    device = Device(tmp_path, world)
    assert device.offer(world.pub.head()) == 0
    tip = world.commit("two more", files={"devices/d1/motd.yaml": MOTD.format(
        root=device.files, text=json.dumps("newer\n"))})
    assert device.offer(tip) == 0
    assert device.state.load().accepted == tip
    assert (device.files / "motd").read_text() == "newer\n"


def test_feature_branch_forked_from_the_accepted_tip_applies(tmp_path, keys):  # noqa: F811
    world = World(tmp_path, keys)
    with_resource(world, tmp_path / "device-root")
    device = Device(tmp_path, world)
    accepted = world.pub.head()
    assert device.offer(accepted) == 0
    world.git("checkout", "-q", "-b", "feature")
    world.commit("feature", files={"devices/d1/motd.yaml": MOTD.format(
        root=device.files, text=json.dumps("feature\n"))})
    world.git("checkout", "-q", "main")
    world.commit("meanwhile on main", files={"devices/d1/other.txt": "x"})
    world.git("-c", f"user.signingkey={world.keys['A']}", "merge", "-q", "-S", "--no-ff",
              "-m", "merge feature", "feature")
    merge = world.pub.head()
    assert device.offer(merge) == 0
    assert device.state.load().accepted == merge
    assert (device.files / "motd").read_text() == "feature\n"


def test_rotation_through_a_merge_signed_under_both_trust_files(tmp_path, keys):  # noqa: F811
    """Both parents trust A: a merge signed by A is taken, and B is trusted after it."""
    world = World(tmp_path, keys)
    tip = world.commit("trust A", files={TRUST_PATH: world.trust_text("A")})
    device = Device(tmp_path, world)
    assert device.offer(tip) == 0
    side = craft(world, [tip], "A", {TRUST_PATH: world.trust_text("A", "B")}, "add B")
    merge = craft(world, [tip, side], "A", message="merge the rotation")
    world.git("reset", "-q", "--hard", merge)
    by_b = world.commit("by B", key="B")
    assert device.offer(by_b) == 0
    assert device.state.load().accepted == by_b


# --- the walk reads new commits only ---------------------------------------------------

class CountingStore:
    """A real object store that counts the commits read through it."""

    def __init__(self, store) -> None:
        self._store = store
        self.commits_read: set[bytes] = set()

    def get_raw(self, oid: bytes):
        type_num, raw = self._store.get_raw(oid)
        if type_num == 1:
            self.commits_read.add(oid)
        return type_num, raw


def test_update_walk_reads_only_the_new_commits(tmp_path, keys):  # noqa: F811
    world = World(tmp_path, keys)
    for i in range(60):
        world.commit(f"history {i}")
    accepted = world.pub.head()
    new = [world.commit(f"new {i}") for i in range(2)]
    store = CountingStore(world.store())
    held = ancestors(world.store(), accepted.encode())
    result = verify_update(store, accepted.encode(), new[-1].encode(), world.root,
                           held=held.__contains__)
    assert result.commits == tuple(n.encode() for n in new)
    # The two new commits, and the accepted tip for its trust file: not the 60 before it.
    assert store.commits_read <= {n.encode() for n in new} | {accepted.encode()}


def test_fork_is_found_without_reading_the_accepted_history(tmp_path, keys):  # noqa: F811
    world = World(tmp_path, keys)
    old = world.commit("old")
    for i in range(60):
        world.commit(f"history {i}")
    accepted = world.pub.head()
    fork = craft(world, [old, accepted], "A")
    store = CountingStore(world.store())
    held = ancestors(world.store(), accepted.encode())
    with pytest.raises(TrustError) as caught:
        verify_update(store, accepted.encode(), fork.encode(), world.root,
                      held=held.__contains__)
    assert caught.value.reason == "Fork"
    assert store.commits_read <= {fork.encode(), accepted.encode()}


def test_first_sync_takes_one_root_only(tmp_path, keys):  # noqa: F811
    world = World(tmp_path, keys)
    first = world.commit("genesis")
    other = craft(world, [], "A", message="a second root")
    merge = craft(world, [first, other], "A")
    root = TrustRoot(world.root.signers, world.root.root_keys)
    with pytest.raises(TrustError) as caught:
        verify_update(world.store(), None, merge.encode(), root)
    assert caught.value.reason == "NewRoot"


# --- a signature binds the branch -------------------------------------------------------

POLICY = ".giter/trust/policy.toml"


def bound_fleet(tmp_path: Path, keys, policy: str | None = "bind_branch = true\n"  # noqa: F811
                ) -> tuple[World, Device]:
    world = World(tmp_path, keys)
    with_resource(world, tmp_path / "device-root")
    if policy is not None:
        world.commit("bind branches", files={POLICY: policy})
    device = Device(tmp_path, world)
    assert device.offer(world.pub.head()) == 0
    return world, device


def commit_with_trailer(w: World, message: str, *trailers: str, files=None) -> str:
    for rel, text in (files or {}).items():
        w.pub.write(rel, text)
    w.git("add", "-A")
    args = [a for t in trailers for a in ("--trailer", t)]
    w.git("commit", "-q", "--allow-empty", "-S", *args, "-m", message)
    return w.pub.head()


@pytest.mark.parametrize("policy,trailers,reason", [
    ("bind_branch = true\n", ["Giter-Branch: staging"], "WrongBranch"),
    ("bind_branch = true\n", [], "BranchNotBound"),
    ("bind_branch = true\n", ["Giter-Branch: main", "Giter-Branch: staging"], "WrongBranch"),
    (None, ["Giter-Branch: staging"], "WrongBranch"),
    ("bind_branch = 1\n", ["Giter-Branch: main"], "InvalidTrustFile"),
    ("bind_branches = true\n", ["Giter-Branch: main"], "InvalidTrustFile"),
], ids=["staging commit offered as main", "no trailer where binding is required",
        "two trailers", "another branch named, no policy", "policy value not a bool",
        "unknown policy key"])
def test_commit_for_another_branch_is_refused(tmp_path, keys, policy, trailers,  # noqa: F811
                                              reason):
    world, device = bound_fleet(tmp_path, keys, policy)
    before = device.snapshot()
    staged = commit_with_trailer(world, "staged change", *trailers, files={
        "devices/d1/motd.yaml": MOTD.format(root=device.files, text=json.dumps("staged\n"))})
    assert device.offer(staged) == 1
    after = device.state.load()
    assert (after.last_sync["outcome"], after.last_sync["reason"]) == ("refused", reason)
    assert device.snapshot() == before
    assert not device.has(staged)


@pytest.mark.parametrize("policy", ["bind_branch = true\n", None], ids=["bound", "unbound"])
def test_commit_naming_its_branch_applies(tmp_path, keys, policy):  # noqa: F811
    world, device = bound_fleet(tmp_path, keys, policy)
    tip = commit_with_trailer(world, "for main", "Giter-Branch: main", files={
        "devices/d1/motd.yaml": MOTD.format(root=device.files, text=json.dumps("main\n"))})
    assert device.offer(tip) == 0
    assert (device.files / "motd").read_text() == "main\n"


def test_only_the_tip_names_the_branch(tmp_path, keys):  # noqa: F811
    """Commits merged in from a staging branch may name it; the merge names main."""
    world, device = bound_fleet(tmp_path, keys)
    world.git("checkout", "-q", "-b", "staging")
    commit_with_trailer(world, "try it", "Giter-Branch: staging")
    world.git("checkout", "-q", "main")
    world.git("merge", "-q", "--no-ff", "--no-commit", "staging")
    merge = commit_with_trailer(world, "ship it", "Giter-Branch: main")
    assert device.offer(merge) == 0


def test_policy_turned_off_only_by_a_bound_commit(tmp_path, keys):  # noqa: F811
    """The tree of the parent decides: removing the policy is itself bound."""
    world, device = bound_fleet(tmp_path, keys)
    (world.pub.root / POLICY).unlink()
    unbound = commit_with_trailer(world, "drop the policy")
    assert device.offer(unbound) == 1
    world.git("reset", "-q", "--hard", unbound + "^")
    (world.pub.root / POLICY).unlink()
    bound = commit_with_trailer(world, "drop the policy", "Giter-Branch: main")
    assert device.offer(bound) == 0
    assert device.offer(commit_with_trailer(world, "free again")) == 0


@pytest.mark.parametrize("message,expected", [
    ("subject", "subject\n\nGiter-Branch: main\n"),
    ("subject\n\nbody text", "subject\n\nbody text\n\nGiter-Branch: main\n"),
    ("subject\n\nExpires: 2030-01-02T12:00:00Z", "subject\n\nExpires: 2030-01-02T12:00:00Z\n"
     "Giter-Branch: main\n"),
    ("subject\n\nGiter-Branch: main\n", "subject\n\nGiter-Branch: main\n"),
])
def test_branch_trailer_is_added_as_git_would(tmp_path, message, expected):
    assert with_branch_trailer(message, "main") == expected
    assert branch_of(expected.encode()) == "main"
    if "Expires" in message:
        assert expires_of(expected.encode()) is not None
    # `git commit --trailer` agrees.
    repo = tmp_path / "r"
    run("git", "init", "-q", repo)
    run("git", "-C", repo, "-c", "user.name=a", "-c", "user.email=b@c", "commit", "-q",
        "--allow-empty", "--trailer", "Giter-Branch: main", "-m", message)
    raw = run("git", "-C", repo, "cat-file", "commit", "HEAD").stdout.decode()
    assert raw.split("\n\n", 1)[1] == expected
