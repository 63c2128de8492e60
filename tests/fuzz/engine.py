"""Run a fuzz target: coverage-guided with atheris where it installs, else seeded mutation.

A target is a function of ``bytes`` whose contract is a list of exception types it may
raise (its typed refusals); anything else it raises, a traceback a user would see, is a
*finding*. Findings are deduplicated by exception type and the innermost frame in the
project, and each one's smallest input is written to ``findings/<target>-<key>.bin``.

``mutate_run`` is the portable engine: deterministic for a seed (the pytest suite runs
every target with it for a fixed count on every platform, arm boards under emulation
included). ``atheris_run`` runs libFuzzer in a child process for a campaign and parses
its execution count; it needs ``atheris`` (x86_64 wheels on PyPI).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO = TESTS.parent

INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\n", b" ", b"\n\n", b"0", b"9" * 25,
               b"F", b"-", b"+", b"\x1b", b"\x0c", b"\xfe\xff", b"\xef\xbb\xbf", b"=", b"\"",
               b"*", b"!", b":", b"#", b"---\n", b"\r\n", b"\xc3\x28"]


@dataclass
class Finding:
    key: str        # exception type and innermost project frame
    summary: str    # one line: type, message, where
    data: bytes     # the smallest input seen for it


@dataclass
class Result:
    target: str
    engine: str
    executions: int = 0
    seconds: float = 0.0
    findings: dict[str, Finding] = field(default_factory=dict)


def finding_key(exc: BaseException) -> tuple[str, str]:
    """(key, summary) of an unexpected exception: its type and where in the project."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/agent/" in f.filename or "/tools/bundle/" in f.filename]
    where = f"{Path(frames[-1].filename).name}:{frames[-1].name}" if frames else "outside"
    message = " ".join(str(exc).split())[:160]
    return f"{type(exc).__name__}@{where}", f"{type(exc).__name__} at {where}: {message}"


def check_one(target: Callable[[bytes], None], allowed: tuple[type[BaseException], ...],
              data: bytes) -> tuple[str, str] | None:
    """Run one input; None if it passed or was refused as the contract allows."""
    try:
        target(data)
    except allowed:
        return None
    except RecursionError as exc:
        return finding_key(exc)
    except Exception as exc:
        return finding_key(exc)
    return None


def mutate(data: bytes, rng: random.Random, corpus: Sequence[bytes]) -> bytes:
    """One to four random edits: flips, inserts, deletes, repeats, splices, magic bytes."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2 and buf:
            del buf[pos:pos + rng.randint(1, 32)]
        elif op == 3 and buf:
            start = rng.randrange(len(buf))
            chunk = buf[start:start + rng.randint(1, 64)]
            buf[pos:pos] = chunk * rng.randint(1, 50)
        elif op == 4 and corpus:
            other = rng.choice(corpus)
            start = rng.randint(0, len(other))
            buf[pos:] = other[start:]
        elif op == 5:
            buf[pos:pos] = rng.choice(INTERESTING)
        elif op == 6 and buf:
            i = rng.randrange(len(buf))
            buf[i] = rng.choice(b"0123456789abcdefABCDEF \n\x00\xff")
        elif op == 7 and buf:
            # Upper-case a run: hex ids and names are where case matters.
            start = rng.randrange(len(buf))
            buf[start:start + 40] = bytes(buf[start:start + 40]).upper()
    return bytes(buf)


def mutate_run(name: str, target: Callable[[bytes], None],
               allowed: tuple[type[BaseException], ...], corpus: Sequence[bytes], *,
               runs: int | None = None, seconds: float | None = None, seed: int = 0,
               save: Path | None = None) -> Result:
    """Seeded mutation of the corpus for ``runs`` inputs or ``seconds`` (whichever first)."""
    rng = random.Random(seed)
    result = Result(name, "mutate")
    pool = list(corpus) or [b""]
    start = time.monotonic()
    while (runs is None or result.executions < runs) and (
            seconds is None or time.monotonic() - start < seconds):
        data = pool[result.executions] if result.executions < len(pool) else mutate(
            rng.choice(pool), rng, pool)
        result.executions += 1
        found = check_one(target, allowed, data)
        if found is not None:
            _record(result, found, data, save)
        elif len(pool) < 4096 and rng.random() < 0.02:
            pool.append(data)  # keep some survivors to mutate further
    result.seconds = time.monotonic() - start
    return result


def _record(result: Result, found: tuple[str, str], data: bytes, save: Path | None) -> None:
    key, summary = found
    old = result.findings.get(key)
    if old is None or len(data) < len(old.data):
        result.findings[key] = Finding(key, summary, data)
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha1(key.encode()).hexdigest()[:10]
            (save / f"{result.target}-{digest}.bin").write_bytes(data)
            (save / f"{result.target}-{digest}.txt").write_text(summary + "\n")


def atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_FOUND = re.compile(r"^FINDING (\S+) (.*)$", re.MULTILINE)


def atheris_run(name: str, *, seconds: int, seed: int = 0, save: Path) -> Result:
    """A libFuzzer campaign of ``seconds`` on one target, in a child process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")]))
    work = save / "corpus" / name
    work.mkdir(parents=True, exist_ok=True)
    # libFuzzer ends the child without running atexit handlers: keep its scratch
    # repository beside the findings instead of in the system's temp folder.
    scratch = save / "tmp"
    scratch.mkdir(exist_ok=True)
    env["TMPDIR"] = str(scratch)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz.atheris_child", name, str(save), f"-seed={seed}",
         f"-max_total_time={seconds}", "-rss_limit_mb=2048", "-timeout=30",
         "-print_final_stats=1", str(work)],
        capture_output=True, text=True, env=env, cwd=str(TESTS), check=False)
    result = Result(name, "atheris", seconds=time.monotonic() - start)
    done = _DONE.search(proc.stderr)
    if done is None:
        tail = proc.stderr.strip().splitlines()[-5:]
        raise RuntimeError(f"atheris run of {name} did not finish: {' | '.join(tail)}")
    result.executions = int(done.group(1))
    for key, summary in _FOUND.findall(proc.stdout):
        data = (save / f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.bin").read_bytes()
        result.findings[key] = Finding(key, summary, data)
    return result
