"""Benchmark: a git:// fetch read inside the sync's budget, against dulwich's own reader and git.

Every byte a git:// hub sends now goes through ``transport.network.metered.BudgetedSocket``
(unbuffered ``recv`` calls, each bounded by what is left of ``time_budget_s``, every
byte counted against the caps). This measures what that costs: the same pack is
fetched from a local ``git daemon`` on 127.0.0.1
  - through ``History.quarantine_fetch`` with the agent's client, budget armed,
  - through ``History.quarantine_fetch`` with dulwich's stock ``TCPGitClient`` (a
    buffered socket file, no budget: the read path before the budget existed),
  - by ``git fetch`` into an empty bare repository (the reference),
each best of ``--runs``, and prints the times and their ratios.

Run from the repository root:  python3 bench/network_fetch_bench.py [--mib 64] [--runs 3]
Used by hand and for docs/performance.md; nothing imports it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from giter_agent.core.budget import Budget
from giter_agent.history.store import History
from giter_agent.transport.network import Remote
from giter_agent.transport.network.git_tcp import tcp_client_class

REF = b"refs/heads/main"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build(repo: Path, mib: int) -> None:
    """A repository whose pack is about ``mib`` MiB: random blobs do not compress."""
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(repo)], check=True)
    work = repo.parent / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    for i in range(mib):
        (work / f"blob-{i:04d}.bin").write_bytes(os.urandom(2**20))
    git = ["git", "-C", str(work), "-c", "user.name=b", "-c", "user.email=b@b"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "blobs"], check=True)
    subprocess.run([*git, "push", "-q", str(repo), "main"], check=True)
    shutil.rmtree(work)


def best(runs: int, once: Callable[[Path], None], scratch: Path) -> float:
    times = []
    for n in range(runs):
        target = scratch / f"run-{n}"
        start = time.perf_counter()
        once(target)
        times.append(time.perf_counter() - start)
        shutil.rmtree(target)
    return min(times)


def fetch_with(client_factory: Callable[[], object], arm: bool) -> Callable[[Path], None]:
    def once(target: Path) -> None:
        client = client_factory()
        remote = Remote(client, "/fleet.git", "bench")
        if arm:
            remote.arm(Budget(600.0, max_bytes=4096 * 2**20))
        with History(target) as history, \
                history.quarantine_fetch(client, "/fleet.git", (REF,)) as q:
            q.promote()
        remote.close()
    return once


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=64, help="pack size (default 64 MiB)")
    parser.add_argument("--runs", type=int, default=3, help="best of N (default 3)")
    args = parser.parse_args()
    from dulwich.client import TCPGitClient

    with tempfile.TemporaryDirectory(prefix="netbench-") as tmp:
        base = Path(tmp)
        build(base / "fleet.git", args.mib)
        port = free_port()
        daemon = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={base}",
             "--listen=127.0.0.1", f"--port={port}", str(base)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            timed = tcp_client_class()
            ours = best(args.runs, fetch_with(lambda: timed("127.0.0.1", port, 10, 60), True),
                        base)
            stock = best(args.runs, fetch_with(lambda: TCPGitClient("127.0.0.1", port=port),
                                               False), base)

            def git_fetch(target: Path) -> None:
                subprocess.run(["git", "init", "-q", "--bare", str(target)], check=True)
                subprocess.run(["git", "-C", str(target), "fetch", "-q",
                                f"git://127.0.0.1:{port}/fleet.git", "main:main"],
                               check=True)
            git = best(args.runs, git_fetch, base)
        finally:
            daemon.terminate()
            daemon.wait()
    print(f"fetch of a ~{args.mib} MiB pack over git:// on 127.0.0.1, best of {args.runs}")
    print(f"  agent, budgeted reads     {ours:7.2f} s")
    print(f"  dulwich's buffered reads  {stock:7.2f} s")
    print(f"  git fetch (reference)     {git:7.2f} s")
    print(f"budgeted / buffered x{ours / stock:.2f}; budgeted / git x{ours / git:.2f}; "
          f"buffered / git x{stock / git:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
