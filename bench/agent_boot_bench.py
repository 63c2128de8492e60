"""Benchmark: what the boot loader of ``AgentUpdate`` costs a board.

Three numbers, each against a reference measured in the same run:

- a start with no update installed: the peak RSS of ``giter-agent status`` (it goes
  through the boot loader, which reads a link and finds no journal) against the
  interpreter alone (``python3 -c pass``);
- the trial guard, the fork of the boot loader that stays in the installed package's
  code while a new version is on trial: its RSS once the daemon has exec'd (nothing is
  shared any more), against the same interpreter alone;
- the boot loader's imports (``python -X importtime``, cumulative) against the
  command-line parser's own.

Run from the repository root (in its venv):  python3 bench/agent_boot_bench.py
The numbers go into docs/performance.md, "The agent updating itself".
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path


def peak_rss_kib(argv: list[str], cwd: Path) -> int:
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], cwd=cwd, capture_output=True,
                          text=True, check=False)
    return int(done.stderr.strip().splitlines()[-1])


def guard_rss_kib(cwd: Path) -> tuple[int, int]:
    script = textwrap.dedent('''
        import os, pathlib, time
        import giter_agent.cli.main, giter_agent.cli.boot
        from giter_agent.config.agent_toml import load
        load(pathlib.Path("agent.toml"))
        r, w = os.pipe()
        os.set_inheritable(r, True)
        if os.fork() == 0:
            os.close(r)
            time.sleep(1.5)  # the parent has exec'd: nothing is shared any more
            status = open("/proc/self/status").read()
            os.write(w, status.encode())
            os._exit(0)
        os.close(w)
        os.execv("/bin/sh", ["sh", "-c", f"cat <&{r}"])
    ''')
    out = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True,
                         text=True, check=True).stdout
    rss = int(re.search(r"VmRSS:\s+(\d+)", out).group(1))
    anon = int(re.search(r"RssAnon:\s+(\d+)", out).group(1))
    return rss, anon


def import_us(modules: str) -> int:
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {modules}"],
                          capture_output=True, text=True, check=True)
    total = 0
    for line in done.stderr.splitlines():
        parts = line.split("|")
        # A top-level import: its name follows the bar after one space (nested: more).
        if len(parts) == 3 and parts[1].strip().isdigit() and parts[2].startswith(" ") \
                and not parts[2].startswith("  "):
            total += int(parts[1])
    return total


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "as").write_text("")
        (cwd / "agent.toml").write_text('device_id = "pi-01"\nstate_dir = "state"\n'
                                        'board = "generic-mock"\nallowed_signers = "as"\n')
        bare = min(peak_rss_kib([sys.executable, "-c", "pass"], cwd) for _ in range(3))
        agent = os.path.join(os.path.dirname(sys.executable), "giter-agent")
        status = min(peak_rss_kib([agent, "-c", "agent.toml", "status"], cwd)
                     for _ in range(3))
        rss, anon = guard_rss_kib(cwd)
        parser = min(import_us("giter_agent.cli.main") for _ in range(3))
        loader = min(import_us("giter_agent.cli.main, giter_agent.cli.boot")
                     for _ in range(3))
    print(f"python3 -c pass (reference):     {bare / 1024:6.1f} MiB peak RSS")
    print(f"giter-agent status, no update:   {status / 1024:6.1f} MiB  x{status / bare:.2f}")
    print(f"trial guard after the exec:      {rss / 1024:6.1f} MiB RSS ({anon / 1024:.1f} MiB "
          f"anonymous)  x{rss / bare:.2f}")
    print(f"imports: parser {parser / 1000:.1f} ms, parser + boot loader "
          f"{loader / 1000:.1f} ms  x{loader / max(parser, 1):.2f}")


if __name__ == "__main__":
    main()
