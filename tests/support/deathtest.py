"""Death tests: stop ``giter-agent sync`` at the N-th call of a writing syscall, then
check that the next sync converges.

The fault comes from ``strace -e inject=<syscall>:<fault>:when=N`` (SIGKILL, or an
ENOSPC / EIO error) for the syscalls that change a filesystem, and from a Python audit
hook for ``open`` with ``O_CREAT`` (strace cannot tell those from the hundreds of
opens that read modules). A scenario is a device, a stick and a publisher set up once;
each kill point restores that set-up, runs the faulted sync, checks what the fault
left (the stick's outbox holds the old bundle or a whole new one; an error is one
typed line), runs a clean sync and checks convergence (``Case.check``).

Used by tests/test_death.py (a seeded sample) and bench/death_sweep.py (every N).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from support.git import Publisher, run, ssh_keygen

TESTS = Path(__file__).resolve().parent
DEVICE = "pi-01"
API = "apiVersion: giter.dev/v1alpha1\n"
# Syscalls that change a filesystem; openat with O_CREAT is the audit hook's (OPEN).
SYSCALLS = ("write", "pwrite64", "ftruncate", "fsync", "fdatasync", "rename", "renameat",
            "renameat2", "unlink", "unlinkat", "link", "linkat", "mkdir", "mkdirat", "rmdir")
OPEN = "open-creat"
FAULTS = ("kill", "ENOSPC", "EIO")
SCENARIOS = ("first", "incremental", "prune", "packing", "consolidating", "network")
# The sitecustomize that installs the open-with-O_CREAT hook in the agent's process.
_HOOK = '''
import os, sys
_spec = os.environ.get("GITER_DEATH_OPEN")
if _spec:
    _n, _fault = _spec.split(":")
    _n = int(_n)
    _count = [0]
    def _hook(event, args):
        if event != "open" or len(args) < 3 or not isinstance(args[2], int):
            return
        if not args[2] & os.O_CREAT:
            return
        _count[0] += 1
        if _count[0] == _n:
            if _fault == "kill":
                os.kill(os.getpid(), 9)
            import errno
            code = errno.ENOSPC if _fault == "ENOSPC" else errno.EIO
            raise OSError(code, os.strerror(code), args[0])
    sys.addaudithook(_hook)
_count_file = os.environ.get("GITER_DEATH_COUNT")
if _count_file:
    import atexit
    _seen = [0]
    def _counter(event, args):
        if event == "open" and len(args) >= 3 and isinstance(args[2], int) \\
                and args[2] & os.O_CREAT:
            _seen[0] += 1
    sys.addaudithook(_counter)
    atexit.register(lambda: open(_count_file, "w").write(str(_seen[0])))
'''


def have_strace() -> bool:
    return shutil.which("strace") is not None


def spec_file(root: Path, name: str, text: str) -> str:
    return (f"{API}kind: File\nmetadata:\n  name: {name}\nspec:\n"
            f"  path: {root}/{name}\n  content: {json.dumps(text)}\n  mode: \"0644\"\n")


@dataclass
class Outcome:
    """One kill point: what the faulted run did and whether the next sync converged."""

    scenario: str
    syscall: str
    fault: str
    n: int
    faulted_rc: int
    problems: list[str] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return not self.problems

    def line(self) -> str:
        return (f"{self.scenario} {self.syscall}:{self.fault}:when={self.n} "
                f"rc={self.faulted_rc}: " + ("ok" if self.converged else "; ".join(self.problems)))


class Case:
    """One scenario's device, stick, publisher and (for ``network``) hub, in ``base``."""

    def __init__(self, base: Path, scenario: str, live: Path | None = None) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"no scenario {scenario!r}")
        self.base = base
        self.scenario = scenario
        # What the agent works on (restored before each run): a folder, or the mount
        # point of a power-cut image (tests/support/powercut.py).
        self.live = live or base / "live"
        self.seed = base / "seed"  # the set-up, copied back into live
        self.dev = self.live / "device"
        self.root = self.dev / "root"
        self.state = self.dev / "state"
        self.stick = self.live / "stick"
        self.config = self.dev / "agent.toml"
        self.site = base / "site"
        self.daemon: object | None = None
        self.expected: dict[str, str] = {}
        self.old_bundle: bytes | None = None
        self.old_applied: str | None = None

    # -- set-up ----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GIT_", "SSH_", "GITER_DEATH"))}
        env.update(HOME=str(self.base / "home"), GIT_CONFIG_NOSYSTEM="1",
                   PYTHONDONTWRITEBYTECODE="1",
                   PYTHONPATH=str(self.site),
                   GIT_AUTHOR_NAME="Fleet Operator", GIT_AUTHOR_EMAIL="ops@example.invalid",
                   GIT_COMMITTER_NAME="Fleet Operator",
                   GIT_COMMITTER_EMAIL="ops@example.invalid")
        return env

    def setup(self) -> Case:
        (self.base / "home").mkdir(parents=True, exist_ok=True)
        self.site.mkdir(exist_ok=True)
        (self.site / "sitecustomize.py").write_text(_HOOK)
        saved = dict(os.environ)
        os.environ.update(self.env())
        try:
            self._setup()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.save_seed()
        return self

    def _setup(self) -> None:
        self.root.mkdir(parents=True)
        self.live.mkdir(exist_ok=True)
        (self.stick / "giter/inbox").mkdir(parents=True)
        key = ssh_keygen(self.base / "publisher_ed25519")
        self.pub = Publisher(self.base / "fleet", key)
        lines = [f'device_id = "{DEVICE}"', 'state_dir = "state"', 'board = "generic-mock"',
                 f'allowed_signers = "{self.pub.allowed_signers}"', "[files]",
                 f'roots = ["{self.root}"]']
        if self.scenario == "network":
            from support.servers import GitDaemon, Hub

            self.hub = Hub(self.base / "hub")
            self.daemon = GitDaemon(self.hub).start()
            lines += ["[network]", f'url = "{self.daemon.url}"']
        self.config.write_text("\n".join(lines) + "\n")
        v1 = {"motd": "hello v1\n", "extra": "extra v1\n"}
        self.publish(v1, "v1")
        if self.scenario == "first":
            self.expected = v1
            return
        self.sync_ok()  # the device at v1, with a status commit and an outbox
        if self.scenario == "packing":
            self._loose_objects(260)
        if self.scenario == "consolidating":
            self._scatter_into_packs()
        v2 = {"motd": "hello v2\n", **({} if self.scenario == "prune" else
                                       {"extra": "extra v1\n"})}
        self.publish(v2, "v2", incremental=True)
        self.expected = v2

    def publish(self, files: dict[str, str], message: str, incremental: bool = False) -> None:
        prefix = f"devices/{DEVICE}"
        for old in (self.pub.root / prefix).glob("*.yaml"):
            old.unlink()
        self.pub.commit(message, files={f"{prefix}/{name}.yaml": spec_file(self.root, name, text)
                                        for name, text in files.items()})
        if self.scenario == "network":
            self.hub.publish(self.pub)
            return
        for old in (self.stick / "giter/inbox").glob("*.bundle"):
            old.unlink()
        revs = ("main~1..main",) if incremental else ("main",)
        self.pub.bundle(self.stick / f"giter/inbox/{message}.bundle", *revs)

    def _loose_objects(self, count: int) -> None:
        """Enough loose objects that the next status commit packs them (pack_loose)."""
        from dulwich.object_store import DiskObjectStore
        from dulwich.objects import Blob

        store = DiskObjectStore(str(self.state / "repo.git/objects"))
        try:
            for i in range(count):
                store.add_object(Blob.from_string(f"filler {i}\n".encode()))
        finally:
            store.close()

    def _scatter_into_packs(self) -> None:
        """Every object of the device's history in a pack of its own, so the next sync's
        consolidation merges them all: a pack removed before the merged one is durable
        loses objects the refs need (git fsck in ``check`` sees it)."""
        repo = self.state / "repo.git"
        pack_dir = repo / "objects/pack"
        old = list(pack_dir.iterdir())
        ids = run("git", "--git-dir", repo, "cat-file", "--batch-all-objects",
                  "--batch-check=%(objectname)").stdout.split()
        for sha in ids:
            run("git", "--git-dir", repo, "pack-objects", "-q", pack_dir / "pack",
                input=sha + b"\n")
        for path in old:
            path.unlink()
        run("git", "--git-dir", repo, "prune-packed")

    def save_seed(self) -> None:
        if self.seed.exists():
            shutil.rmtree(self.seed)
        shutil.copytree(self.live, self.seed, symlinks=True,
                        ignore=shutil.ignore_patterns("lost+found"))
        bundle = self.outbox_bundle
        self.old_bundle = bundle.read_bytes() if bundle.exists() else None
        if self.scenario == "network":
            self.hub_seed("save")
        self.old_applied = self.status_json()["appliedCommit"]

    def restore(self) -> None:
        for child in self.live.iterdir():
            if child.name == "lost+found":
                continue  # an ext4 image's own
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        shutil.copytree(self.seed, self.live, symlinks=True, dirs_exist_ok=True)
        if self.scenario == "network":
            self.hub_seed("restore")

    def hub_seed(self, how: str) -> None:
        seed = self.base / "hub-seed.git"
        if how == "save":
            shutil.rmtree(seed, ignore_errors=True)
            shutil.copytree(self.hub.path, seed, symlinks=True)
        else:
            shutil.rmtree(self.hub.path)
            shutil.copytree(seed, self.hub.path, symlinks=True)

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()

    @property
    def outbox_bundle(self) -> Path:
        return self.stick / f"giter/outbox/{DEVICE}.bundle"

    # -- runs ------------------------------------------------------------------------

    def argv(self) -> list[str]:
        args = [sys.executable, "-m", "giter_agent", "-c", str(self.config), "sync"]
        if self.scenario != "network":
            args += ["--usb", str(self.stick)]
        return args

    def sync(self, prefix: list[str] | None = None, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*(prefix or []), *self.argv()], capture_output=True,
                              env={**self.env(), **(env or {})}, timeout=timeout, check=False)

    def sync_ok(self) -> None:
        proc = self.sync()
        if proc.returncode != 0:
            raise AssertionError(f"sync failed ({proc.returncode}): {proc.stderr.decode()}")

    def counts(self) -> dict[str, int]:
        """How many times a clean sync makes each syscall (the range of N to try)."""
        log = self.base / "count.strace"
        open_count = self.base / "count.open"
        self.restore()
        proc = self.sync(["strace", "-f", "-qq", "-o", str(log), "-e",
                          "trace=" + ",".join(SYSCALLS)],
                         env={"GITER_DEATH_COUNT": str(open_count)})
        if proc.returncode != 0:
            raise AssertionError(f"the clean run failed: {proc.stderr.decode()}")
        found = dict.fromkeys(SYSCALLS, 0)
        self.console_writes: set[int] = set()
        for line in log.read_text(errors="replace").splitlines():
            parts = line.split(None, 1)
            if len(parts) < 2:
                continue
            name = parts[1].split("(", 1)[0]
            if name in found:
                found[name] += 1
                if name == "write" and parts[1].startswith(("write(1,", "write(2,")):
                    self.console_writes.add(found[name])
        found[OPEN] = int(open_count.read_text())
        return {k: v for k, v in found.items() if v}

    def point_of(self, syscall: str, pattern: str, after: str | None = None) -> int:
        """N of the first ``syscall`` of a clean sync whose strace line matches
        ``pattern`` (a regex), counting from the first line matching ``after`` if given."""
        log = self.base / "point.strace"
        self.restore()
        # Renames are traced too: ``after`` names one (a ref or file moved into place).
        proc = self.sync(["strace", "-f", "-qq", "-o", str(log), "-e",
                          f"trace={syscall},rename,renameat,renameat2"])
        if proc.returncode != 0:
            raise AssertionError(f"the clean run failed: {proc.stderr.decode()}")
        n, armed = 0, after is None
        for line in log.read_text(errors="replace").splitlines():
            call = line.split(None, 1)[-1]
            armed = armed or bool(re.search(after or "", call))
            if not call.startswith(syscall + "("):
                continue
            n += 1
            if armed and re.search(pattern, call):
                return n
        raise AssertionError(f"no {syscall} matching {pattern!r} in a clean sync")

    def kill_daemon(self, delay_s: float) -> Outcome:
        """Start ``giter-agent run`` (it syncs with the hub at once), SIGKILL it after
        ``delay_s``, then check that the next sync converges."""
        import signal
        import time

        self.restore()
        proc = subprocess.Popen([sys.executable, "-m", "giter_agent", "-c", str(self.config),
                                 "run"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=self.env())
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait()
        return self._converge(Outcome(self.scenario, "daemon", "kill", int(delay_s * 1000), rc),
                              "kill")

    def fault(self, syscall: str, fault: str, n: int,
              probe: Callable[[Case], None] | None = None) -> Outcome:
        """Restore the set-up, run the sync with the fault, then check convergence.

        ``probe(case)`` runs between the faulted run and the next one (tests use it to
        see that the fault left what it was meant to leave).
        """
        self.restore()
        if syscall == OPEN:
            proc = self.sync(env={"GITER_DEATH_OPEN": f"{n}:{fault}"})
        else:
            action = "signal=KILL" if fault == "kill" else f"error={fault}"
            proc = self.sync(["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={syscall}",
                              "-e", f"inject={syscall}:{action}:when={n}"])
        rc = proc.returncode
        out = Outcome(self.scenario, syscall, fault, n, rc)
        err = proc.stderr.decode(errors="replace")
        if fault != "kill":
            out.problems += self._typed_failure(rc, err)
        out.problems += self._outbox_old_or_new()
        if fault != "kill" and rc == 0:
            out.problems += self.check(after_fault=True)
        if probe is not None:
            probe(self)
        return self._converge(out, fault)

    def _converge(self, out: Outcome, fault: str) -> Outcome:
        proc = self.sync()
        if proc.returncode == 3 and fault != "kill" and self._skip_backoff():
            # A File write that failed asks to be retried in 30 s (its documented
            # backoff): move the retry time to now, as the clock would, and sync again.
            proc = self.sync()
        if proc.returncode != 0:
            out.problems.append(f"next sync exited {proc.returncode}: "
                                f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
            return out
        out.problems += self.check()
        return out

    # -- checks ----------------------------------------------------------------------

    def _skip_backoff(self) -> bool:
        """Make every resource backing off after a failed write due now; False if none."""
        from giter_agent.state.store import StateStore

        store = StateStore(self.state)
        state = store.load()
        waiting = [k for k, r in state.resources.items() if r.backoff
                   and r.status["conditions"][0]["reason"] == "WriteFailed"]
        for key in waiting:
            record = state.resources[key]
            assert record.backoff is not None
            state.resources[key] = replace(record,
                                           backoff=record.backoff._replace(not_before=0))
        store.save(state)
        return bool(waiting)

    def _typed_failure(self, rc: int, err: str) -> list[str]:
        """An injected error ends in one typed line (or a resource not Ready), and the
        state still names the last good spec (or the new one, whole)."""
        last = err.strip().splitlines()[-1] if err.strip() else ""
        if "Traceback" in err:
            return ["traceback: " + last[:200]]
        if rc in (1, 2) and not re.match(r"giter-agent: [A-Z][A-Za-z]+: ", last):
            return [f"exit {rc} without a typed error line: {last[:200]!r}"]
        if rc == 3 and "not Ready" not in last:
            return [f"exit 3 without a resource not Ready: {last[:200]!r}"]
        if rc not in (0, 1, 2, 3):
            return [f"faulted run exited {rc}"]
        applied = self.status_json()["appliedCommit"]
        if applied not in (self.old_applied, self.pub.head("main")):
            return [f"after the error the state names spec {applied}"]
        return []

    def _outbox_old_or_new(self) -> list[str]:
        bundle = self.outbox_bundle
        if not bundle.exists():
            return [] if self.old_bundle is None else ["the old outbox bundle is gone"]
        data = bundle.read_bytes()
        if data == self.old_bundle:
            return []
        from giter_agent.core.errors import GiterError
        from giter_agent.history import bundle as bundle_format

        try:
            with open(bundle, "rb") as fh:
                header = bundle_format.read_header(fh)
                scanner = bundle_format.PackScanner(max_objects=10**6,
                                                    max_object_bytes=2**30)
                scanner.feed(data[header.pack_offset:])
                scanner.finish()
        except GiterError as exc:
            return [f"the outbox bundle is neither the old one nor whole: {exc}"]
        return []

    def check(self, after_fault: bool = False) -> list[str]:
        """What must hold after a sync that exited 0."""
        problems: list[str] = []
        files = {p.name: p.read_text() for p in self.root.iterdir() if p.is_file()}
        if files != self.expected:
            problems.append(f"files {sorted(files)} are not as the spec says")
        repo = self.state / "repo.git"
        fsck = run("git", "--git-dir", repo, "fsck", "--strict", "--no-dangling", check=False)
        if fsck.returncode != 0 or fsck.stdout.strip() or b"error" in fsck.stderr:
            problems.append("git fsck: " + (fsck.stdout + fsck.stderr).decode()[-300:])
        doc = self.status_json()
        refs = {}
        for name in ("refs/heads/main", f"refs/heads/status/{DEVICE}"):
            proc = run("git", "--git-dir", repo, "rev-parse", "-q", "--verify", name,
                       check=False)
            refs[name] = proc.stdout.decode().strip() or None
        if refs["refs/heads/main"] != doc["acceptedCommit"] or \
                doc["acceptedCommit"] != doc["appliedCommit"]:
            problems.append(f"main {refs['refs/heads/main']} != accepted "
                            f"{doc['acceptedCommit']} / applied {doc['appliedCommit']}")
        if doc["appliedCommit"] != self.pub.head("main"):
            problems.append("the applied spec is not the publisher's newest")
        status = refs[f"refs/heads/status/{DEVICE}"]
        if status != doc["statusCommit"] or status is None:
            problems.append(f"status ref {status} != statusCommit {doc['statusCommit']}")
        else:
            problems += self._verify_chain(repo, status)
        if not after_fault:
            problems += [f"left behind: {p}" for p in self.debris()]
            if self.scenario == "network" and self.hub.ref(f"refs/heads/status/{DEVICE}") \
                    != status:
                problems.append("the hub does not hold the status tip")
        return problems

    def status_json(self) -> dict:
        """``giter-agent status --json``, run in this process (it only reads)."""
        import contextlib
        import io

        from giter_agent.cli.main import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            main(["-c", str(self.config), "status", "--json"])  # exit code: the health
        return json.loads(out.getvalue())

    def _verify_chain(self, repo: Path, tip: str) -> list[str]:
        pub = (self.state / "device_key.pub").read_text().split()
        signers = self.base / "device.signers"
        signers.write_text(f'{DEVICE} namespaces="git" {pub[0]} {pub[1]}\n')
        commit: str | None = tip
        while commit:  # previous status commit first, the spec it observed last
            proc = run("git", "--git-dir", repo, "-c", "gpg.format=ssh", "-c",
                       f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", commit,
                       check=False)
            if proc.returncode != 0:
                return [f"status commit {commit} does not verify"]
            parents = run("git", "--git-dir", repo, "rev-parse", f"{commit}^@"
                          ).stdout.decode().split()
            commit = parents[0] if len(parents) == 2 else None
        return []

    def debris(self) -> Iterator[str]:
        """Temp files, locks and half-made things anywhere the agent writes."""
        for top in (self.state, self.root, self.stick):
            for folder, dirs, files in os.walk(top):
                rel = Path(folder).relative_to(self.live)
                if Path(folder).name == "quarantine":
                    yield from (str(rel / d) for d in dirs)
                for name in [*files, *dirs]:
                    if (name.endswith((".lock", ".tmp", ".giter-tmp")) or name.startswith("tmp")
                            or ".init-" in name or (name.endswith(".pack") and not
                                                    Path(folder, name[:-5] + ".idx").exists())):
                        yield str(rel / name)


def points(counts: dict[str, int], faults: tuple[str, ...], *, exhaustive: bool,
           sample: int = 0, seed: int = 0, console: set[int] = frozenset()
           ) -> list[tuple[str, str, int]]:
    """(syscall, fault, N) to try: every N, or a seeded sample of ``sample`` of them."""
    every = [(name, fault, n) for name, total in sorted(counts.items()) for fault in faults
             for n in range(1, total + 1)
             # An error on a write to the console is not a disk fault: kill only.
             if not (fault != "kill" and name == "write" and n in console)]
    if exhaustive:
        return every
    return sorted(random.Random(seed).sample(every, min(sample, len(every))))
