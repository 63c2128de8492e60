"""Run ``systemctl`` (found on PATH) for the ``Service`` kind, and read a unit's state.

Called by ``kinds.service`` only. Nothing here talks D-Bus directly: the
``systemctl`` binary is the stable interface, works the same under the agent's
systemd sandbox, and lets tests put a fake ``systemctl`` first on PATH. Every call
has a timeout and a minimal environment (no pager, no password prompt).
"""

from __future__ import annotations

import os
import shutil
import subprocess

from giter_agent.core.errors import SystemctlError, SystemctlNotFound

PROPERTIES = ("LoadState", "ActiveState", "SubState", "UnitFileState")


def _binary() -> str:
    path = shutil.which("systemctl")
    if path is None:
        raise SystemctlNotFound("systemctl is not on PATH (is this a systemd system?)")
    return path


def run(*args: str, timeout: float = 60.0) -> str:
    """Run ``systemctl args``; its stdout, or ``SystemctlError`` with its stderr."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8",
           "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
    argv = [_binary(), "--no-ask-password", *args]
    try:
        proc = subprocess.run(argv, env=env,
                              capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              check=False)
    except subprocess.TimeoutExpired:
        raise SystemctlError(f"systemctl {' '.join(args)} did not finish in {timeout:g} s",
                             reason="SystemctlTimedOut") from None
    except OSError as exc:
        raise SystemctlError(f"cannot run systemctl: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SystemctlError(f"systemctl {' '.join(args)} exited {proc.returncode}"
                             + (f": {err[-1][:200]}" if err else ""))
    return proc.stdout.decode("utf-8", "replace")


def show(unit: str) -> dict[str, str]:
    """The unit's LoadState, ActiveState, SubState and UnitFileState."""
    out = run("show", f"--property={','.join(PROPERTIES)}", "--", unit)
    props = {name: "" for name in PROPERTIES}
    for line in out.splitlines():
        name, sep, value = line.partition("=")
        if sep and name in props:
            props[name] = value.strip()
    return props
