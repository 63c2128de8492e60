"""Test helpers: run commands, make SSH keys, and a publisher that signs with real git.

The publisher is real ``git`` + real ``ssh-keygen``: the same tools a fleet operator uses,
and the oracle our own code is checked against.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from dulwich.objects import Commit


def run(*args: str | os.PathLike, cwd: os.PathLike | None = None, check: bool = True,
        input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run a command, capture output, raise with its stderr on failure."""
    proc = subprocess.run([str(a) for a in args], cwd=cwd, input=input,
                          capture_output=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} failed ({proc.returncode}):\n"
            f"{proc.stdout.decode(errors='replace')}\n{proc.stderr.decode(errors='replace')}"
        )
    return proc


def ssh_keygen(path: Path, keytype: str = "ed25519", bits: int | None = None) -> Path:
    """Create an unencrypted OpenSSH key pair at ``path`` / ``path.pub``."""
    args = ["ssh-keygen", "-q", "-t", keytype, "-N", "", "-C", path.name, "-f", path]
    if bits:
        args[4:4] = ["-b", str(bits)]
    run(*args)
    return path


class Publisher:
    """A publisher's working repository driven by real ``git``, signing with an SSH key."""

    def __init__(self, root: Path, key: Path) -> None:
        self.root = root
        self.key = key
        self.allowed_signers = root.parent / f"{root.name}.allowed_signers"
        run("git", "init", "-q", "-b", "main", root)
        self.git("config", "gpg.format", "ssh")
        self.git("config", "user.signingkey", str(key))
        self.git("config", "commit.gpgsign", "true")
        self.git("config", "gpg.ssh.allowedSignersFile", str(self.allowed_signers))
        self.trust(key)

    def trust(self, key: Path, principal: str = "publisher") -> None:
        """Add ``key``'s public half to the allowed_signers file git verifies with."""
        pub = Path(f"{key}.pub").read_text().split()
        with self.allowed_signers.open("a") as fh:
            fh.write(f'{principal} namespaces="git" {pub[0]} {pub[1]}\n')

    def git(self, *args: str | os.PathLike, check: bool = True,
            input: bytes | None = None) -> subprocess.CompletedProcess:
        return run("git", "-C", self.root, *args, check=check, input=input)

    def write(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def commit(self, message: str, *, sign: bool = True, files: dict[str, str] | None = None,
               allow_empty: bool = True) -> str:
        for rel, text in (files or {}).items():
            self.write(rel, text)
        self.git("add", "-A")
        args = ["commit", "-q", "-m", message]
        if allow_empty:
            args.append("--allow-empty")
        args.append("-S" if sign else "--no-gpg-sign")
        self.git(*args)
        if sign:
            low_s(self.git)
        return self.head()

    def head(self, ref: str = "HEAD") -> str:
        return self.git("rev-parse", ref).stdout.decode().strip()

    def bundle(self, path: Path, *revs: str) -> Path:
        """``git bundle create path revs...`` (default: all of main)."""
        self.git("bundle", "create", "-q", path, *(revs or ("main",)))
        return path

    def verify_commit(self, rev: str) -> bool:
        return self.git("verify-commit", rev, check=False).returncode == 0


def low_s(git, *config: str) -> None:
    """Sign HEAD again while its ECDSA signature has a high s, which devices refuse.

    ssh-keygen draws a fresh random signature each time and does not normalise s, so
    about half of its ECDSA signatures are high: what a publisher using plain git with
    an ECDSA key does (docs/trust.md). ``git(*args)`` runs git in the repository.
    """
    from giter_agent.trust import signed_commit, sshsig

    for _ in range(64):
        raw = git("cat-file", "commit", "HEAD").stdout
        armour = signed_commit.parse(raw).signature
        if armour is None or not sshsig.ecdsa_high_s(armour):
            return
        git(*config, "commit", "-q", "--amend", "--no-edit", "--allow-empty", "-S")
    raise AssertionError("64 high-s ECDSA signatures in a row")


# --- signed-commit surgery (trust tests) ---------------------------------------------

def cat_commit(repo: Path, rev: str) -> bytes:
    """The exact stored bytes of a commit object."""
    return run("git", "-C", repo, "cat-file", "commit", rev).stdout


def write_commit(repo: Path, raw: bytes) -> str:
    """Store ``raw`` as a commit object exactly as given (no fsck) and return its id."""
    return run("git", "-C", repo, "hash-object", "-t", "commit", "-w", "--literally",
               "--stdin", input=raw).stdout.decode().strip()


def git_verifies(repo: Path, rev: str, allowed_signers: Path) -> bool:
    """``git verify-commit`` with ``allowed_signers`` as git's gpg.ssh.allowedSignersFile."""
    return run("git", "-C", repo, "-c", "gpg.format=ssh", "-c",
               f"gpg.ssh.allowedSignersFile={allowed_signers}", "verify-commit", rev,
               check=False).returncode == 0


def write_allowed_signers(path: Path, *pub_lines: str, options: str = 'namespaces="git"') -> Path:
    """An allowed_signers file trusting each ``"<type> <base64>"`` line."""
    prefix = f"{options} " if options else ""
    path.write_text("".join(f"signer{i} {prefix}{line}\n" for i, line in enumerate(pub_lines)))
    return path


def pub_line(key: Path) -> str:
    """``"<type> <base64>"`` of an ssh-keygen key pair at ``key`` / ``key.pub``."""
    return " ".join(Path(f"{key}.pub").read_text().split()[:2])


def craft_sshsig(private_key, message: bytes, *, namespace: bytes = b"git",
                 hash_alg: bytes = b"sha512", version: int = 1, reserved: bytes = b"",
                 sig_alg: bytes | None = None, rsa_hash=None) -> bytes:
    """An armoured SSHSIG with every field under the test's control (ed25519 or RSA key).

    Built field by field from PROTOCOL.sshsig so tests can make signatures no honest
    signer would: other versions, hash algorithms, or SHA-1 RSA.
    """
    import hashlib
    import struct

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    from giter_agent.trust import sshsig

    def string(value: bytes) -> bytes:
        return struct.pack(">I", len(value)) + value

    public = sshsig.public_key_of(private_key)
    digest = hashlib.new(hash_alg.decode(), message).digest()
    data = b"SSHSIG" + string(namespace) + string(reserved) + string(hash_alg) + string(digest)
    if isinstance(private_key, rsa.RSAPrivateKey):
        raw = private_key.sign(data, padding.PKCS1v15(), rsa_hash or hashes.SHA512())
        inner = string(sig_alg or b"rsa-sha2-512") + string(raw)
    else:
        inner = string(sig_alg or b"ssh-ed25519") + string(private_key.sign(data))
    blob = (b"SSHSIG" + struct.pack(">I", version) + string(public.blob) + string(namespace)
            + string(reserved) + string(hash_alg) + string(inner))
    return sshsig.armor(blob)


class SoftSecurityKey:
    """A FIDO security key in software: the signatures a real ``sk-`` key makes.

    No hardware is needed to make them: PROTOCOL.u2f says the authenticator signs
    ``sha256(application) || flags || counter || sha256(data)``, so this does just that
    with ``cryptography`` and lays the key blob and the SSHSIG out field by field.
    ``ssh-keygen -Y verify`` and ``git verify-commit`` check them without hardware.
    It is an ``giter_agent.trust.sshsig.Signer``, so ``sign_commit`` signs commits with it.
    """

    def __init__(self, kind: str = "ed25519", *, application: bytes = b"ssh:",
                 flags: int = 0x01, counter: int = 7) -> None:
        import struct

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519

        from giter_agent.trust import sshsig

        def string(value: bytes) -> bytes:
            return struct.pack(">I", len(value)) + value

        self._string = string
        self.kind = kind
        self.application = application
        self.flags = flags
        self.counter = counter
        if kind == "ed25519":
            self._key = ed25519.Ed25519PrivateKey.generate()
            raw = self._key.public_key().public_bytes(serialization.Encoding.Raw,
                                                      serialization.PublicFormat.Raw)
            self.keytype = sshsig.SK_ED25519
            blob = string(self.keytype.encode()) + string(raw) + string(application)
        else:
            self._key = ec.generate_private_key(ec.SECP256R1())
            point = self._key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
            self.keytype = sshsig.SK_ECDSA_P256
            blob = (string(self.keytype.encode()) + string(b"nistp256") + string(point)
                    + string(application))
        self.public = sshsig.PublicKey.from_blob(blob)

    def line(self) -> str:
        return self.public.openssh()

    def sign_sshsig(self, message: bytes, namespace: str = "git") -> bytes:
        import hashlib
        import struct

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        from giter_agent.trust import sshsig

        string = self._string
        data = (b"SSHSIG" + string(namespace.encode()) + string(b"") + string(b"sha512")
                + string(hashlib.sha512(message).digest()))
        tail = bytes([self.flags]) + struct.pack(">I", self.counter)
        signed = (hashlib.sha256(self.application).digest() + tail
                  + hashlib.sha256(data).digest())
        if self.kind == "ed25519":
            raw = self._key.sign(signed)
        else:
            r, s = decode_dss_signature(self._key.sign(signed, ec.ECDSA(hashes.SHA256())))
            # Devices take low-s ECDSA only (docs/trust.md); a real key that signs high is
            # asked to sign again, which this simulated one never needs.
            n = sshsig._ORDERS[sshsig.SK_ECDSA_P256]
            raw = sshsig._mpint(r) + sshsig._mpint(min(s, n - s))
        inner = string(self.keytype.encode()) + string(raw) + tail
        blob = (b"SSHSIG" + struct.pack(">I", 1) + string(self.public.blob)
                + string(namespace.encode()) + string(b"") + string(b"sha512")
                + string(inner))
        return sshsig.armor(blob)


def ops_commit(tree: bytes, parent: bytes | None, n: int, message: bytes) -> Commit:
    """The ``n``-th commit of a history built in a test: by Ops, one second after the
    one before, unsigned (sign it with ``signed_commit.sign_commit``)."""
    commit = Commit()
    commit.tree = tree
    commit.parents = [parent] if parent else []
    commit.author = commit.committer = b"Ops <ops@example.invalid>"
    commit.author_time = commit.commit_time = 1_700_000_000 + n
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = message
    return commit
