"""``giter-agent run`` as a real process: systemd's notify protocol, triggers, SIGTERM.

The test plays systemd: it binds a unix datagram socket, passes it as
``$NOTIFY_SOCKET`` with a watchdog, and reads what the daemon says. The hub is a real
``git daemon`` on loopback; the USB stick is a folder appearing under ``[usb] roots``.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.devices import SimDevice
from support.servers import GitDaemon, Hub
from support.waits import wait_until

from giter_agent.daemon.sd_notify import Notifier


class FakeSystemd:
    """The receiving end of ``$NOTIFY_SOCKET``: every datagram, parsed, with its time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append((time.monotonic(), fields))

    def wait_for(self, predicate, timeout: float = 120.0) -> dict[str, str]:
        end = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < end:
            for _, fields in self.messages[seen:]:
                if predicate(fields):
                    return fields
            seen = len(self.messages)
            time.sleep(0.02)
        raise AssertionError(f"no such message in {[m for _, m in self.messages]}")

    def close(self) -> None:
        self._closed = True
        self.sock.close()


def context_switches(pid: int) -> int:
    """Voluntary context switches of every thread of ``pid``: one per wake-up from sleep."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "giter_agent", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_daemon_notifies_syncs_on_triggers_and_stops_on_sigterm(tmp_path, publisher):
    hub = Hub(tmp_path / "hub")
    gitd = GitDaemon(hub).start()
    media = tmp_path / "media"
    media.mkdir()
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers,
                    {"url": gitd.url}, usb_roots=[media],
                    settings={"sync_interval": 3600, "log_level": "info"})
    first = publisher.commit("first", files=dev.spec_files("one\n"))
    hub.publish(publisher)
    systemd = FakeSystemd(tmp_path / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=str(systemd.path), WATCHDOG_USEC="1000000")
    proc = subprocess.Popen([sys.executable, "-m", "giter_agent", "-c", str(dev.config_path),
                             "run"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert systemd.wait_for(lambda m: m.get("READY") == "1")
        # The first network sync runs at start; STATUS then says so, in words.
        systemd.wait_for(lambda m: m.get("STATUS", "").startswith("in-sync"))
        assert dev.state().applied == first and dev.motd() == "one\n"
        assert hub.refs() == {"refs/heads/status/pi-01": dev.state().status_tip}
        # Watchdog pings at half of WATCHDOG_USEC.
        wait_until(lambda: sum("WATCHDOG" in m for _, m in systemd.messages) >= 3)
        pings = [t for t, m in systemd.messages if m.get("WATCHDOG") == "1"]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert all(0.2 < g < 1.5 for g in gaps), gaps

        # Idle is idle: over 2 s only the watchdog's four pings wake it (and a few
        # for the kernel's own reasons), nothing polls.
        before = context_switches(proc.pid)
        time.sleep(2.0)
        assert context_switches(proc.pid) - before <= 12

        # A stick appears under the USB root: the daemon imports it, answers on it.
        second = publisher.commit("second", files=dev.spec_files("two\n"))
        stick = media / "STICK"
        (stick / "giter").mkdir(parents=True)
        publisher.bundle(tmp_path / "fleet.bundle")
        (tmp_path / "fleet.bundle").rename(stick / "giter" / "fleet.bundle")
        (stick / "giter/inbox").mkdir()
        (stick / "giter/fleet.bundle").rename(stick / "giter/inbox/fleet.bundle")
        wait_until(lambda: (stick / "giter/outbox/pi-01.txt").exists())
        assert dev.state().applied == second and dev.motd() == "two\n"
        assert "APPLIED" in (stick / "giter/outbox/pi-01.txt").read_text()

        # A manual sync between passes works (the daemon holds the lock only in a pass),
        # and the daemon reconciles after it: the state file changed under it.
        third = publisher.commit("third", files=dev.spec_files("three\n"))
        hub.publish(publisher)
        manual = cli("-c", str(dev.config_path), "sync")
        assert manual.returncode == 0, manual.stderr
        assert dev.state().applied == third and dev.motd() == "three\n"
        wait_until(lambda: "state-changed" in proc_log(proc))

        # SIGUSR1: sync now.
        fourth = publisher.commit("fourth", files=dev.spec_files("four\n"))
        hub.publish(publisher)
        proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: dev.state().applied == fourth)
        systemd.wait_for(lambda m: m.get("STATUS", "").startswith("in-sync"))

        # SIGTERM: STOPPING=1 and a clean exit (the wait is a hang guard, not a bound:
        # how fast it stops is measured in bench/, never asserted here).
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
        assert code == 0, code
        assert systemd.wait_for(lambda m: m.get("STOPPING") == "1")
        log = proc_log(proc)
        assert "device=pi-01" in log and f"spec={first}" in log
        assert "event=usb-stick" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        systemd.close()
        gitd.stop()


_LOGS: dict[int, str] = {}


def proc_log(proc: subprocess.Popen) -> str:
    """Everything the daemon wrote to stderr so far (read without blocking)."""
    import fcntl

    fd = proc.stderr.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    try:
        chunk = proc.stderr.read()
    except (BlockingIOError, TypeError):
        chunk = None
    _LOGS[proc.pid] = _LOGS.get(proc.pid, "") + (chunk or "")
    return _LOGS[proc.pid]


def test_daemon_reports_offline_and_backs_off(tmp_path, publisher):
    hub = Hub(tmp_path / "hub")
    gitd = GitDaemon(hub)  # never started: nothing listens on its port
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers, {"url": gitd.url},
                    settings={"log_level": "info"})
    systemd = FakeSystemd(tmp_path / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=str(systemd.path))
    proc = subprocess.Popen([sys.executable, "-m", "giter_agent", "-c", str(dev.config_path),
                             "run"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        systemd.wait_for(lambda m: m.get("STATUS", "").startswith("offline: Offline"))
        assert dev.state().network.failures == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        log = proc.stderr.read()
        assert "event=offline reason=Offline" in log and "event=backoff" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        systemd.close()


def test_notifier_speaks_the_protocol_and_is_a_no_op_outside_systemd(tmp_path):
    quiet = Notifier.from_environ({})
    assert not quiet.enabled and quiet.ready("x") is False and quiet.watchdog_interval is None

    systemd = FakeSystemd(tmp_path / "n.sock")
    try:
        n = Notifier.from_environ({"NOTIFY_SOCKET": str(systemd.path),
                                   "WATCHDOG_USEC": "30000000"}, pid=1234)
        assert n.watchdog_interval == 15.0
        assert n.ready("starting\nsecond line") and n.watchdog() and n.stopping()
        systemd.wait_for(lambda m: m.get("STOPPING") == "1")
        fields = [m for _, m in systemd.messages]
        assert fields[0] == {"READY": "1", "STATUS": "starting second line"}
        assert fields[1] == {"WATCHDOG": "1"}
        n.close()
    finally:
        systemd.close()
    # The watchdog belongs to another process: not ours to feed.
    other = Notifier.from_environ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000",
                                   "WATCHDOG_PID": "1"}, pid=99)
    assert other.watchdog_interval is None
    # A socket that is gone does not take the agent down.
    assert Notifier("/nonexistent/notify.sock").ready() is False


def test_abstract_notify_socket(tmp_path):
    name = f"giter-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        assert Notifier("@" + name).status("hello")
        assert sock.recv(100) == b"STATUS=hello"
    finally:
        sock.close()


@pytest.mark.parametrize("inbox_first", [True, False])
def test_usb_watch_sees_a_stick_once_per_appearance(tmp_path, inbox_first):
    from giter_agent.daemon.triggers import USB, UsbWatch

    root = tmp_path / "media"
    root.mkdir()
    watch = UsbWatch([root], settle_s=0.05, patience_s=2)
    try:
        now = time.monotonic()
        assert watch.fire(now, set()) == []  # the start-up scan: no stick yet
        assert watch.next_due(now) is None  # and nothing to wait for: it sleeps
        stick = root / "LABEL"
        stick.mkdir()
        if inbox_first:
            (stick / "giter/inbox").mkdir(parents=True)
        fd = watch.fds()[0][0]
        assert watch.fire(time.monotonic(), {fd}) == []  # an event: settle first
        if not inbox_first:  # the mount is not ready yet: looked at again shortly
            assert watch.fire(watch.next_due(0), set()) == []
            assert watch.next_due(0) is not None
            (stick / "giter/inbox").mkdir(parents=True)
        jobs = watch.fire(watch.next_due(0), set())
        assert [(j.kind, j.arg) for j in jobs] == [(USB, str(stick))]
        assert watch.next_due(0) is None
        # Still there at the next scan: not synced twice.
        assert watch._scan()[0] == []
    finally:
        watch.close()


def test_sigterm_mid_pass_abandons_it_within_a_second(tmp_path, publisher):
    """A hub that accepts the connection and then says nothing: the pass hangs in a read
    (timeout 30 s). SIGTERM still ends the daemon within a second, and the abandoned
    pass leaves nothing a later run cannot use."""
    silent = socket.create_server(("127.0.0.1", 0))  # accepts into the backlog, never reads
    port = silent.getsockname()[1]
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers,
                    {"url": f"git://127.0.0.1:{port}/fleet.git", "read_timeout_s": 30},
                    settings={"log_level": "info"})
    systemd = FakeSystemd(tmp_path / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=str(systemd.path))
    proc = subprocess.Popen([sys.executable, "-m", "giter_agent", "-c", str(dev.config_path),
                             "run"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        systemd.wait_for(lambda m: m.get("STATUS", "").startswith("syncing"))
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)  # a hang guard; the pass is abandoned, not waited for (below)
        assert code == 0, code
        systemd.wait_for(lambda m: m.get("STOPPING") == "1")
        assert "event=abandoned" in proc.stderr.read()
        # The lock went with the process; the state directory is usable at once.
        silent.close()
        report = dev.sync()
        assert report.outcome == "offline"
        assert not list((dev.dir / "state/repo.git/quarantine").iterdir())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        systemd.close()
        silent.close()


class PipeTrigger:
    """A trigger of the kind a serial peer adds: a descriptor to sleep on, its own pass."""

    name = "pipe"

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        self.finished_with: list = []
        self.ran_with: list = []

    def fds(self):
        import select

        return [(self.r, select.POLLIN)]

    def next_due(self, now):
        return None

    def fire(self, now, ready):
        from giter_agent.daemon.triggers import Job

        os.read(self.r, 100)

        def run(agent):
            self.ran_with.append(threading.current_thread().name)
            return agent.reconcile_pass(source="pipe")

        return [Job("pipe", reason="peer spoke", run=run)]

    def finished(self, job, report, now):
        self.finished_with.append((job.kind, report.outcome if report else None))


def test_a_trigger_can_be_added_with_its_own_pass(tmp_path, publisher):
    from giter_agent.daemon.loop import Daemon

    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers)
    agent = dev.agent()
    healths = []
    daemon = Daemon(agent, on_health=healths.append)
    trigger = PipeTrigger()
    daemon.add_trigger(trigger)

    def poke_then_stop() -> None:
        os.write(trigger.w, b"x")
        wait_until(lambda: trigger.finished_with)
        daemon.request_stop()

    threading.Thread(target=poke_then_stop, daemon=True).start()
    assert daemon.run() == 0
    assert trigger.ran_with == ["giter-pass"]
    assert trigger.finished_with == [("pipe", "no-bundles")]
    assert [h.state for h in healths][:2] == ["offline", "syncing"]
    os.close(trigger.r)
    os.close(trigger.w)


def test_a_pass_that_selects_another_agent_version_ends_the_daemon_with_75(tmp_path,
                                                                           publisher):
    """After the pass, the daemon asks whether another environment of the agent is
    selected (``cli.boot.restart_reason``); if so it stops at once - with nothing else
    due, not only when something next wakes it - and exits 75 for systemd."""
    from giter_agent.daemon.loop import Daemon
    from giter_agent.status.report import EXIT_RESTART

    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers)
    selected: list[str] = []
    daemon = Daemon(dev.agent(), restart_wanted=lambda: selected[0] if selected else None)
    trigger = PipeTrigger()
    daemon.add_trigger(trigger)
    selected.append("agent environment 0.2.0-abc is selected")
    os.write(trigger.w, b"x")
    done = threading.Event()
    rescued: list[bool] = []

    def rescue() -> None:  # only if the daemon never stops by itself
        if not done.wait(60):
            rescued.append(True)
            daemon.request_stop()

    threading.Thread(target=rescue, daemon=True).start()
    code = daemon.run()
    done.set()
    assert not rescued, "the daemon kept running after the pass that selected another version"
    assert code == EXIT_RESTART and trigger.finished_with == [("pipe", "no-bundles")]
    os.close(trigger.r)
    os.close(trigger.w)
