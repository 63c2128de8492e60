"""The hub enforces the ownership split: gitolite rules from ``giter-bundle hub gitolite``.

The configuration is checked as text and, end to end, against a real gitolite3 behind a
real sshd on 127.0.0.1 (a throwaway unix user, see ``servers.Gitolite``): a device
syncs over ssh:// with its enrolled key and pushes its status; the same key pushing the
spec branch, deleting it, rewinding or deleting its own status branch, or writing
another device's status branch is refused by the server; the publisher's key pushes
the spec branch; re-enrolment and removal take effect on the hub once the generator is
re-run and the admin tree pushed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.fleet import enrolled, motd
from support.git import run, ssh_keygen
from support.servers import Gitolite

from giter_agent.trust.sshsig import PublicKey
from giter_bundle.enrolment import DEVICES_DIR
from giter_bundle.hub_gitolite import publisher_user

needs_gitolite = pytest.mark.skipif(Gitolite.missing() is not None,
                                    reason=Gitolite.missing() or "")


def admin_tree(tmp_path: Path) -> Path:
    """A stand-in gitolite-admin work tree (what `gitolite setup` puts in it)."""
    admin = tmp_path / "gitolite-admin"
    (admin / "conf").mkdir(parents=True)
    (admin / "keydir").mkdir()
    (admin / "conf/gitolite.conf").write_text("repo gitolite-admin\n    RW+     =   admin\n")
    (admin / "keydir/admin.pub").write_text("ssh-ed25519 AAAA admin\n")
    return admin


def test_rules_give_each_device_its_own_status_branch_only(tmp_path, fleet, publisher_key):
    enrolled(fleet, tmp_path, "pi-01", "pi.02")
    admin = admin_tree(tmp_path)
    out = fleet.ok("hub", "gitolite", admin)
    assert "added 3 key(s)" in out and 'include "giter/*.conf"' in out
    conf = (admin / "conf/giter/fleet.conf").read_text()
    publisher = publisher_user(PublicKey.from_openssh(Path(f"{publisher_key}.pub").read_text()))
    rules = [line.split() for line in conf.splitlines() if line.startswith("    ")]
    assert rules == [
        ["RW", r"refs/heads/main$", "=", "@giter-fleet-publishers"],
        ["RW", "refs/heads/status/", "=", "@giter-fleet-publishers"],
        ["R", "=", "@giter-fleet-devices"],
        ["RW", r"refs/heads/status/pi-01$", "=", "pi-01"],
        ["RW", r"refs/heads/status/pi\.02$", "=", "pi.02"],  # the dot matches a dot only
    ]
    assert "@giter-fleet-devices = pi-01 pi.02\n" in conf
    assert f"@giter-fleet-publishers = {publisher}\n" in conf
    keys = sorted(p.name for p in (admin / "keydir/giter/fleet").iterdir())
    assert keys == sorted([f"{publisher}.pub", "pi-01.pub", "pi.02.pub"])
    enrolled_key = (fleet.root / DEVICES_DIR / "pi-01.pub").read_text().split()[2:4]
    assert (admin / "keydir/giter/fleet/pi-01.pub").read_text().split()[:2] == enrolled_key
    main_conf = (admin / "conf/gitolite.conf").read_text()
    assert main_conf.startswith("repo gitolite-admin") and main_conf.count("include") == 1

    # Unchanged enrolment: nothing to do, and the include line is not added twice.
    assert "nothing to push" in fleet.ok("hub", "gitolite", admin)
    assert (admin / "conf/gitolite.conf").read_text() == main_conf

    # Re-enrolment replaces the key; removal drops the device's key and rules.
    new_key = ssh_keygen(tmp_path / "pi-01-new")
    fleet.ok("enroll", "pi-01", Path(f"{new_key}.pub").read_text(), "--replace")
    assert "replaced 1 key(s): pi-01" in fleet.ok("hub", "gitolite", admin)
    assert (admin / "keydir/giter/fleet/pi-01.pub").read_text().split()[1] == \
        Path(f"{new_key}.pub").read_text().split()[1]
    fleet.git("rm", "-q", f"{DEVICES_DIR}/pi.02.pub", f"{DEVICES_DIR}/pi.02.yaml")
    fleet.git("commit", "-q", "-S", "-m", "Retire pi.02")
    assert "removed 1 key(s): pi.02" in fleet.ok("hub", "gitolite", admin)
    conf = (admin / "conf/giter/fleet.conf").read_text()
    assert "pi.02" not in conf and "pi\\.02" not in conf
    assert not (admin / "keydir/giter/fleet/pi.02.pub").exists()
    assert (admin / "keydir/admin.pub").exists()  # the admin's own keys are not ours


def test_bad_admin_tree_and_shared_keys_are_refused(tmp_path, fleet, publisher_key):
    (device,) = enrolled(fleet, tmp_path, "pi-01")
    code, out = fleet.cli("hub", "gitolite", tmp_path / "nowhere")
    assert code == 2 and "NotGitoliteAdmin" in out
    admin = admin_tree(tmp_path)
    # A publisher key that is also a device's would let the device write the spec.
    code, out = fleet.cli("hub", "gitolite", admin, "--publisher-key",
                          device.key_file.with_name("device_key.pub"))
    assert code == 1 and "DuplicateKey" in out
    assert not (admin / "conf/giter").exists()  # nothing written
    code, out = fleet.cli("hub", "gitolite", admin, "--repo-name", "../etc")
    assert code == 2 and "InvalidName" in out


def _hub_ref(hub: Gitolite, ref: str) -> str | None:
    proc = run("git", "--git-dir", hub.repo_path("fleet"), "rev-parse", "-q", "--verify",
               ref, check=False)
    return proc.stdout.decode().strip() or None


@needs_gitolite
def test_gitolite_hub_enforces_who_writes_which_branch(tmp_path, fleet, publisher_key):
    hub = Gitolite(tmp_path / "gitolite")
    try:
        hub.start()
        pi1, pi2 = enrolled(fleet, tmp_path, "pi-01", "pi.02")
        for d in (pi1, pi2):
            fleet.write(f"devices/{d.id}/motd.yaml", motd(d, f"hello {d.id}\n"))
        fleet.ok("commit", "-m", "Welcome")
        admin = hub.admin_clone(tmp_path / "admin")
        fleet.ok("hub", "gitolite", admin)
        hub.push_admin(admin)
        url = hub.url("fleet")

        # The publisher's key pushes the spec branch (gitolite made the repository).
        hub.git(publisher_key, "-C", fleet.root, "push", "-q", url, "main")
        spec = fleet.rev()
        assert _hub_ref(hub, "refs/heads/main") == spec

        # A device syncs with its enrolled key (no ssh_key in its config) and reports.
        known = tmp_path / "hub_known_hosts"
        known.write_text(hub.known_hosts_line())
        for d in (pi1, pi2):
            with d.config.open("a") as fh:
                fh.write(f'[network]\nurl = "{url}"\nknown_hosts = "{known}"\n')
            assert d.cli("sync") == 0
            assert (d.root / "motd").read_text() == f"hello {d.id}\n"
            assert _hub_ref(hub, f"refs/heads/status/{d.id}") == d.state().status_tip

        def as_device(*args: str):
            return hub.git(pi1.key_file, "-C", fleet.root, *args, check=False)

        # A leaked device key cannot move the spec branch, even by a fast-forward ...
        tree = fleet.git("rev-parse", "main^{tree}").stdout.decode().strip()
        ahead = fleet.git("commit-tree", tree, "-p", spec, "-m", "not signed").stdout.decode(
            ).strip()
        proc = as_device("push", url, f"{ahead}:refs/heads/main")
        assert proc.returncode != 0 and b"DENIED" in proc.stderr
        # ... nor delete it ...
        proc = as_device("push", url, ":refs/heads/main")
        assert proc.returncode != 0 and b"DENIED" in proc.stderr
        assert _hub_ref(hub, "refs/heads/main") == spec
        # ... nor write another device's status branch ...
        theirs = _hub_ref(hub, "refs/heads/status/pi.02")
        proc = as_device("push", "--force", url, f"{ahead}:refs/heads/status/pi.02")
        assert proc.returncode != 0 and b"DENIED" in proc.stderr
        proc = as_device("push", url, f"{ahead}:refs/heads/status/pi.03")
        assert proc.returncode != 0 and b"DENIED" in proc.stderr
        assert _hub_ref(hub, "refs/heads/status/pi.02") == theirs
        assert _hub_ref(hub, "refs/heads/status/pi.03") is None
        # ... nor rewind or delete its own.
        own = _hub_ref(hub, "refs/heads/status/pi-01")
        proc = as_device("push", "--force", url, f"{spec}:refs/heads/status/pi-01")
        assert proc.returncode != 0 and b"DENIED" in proc.stderr
        proc = as_device("push", url, ":refs/heads/status/pi-01")
        assert proc.returncode != 0 and b"DENIED" in proc.stderr
        assert _hub_ref(hub, "refs/heads/status/pi-01") == own

        # The publisher's next commit reaches the device, whose status fast-forwards.
        fleet.write("devices/pi-01/motd.yaml", motd(pi1, "second\n"))
        fleet.ok("commit", "-m", "Second")
        hub.git(publisher_key, "-C", fleet.root, "push", "-q", url, "main")
        assert pi1.cli("sync") == 0 and (pi1.root / "motd").read_text() == "second\n"
        assert _hub_ref(hub, "refs/heads/status/pi-01") == pi1.state().status_tip != own

        # Re-enrol pi-01 with a new key: once the hub follows, the old key is out.
        old_key = tmp_path / "pi-01-old-key"
        old_key.write_bytes(pi1.key_file.read_bytes())
        old_key.chmod(0o600)
        pi1.key_file.unlink()
        pi1.key_file.with_name("device_key.pub").unlink()
        fleet.ok("enroll", "pi-01", pi1.key_line(), "--replace")
        fleet.ok("hub", "gitolite", admin)
        hub.push_admin(admin)
        hub.git(publisher_key, "-C", fleet.root, "push", "-q", url, "main")
        assert hub.git(old_key, "ls-remote", url, check=False).returncode != 0
        assert pi1.cli("sync") == 0
        assert _hub_ref(hub, "refs/heads/status/pi-01") == pi1.state().status_tip

        # Retire pi.02: its key no longer opens the hub.
        fleet.git("rm", "-q", f"{DEVICES_DIR}/pi.02.pub", f"{DEVICES_DIR}/pi.02.yaml")
        fleet.git("commit", "-q", "-S", "-m", "Retire pi.02")
        fleet.ok("hub", "gitolite", admin)
        hub.push_admin(admin)
        assert hub.git(pi2.key_file, "ls-remote", url, check=False).returncode != 0
    finally:
        hub.stop()
