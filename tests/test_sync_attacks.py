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

import pytest
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
