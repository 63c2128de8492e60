"""The device's own ed25519 signing key: created once, atomically, readable by root only.

The agent calls ``load_or_create`` at start-up to get the key it signs status commits
with; enrolment prints ``allowed_signers_line`` for the publisher to commit as
``.giter/devices/<id>.pub``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from giter_agent.core.durable import fsync_dir, mkdir_durable, temp_name
from giter_agent.core.errors import ConfigError, KeyFileError
from giter_agent.trust import ssh_keyfile, sshsig


def _write_new(path: Path, data: bytes, mode: int) -> bool:
    """Publish ``data`` at ``path`` only if nothing is there; False if someone else won.

    The bytes are written and fsynced under a temporary name first and then hard-linked
    into place, so a power cut leaves either no key or a whole key, never half of one.
    """
    # A fresh temp name (core.durable): crash recovery removes one a kill left behind.
    tmp = path.with_name(temp_name(path.name))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow what we asked for
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    fsync_dir(path.parent)
    return True


def _pub_bytes(key: Ed25519PrivateKey, comment: str) -> bytes:
    return f"{sshsig.public_key_of(key).openssh()} {comment}\n".encode()


def load_or_create(path: Path) -> Ed25519PrivateKey:
    """The ed25519 key at ``path``, generating it (mode 0600, ``.pub`` beside) if absent."""
    path = Path(path)
    pub_path = path.with_name(path.name + ".pub")
    if not path.exists():
        mkdir_durable(path.parent)
        key = sshsig.generate_ed25519()
        # Losing the race to another process is fine: we then load the key it wrote.
        _write_new(path, ssh_keyfile.private_key_openssh_bytes(key), 0o600)
    loaded = ssh_keyfile.load_private_key(path)  # KeyFileError (a ConfigError) if unusable
    if not isinstance(loaded, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: device key must be ed25519")
    key = loaded
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"{path}: device key is readable by others; chmod 600 it")
    expected = _pub_bytes(key, "giter-device")
    if not pub_path.exists():
        with contextlib.suppress(FileExistsError):
            _write_new(pub_path, expected, 0o644)
    return key


def allowed_signers_line(key: Ed25519PrivateKey, principal: str) -> str:
    """``<principal> namespaces="git" ssh-ed25519 AAAA...``: the device's trust entry."""
    if not principal or any(c.isspace() or c in '",#' for c in principal):
        raise ConfigError(f"principal {principal!r} must be one word without quotes or commas")
    return f'{principal} namespaces="git" {sshsig.public_key_of(key).openssh()}'
