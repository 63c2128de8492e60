"""Which key signs a commit and whose name it carries, for the commands that commit.

The key is ``--signing-key``, else the repository's ``user.signingkey``: the setting
``git commit -S`` reads with ``gpg.format=ssh``, in any form git accepts there (a private
key file, its ``.pub`` beside a key held by ``ssh-agent``, or a literal
``key::ssh-ed25519 AAAA...``). Signing works as git's does, through
``ssh-keygen -Y sign -n git``, so a key with a passphrase (ssh-keygen asks for it, or
ssh-agent holds it) and a FIDO security key (``sk-ssh-ed25519@openssh.com``: touch it
when it blinks) sign as well as a plain key file. A readable key file without a
passphrase is signed with in-process (the same bytes, no ssh-keygen needed). Every
signature ssh-keygen returns is verified against the key's public half before use.

The name is ``--author``, else what git would use (``GIT_AUTHOR_NAME``/``GIT_AUTHOR_EMAIL``,
then ``user.name``/``user.email`` from git's configuration); with
neither, the command stops and says how to set one: no author is ever made up.

Called by ``giter-bundle`` init, enroll and commit.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from giter_agent.core.errors import GiterError
from giter_agent.trust import ssh_keyfile, sshsig
from giter_bundle.errors import PublisherError, UsageError

_IDENTITY = re.compile(r"[^<>\n]+ <[^<>\n]*>")
_LITERAL = re.compile(r"(ssh-|sk-|ecdsa-)\S+ \S+.*")
_OPENSSH_PRIVATE = b"-----BEGIN OPENSSH PRIVATE KEY-----"


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


def configured_key(repo_path: Path | None) -> str | None:
    """``user.signingkey`` as git reads it for this repository (None: not set)."""
    return _setting(_config(repo_path), b"user", b"signingkey") or None


def key_path(option: Path | None, repo_path: Path | None) -> str:
    """What to sign with: ``--signing-key``, else ``user.signingkey`` (a path or a literal)."""
    if option is not None:
        return str(option)
    configured = configured_key(repo_path)
    if not configured:
        raise UsageError("no signing key: pass --signing-key FILE or set git config "
                         "user.signingkey", reason="NoSigningKey")
    return configured


@dataclass
class KeygenSigner:
    """Signs through ``ssh-keygen -Y sign -n NAMESPACE -f KEY``, as ``git commit -S`` does.

    ``key_file`` is the private key file (ssh-keygen uses ssh-agent when the agent holds
    it, and asks for a passphrase otherwise) or a public key file (then the agent must
    hold the key). ``literal`` is a public key with no file: it is written to a temporary
    file for the one call, and only ssh-agent can sign (``-U``).
    """

    public: sshsig.PublicKey
    key_file: Path | None = None
    literal: str | None = None

    def describe(self) -> str:
        return str(self.key_file) if self.key_file is not None else str(self.public)

    def sign_sshsig(self, message: bytes, namespace: str = "git") -> bytes:
        program = shutil.which("ssh-keygen")
        if program is None:
            raise UsageError(f"signing with {self.describe()} needs ssh-keygen (the OpenSSH "
                             "client): install it, or use a key file without a passphrase",
                             reason="NoSigningKey")
        with tempfile.TemporaryDirectory(prefix="giter-sign-") as folder:
            payload = Path(folder) / "payload"
            payload.write_bytes(message)  # the commit being signed: nothing secret
            args = [program, "-Y", "sign", "-q", "-n", namespace]
            if self.key_file is not None:
                args += ["-f", str(self.key_file)]
            else:
                pub = Path(folder) / "key.pub"
                pub.write_text(f"{self.literal}\n")
                args += ["-U", "-f", str(pub)]
            # stdin and the terminal stay the user's: ssh-keygen asks for a passphrase
            # there and tells them to touch a security key.
            interactive = sys.stderr.isatty()
            proc = subprocess.run([*args, str(payload)], stdout=subprocess.DEVNULL,
                                  stderr=None if interactive else subprocess.PIPE,
                                  check=False)
            signature = Path(f"{payload}.sig")
            if proc.returncode != 0 or not signature.is_file():
                said = "" if interactive else (proc.stderr or b"").decode(errors="replace")
                detail = said.strip().splitlines()[-1] if said.strip() else "see above"
                raise PublisherError(f"ssh-keygen could not sign with {self.describe()}: "
                                     f"{detail}", reason="SigningFailed")
            armour = signature.read_bytes()
        try:
            sshsig.verify(armour, message, [self.public], namespace)
        except GiterError as exc:
            raise PublisherError(f"ssh-keygen signed with another key than "
                                 f"{self.public} ({exc})", reason="SigningFailed") from None
        return armour


def _public_from_openssh_private(data: bytes) -> sshsig.PublicKey | None:
    """The public half an ``openssh-key-v1`` file stores in clear, passphrase or not."""
    text = data.strip()
    if not text.startswith(_OPENSSH_PRIVATE):
        return None
    body = b"".join(text.splitlines()[1:-1])
    try:
        blob = base64.b64decode(body, validate=True)
        magic = b"openssh-key-v1\0"
        if not blob.startswith(magic):
            return None
        pos = len(magic)
        for _ in range(3):  # cipher, kdf, kdf options
            (n,) = struct.unpack(">I", blob[pos:pos + 4])
            pos += 4 + n
        (count,) = struct.unpack(">I", blob[pos:pos + 4])
        pos += 4
        if count != 1:
            return None
        (n,) = struct.unpack(">I", blob[pos:pos + 4])
        return sshsig.PublicKey.from_blob(blob[pos + 4:pos + 4 + n])
    except (ValueError, struct.error):
        return None


def _readable(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def load_key(spec: str | Path) -> Any:
    """A signer for ``spec`` (a key file, its ``.pub``, or a public key literal).

    Returns an in-memory private key when the file needs no passphrase, else a
    ``KeygenSigner``; either goes wherever ``giter_agent.trust.sshsig.sign_with`` takes a key.
    Raises a UsageError that says what to do when nothing usable is there.
    """
    text = str(spec)
    if text.startswith("key::") or _LITERAL.fullmatch(text):
        literal = text.removeprefix("key::").strip()
        try:
            literal_key = sshsig.PublicKey.from_openssh(literal)
        except GiterError as exc:
            raise UsageError(f"user.signingkey {literal[:40]!r}... is not a usable public "
                             f"key ({exc})", reason="NoSigningKey") from None
        return KeygenSigner(literal_key, literal=literal_key.openssh())
    path = Path(text).expanduser()
    if path.suffix == ".pub":
        private, pub = path.with_suffix(""), path
    else:
        private, pub = path, path.with_name(path.name + ".pub")
    private_data = _readable(private)
    if private_data is not None:
        from cryptography.exceptions import UnsupportedAlgorithm

        try:
            return ssh_keyfile.load_private_key(private)
        except (TypeError, ValueError, UnsupportedAlgorithm):
            pass  # a passphrase, or a security key: ssh-keygen signs with it
    public: sshsig.PublicKey | None = None
    pub_data = _readable(pub)
    if pub_data is not None:
        try:
            public = sshsig.PublicKey.from_openssh(pub_data)
        except GiterError as exc:
            raise UsageError(f"{pub}: not a usable public key ({exc})",
                             reason="NoSigningKey") from None
    elif private_data is not None:
        public = _public_from_openssh_private(private_data)
    if public is None:
        if private_data is None and pub_data is None:
            raise UsageError(f"{path}: no such key file (nor {pub.name})",
                             reason="NoSigningKey")
        raise UsageError(f"{private}: not an OpenSSH private key, and no {pub.name} beside "
                         "it", reason="NoSigningKey")
    key_file = private if private_data is not None else pub
    if private_data is None and not os.environ.get("SSH_AUTH_SOCK"):
        raise UsageError(f"{private} is missing or unreadable and no ssh-agent is running "
                         f"(SSH_AUTH_SOCK is unset): start one and ssh-add the key, or pass "
                         "the private key file", reason="NoSigningKey")
    return KeygenSigner(public, key_file=key_file)


def public_key(signer: Any) -> sshsig.PublicKey:
    """The public half of what ``load_key`` returned."""
    return sshsig.public_key_of(signer)


def identity(option: str | None, repo_path: Path | None) -> str:
    """``Name <email>`` for author and committer; never made up."""
    if option is not None:
        if not _IDENTITY.fullmatch(option):
            raise UsageError(f"--author {option!r} must look like 'Name <email>'")
        return option
    config = _config(repo_path)
    # git's order: the environment, then the configuration
    name = os.environ.get("GIT_AUTHOR_NAME") or _setting(config, b"user", b"name")
    email = os.environ.get("GIT_AUTHOR_EMAIL") or _setting(config, b"user", b"email")
    if name and email:
        return f"{name} <{email}>"
    missing = " and ".join(n for n, v in (("user.name", name), ("user.email", email))
                           if not v)
    raise UsageError(f"who is signing? git has no {missing}: run git config --global "
                     "user.name 'Your Name' and git config --global user.email you@example.org, "
                     "or pass --author 'Name <email>'", reason="NoAuthor")
