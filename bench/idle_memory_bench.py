"""The idle daemon's memory, against bare Python measured in the same run.

A demo-like device (one File, one blinking Output on the mock pin factory the
``generic-mock`` board uses) runs the real ``giter-agent run`` against a local
``git daemon`` on 127.0.0.1. The bench samples the daemon's memory

- once its first network sync is done (and the daemon idles, blinking),
- every fifth of ``--passes`` more network passes (each asked for with SIGUSR1,
  counted from the daemon's own log lines, never timed), and after the last,

and prints VmRSS, PSS and anonymous memory (``/proc/PID/smaps_rollup``) with their
ratio to ``python3 -c 'import time; time.sleep(60)'`` sampled the same way. The curve
over the passes is the leak check: the mock pins keep a bounded history of their
states (1,000 changes), so a leak cannot hide in it, nor be blamed on it. The Output
blinks at 10 Hz so that history is full within 50 s, before the curve's first sample:
what the curve shows is the daemon, not the mock pins filling up.

Then the first sync of a 1,000-commit history (``--commits``): the peak of the process
that ran it. When passes run in a worker process the daemon logs the worker's peak
(``ru_maxrss`` from ``wait4``); the daemon's own high-water mark (``VmHWM``) is printed
beside it.

    python3 bench/idle_memory_bench.py                 # 1,000 passes, 1,000 commits
    python3 bench/idle_memory_bench.py --passes 100 --commits 200

Results: docs/performance.md, "The idle daemon".
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tools"))
sys.path.insert(0, str(REPO_ROOT / "tests"))

DEVICE = "pi-bench"
API = "apiVersion: giter.dev/v1alpha1\n"
MIB = 1024.0


def memory(pid: int) -> dict[str, float]:
    """VmRSS, PSS, anonymous and the high-water mark of ``pid``, in MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss", "Anonymous"):
            out[key] = int(rest.split()[0]) / MIB
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key == "VmHWM":
            out[key] = int(rest.split()[0]) / MIB
    return out


def row(label: str, mem: dict[str, float], ref: dict[str, float] | None = None) -> str:
    text = (f"  {label:<34} RSS {mem['Rss']:6.1f} MiB   PSS {mem['Pss']:6.1f} MiB   "
            f"anon {mem['Anonymous']:6.1f} MiB")
    if ref is not None:
        text += (f"   (x{mem['Rss'] / ref['Rss']:.2f} / x{mem['Pss'] / ref['Pss']:.2f} / "
                 f"x{mem['Anonymous'] / ref['Anonymous']:.2f} bare Python)")
    return text


class Daemon:
    """``giter-agent run`` as a child, its log lines collected by a thread."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "giter-agent"), "-c", str(config), "run"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def passes(self) -> int:
        return sum(" pass (" in line for line in self.lines)

    def wait_passes(self, count: int, timeout: float = 600.0) -> None:
        end = time.monotonic() + timeout
        while self.passes() < count:
            if self.proc.poll() is not None or time.monotonic() > end:
                raise SystemExit("the daemon stopped or hung:\n" + "".join(self.lines[-20:]))
            time.sleep(0.01)

    def workers(self) -> int:
        """Passes that ran in a worker process (each one logs its exit)."""
        return sum("event=worker-exit" in line for line in self.lines)

    def troubles(self) -> list[str]:
        return [line.strip() for line in self.lines
                if "level=warning" in line or "level=error" in line]

    def worker_peaks(self) -> list[float]:
        return [float(m.group(1)) for line in self.lines
                if (m := re.search(r"worker_peak_mib=([0-9.]+)", line))]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def device(work: Path, name: str, url: str, key_line: str) -> tuple[Path, Path]:
    root = work / name / "root"
    root.mkdir(parents=True)
    signers = work / name / "allowed_signers"
    signers.write_text(key_line)
    config = work / name / "agent.toml"
    config.write_text(
        f'device_id = "{DEVICE}"\nstate_dir = "state"\nboard = "generic-mock"\n'
        f'allowed_signers = "{signers}"\n[files]\nroots = ["{root}"]\n'
        f'[agent]\nsync_interval = 86400\nlog_level = "debug"\n'
        f'[network]\nurl = "{url}"\n')
    return config, root


def spec(root: Path) -> dict[str, bytes]:
    return {
        f"devices/{DEVICE}/motd.yaml": (
            f"{API}kind: File\nmetadata: {{name: motd}}\n"
            f"spec: {{path: {root}/motd, content: \"hello\\n\", mode: \"0644\"}}\n").encode(),
        f"devices/{DEVICE}/led.yaml": (
            f"{API}kind: Output\nmetadata: {{name: heartbeat}}\n"
            "spec: {pin: led1, state: blink, onTime: 0.05, offTime: 0.05}\n").encode(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--passes", type=int, default=1000, help="network passes (leak check)")
    p.add_argument("--commits", type=int, default=1000, help="history of the first sync")
    args = p.parse_args()

    from support.servers import GitDaemon, Hub

    from giter_agent.trust import sshsig
    from giter_bundle.publisher import PublisherRepo

    work = Path(tempfile.mkdtemp(prefix="idle-memory-"))
    daemons: list[Daemon] = []
    gitd = None
    bare = None
    try:
        key = sshsig.generate_ed25519()
        line = f'ops namespaces="git" {sshsig.public_key_of(key).openssh()}\n'
        hub = Hub.__new__(Hub)  # serve the publisher's own repository
        hub.base = work
        gitd = GitDaemon(hub).start()
        # Compiled bytecode, as an installed package has it (compiling at start would
        # leave the compiler's garbage in the daemon's heap).
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

        bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        config, root = device(work, "idle", gitd.url.replace("fleet.git", "idle.git"), line)
        publisher = PublisherRepo(work / "idle.git", key)
        publisher.commit(spec(root), "one file, one blinking output")

        daemon = Daemon(config, env)
        daemons.append(daemon)
        daemon.wait_passes(1)
        time.sleep(2.0)  # blinking, idle
        ref = memory(bare.pid)
        first = memory(daemon.proc.pid)
        start = daemon.passes()
        every = max(1, args.passes // 5)
        curve: list[tuple[int, dict[str, float]]] = []
        for n in range(1, args.passes + 1):
            daemon.proc.send_signal(signal.SIGUSR1)
            daemon.wait_passes(start + n)
            if n % every == 0 and n < args.passes:
                time.sleep(0.5)  # the pass is collected after its worker exits
                curve.append((n, memory(daemon.proc.pid)))
        time.sleep(2.0)
        after = memory(daemon.proc.pid)
        curve.append((args.passes, after))
        ref_after = memory(bare.pid)
        passes, workers, troubles = daemon.passes(), daemon.workers(), daemon.troubles()
        daemon.stop()

        print("idle daemon: one File, one blinking Output (mock pins), network sync")
        print(row("bare python3 (time.sleep)", ref))
        print(row("giter-agent run, after 1st sync", first, ref))
        print(row(f"giter-agent run, after {args.passes} more", after, ref_after))
        print(f"  growth over {args.passes} passes: RSS {after['Rss'] - first['Rss']:+.2f} MiB, "
              f"PSS {after['Pss'] - first['Pss']:+.2f} MiB, "
              f"anon {after['Anonymous'] - first['Anonymous']:+.2f} MiB")
        print("  RSS / anon after N passes: " + ", ".join(
            f"{n}: {mem['Rss']:.2f} / {mem['Anonymous']:.2f}" for n, mem in curve))
        low = curve[0][1]
        print(f"  from pass {curve[0][0]} to pass {args.passes}: "
              f"RSS {after['Rss'] - low['Rss']:+.2f} MiB, "
              f"anon {after['Anonymous'] - low['Anonymous']:+.2f} MiB")
        print(f"  passes: {passes}, of which in a worker process: {workers}; "
              f"warnings and errors logged: {len(troubles)}")
        for line in troubles[:5]:
            print(f"    {line[:200]}")

        # The first sync of a long history: the peak of whoever ran the pass.
        config, root = device(work, "long", gitd.url.replace("fleet.git", "long.git"), line)
        publisher = PublisherRepo(work / "long.git", key)
        for i in range(args.commits - 1):
            publisher.commit({f"devices/{DEVICE}/note.txt": f"{i}\n".encode()}, f"commit {i}")
        publisher.commit(spec(root), "one file, one blinking output")
        daemon = Daemon(config, env)
        daemons.append(daemon)
        daemon.wait_passes(1)
        peak = memory(daemon.proc.pid)["VmHWM"]
        peaks = daemon.worker_peaks()
        daemon.stop()
        print(f"first sync of {args.commits} commits: daemon VmHWM {peak:.1f} MiB"
              + (f", pass worker peak RSS {max(peaks):.1f} MiB" if peaks
                 else " (the pass ran in the daemon)"))
    finally:
        for daemon in daemons:
            if daemon.proc.poll() is None:
                daemon.proc.kill()
                daemon.proc.wait()
        if bare is not None:
            bare.kill()
            bare.wait()
        if gitd is not None:
            gitd.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
