"""``giter-agent run`` runs its passes in short-lived worker processes.

The long-lived process keeps the loop, the pins it drives and the LED; a worker loads
what a pass needs (dulwich, cryptography, YAML, the kinds), plans what the daemon's
outputs are to do, and exits. These tests check that the daemon never loads the
heavy parts, that the outputs a worker planned are driven by the daemon exactly as
the kind would drive them itself, that a resource with another live device (a Sensor's
sampler) is taken over by the daemon, and that passes do not make the daemon grow.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory
from support.devices import SimDevice
from support.kinds import make_ctx
from support.resources import doc
from support.servers import GitDaemon, Hub
from support.waits import wait_until

from giter_agent.config.agent_toml import load
from giter_agent.core.errors import GiterError
from giter_agent.daemon.loop import Daemon
from giter_agent.daemon.triggers import NETWORK, RECONCILE, Job
from giter_agent.daemon.worker_passes import WorkerPasses, worker_environ
from giter_agent.device.board import load_board
from giter_agent.device.mock_pins import HISTORY, mock_factory
from giter_agent.device.outputs import HeldOutputs, PlannedOutputs
from giter_agent.kinds import builtin_kinds

pytestmark = pytest.mark.e2e

# What a pass needs and the daemon must not load: their compiled parts, as mapped.
HEAVY = ("dulwich/_objects", "dulwich/_pack", "cryptography/hazmat/bindings/_rust",
         "yaml/_yaml")
# What the daemon's own start would load and it never uses (docs/performance.md, "The
# idle daemon"): gpiozero's entry-point and font machinery and its unused devices
# (``device.gpiozero_import``), and ``shutil`` (with bz2, lzma) that argparse asks
# for the terminal's width (``core.clikit.Formatter``), ``subprocess`` (workers are
# started with ``os.posix_spawn``), ``queue`` (``daemon.loop._Mailbox``); and what
# only a pass needs.
NOT_IN_DAEMON = ("importlib.metadata", "importlib.resources", "email", "zipfile",
                 "tempfile", "shutil", "bz2", "lzma", "gpiozero.boards",
                 "gpiozero.internal_devices", "subprocess", "queue", "dulwich", "yaml",
                 "cryptography")
# ``giter-agent ARGS`` as ``python -m giter_agent`` runs it, writing the names of the
# modules it had loaded to MODULES_FILE when it exits.
RUN_AND_LIST_MODULES = (
    "import atexit, json, os, sys\n"
    "atexit.register(lambda: open(os.environ['MODULES_FILE'], 'w').write("
    "json.dumps(sorted(sys.modules))))\n"
    "from giter_agent.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n")


def mapped(pid: int) -> set[str]:
    """The files mapped into ``pid``'s memory (the shared objects it loaded)."""
    out = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            out.add(parts[5])
    return out


def heartbeat(**spec) -> dict[str, str]:
    return {"devices/pi-01/heartbeat.yaml": doc(
        "Output", "heartbeat", {"pin": "led1", "state": "blink", "onTime": 0.05,
                                "offTime": 0.05, **spec}).decode()}


@pytest.fixture
def hub(tmp_path):
    hub = Hub(tmp_path / "hub")
    gitd = GitDaemon(hub).start()
    yield hub, gitd
    gitd.stop()


def test_the_daemon_never_loads_what_a_pass_needs(tmp_path, publisher, hub):
    hub, gitd = hub
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers, {"url": gitd.url},
                    settings={"sync_interval": 3600, "log_level": "info"})
    first = publisher.commit("first", files={**dev.spec_files("one\n"), **heartbeat()})
    hub.publish(publisher)
    listed = tmp_path / "modules.json"
    proc = subprocess.Popen([sys.executable, "-c", RUN_AND_LIST_MODULES, "-c",
                             str(dev.config_path), "run"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MODULES_FILE": str(listed)})
    try:
        wait_until(lambda: dev.state().applied == first and dev.state().resources.get(
            "Output/heartbeat") is not None)
        assert dev.motd() == "one\n"
        record = dev.state().resources["Output/heartbeat"]
        assert record.status["conditions"][0]["reason"] == "Blinking"
        # A second pass, asked for: still nothing heavy in the daemon once it is done.
        second = publisher.commit("second", files=dev.spec_files("two\n"))
        hub.publish(publisher)
        proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: dev.state().applied == second)
        wait_until(lambda: hub.refs() == {"refs/heads/status/pi-01": dev.state().status_tip})
        time.sleep(0.5)  # the pass is logged and collected after its worker exits
        loaded = mapped(proc.pid)
        assert not [f for f in loaded if any(h in f for h in HEAVY)], sorted(loaded)
        assert any("libpython" in f or "python" in Path(f).name for f in loaded)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    modules = json.loads(listed.read_text())
    assert "gpiozero.output_devices" in modules and "giter_agent.daemon.loop" in modules
    assert not {m for m in modules
                if any(m == n or m.startswith(n + ".") for n in NOT_IN_DAEMON)}, sorted(modules)


class Counted(WorkerPasses):
    """WorkerPasses that count the passes they ran (the test waits on the count)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.done = 0
        self.jobs: list[str] = []

    def run(self, job: Job):
        try:
            return super().run(job)
        finally:
            self.jobs.append(f"{job.kind}:{job.reason}")
            self.done += 1


def in_process_daemon(dev: SimDevice, factory) -> tuple[Daemon, Counted]:
    config = load(dev.config_path)
    board = load_board(config.board)
    passes = Counted(config, dev.config_path, board=board, pin_factory=lambda: factory)
    return Daemon(passes), passes


def test_a_worker_plans_the_blink_and_the_daemon_holds_it_across_passes(
        tmp_path, publisher, hub, monkeypatch):
    """The blink outlives every worker; passes (counted) make the daemon hold no more
    live objects, the mock pin's history stays bounded, and after every pass the daemon
    hands what it freed back to the system (``daemon.heap``)."""
    from giter_agent.daemon import heap

    released: list[int] = []
    real_release = heap.release
    monkeypatch.setattr(heap, "release", lambda: (released.append(1), real_release()))
    hub, gitd = hub
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers, {"url": gitd.url},
                    settings={"sync_interval": 3600})
    publisher.commit("first", files={**dev.spec_files("one\n"), **heartbeat()})
    hub.publish(publisher)
    factory = mock_factory()
    daemon, passes = in_process_daemon(dev, factory)
    pin = factory.pin("GPIO17")
    counts: list[int] = []

    def passes_then_stop() -> None:
        try:
            wait_until(lambda: passes.done >= 1)
            # The worker that applied the spec has exited: the daemon blinks the pin.
            toggles = len(pin.states)
            wait_until(lambda: len(pin.states) >= toggles + 4)
            for n in range(2, 51):
                daemon.sync_now()
                wait_until(lambda n=n: passes.done >= n)
                if n in (20, 50):  # past the first passes' one-time caches
                    gc.collect()
                    counts.append(sum(1 for o in gc.get_objects()
                                      if type(o).__name__ != "PinState"))
        finally:
            daemon.request_stop()

    thread = threading.Thread(target=passes_then_stop, daemon=True)
    thread.start()
    assert daemon.run() == 0
    thread.join()
    assert passes.jobs.count("network:interval") == 50 and passes._agent is None
    assert len(released) == passes.done == 50
    assert len(counts) == 2
    # Thirty passes later the daemon holds no more live objects (a leak of one object
    # per pass would show as thirty): what a pass makes dies with its worker. The pin's
    # recorded states are not counted: the blink ran meanwhile, and they are bounded.
    assert counts[1] - counts[0] < 30, counts
    assert len(pin.states) <= HISTORY
    assert passes.outputs.keys() == []  # closed with the daemon
    factory.close()


def test_a_sensor_sampler_is_taken_over_by_the_daemon(tmp_path, publisher, hub):
    """A live device the worker cannot hand over (a Sensor's sampler) makes the daemon
    hold it: it reconciles at once in its own process, and stays so."""
    hub, gitd = hub
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers, {"url": gitd.url},
                    settings={"sync_interval": 3600})
    sensor = doc("Sensor", "door", {"source": "digital", "pin": "button1",
                                    "interval": 3600})
    publisher.commit("first", files={**dev.spec_files("one\n"),
                                     "devices/pi-01/door.yaml": sensor.decode()})
    hub.publish(publisher)
    factory = MockFactory()
    daemon, passes = in_process_daemon(dev, factory)

    def pass_then_stop() -> None:
        try:
            wait_until(lambda: passes.done >= 1)
            daemon.sync_now()
            wait_until(lambda: passes.done >= 2)
        finally:
            daemon.request_stop()

    thread = threading.Thread(target=pass_then_stop, daemon=True)
    thread.start()
    assert daemon.run() == 0
    thread.join()
    assert passes.holding() is False  # closed with the daemon
    assert passes._agent is not None  # built to hold the sampler
    record = dev.state().resources["Sensor/door"]
    assert record.status["conditions"][0]["status"] == "True", record.status
    factory.close()


# -- the outputs: planned in a worker, driven by the daemon, as the kind drives them ----

STEPS = [
    {"pin": "led1", "state": "on"},
    {"pin": "led1", "state": "blink", "onTime": 0.02, "offTime": 0.02},
    {"pin": "led1", "state": "pwm", "value": 0.25},
    {"pin": "led1", "state": "off", "activeHigh": False},
    {"pin": "led1", "state": "on", "activeHigh": False},
]


def test_a_plan_replayed_drives_the_pins_as_the_kind_itself_would(tmp_path):
    kind = builtin_kinds()["Output"]
    direct_factory, daemon_factory = mock_factory(), mock_factory()
    (tmp_path / "direct").mkdir()
    (tmp_path / "worker").mkdir()
    direct = make_ctx(tmp_path / "direct", direct_factory)
    held = HeldOutputs(lambda: daemon_factory)
    worker = make_ctx(tmp_path / "worker", daemon_factory)
    try:
        for raw in STEPS:
            spec = kind.validate(raw)
            worker.outputs = PlannedOutputs(held.snapshot(), held.failures)
            here = kind.apply("Output/l", spec, direct)
            there = kind.apply("Output/l", spec, worker)
            held.replay(worker.outputs.plan)
            assert (there.reason, there.message, there.observed) == (
                here.reason, here.message, here.observed), raw
            a, b = direct.outputs.held("Output/l"), held.held("Output/l")
            assert (a.want, a.pattern) == (b.want, b.pattern), raw
            if raw["state"] != "blink":
                assert direct_factory.pin("GPIO17").state == daemon_factory.pin(
                    "GPIO17").state, raw
        # Drift: the pin flipped by hand is seen through the daemon's snapshot.
        direct_factory.pin("GPIO17").state = 1  # activeHigh false: high is off
        daemon_factory.pin("GPIO17").state = 1
        spec = kind.validate(STEPS[-1])
        worker.outputs = PlannedOutputs(held.snapshot(), held.failures)
        here = kind.apply("Output/l", spec, direct)
        there = kind.apply("Output/l", spec, worker)
        held.replay(worker.outputs.plan)
        assert here.changes and there.changes == here.changes
        assert daemon_factory.pin("GPIO17").state == direct_factory.pin("GPIO17").state
        # Prune: released and off on both sides.
        worker.outputs = PlannedOutputs(held.snapshot(), held.failures)
        kind.prune("Output/l", spec, direct)
        kind.prune("Output/l", spec, worker)
        held.replay(worker.outputs.plan)
        assert held.keys() == [] and direct.outputs.keys() == []
        assert daemon_factory.pin("GPIO17").state == direct_factory.pin("GPIO17").state
    finally:
        direct.close()
        held.close_all()


def test_a_pin_the_daemon_cannot_claim_is_reported_by_the_next_pass(tmp_path):
    from gpiozero import LED

    kind = builtin_kinds()["Output"]
    factory = MockFactory()
    squatter = LED("GPIO17", pin_factory=factory)  # another program has the pin
    held = HeldOutputs(lambda: factory)
    worker = make_ctx(tmp_path, factory)
    spec = kind.validate({"pin": "led1", "state": "on"})
    worker.outputs = PlannedOutputs(held.snapshot(), held.failures)
    assert kind.apply("Output/l", spec, worker).reason == "Set"  # as far as it knows
    held.replay(worker.outputs.plan)
    assert held.keys() == [] and "GPIO17" in held.failures["Output/l"]
    worker.outputs = PlannedOutputs(held.snapshot(), held.failures)
    again = kind.apply("Output/l", spec, worker)
    assert again.reason == "PinUnavailable" and "GPIO17" in again.message
    squatter.close()
    held.replay(worker.outputs.plan)  # the daemon tried again, and now it could
    assert held.keys() == ["Output/l"] and held.failures == {}
    held.close_all()


def test_a_worker_is_told_the_daemons_settings_and_wakeups_and_hands_them_back(
        tmp_path, publisher):
    """What a pass leaves for the next (remote settings, wakeups) crosses the pipe."""
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers)
    config = load(dev.config_path)
    passes = WorkerPasses(config, dev.config_path, board=load_board(config.board),
                          pin_factory=MockFactory)
    passes._wakeups = [("File/motd", 1.0), (None, 5.0)]
    passes._settings = {"sync_interval": 120}
    report = passes.run(Job(RECONCILE, reason="state changed"))
    assert report.outcome == "no-bundles"  # no spec yet: nothing consumed them
    assert passes.overrides() == {"sync_interval": 120}
    assert passes._wakeups == [("File/motd", 1.0), (None, 5.0)]
    assert passes.next_wakeup() == 1.0
    # The state lock was held in the daemon's name: a manual sync would name this pid.
    assert (config.state_dir / "lock").read_text().strip() == str(os.getpid())
    # A job of no known kind is the worker's typed refusal, not a crash.
    with pytest.raises(GiterError) as info:
        passes.run(Job("teapot"))
    assert info.value.reason == "UnknownJob"
    with pytest.raises(GiterError) as info:
        passes.run(Job(NETWORK))  # no [network] in this config
    assert info.value.reason == "InvalidConfig" and "[network]" in str(info.value)


def test_a_worker_imports_from_the_path_the_daemon_imports_from(tmp_path, monkeypatch):
    # The Debian package's launcher puts its private folder first on the daemon's path
    # (/usr/share/giter-agent: the agent and the libraries it bundles), and the boot
    # loader an AgentUpdate's environment; neither is on the interpreter's own path.
    private = tmp_path / "private"
    private.mkdir()
    (private / "giter_probe_module.py").write_text("WHERE = 'private'\n")
    monkeypatch.setattr(sys, "path", [str(private), *sys.path])
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    env = worker_environ()
    assert "NOTIFY_SOCKET" not in env  # systemd's socket is the daemon's alone
    done = subprocess.run([sys.executable, "-c", "import giter_probe_module as m; "
                           "print(m.WHERE)"], env=env, capture_output=True, text=True,
                          cwd=tmp_path / "..", check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "private"


def test_a_worker_gets_its_pipes_when_the_daemon_has_low_descriptors_free(tmp_path,
                                                                          publisher):
    """Workers are started with ``os.posix_spawn``: a daemon started with descriptors 0
    and 1 closed gets pipe ends numbered 0 to 3, which must still reach the worker as
    its stdin and its answer descriptor, not be replaced by the worker's stdin or
    /dev/null before they are moved."""
    dev = SimDevice(tmp_path, "pi-01", publisher.allowed_signers)
    code = ("import os, sys\n"
            "from gpiozero.pins.mock import MockFactory\n"
            "from giter_agent.config.agent_toml import load\n"
            "from giter_agent.daemon.triggers import RECONCILE, Job\n"
            "from giter_agent.daemon.worker_passes import WorkerPasses\n"
            "from giter_agent.device.board import load_board\n"
            "for fd in range(3, 64):\n"
            "    try: os.close(fd)\n"
            "    except OSError: pass\n"
            "config = load(sys.argv[1])\n"
            "passes = WorkerPasses(config, sys.argv[1], board=load_board(config.board),\n"
            "                      pin_factory=MockFactory)\n"
            "print(passes.run(Job(RECONCILE, reason='x')).outcome, file=sys.stderr)\n")
    def close_stdin_and_stdout() -> None:
        os.close(0)
        os.close(1)

    done = subprocess.run([sys.executable, "-c", code, str(dev.config_path)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=False,
                          preexec_fn=close_stdin_and_stdout)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith("no-bundles"), done.stderr
