"""Who may touch the agent's files: one line for a permission problem, root kept off
the service user's state.

The state directory belongs to the service user (``giter`` on an installed board).
A person who runs ``giter-agent status`` as ``pi`` hits a permission error on it; the
command line turns that into one line naming the path, its owner and the command to
run instead (``sudo -u giter giter-agent ...``). Root can read and write anything, so
a command run with ``sudo`` would leave root-owned files in the state directory that
the service then cannot open: commands that write refuse to run as root on a state
directory that belongs to someone else, with the same kind of line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from giter_agent.core.errors import AccessError, Reason


def owner(path: Path) -> tuple[int, str] | None:
    """(uid, user name) owning ``path``, or its nearest ancestor that can be looked at."""
    import pwd

    for candidate in (path, *path.parents):
        try:
            uid = candidate.stat().st_uid
        except OSError:
            continue
        try:
            return uid, pwd.getpwuid(uid).pw_name
        except KeyError:
            return uid, str(uid)
    return None


def rerun_as(user: str, prog: str, argv: Sequence[str] | None) -> str:
    """The command line to run instead: ``sudo -u USER prog argv...``."""
    import shlex  # a refusal's message only: every command's start loads this module

    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["sudo", "-u", user, prog, *args])


def explain(exc: PermissionError, prog: str, argv: Sequence[str] | None, *,
            euid: Callable[[], int] = os.geteuid) -> AccessError:
    """A ``PermissionError`` as one line: which file, whose, and what to run."""
    path = Path(exc.filename) if exc.filename else None
    if path is None:
        return AccessError(f"permission denied ({exc.strerror or exc}); "
                           f"run `{prog} doctor` to see which file")
    import shlex

    found = owner(path)
    if found is not None and found[0] != euid():
        return AccessError(f"{path}: permission denied: it belongs to {found[1]}; run: "
                           f"{rerun_as(found[1], prog, argv)}")
    return AccessError(f"{path}: permission denied ({exc.strerror}); its permissions keep "
                       f"this user out: look with ls -l {shlex.quote(str(path))}, or run "
                       f"`{prog} doctor`")


def refuse_root(state_dir: Path, prog: str, argv: Sequence[str] | None, *,
                euid: Callable[[], int] = os.geteuid) -> None:
    """Raise ``AccessError`` when root is about to write another user's state directory."""
    if euid() != 0:
        return
    try:
        uid = state_dir.stat().st_uid
    except OSError:
        return  # not there yet: whoever makes it owns it
    if uid == 0:
        return
    found = owner(state_dir)
    name = found[1] if found else str(uid)
    raise AccessError(f"{state_dir} belongs to {name}; as root this command would leave "
                      f"root-owned files there that the service cannot open. Run: "
                      f"{rerun_as(name, prog, argv)}", reason=Reason.RunningAsRoot)
