"""Which key signs a commit and whose name it carries, for the commands that commit.

The key is ``--signing-key``, else the repository's ``user.signingkey`` (the setting
``git commit -S`` reads with ``gpg.format=ssh``), so one setting serves both ways of
signing. Only an unencrypted OpenSSH private key loads here: a passphrase-protected key
stays with ``ssh-agent`` and signs through ``git commit -S``. The name is ``--author``,
else ``user.name``/``user.email`` from git's configuration, else a placeholder.

Called by ``giter-bundle`` init, enroll and commit.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from giter_bundle.errors import UsageError
from giter_bundle.publisher import DEFAULT_IDENTITY

_IDENTITY = re.compile(r"[^<>\n]+ <[^<>\n]*>")


def _config(repo_path: Path | None) -> Any:
    from dulwich.config import StackedConfig
    from dulwich.repo import Repo

    if repo_path is None:
        return StackedConfig(StackedConfig.default_backends())
    with Repo(str(repo_path)) as repo:
        return repo.get_config_stack()


def _setting(config: Any, section: bytes, name: bytes) -> str | None:
    try:
        return config.get(section, name).decode("utf-8")
    except KeyError:
        return None


def config_value(repo_path: Path | None, section: str, name: str) -> str | None:
    """A git configuration value as the repository sees it (None when unset)."""
    return _setting(_config(repo_path), section.encode(), name.encode())


def key_path(option: Path | None, repo_path: Path | None) -> Path:
    """The private key file to sign with."""
    if option is not None:
        path = option
    else:
        configured = _setting(_config(repo_path), b"user", b"signingkey")
        if not configured:
            raise UsageError("no signing key: pass --signing-key FILE or set git config "
                             "user.signingkey", reason="NoSigningKey")
        if configured.startswith("key::") or configured.startswith("ssh-"):
            raise UsageError("user.signingkey names a public key (it signs through "
                             "ssh-agent); pass the private key file with --signing-key",
                             reason="NoSigningKey")
        path = Path(configured).expanduser()
    if path.suffix == ".pub":
        path = path.with_suffix("")  # git accepts the public half beside an agent-held key
    return path


def load_key(path: Path) -> Any:
    """The private key at ``path``, or a UsageError that says what to do instead."""
    from giter_agent.trust import sshsig

    try:
        return sshsig.load_private_key(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such key file", reason="NoSigningKey") from None
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{path}: cannot sign with this key ({exc}); an encrypted key "
                         "signs through git commit -S instead", reason="NoSigningKey") from None


def identity(option: str | None, repo_path: Path | None) -> str:
    """``Name <email>`` for author and committer."""
    if option is not None:
        if not _IDENTITY.fullmatch(option):
            raise UsageError(f"--author {option!r} must look like 'Name <email>'")
        return option
    config = _config(repo_path)
    name = _setting(config, b"user", b"name")
    email = _setting(config, b"user", b"email")
    if name and email:
        return f"{name} <{email}>"
    return DEFAULT_IDENTITY
