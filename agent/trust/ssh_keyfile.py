"""OpenSSH private key files: the device's key and the publisher's signing keys.

``load_private_key`` reads an unencrypted key file (``ssh-keygen -N ''``). An ed25519
key - every device key, most publisher keys - is read by ``read_openssh_ed25519``,
strictly and with the SSH wire-format reader of ``trust.sshsig``, so that signing a
status commit never loads ``cryptography``'s serialization package (every key format
and cipher: docs/decisions.md, "A sync of new commits, trimmed"); an ECDSA or RSA key
goes through ``cryptography``'s loader. ``private_key_openssh_bytes`` writes one.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ed25519

from giter_agent.core.errors import KeyFileError, TrustError
from giter_agent.trust import ed25519_keys
from giter_agent.trust.sshsig import ED25519, WireReader

if TYPE_CHECKING:
    from giter_agent.trust.sshsig import PrivateKey

# An OpenSSH private key file (OpenSSH's PROTOCOL.key); unencrypted, its private section
# is padded to 8-byte blocks.
OPENSSH_KEY_BEGIN = b"-----BEGIN OPENSSH PRIVATE KEY-----"
OPENSSH_KEY_END = b"-----END OPENSSH PRIVATE KEY-----"
OPENSSH_KEY_MAGIC = b"openssh-key-v1\0"
OPENSSH_KEY_BLOCK = 8


def load_private_key(path: Path) -> PrivateKey:
    """An unencrypted OpenSSH private key file (``ssh-keygen -N ''``).

    An ed25519 key (every device key, most publisher keys) is read here, strictly
    (``read_openssh_ed25519``); an ECDSA or RSA key goes through ``cryptography``'s loader.
    Anything unusable is a ``KeyFileError`` naming the file and the check that failed.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        ed = read_openssh_ed25519(data)
    except TrustError as exc:
        raise KeyFileError(f"{path}: not a usable OpenSSH private key ({exc})") from None
    if ed is not None:
        return ed
    # Imported where used: the serialization package loads the SSH private-key format
    # of every key type and every cipher (about 15 ms), which an ed25519 key never needs.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # cryptography's messages name the check ("Corrupt data: ..."), not the bytes.
        raise KeyFileError(f"{path}: not an unencrypted OpenSSH private key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
                      | rsa.RSAPrivateKey):
        raise KeyFileError(f"{path}: unsupported private key type {type(key).__name__}")
    return key


def read_openssh_ed25519(data: bytes) -> ed25519.Ed25519PrivateKey | None:
    """The key of an unencrypted ed25519 ``openssh-key-v1`` file (OpenSSH's
    PROTOCOL.key), or None when ``data`` is another form (not that armour, a cipher, another
    key type) for ``cryptography``'s loader to take or refuse.

    Strict, as ``ssh-keygen`` writes it: one key, no kdf, equal check-ints, the private
    half's public key equal to the file's and to the one the seed derives, padding
    1, 2, 3... to the 8-byte block. A refusal is a ``TrustError`` (MalformedKey) that
    names the check, never the bytes.
    """
    text = data.strip()
    if not text.startswith(OPENSSH_KEY_BEGIN) or not text.endswith(OPENSSH_KEY_END):
        return None
    body = b"".join(text[len(OPENSSH_KEY_BEGIN):-len(OPENSSH_KEY_END)].split())
    try:
        blob = base64.b64decode(body, validate=True)
    except ValueError:
        raise TrustError("private key armour is not valid base64", reason="MalformedKey") from None
    if not blob.startswith(OPENSSH_KEY_MAGIC):
        raise TrustError("private key does not start with openssh-key-v1",
                         reason="MalformedKey")
    outer = WireReader(blob[len(OPENSSH_KEY_MAGIC):], "private key", "MalformedKey")
    cipher, kdf, kdf_options = outer.string(), outer.string(), outer.string()
    if cipher != b"none" or kdf != b"none":
        return None  # encrypted: cryptography's loader says so (no passphrase is given)
    if kdf_options:
        raise outer.error("kdf options without a kdf")
    if outer.u32() != 1:
        raise outer.error("a key file must hold exactly one key")
    public_blob = outer.string()
    private = outer.string()
    outer.end()
    public = WireReader(public_blob, "private key's public half", "MalformedKey")
    if public.text() != ED25519:
        return None  # ECDSA, RSA, a security key: cryptography's loader
    raw_public = public.string()
    public.end()
    inner = WireReader(private, "private key", "MalformedKey")
    if len(private) % OPENSSH_KEY_BLOCK:
        raise inner.error("private section is not a whole number of blocks")
    if inner.u32() != inner.u32():
        raise inner.error("check-ints differ (corrupt, or encrypted under another name)")
    if inner.text() != ED25519:
        raise inner.error("private half's key type differs from the public half's")
    if inner.string() != raw_public or len(raw_public) != 32:
        raise inner.error("private half's public key differs from the public half")
    secret = inner.string()
    if len(secret) != 64 or secret[32:] != raw_public:
        raise inner.error("ed25519 private key must be the 32-byte seed and its public key")
    inner.string()  # the comment
    padding_bytes = inner.raw(len(private) - inner.pos)
    if (len(padding_bytes) >= OPENSSH_KEY_BLOCK
            or padding_bytes != bytes(range(1, len(padding_bytes) + 1))):
        raise inner.error("padding is not 1, 2, 3...")
    key = ed25519_keys.private_key(secret[:32])
    if ed25519_keys.ed25519_raw_of(key.public_key()) != raw_public:
        raise inner.error("public key is not the one the seed derives")
    return key


def private_key_openssh_bytes(private_key: PrivateKey) -> bytes:
    """The key as an unencrypted ``-----BEGIN OPENSSH PRIVATE KEY-----`` file body."""
    from cryptography.hazmat.primitives import serialization

    return private_key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.OpenSSH,
                                     serialization.NoEncryption())
