"""What opening secrets costs a device: memory of the age module, time per secret.

Run by hand (not a timed test): ``python3 bench/secret_bench.py [--secrets 200]``.
Memory: three fresh interpreters report their peak RSS (``ru_maxrss``): bare Python; the
agent as it runs a sync without secrets (its modules, every kind, one ed25519 signature
checked, so ``cryptography`` is loaded as on every sync); and the same plus
``giter_agent.core.age`` opening one 1 KiB secret. Time: opening a 1 KiB secret against
checking one ed25519 commit signature (``sshsig.verify``), measured in the same run, so
the ratio holds on any machine. The numbers go into docs/performance.md, "Secrets".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

PRELUDE = """
import resource, json
"""
AGENT = """
from giter_agent.sync.agent import Agent
from giter_agent.kinds import load_kinds
from giter_agent.trust import sshsig
load_kinds()
key = sshsig.generate_ed25519()
sig = sshsig.sign(key, b"commit")
sshsig.verify(sig, b"commit", [sshsig.public_key_of(key)])
"""
SECRET = """
from giter_agent.core import age
sealed = age.encrypt([sshsig.public_key_of(key)], bytes(1024))
assert age.decrypt(sealed, key) == bytes(1024)
"""
REPORT = """
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def peak_kib(body: str) -> int:
    # As installed on a board: bytecode compiled once (pip does it at install), so the
    # numbers are not those of compiling the modules from source.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run([sys.executable, "-c", PRELUDE + body + REPORT], check=True,
                         capture_output=True, text=True, env=env).stdout
    return int(json.loads(out))


def per_op(fn, n: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--secrets", type=int, default=200, help="secrets opened for the timing")
    args = p.parse_args()

    import cryptography

    from giter_agent.core import age
    from giter_agent.trust import sshsig

    print(f"{platform.machine()} python {platform.python_version()} cryptography "
          f"{cryptography.__version__}")
    peak_kib(AGENT + SECRET)  # writes the bytecode
    bare = min(peak_kib("") for _ in range(3))
    agent = min(peak_kib(AGENT) for _ in range(3))
    with_age = min(peak_kib(AGENT + SECRET) for _ in range(3))
    print(f"peak RSS: bare python {bare / 1024:.1f} MiB; agent sync without secrets "
          f"{agent / 1024:.1f} MiB; with one secret opened {with_age / 1024:.1f} MiB")
    print(f"cost of secrets: +{(with_age - agent) / 1024:.2f} MiB "
          f"({(with_age - agent) / (agent - bare):.1%} of the agent's own "
          f"{(agent - bare) / 1024:.1f} MiB over bare python)")

    key = sshsig.generate_ed25519()
    pub = sshsig.public_key_of(key)
    sealed = age.encrypt([pub], bytes(1024))
    sig = sshsig.sign(key, b"commit")
    t_open = per_op(lambda: age.decrypt(sealed, key), args.secrets)
    t_verify = per_op(lambda: sshsig.verify(sig, b"commit", [pub]), args.secrets)
    print(f"open one 1 KiB secret: {t_open * 1e3:.3f} ms; check one ed25519 signature: "
          f"{t_verify * 1e3:.3f} ms; ratio {t_open / t_verify:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
