"""The files a hub connection trusts or proves itself with, checked before each use.

A password or token file and an ssh key must be the agent's alone (``check_private``);
a pin (known_hosts, a CA file) must be writable by nobody but root or the agent
(``check_not_writable_by_others``). Anything else is a ``ConfigError``, every time the
file is read, before a byte is sent. Used by ``remote`` (ssh://) and ``http_client``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from giter_agent.core.errors import ConfigError


def check_private(path: Path, key: str) -> os.stat_result:
    """Refuse a secret file that anyone but the agent's own user could read or change."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{key}: {path} is not a regular file")
    if st.st_mode & 0o077 or st.st_uid != os.geteuid():
        raise ConfigError(f"{key}: {path} must belong to the agent's user and be readable "
                          f"by it alone (it is mode {stat.S_IMODE(st.st_mode):04o}, owner "
                          f"uid {st.st_uid}): chmod 600, chown to the agent's user")
    return st


def check_not_writable_by_others(path: Path, key: str) -> None:
    """A pinned file (known_hosts, CA) that others may change pins nothing."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{key}: {path} is not a regular file")
    if st.st_mode & 0o022 or st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"{key}: {path} must not be writable by anyone but root or the "
                          f"agent's user (it is mode {stat.S_IMODE(st.st_mode):04o})")


def read_secret(path: Path, key: str) -> str:
    """The first line of a private file: a password or an access token."""
    check_private(path, key)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc}") from None
    secret = text.strip("\n").split("\n", 1)[0].strip()
    if not secret:
        raise ConfigError(f"{key}: {path} is empty")
    return secret
