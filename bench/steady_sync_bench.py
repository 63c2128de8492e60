"""A steady sync that changes nothing, as a whole process, against references run alongside.

One device, one File resource, synced once from a signed bundle; then, interleaved:

- ``giter-agent -c agent.toml sync --bundle spec.bundle`` (the same bundle again: nothing
  new, nothing to correct);
- ``cf-agent -K -f promises.cf`` keeping the same one file (when ``cf-agent`` is installed:
  Debian ``cfengine3``);
- git's equivalent of "nothing new": ``git fetch`` of the same bundle into the device's
  copy (nothing to fetch) + ``git verify-commit`` of its tip.

Each run is a child process; time is wall clock and CPU (user + system, which a busy
machine does not inflate); peak RSS is ``ru_maxrss`` from ``os.wait4``, of use for
giter-agent only (a child spawned from this Python process starts at its high-water
mark: ``/usr/bin/time -v`` shows git's and cf-agent's own). It also counts the files
the steady syncs wrote under the state directory (the state file only: the sync's
record; no commit, no object). Prints medians and the ratios.

    python3 bench/steady_sync_bench.py            # 15 interleaved rounds
    python3 bench/steady_sync_bench.py --rounds 31
    python3 bench/steady_sync_bench.py --editable   # through the dev console script
    python3 bench/steady_sync_bench.py --python "$(command -v python3)"  # another interpreter
    python3 bench/steady_sync_bench.py --debian     # the Debian package's layout and libraries

The agent is started as an installed device starts it (``bench/installed_layout.py``:
the system's interpreter, the Debian launcher, a private package folder, no editable-install
hooks), and the interpreter's own ``python -c pass`` in that environment is timed
alongside.

Results: docs/performance.md, "A steady sync that changes nothing".
"""

from __future__ import annotations

import argparse
import os
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

import installed_layout  # noqa: E402 - beside this script

DEVICE = installed_layout.DEVICE
API = "apiVersion: giter.dev/v1alpha1\n"


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MiB) of one child process (and the children
    it waited for), which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {err.strip()[-1500:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def snapshot(state: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in state.rglob("*") if p.is_file() and p.name != "lock"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15)
    installed_layout.add_flags(p)
    args = p.parse_args()

    from giter_bundle.publisher import PublisherRepo

    work = Path(tempfile.mkdtemp(prefix="steady-sync-"))
    try:
        root = work / "root"
        root.mkdir()
        target = root / "motd"
        key, signers = installed_layout.operator(work)
        publisher = PublisherRepo(work / "fleet.git", key)
        publisher.commit({f"devices/{DEVICE}/motd.yaml": (
            f"{API}kind: File\nmetadata: {{name: motd}}\n"
            f"spec: {{path: {target}, content: \"hello\\n\", mode: \"0644\"}}\n").encode()},
            "one file")
        bundle = publisher.bundle(work / "spec.bundle")
        config = installed_layout.device_config(work, signers, root)
        # Started as a device starts it (bench/installed_layout.py), or with --editable
        # through this development environment's console script; compiled bytecode
        # either way (PYTHONDONTWRITEBYTECODE would compile every module at every start).
        entry, floor = installed_layout.commands(work, args)
        agent = [*entry, "-c", str(config), "sync", "--bundle", str(bundle)]
        aenv = installed_layout.env(work)
        run(agent, aenv)  # the first sync applies it
        run(agent, aenv)  # the first steady one (the status of a one-shot is settled now)

        # git's "nothing new": the device's copy already has the bundle's commits.
        mirror = work / "mirror.git"
        genv = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(work),
                "GIT_CONFIG_GLOBAL": str(work / "gitconfig")}
        (work / "gitconfig").write_text(
            f"[gpg]\n\tformat = ssh\n[gpg \"ssh\"]\n\tallowedSignersFile = {signers}\n")
        subprocess.run(["git", "init", "-q", "--bare", str(mirror)], check=True, env=genv)
        fetch = ["git", "--git-dir", str(mirror), "fetch", "-q", str(bundle),
                 "refs/heads/main:refs/heads/main"]
        subprocess.run(fetch, check=True, env=genv)
        tip = subprocess.run(["git", "--git-dir", str(mirror), "rev-parse", "main"],
                             check=True, env=genv, capture_output=True).stdout.decode().strip()
        git = ["sh", "-c", " && ".join([
            " ".join(fetch), f"git --git-dir {mirror} verify-commit {tip} 2>/dev/null"])]

        cf_agent = shutil.which("cf-agent")
        policy = work / "promises.cf"
        policy.write_text(
            'body common control { bundlesequence => { "main" }; }\n'
            'bundle agent main {\n  files:\n'
            f'    "{root}/motd-cf"\n      create => "true",\n      content => "hello\\n",\n'
            '      perms => m("0644");\n}\n'
            'body perms m(mode) { mode => "$(mode)"; }\n')
        cf = [cf_agent, "-K", "-f", str(policy)] if cf_agent else None
        if cf:
            run(cf)

        before = snapshot(work / "state")
        results: dict[str, list[tuple[float, float, float]]] = {
            "giter-agent sync": [], "git": [], "python": []}
        if cf:
            results["cf-agent"] = []
        for _ in range(args.rounds):
            results["giter-agent sync"].append(run(agent, aenv))
            results["git"].append(run(git, genv))
            results["python"].append(run(floor, aenv))
            if cf:
                results["cf-agent"].append(run(cf))
        changed = sorted(k for k, v in snapshot(work / "state").items() if before.get(k) != v)

        print(f"steady sync, one File, nothing new: {args.rounds} interleaved rounds "
              "(medians)")
        med = {}
        for name, rows in results.items():
            wall = statistics.median(r[0] for r in rows)
            cpu = statistics.median(r[1] for r in rows)
            rss = statistics.median(r[2] for r in rows)
            med[name] = (wall, cpu)
            label = {"git": "git fetch (nothing new) + verify-commit",
                     "python": "python -c pass (interpreter start-up)"}.get(name, name)
            print(f"  {label:<42} wall {1000 * wall:7.1f} ms   CPU {1000 * cpu:7.1f} ms"
                  + (f"   peak RSS {rss:5.1f} MiB" if name.startswith("giter") else ""))
        ours = med["giter-agent sync"]
        for ref in ("cf-agent", "git"):
            if ref in med:
                print(f"giter-agent / {ref}: wall x{ours[0] / med[ref][0]:.2f}, "
                      f"CPU x{ours[1] / med[ref][1]:.2f}")
        if not cf:
            print("cf-agent: not installed (Debian: apt-get install cfengine3)")
        print(f"files written under the state directory by the steady syncs: {len(changed)}"
              + (f" ({', '.join(Path(c).name for c in changed[:5])})" if changed else ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
