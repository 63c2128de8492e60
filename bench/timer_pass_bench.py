"""A daemon timer pass with nothing changed: does it cost what changed, or what exists?

Builds a device with N File resources and one CPU-temperature Sensor sampled every
10 s (a signed spec from a real publisher repository, synced once), then runs the
daemon's timer pass several times with nothing changed (the sensor reads the same
value), for N = 10 and N = 1,000 with their passes interleaved (a busy machine slows
both alike), and prints the median time per pass and the ratio.
The timer pass is what the daemon runs when the sensor's wakeup is due
(``Agent.reconcile_pass(due_only=True)`` at ``Agent.next_wakeup()``); a full pass
(every resource looked at, as every sync does) is measured too. It also counts, for
the no-change passes, the YAML documents parsed, the status documents serialised and
the files added to the repository (all should be 0).

    python3 bench/timer_pass_bench.py               # 10 vs 1,000 resources
    python3 bench/timer_pass_bench.py --sizes 10 100 1000 --passes 31
    python3 bench/timer_pass_bench.py --worker     # as the daemon runs it: a worker each

``--worker`` runs each pass the way ``giter-agent run`` does (``daemon.worker_passes``:
a new worker process per pass, which starts cold) for a device of N File resources (no
sensor: a sensor's sampler would keep the passes in the daemon's own process), and
prints the median wall time and the worker's CPU time (user + system) per pass, and
whether any pass rewrote the state file or loaded PyYAML.

Results: docs/performance.md, "A timer pass that changes nothing".
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tools"))

DEVICE = "pi-bench"
API = "apiVersion: giter.dev/v1alpha1\n"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def resource(name: str, spec: dict) -> bytes:
    return (f"{API}kind: File\nmetadata: {json.dumps({'name': name, 'generation': 1})}\n"
            f"spec: {json.dumps(spec)}\n").encode()


class Counts:
    """Counts YAML parses, status documents dumped and objects added, by wrapping the
    three functions every pass goes through."""

    def __init__(self) -> None:
        self.parses = self.dumps = self.objects = 0

    def install(self) -> None:
        from giter_agent.spec import resources
        from giter_agent.status import documents

        parse, dump = resources.load_yaml, resources.dump_yaml

        def counted_parse(*a, **k):  # type: ignore[no-untyped-def]
            self.parses += 1
            return parse(*a, **k)

        def counted_dump(*a, **k):  # type: ignore[no-untyped-def]
            self.dumps += 1
            return dump(*a, **k)

        resources.load_yaml = counted_parse
        documents.dump_yaml = counted_dump

    def reset(self) -> None:
        self.parses = self.dumps = self.objects = 0


def published(work: Path, n: int, extra: dict[str, bytes] | None = None) -> tuple[Path, Path]:
    """A fleet with ``n`` File resources (and ``extra`` files) for the device, signed and
    bundled under ``work``, and the device's agent.toml: (the bundle, the config)."""
    from giter_agent.trust import sshsig
    from giter_bundle.publisher import PublisherRepo

    root = work / "root"
    root.mkdir()
    key = sshsig.generate_ed25519()
    signers = work / "allowed_signers"
    signers.write_text(f'ops namespaces="git" {sshsig.public_key_of(key).openssh()}\n')
    publisher = PublisherRepo(work / "fleet.git", key)
    files = {f"devices/{DEVICE}/file-{i:04d}.yaml": resource(f"file-{i:04d}", {
        "path": str(root / f"d{i % 10}" / f"file-{i:04d}"), "content": f"value {i}\n",
        "mode": "0644"}) for i in range(n)}
    publisher.commit({**files, **(extra or {})}, f"{n} files")
    config = work / "agent.toml"
    config.write_text(
        f'device_id = "{DEVICE}"\nstate_dir = "state"\nboard = "generic-mock"\n'
        f'allowed_signers = "{signers}"\n[files]\nroots = ["{root}"]\n')
    return publisher.bundle(work / "fleet.bundle"), config


class Device:
    """A device with ``n`` File resources and the sensor, synced once and settled."""

    def __init__(self, n: int, full: bool) -> None:
        from gpiozero.pins.mock import MockFactory

        from giter_agent.config.agent_toml import load
        from giter_agent.sync.agent import Agent

        self.full = full
        self.work = work = Path(tempfile.mkdtemp(prefix="timer-pass-"))
        zone = work / "sys/class/thermal/thermal_zone0"
        zone.mkdir(parents=True)
        (zone / "temp").write_text("48000\n")
        bundle, config = published(work, n, {f"devices/{DEVICE}/cpu.yaml": (
            f"{API}kind: Sensor\nmetadata: {{name: cpu}}\n"
            "spec: {source: cpu-temperature, interval: 10, deadband: 1}\n").encode()})
        self.clock = Clock(1_800_000_000.0)
        factory = MockFactory()
        self.agent = Agent(load(config), clock=self.clock,
                           pin_factory_maker=lambda board: factory)
        self.agent.ctx.sysfs = work / "sys"
        report = self.agent.sync([bundle], source="bench")
        assert report.exit_code == 0, (report.outcome, report.not_ready)
        self.agent.reconcile_pass()  # the first timer pass may still settle something
        self.objects = work / "state" / "repo.git" / "objects"
        self.before = self.count_objects()

    def count_objects(self) -> int:
        return sum(1 for p in self.objects.rglob("*") if p.is_file())

    def one_pass(self) -> float:
        """One pass, as the daemon runs it when the sensor's wakeup is due: seconds."""
        wake = self.agent.next_wakeup()
        assert wake is not None, "the sensor asks for its next sample"
        self.clock.now = max(wake, self.clock.now)
        t0 = time.perf_counter()
        self.agent.reconcile_pass(source="bench", due_only=not self.full)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.agent.close()
        shutil.rmtree(self.work, ignore_errors=True)


def measure(sizes: list[int], passes: int, counts: Counts, full: bool
            ) -> dict[int, tuple[float, tuple[int, int, int]]]:
    """Median seconds per pass and (parses, dumps, objects written) per pass, by size;
    the sizes' passes interleaved, so a busy machine slows them alike."""
    devices = {n: Device(n, full) for n in sizes}
    try:
        times: dict[int, list[float]] = {n: [] for n in sizes}
        work = {n: [0, 0] for n in sizes}
        for _ in range(passes):
            for n, dev in devices.items():
                counts.reset()
                times[n].append(dev.one_pass())
                work[n][0] += counts.parses
                work[n][1] += counts.dumps
        return {n: (statistics.median(times[n]),
                    (work[n][0] // passes, work[n][1] // passes,
                     dev.count_objects() - dev.before))
                for n, dev in devices.items()}
    finally:
        for dev in devices.values():
            dev.close()


class WorkerDevice:
    """A device with ``n`` File resources, synced once by ``giter-agent sync``; passes
    run in worker processes, as the daemon runs them."""

    def __init__(self, n: int) -> None:
        from gpiozero.pins.mock import MockFactory

        from giter_agent.config.agent_toml import load
        from giter_agent.daemon.worker_passes import WorkerPasses
        from giter_agent.device.board import load_board

        self.work = work = Path(tempfile.mkdtemp(prefix="worker-pass-"))
        bundle, config = published(work, n)
        self.config = config
        for _ in range(2):  # the second settles what a one-shot's status records
            subprocess.run([str(Path(sys.executable).parent / "giter-agent"), "-c",
                            str(config), "sync", "--bundle", str(bundle)], check=True,
                           stdout=subprocess.DEVNULL)
        self.state_file = work / "state" / "state.msgpack"
        # The worker's interpreter, with what it imported written down (PyYAML or not).
        self.imports = work / "imports.log"
        python = work / "python"
        python.write_text(f"#!/bin/sh\nexec {sys.executable} -X importtime \"$@\" "
                          f"2>>{self.imports}\n")
        python.chmod(0o755)
        cfg = load(config)
        self.passes = WorkerPasses(cfg, config, board=load_board(cfg.board),
                                   pin_factory=MockFactory, python=str(python))
        self.identity = self.state_id()

    def state_id(self) -> tuple[int, int]:
        st = self.state_file.stat()
        return st.st_ino, st.st_mtime_ns

    def one_pass(self, reason: str) -> tuple[float, float]:
        """One pass in a worker: (wall seconds, the worker's CPU seconds)."""
        import resource as res

        from giter_agent.daemon.triggers import RECONCILE, Job

        before = res.getrusage(res.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        report = self.passes.run(Job(RECONCILE, reason=reason))
        wall = time.perf_counter() - t0
        after = res.getrusage(res.RUSAGE_CHILDREN)
        assert report.outcome == "up-to-date", report.outcome
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu

    def yaml_loaded(self) -> bool:
        return any(line.rsplit("|", 1)[-1].strip().split(".")[0] == "yaml"
                   for line in self.imports.read_text().splitlines()
                   if line.startswith("import time:"))

    def close(self) -> None:
        self.passes.close()
        shutil.rmtree(self.work, ignore_errors=True)


def measure_worker(sizes: list[int], passes: int) -> None:
    import os

    from giter_agent.daemon.jobs import WAKEUP

    # The workers inherit this environment: let them keep their bytecode, as an
    # installed agent does (compiling every module at every start is not what a board
    # pays).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    devices = {n: WorkerDevice(n) for n in sizes}
    try:
        for reason, what in ((WAKEUP, "timer pass (a wakeup: what is due)"),
                             ("timer", "full pass (every resource looked at)")):
            print(f"== worker {what}, nothing changed")
            walls: dict[int, list[float]] = {n: [] for n in sizes}
            cpus: dict[int, list[float]] = {n: [] for n in sizes}
            for _ in range(passes):
                for n, dev in devices.items():
                    wall, cpu = dev.one_pass(reason)
                    walls[n].append(wall)
                    cpus[n].append(cpu)
            for n, dev in devices.items():
                print(f"{n:>6} files: {1000 * statistics.median(walls[n]):8.1f} ms wall, "
                      f"{1000 * statistics.median(cpus[n]):8.1f} ms worker CPU per pass "
                      f"(median of {passes}); state file rewritten: "
                      f"{dev.state_id() != dev.identity}; PyYAML loaded: {dev.yaml_loaded()}")
            small, large = min(sizes), max(sizes)
            wall_ratio = statistics.median(walls[large]) / statistics.median(walls[small])
            cpu_ratio = statistics.median(cpus[large]) / statistics.median(cpus[small])
            print(f"ratio {large} vs {small} files: x{wall_ratio:.2f} wall, "
                  f"x{cpu_ratio:.2f} CPU")
    finally:
        for dev in devices.values():
            dev.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 1000])
    p.add_argument("--passes", type=int, default=21)
    p.add_argument("--worker", action="store_true",
                   help="each pass in a new worker process, as the daemon runs it")
    args = p.parse_args()
    if args.worker:
        measure_worker(args.sizes, args.passes)
        return
    counts = Counts()
    counts.install()
    for full in (False, True):
        what = "full pass (every resource)" if full else "timer pass (the sensor's wakeup)"
        print(f"== {what}, nothing changed")
        results = {}
        measured = measure(args.sizes, args.passes, counts, full)
        for n in args.sizes:
            median, (parses, dumps, written) = measured[n]
            results[n] = median
            print(f"{n:>6} files: {1000 * median:8.1f} ms per pass (median of "
                  f"{args.passes}); per pass: {parses} YAML parses, {dumps} status documents "
                  f"serialised; {written} files added to objects/")
        small, large = min(results), max(results)
        print(f"ratio {large} vs {small} files: x{results[large] / results[small]:.2f}"
              + ("" if full else " (goal: within x2)"))


if __name__ == "__main__":
    main()
