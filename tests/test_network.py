"""Network sync against real git servers that the tests start on 127.0.0.1.

``git daemon`` (git://, receive-pack on), ``git http-backend`` behind lighttpd with
basic auth over TLS (https://), and OpenSSH's sshd with a throwaway host key and a
git-shell forced command (ssh://). The publisher is real git pushing to the hub's
bare repository; what the device pushes back is checked with real git too.
"""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

import pytest
from support.devices import SimDevice
from support.git import run, ssh_keygen
from support.servers import GitDaemon, Hub, Lighttpd, Relay, Sshd, binary

from giter_agent.cli.main import main
from giter_agent.config.agent_toml import from_dict
from giter_agent.core.errors import ConfigError, LockedError
from giter_agent.daemon.backoff import Backoff
from giter_agent.state.health import health
from giter_agent.state.store import state_lock

needs_sshd = pytest.mark.skipif(binary("sshd", "/usr/sbin") is None,
                                reason="sshd not installed (Debian: openssh-server; "
                                       "scripts/test installs it)")
needs_lighttpd = pytest.mark.skipif(
    binary("lighttpd", "/usr/sbin") is None
    or not Path("/usr/lib/lighttpd/mod_openssl.so").exists(),
    reason="lighttpd with mod_openssl not installed (Debian: lighttpd, "
           "lighttpd-mod-openssl; scripts/test installs them)")


@pytest.fixture
def hub(tmp_path) -> Hub:
    return Hub(tmp_path / "hub")


@pytest.fixture
def gitd(hub):
    daemon = GitDaemon(hub).start()
    yield daemon
    daemon.stop()


def private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def status_parents(publisher, ref: str) -> list[str]:
    return publisher.git("rev-list", "--parents", "-n1", ref).stdout.decode().split()[1:]


def device_signers(tmp_path: Path, device: SimDevice) -> Path:
    agent = device.agent()
    path = tmp_path / f"{device.id}.signers"
    path.write_text(agent.public_key_line() + "\n")
    agent.close()
    return path


def test_first_incremental_and_status_round_trip_over_git_daemon(tmp_path, publisher, hub,
                                                                  gitd, monkeypatch):
    from giter_agent.history.store import Quarantine

    fetched: list[int] = []  # objects in each fetched pack, as it is promoted
    promote = Quarantine.promote

    def counting_promote(self, tips=None):
        fetched.append(sum(len(p) for p in self.object_store.packs))
        return promote(self, tips)

    monkeypatch.setattr(Quarantine, "promote", counting_promote)
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers, {"url": gitd.url})
    first = publisher.commit("first", files=dev.spec_files("hello\n"))
    hub.publish(publisher)

    report = dev.sync()
    assert (report.outcome, report.exit_code) == ("applied", 0), report.message
    assert dev.motd() == "hello\n"
    state = dev.state()
    assert state.accepted == state.applied == first
    assert state.network.state == "online" and state.network.failures == 0
    # The hub holds the device's status, and real git verifies it with the device key.
    assert hub.refs() == {"refs/heads/status/pi-01": state.status_tip}
    assert state.network.hub_status == state.status_tip
    publisher.git("fetch", "-q", hub.path, "refs/heads/status/*:refs/heads/status/*")
    signers = device_signers(tmp_path, dev)
    publisher.git("-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit",
                  "status/pi-01")
    assert status_parents(publisher, "status/pi-01") == [first]

    # The publisher commits on top of what it has seen; the device syncs incrementally.
    status1 = state.status_tip
    second = publisher.commit("second", files=dev.spec_files("two\n"))
    hub.publish(publisher)
    report = dev.sync()
    assert report.outcome == "applied" and dev.motd() == "two\n"
    state = dev.state()
    assert state.accepted == second
    assert hub.refs() == {"refs/heads/status/pi-01": state.status_tip}
    publisher.git("fetch", "-q", hub.path, "refs/heads/status/*:refs/heads/status/*")
    assert status_parents(publisher, "status/pi-01") == [status1, second]
    # Only the new commit crossed: the second pack holds fewer objects than the spec
    # history (thin-pack bases it appends included), not all of it again.
    spec_objects = len(publisher.git("rev-list", "--objects", "main").stdout.splitlines())
    assert len(fetched) == 2 and 0 < fetched[1] < spec_objects, (fetched, spec_objects)

    # Nothing new: up to date, and the hub already holds our status (nothing pushed).
    report = dev.sync()
    assert report.outcome == "up-to-date" and report.exit_code == 0
    assert dev.state().status_tip == state.status_tip
    assert "holds our status" in dev.state().network.message


def test_cli_sync_without_source_uses_the_network(tmp_path, publisher, hub, gitd, capsys):
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers, {"url": gitd.url})
    publisher.commit("first", files=dev.spec_files("hello\n"))
    hub.publish(publisher)
    assert main(["-c", str(dev.config_path), "sync"]) == 0
    assert "applied" in capsys.readouterr().out
    assert main(["-c", str(dev.config_path), "status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["network"]["state"] == "online" and doc["health"]["state"] == "in-sync"

    gitd.stop()
    assert main(["-c", str(dev.config_path), "sync"]) == 4
    err = capsys.readouterr().err
    assert err.startswith("offline: ") and gitd.url in err
    assert main(["-c", str(dev.config_path), "status"]) == 4  # offline
    out = capsys.readouterr().out
    assert "offline" in out and "hello" not in out
    assert dev.motd() == "hello\n"  # the last good spec stays applied

    # Without a [network] url, a bare `sync` is a usage error.
    bare = SimDevice(tmp_path, "pi-02", publisher.allowed_signers)
    assert main(["-c", str(bare.config_path), "sync"]) == 2
    assert "[network]" in capsys.readouterr().err


def test_hub_rewound_main_is_refused_as_rollback_and_reported(tmp_path, publisher, hub,
                                                              gitd):
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers, {"url": gitd.url})
    first = publisher.commit("first", files=dev.spec_files("one\n"))
    second = publisher.commit("second", files=dev.spec_files("two\n"))
    hub.publish(publisher)
    assert dev.sync().outcome == "applied"

    hub.publish(publisher, ref=first, force=True)  # someone rewinds the hub
    report = dev.sync()
    assert (report.outcome, report.reason, report.exit_code) == ("refused", "Rollback", 1)
    state = dev.state()
    assert state.accepted == state.applied == second and dev.motd() == "two\n"
    assert health(state).state == "refused"
    # The refusal travels to the hub in the device's status (the push still happens).
    summary = run("git", "--git-dir", hub.path, "show",
                  "status/pi-01:.giter/status/pi-01.yaml").stdout.decode()
    assert "Rollback" in summary
    assert hub.refs()["refs/heads/status/pi-01"] == state.status_tip
    assert not list((dev.dir / "state/repo.git/quarantine").iterdir())


def test_lost_hub_mid_fetch_then_gone_then_back(tmp_path, publisher, hub, gitd):
    """The link drops in the middle of the pack, then the server is down, then it is
    back: offline is reported each time, nothing half-fetched survives, then it syncs."""
    relay = Relay(gitd.port, budget=24_000)
    url = f"git://127.0.0.1:{relay.port}/fleet.git"
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers,
                    {"url": url, "read_timeout_s": 5})
    files = dev.spec_files("big\n")
    files["assets/noise.txt"] = os.urandom(300_000).hex()  # a pack well over the budget
    tip = publisher.commit("big", files=files)
    hub.publish(publisher)

    report = dev.sync()
    assert (report.outcome, report.reason, report.exit_code) == ("offline", "Offline", 4)
    assert 0 < relay.sent <= 24_000
    state = dev.state()
    assert state.accepted is None and state.network.state == "offline"
    assert state.network.failures == 1
    repo = dev.dir / "state/repo.git"
    assert not list((repo / "quarantine").iterdir())
    assert not list((repo / "objects/pack").iterdir())
    assert health(state).state == "offline"
    relay.close()

    gitd.stop()
    report = dev.sync()
    assert report.outcome == "offline" and dev.state().network.failures == 2

    gitd.start()
    dev.config_path.write_text(dev.config_path.read_text().replace(url, gitd.url))
    report = dev.sync()
    assert report.outcome == "applied" and dev.state().accepted == tip
    net = dev.state().network
    assert net is not None and net.state == "online" and net.failures == 0


def test_push_refused_because_hub_moved_is_retried_after_fetch(tmp_path, publisher, hub,
                                                               gitd):
    """The hub's status/<id> holds a report this device never made (a state directory
    restored from an old backup, say): the device fetches it and builds on it."""
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers, {"url": gitd.url})
    publisher.commit("first", files=dev.spec_files("hello\n"))
    hub.publish(publisher)
    twin_dir = tmp_path / "twin"
    twin_dir.mkdir()
    twin = SimDevice(twin_dir, "pi-01", publisher.allowed_signers, {"url": gitd.url})
    twin.root = dev.root
    assert twin.sync().outcome == "applied"
    theirs = hub.refs()["refs/heads/status/pi-01"]

    report = dev.sync()
    assert report.outcome == "applied"
    state = dev.state()
    ours = hub.refs()["refs/heads/status/pi-01"]
    assert ours == state.status_tip != theirs
    # Our report, re-made on top of what the hub had: a fast-forward, never forced.
    parents = run("git", "--git-dir", hub.path, "rev-list", "--parents", "-n1",
                  ours).stdout.decode().split()[1:]
    assert parents == [theirs, state.applied]
    assert state.network.state == "online"


def test_hub_status_observing_an_unaccepted_spec_is_not_taken(tmp_path, publisher, hub,
                                                              gitd):
    """A twin reported a spec this device has not accepted (here: the hub's newest spec
    is refused). Taking the twin's report would bring that spec's commits in unverified,
    and the next good update through them would look like a fork for good."""
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers, {"url": gitd.url})
    first = publisher.commit("first", files=dev.spec_files("hello\n"))
    hub.publish(publisher)
    assert dev.sync().outcome == "applied"
    second = publisher.commit("second", files=dev.spec_files("two\n"))
    hub.publish(publisher)
    twin_dir = tmp_path / "twin"
    twin_dir.mkdir()
    twin = SimDevice(twin_dir, "pi-01", publisher.allowed_signers, {"url": gitd.url})
    assert twin.sync().outcome == "applied"  # its report observes `second`
    publisher.commit("unsigned", sign=False)
    hub.publish(publisher)

    report = dev.sync()
    assert report.outcome == "refused" and report.reason == "UnsignedCommit"
    assert dev.state().accepted == first
    in_store = run("git", "--git-dir", dev.dir / "state" / "repo.git", "cat-file", "-e",
                   second, check=False).returncode == 0
    assert not in_store  # the twin's report, and `second` with it, stayed out

    publisher.git("reset", "-q", "--hard", second)
    third = publisher.commit("third", files=dev.spec_files("three\n"))
    hub.publish(publisher, force=True)
    assert dev.sync().outcome == "applied"
    assert dev.state().accepted == third


def test_a_wrong_repository_is_an_error_not_a_crash(tmp_path, publisher, hub, gitd):
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers,
                    {"url": gitd.url.replace("fleet.git", "nothing.git")})
    report = dev.sync()
    assert (report.outcome, report.reason, report.exit_code) == ("error", "RemoteError", 4)
    assert health(dev.state()).state == "error"


def test_a_second_writer_is_told_who_holds_the_lock(tmp_path, publisher, hub, gitd):
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers, {"url": gitd.url})
    (dev.dir / "state").mkdir()
    with state_lock(dev.dir / "state"), pytest.raises(LockedError) as info:
        dev.sync()
    assert f"pid {os.getpid()}" in str(info.value)


@needs_lighttpd
def test_https_basic_auth_through_a_real_web_server(tmp_path, publisher, hub):
    web = Lighttpd(hub, tmp_path / "web", "pi-01", "correct horse").start()
    try:
        secret = private(tmp_path / "hub-password", "correct horse\n")
        net = {"url": web.url, "username": "pi-01", "password_file": secret,
               "ca_file": web.ca_file}
        dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers, net)
        first = publisher.commit("first", files=dev.spec_files("hello\n"))
        hub.publish(publisher)
        report = dev.sync()
        assert report.outcome == "applied", report.message
        assert dev.state().accepted == first
        assert hub.refs() == {"refs/heads/status/pi-01": dev.state().status_tip}
        second = publisher.commit("second", files=dev.spec_files("two\n"))
        hub.publish(publisher)
        assert dev.sync().outcome == "applied" and dev.state().accepted == second
        assert hub.refs() == {"refs/heads/status/pi-01": dev.state().status_tip}

        # A wrong password: the hub refuses us, reported as an error, nothing thrown.
        private(secret, "wrong\n")
        report = dev.sync()
        assert (report.outcome, report.reason, report.exit_code) == ("error", "AuthFailed", 4)
        assert health(dev.state()).state == "error"

        # A secret file others can read is refused before anything is sent.
        private(secret, "correct horse\n").chmod(0o640)
        with pytest.raises(ConfigError, match="password_file"):
            dev.sync()
        secret.chmod(0o600)

        # A repository the web server does not have (HTTP 404): an error, reported.
        lost = SimDevice(tmp_path, "pi-03", publisher.allowed_signers,
                         dict(net, url=web.url.replace("fleet.git", "nothing.git")))
        assert (lost.sync().outcome, lost.state().network.reason) == ("error",
                                                                          "RemoteError")

        # Without the pinned CA the system's CAs do not know the server: refused.
        other = SimDevice(tmp_path, "pi-02", publisher.allowed_signers,
                          {k: v for k, v in net.items() if k != "ca_file"})
        report = other.sync()
        assert (report.outcome, report.reason) == ("refused", "TlsVerifyFailed")
        assert health(other.state()).state == "refused"
    finally:
        web.stop()


@needs_sshd
def test_ssh_with_pinned_host_key(tmp_path, publisher, hub):
    user_key = ssh_keygen(tmp_path / "device_ssh_key")
    sshd = Sshd(tmp_path / "sshd", user_key).start()
    try:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(sshd.known_hosts_line())
        net = {"url": sshd.url(hub.path), "ssh_key": user_key, "known_hosts": known_hosts,
               "connect_timeout_s": 5}
        dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers, net)
        first = publisher.commit("first", files=dev.spec_files("hello\n"))
        hub.publish(publisher)
        report = dev.sync()
        assert report.outcome == "applied", report.message
        assert dev.motd() == "hello\n"
        assert hub.refs() == {"refs/heads/status/pi-01": dev.state().status_tip}

        second = publisher.commit("second", files=dev.spec_files("two\n"))
        hub.publish(publisher)
        before = dev.state()
        # The hub presents a key other than the pinned one: refused, nothing fetched.
        impostor = ssh_keygen(tmp_path / "impostor_host_key")
        known_hosts.write_text(sshd.known_hosts_line(impostor))
        report = dev.sync()
        assert (report.outcome, report.reason, report.exit_code) == (
            "refused", "HostKeyMismatch", 1)
        assert dev.state().accepted == before.accepted == first
        assert health(dev.state()).state == "refused"
        # A host that is not pinned at all: refused too, and the file stays untouched.
        known_hosts.write_text("")
        report = dev.sync()
        assert (report.outcome, report.reason) == ("refused", "UnknownHostKey")
        assert known_hosts.read_text() == ""

        known_hosts.write_text(sshd.known_hosts_line())
        assert dev.sync().outcome == "applied" and dev.state().accepted == second
    finally:
        sshd.stop()


def test_offline_is_reported_by_status_and_on_the_usb_receipt(tmp_path, publisher, hub,
                                                              gitd, capsys):
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers, {"url": gitd.url})
    publisher.commit("first", files=dev.spec_files("hello\n"))
    hub.publish(publisher)
    bundle = publisher.bundle(tmp_path / "fleet.bundle")
    gitd.stop()
    assert dev.sync().outcome == "offline"
    stick = tmp_path / "stick"
    (stick / "giter/inbox").mkdir(parents=True)
    bundle.rename(stick / "giter/inbox/fleet.bundle")
    assert main(["-c", str(dev.config_path), "sync", "--usb", str(stick)]) == 0
    receipt = (stick / "giter/outbox/pi-01.txt").read_text()
    assert "network:" in receipt and "OFFLINE" in receipt and gitd.url in receipt
    capsys.readouterr()
    assert main(["-c", str(dev.config_path), "status"]) == 4  # offline
    out = capsys.readouterr().out
    assert "hub" in out and "offline" in out


def test_backoff_grows_with_jitter_and_is_capped():
    backoff = Backoff(base_s=5, max_s=300)
    rng = random.Random(7)
    assert backoff.delay(0, rng) == 0
    for failures in range(1, 12):
        ceiling = min(300, 5 * 2 ** (failures - 1))
        waits = [backoff.delay(failures, rng) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len({round(w, 3) for w in waits}) > 100  # spread, not lockstep


@pytest.mark.parametrize("network, problem", [
    ({"url": "ftp://hub/fleet.git"}, "scheme"),
    ({"url": "git://hub"}, "repository path"),
    ({"url": "https://u:pw@hub/fleet.git"}, "password"),
    ({"url": "ssh://hub/fleet.git"}, "known_hosts"),
    ({"url": "ssh://hub/fleet.git", "ssh_key": "k"}, "known_hosts"),
    ({"url": "http://hub/fleet.git", "username": "u", "password_file": "p"}, "clear text"),
    ({"url": "https://hub/fleet.git", "username": "u"}, "go together"),
    ({"url": "git://hub/fleet.git", "ssh_key": "k"}, "does not apply"),
    ({"url": "git://hub/fleet.git", "read_timeout_s": 0}, "read_timeout_s"),
    ({"url": "git://hub/fleet.git", "colour": "red"}, "unknown key"),
    ({}, "url"),
])
def test_network_config_is_checked(tmp_path, network, problem):
    raw = {"device_id": "pi-01", "state_dir": "s", "board": "generic-mock",
           "allowed_signers": "a", "network": network}
    with pytest.raises(ConfigError, match=problem):
        from_dict(raw, base=tmp_path)


def test_network_config_defaults_and_paths(tmp_path):
    raw = {"device_id": "pi-01", "state_dir": "s", "board": "generic-mock",
           "allowed_signers": "a",
           "network": {"url": "ssh://git@hub:2222/srv/fleet.git", "ssh_key": "key",
                       "known_hosts": "/etc/giter-agent/known_hosts", "read_timeout_s": 20}}
    net = from_dict(raw, base=tmp_path).network
    assert net.ssh_key == tmp_path / "key" and net.read_timeout_s == 20.0
    assert net.connect_timeout_s == 10.0 and net.scheme == "ssh"


def test_ssh_key_defaults_to_the_enrolled_device_key(tmp_path):
    raw = {"device_id": "pi-01", "state_dir": "s", "board": "generic-mock",
           "allowed_signers": "a",
           "network": {"url": "ssh://git@hub/fleet", "known_hosts": "/etc/kh"}}
    assert from_dict(raw, base=tmp_path).network.ssh_key == tmp_path / "s/device_key"


def test_ssh_client_never_trusts_on_first_use(tmp_path):
    from giter_agent.transport.network.ssh import PinnedSSH

    argv = PinnedSSH(tmp_path / "k", tmp_path / "kh", 7, 40).argv(
        "hub", "git-upload-pack '/srv/fleet.git'", "git", 2222, None)
    text = " ".join(argv)
    for option in ("StrictHostKeyChecking=yes", f"UserKnownHostsFile={tmp_path / 'kh'}",
                   "GlobalKnownHostsFile=/dev/null", "BatchMode=yes", "UpdateHostKeys=no",
                   "IdentitiesOnly=yes", "ConnectTimeout=7", "ServerAliveInterval=20"):
        assert option in text
    assert argv[1:3] == ["-F", "/dev/null"] and argv[-3:-1] == ["--", "hub"]


def test_logs_name_device_spec_and_reason(tmp_path):
    import logging

    from giter_agent.daemon import logs

    out = io.StringIO()
    logs.setup("pi-01", lambda: "a" * 40, stream=out)
    try:
        logging.getLogger("giter.sync").warning("refused it", extra={
            "event": "refused", "reason": "Rollback", "commit": b"b" * 40})
    finally:
        logging.getLogger().handlers.clear()
    # Threads left by earlier tests may log through the same root handler meanwhile:
    # read our line, not the whole stream.
    (line,) = [x for x in out.getvalue().splitlines() if 'msg="refused it"' in x]
    assert "level=warning device=pi-01 spec=" + "a" * 40 in line
    assert "event=refused reason=Rollback commit=" + "b" * 40 in line
    assert 'msg="refused it"' in line


def test_a_spec_fetch_does_not_read_the_status_history(tmp_path, publisher, hub, gitd,
                                                        monkeypatch):
    """The fetch offers the accepted spec as its "have", not the status tip: offering a
    long status history made the negotiation read every report of it."""
    from dulwich.objects import Commit

    import giter_agent.history.quarantine as quarantine
    from giter_agent.history.store import History
    from giter_agent.state.store import StateStore

    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers, {"url": gitd.url})
    publisher.commit("first", files=dev.spec_files("hello\n"))
    hub.publish(publisher)
    assert dev.sync().outcome == "applied"
    store = StateStore(dev.dir / "state")
    state = store.load()
    ref = b"refs/heads/status/pi-01"
    with History(dev.dir / "state/repo.git") as history, history.new_objects() as objects:
        tip = state.status_tip.encode()
        spec = state.applied.encode()
        for i in range(60):  # reports the hub already holds
            commit = Commit()
            commit.tree = objects[tip].tree
            commit.parents = [tip, spec]
            commit.author = commit.committer = b"d <d@d>"
            commit.author_time = commit.commit_time = 1_700_000_000 + i
            commit.author_timezone = commit.commit_timezone = 0
            commit.message = f"report {i}\n".encode()
            objects.add_object(commit)
            tip = commit.id
    with History(dev.dir / "state/repo.git") as history:
        history.set_ref(ref, state.status_tip.encode(), tip)
        run("git", "--git-dir", history.path, "push", "-q", hub.path,
            f"{tip.decode()}:{ref.decode()}")
    state.status_tip = tip.decode()
    store.save(state)
    publisher.commit("second", files=dev.spec_files("two\n"))
    hub.publish(publisher)
    reads: list[bytes] = []
    real = quarantine.read_commit
    monkeypatch.setattr(quarantine, "read_commit",
                        lambda s, sha: (reads.append(sha), real(s, sha))[1])
    assert dev.sync().outcome == "applied" and dev.motd() == "two\n"
    assert len(reads) < 10, f"the fetch read {len(reads)} commits as haves"
