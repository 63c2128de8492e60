"""age files (age-encryption.org/v1) to ssh-ed25519 recipients, in pure Python.

The ``Secret`` kind decrypts with the device's own key; ``giter-bundle secret`` encrypts
to the enrolled device keys (``.giter/devices/<id>.pub``) and the publisher's secrets
key. Files are exactly what the ``age`` tool reads and writes (``age -R key.pub``,
``age -d -i key``), in the ASCII armour (``-----BEGIN AGE ENCRYPTED FILE-----``) so they
sit in a YAML document.

Only the ``ssh-ed25519`` recipient type is spoken: a file with any other stanza
(``X25519``, ``scrypt``, a plug-in's) is refused, as is a header that does not parse, a
wrong header MAC, a truncated or altered payload, and anything over ``MAX_FILE_BYTES``.
Every refusal is an ``AgeError`` (a ``ResourceError``) with a reason and a message that
never quotes the plaintext.

It sits in ``core`` because both the ``Secret`` kind and the publisher use it and it
depends on nothing of the agent's but its errors (kinds may not reach into ``trust``).

The recipient type, from the age specification: the ed25519 public key is mapped to
X25519 (Montgomery ``u = (1 + y) / (1 - y) mod p``), the private key is the clamped first
half of SHA-512 of the seed; the stanza is ``-> ssh-ed25519 <tag> <share>`` where tag is
the first 4 bytes of SHA-256 of the SSH wire key, the shared secret is tweaked by an
X25519 multiplication with ``HKDF(salt=wire key, info=label)``, and the 16-byte file key
is wrapped with ChaCha20-Poly1305 under ``HKDF(shared, salt=share || recipient, label)``.
The header MAC is HMAC-SHA-256 under ``HKDF(file key, info="header")``; the payload is
STREAM over ChaCha20-Poly1305 in 64 KiB chunks, keyed by ``HKDF(file key, salt=nonce,
info="payload")``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from giter_agent.core.errors import AgeError

INTRO = b"age-encryption.org/v1\n"
ED25519_TYPE = "ssh-ed25519"
ED25519_LABEL = b"age-encryption.org/v1/ssh-ed25519"
ARMOR_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----"
ARMOR_END = "-----END AGE ENCRYPTED FILE-----"
CHUNK = 64 * 1024
TAG_SIZE = 16
FILE_KEY_SIZE = 16
NONCE_SIZE = 16
# Caps: a secret is a passphrase, a token, a private key; not a disk image. The binary
# file and its armour both stay well under a resource document's 256 KiB cap.
MAX_PLAINTEXT_BYTES = 64 * 1024
MAX_STANZAS = 64
MAX_HEADER_BYTES = 16 * 1024
MAX_FILE_BYTES = MAX_HEADER_BYTES + NONCE_SIZE + MAX_PLAINTEXT_BYTES + TAG_SIZE
MAX_ARMORED_BYTES = (MAX_FILE_BYTES + 2) // 3 * 4 + MAX_FILE_BYTES // 48 + 128

_P = 2**255 - 19
_D = (-121665 * pow(121666, -1, _P)) % _P
_ARG = re.compile(rb"[\x21-\x7e]+")


@dataclass(frozen=True)
class Stanza:
    """One recipient stanza: ``-> type args...`` and its body."""

    type: str
    args: tuple[str, ...]
    body: bytes


@dataclass(frozen=True)
class Header:
    """A parsed header: its stanzas, MAC, the bytes the MAC covers, and the payload."""

    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes
    payload: bytes

    def tags(self) -> list[bytes]:
        """The 4-byte key tags of the ssh-ed25519 stanzas: whose keys can open the file."""
        return [_b64(s.args[0]) for s in self.stanzas if s.type == ED25519_TYPE]


# -- encodings ------------------------------------------------------------------------------

def _b64(text: str | bytes) -> bytes:
    """Canonical unpadded standard base64, as age writes it; AgeError otherwise."""
    raw = text.encode("ascii") if isinstance(text, str) else text
    try:
        out = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise AgeError("the header holds invalid base64") from None
    if base64.b64encode(out).rstrip(b"=") != raw:
        raise AgeError("the header holds non-canonical base64")
    return out


def _e64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def armor(data: bytes) -> str:
    """The PEM-style armour age writes with ``-a``: 64 columns, padded base64."""
    text = base64.b64encode(data).decode("ascii")
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return "\n".join([ARMOR_BEGIN, *lines, ARMOR_END]) + "\n"


def dearmor(text: str | bytes) -> bytes:
    """The binary age file inside ``text`` (armoured), size-capped."""
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    if len(text) > MAX_ARMORED_BYTES:
        raise AgeError(f"the armoured secret is {len(text)} bytes, over the "
                       f"{MAX_ARMORED_BYTES}-byte cap", reason="SecretTooLarge")
    lines = text.strip().replace("\r\n", "\n").split("\n")
    if len(lines) < 2 or lines[0].strip() != ARMOR_BEGIN:
        raise AgeError(f"not an armoured age file (no {ARMOR_BEGIN} line)")
    if lines[-1].strip() != ARMOR_END:
        raise AgeError(f"the armoured age file has no {ARMOR_END} line (truncated?)",
                       reason="SecretTruncated")
    body = [line.strip() for line in lines[1:-1]]
    if any(len(line) != 64 for line in body[:-1]) or (body and not 0 < len(body[-1]) <= 64):
        raise AgeError("the armour's lines must be 64 columns, the last one up to 64")
    joined = "".join(body).encode("ascii", errors="replace")
    try:
        data = base64.b64decode(joined, validate=True)
    except (binascii.Error, ValueError):
        raise AgeError("the armour holds invalid base64") from None
    if base64.b64encode(data) != joined:
        raise AgeError("the armour holds non-canonical base64")
    return data


# -- the header -----------------------------------------------------------------------------

def parse(data: bytes) -> Header:
    """Split a binary age file into its header and payload; AgeError if it does not parse."""
    if len(data) > MAX_FILE_BYTES:
        raise AgeError(f"the age file is {len(data)} bytes, over the {MAX_FILE_BYTES}-byte cap",
                       reason="SecretTooLarge")
    if not data.startswith(INTRO):
        if INTRO.startswith(data):
            raise AgeError("the age file ends inside its header", reason="SecretTruncated")
        raise AgeError("not an age v1 file (no age-encryption.org/v1 line)")
    pos = len(INTRO)
    stanzas: list[Stanza] = []

    def line() -> bytes:
        nonlocal pos
        end = data.find(b"\n", pos, pos + MAX_HEADER_BYTES)
        if end < 0:
            raise AgeError("the age file ends inside its header", reason="SecretTruncated")
        out = data[pos:end]
        pos = end + 1
        return out

    while True:
        start = pos
        text = line()
        if pos > MAX_HEADER_BYTES:
            raise AgeError(f"the age header is over {MAX_HEADER_BYTES} bytes",
                           reason="SecretTooLarge")
        if text.startswith(b"--- "):
            mac = _b64(text[4:])
            if len(mac) != 32:
                raise AgeError("the header MAC is not 32 bytes")
            if not stanzas:
                raise AgeError("the age header has no recipient stanza")
            return Header(tuple(stanzas), mac, data[:start + 3], data[pos:])
        if not text.startswith(b"-> "):
            raise AgeError("the age header has a line that is neither a stanza nor its end")
        if len(stanzas) == MAX_STANZAS:
            raise AgeError(f"the age header has more than {MAX_STANZAS} stanzas",
                           reason="SecretTooLarge")
        args = text[3:].split(b" ")
        if not all(_ARG.fullmatch(a) for a in args):
            raise AgeError("a stanza line has an empty or non-printable argument")
        body = b""
        while True:
            chunk = line()
            if len(chunk) > 64:
                raise AgeError("a stanza body line is over 64 columns")
            body += _b64(chunk)
            if len(chunk) < 64:
                break
        stanzas.append(Stanza(args[0].decode(), tuple(a.decode() for a in args[1:]), body))


def _header_text(stanzas: Iterable[Stanza]) -> bytes:
    out = [INTRO]
    for s in stanzas:
        out.append(f"-> {' '.join([s.type, *s.args])}\n".encode())
        body = _e64(s.body)
        out += [f"{body[i:i + 64]}\n".encode() for i in range(0, len(body) + 1, 64)]
    out.append(b"---")
    return b"".join(out)


# -- keys -----------------------------------------------------------------------------------

def ssh_wire_key(public_raw: bytes) -> bytes:
    """The SSH wire encoding of a raw ed25519 public key (what the tag hashes)."""
    name = ED25519_TYPE.encode()
    return (len(name).to_bytes(4, "big") + name + len(public_raw).to_bytes(4, "big")
            + public_raw)


def key_tag(public_raw: bytes) -> bytes:
    """The 4-byte tag an ssh-ed25519 stanza carries for this key."""
    return hashlib.sha256(ssh_wire_key(public_raw)).digest()[:4]


def ed25519_to_x25519_public(public_raw: bytes) -> bytes:
    """The Montgomery u-coordinate of an ed25519 public key (RFC 7748's birational map).

    Refuses a y off the field or a point not on the curve, as age does.
    """
    if len(public_raw) != 32:
        raise AgeError("an ed25519 public key is 32 bytes", reason="InvalidRecipient")
    y = int.from_bytes(public_raw, "little") & ((1 << 255) - 1)
    if y >= _P:
        raise AgeError("not an ed25519 public key (y out of range)", reason="InvalidRecipient")
    y2 = y * y % _P
    x2 = (y2 - 1) * pow(_D * y2 + 1, -1, _P) % _P
    if (x2 != 0 and pow(x2, (_P - 1) // 2, _P) != 1) or y == 1:
        raise AgeError("not an ed25519 public key (not a point on the curve)",
                       reason="InvalidRecipient")
    u = (1 + y) * pow(1 - y, -1, _P) % _P
    return u.to_bytes(32, "little")


def _x25519_private(seed: bytes) -> Any:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    h = bytearray(hashlib.sha512(seed).digest()[:32])
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    return X25519PrivateKey.from_private_bytes(bytes(h))


def _x25519(scalar: bytes, point: bytes) -> bytes:
    """X25519(scalar, point); AgeError on the all-zero result of a low-order point."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )

    try:
        return X25519PrivateKey.from_private_bytes(scalar).exchange(
            X25519PublicKey.from_public_bytes(point))
    except ValueError:
        raise AgeError("a recipient stanza holds a low-order share",
                       reason="SecretCorrupt") from None


def raw_public(key: Any) -> bytes:
    """The 32 raw bytes of a ``cryptography`` X25519 or Ed25519 public key."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return bytes(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def raw_private(key: Any) -> bytes:
    """The 32 raw bytes of a ``cryptography`` X25519 or Ed25519 private key.

    Through ``private_bytes``: the shorter raw accessors need cryptography 40, and the
    armhf floor is Debian's 38.
    """
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    return bytes(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))


def _hkdf(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _aead(key: bytes) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    return ChaCha20Poly1305(key)


def _header_mac(file_key: bytes, mac_input: bytes) -> bytes:
    return hmac.new(_hkdf(file_key, b"", b"header"), mac_input, "sha256").digest()


def _raw_public(key: Any) -> bytes:
    """Raw 32 bytes of an ed25519 public key: an ``sshsig.PublicKey`` or raw bytes."""
    if isinstance(key, bytes):
        return key
    blob = getattr(key, "blob", None)
    if getattr(key, "keytype", None) != ED25519_TYPE or blob is None:
        raise AgeError(f"only ssh-ed25519 keys can be age recipients, not "
                       f"{getattr(key, 'keytype', type(key).__name__)}",
                       reason="InvalidRecipient")
    return blob[-32:]


# -- encrypt and decrypt --------------------------------------------------------------------

def encrypt(recipients: Iterable[Any], plaintext: bytes) -> bytes:
    """A binary age file that each ssh-ed25519 key in ``recipients`` can open."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    if len(plaintext) > MAX_PLAINTEXT_BYTES:
        raise AgeError(f"the secret is {len(plaintext)} bytes, over the "
                       f"{MAX_PLAINTEXT_BYTES}-byte cap", reason="SecretTooLarge")
    keys = list(dict.fromkeys(_raw_public(k) for k in recipients))
    if not keys:
        raise AgeError("a secret needs at least one recipient", reason="InvalidRecipient")
    if len(keys) > MAX_STANZAS:
        raise AgeError(f"more than {MAX_STANZAS} recipients", reason="SecretTooLarge")
    file_key = os.urandom(FILE_KEY_SIZE)
    stanzas = []
    for raw in keys:
        theirs = ed25519_to_x25519_public(raw)
        ephemeral = X25519PrivateKey.generate()
        share = raw_public(ephemeral.public_key())
        shared = _x25519(raw_private(ephemeral), theirs)
        tweak = _hkdf(b"", ssh_wire_key(raw), ED25519_LABEL)
        shared = _x25519(tweak, shared)
        wrapping = _hkdf(shared, share + theirs, ED25519_LABEL)
        body = _aead(wrapping).encrypt(bytes(12), file_key, None)
        stanzas.append(Stanza(ED25519_TYPE, (_e64(key_tag(raw)), _e64(share)), body))
    head = _header_text(stanzas)
    nonce = os.urandom(NONCE_SIZE)
    aead = _aead(_hkdf(file_key, nonce, b"payload"))
    chunks = [plaintext[i:i + CHUNK] for i in range(0, len(plaintext), CHUNK)] or [b""]
    payload = [aead.encrypt(i.to_bytes(11, "big") + (b"\x01" if i == len(chunks) - 1
                                                     else b"\x00"), chunk, None)
               for i, chunk in enumerate(chunks)]
    mac = _header_mac(file_key, head)
    return b"".join([head, b" ", _e64(mac).encode(), b"\n", nonce, *payload])


def _unwrap(stanza: Stanza, identity: Any) -> bytes | None:
    """The file key if ``stanza`` is for ``identity`` (an Ed25519PrivateKey), else None."""
    from cryptography.exceptions import InvalidTag

    public_raw = raw_public(identity.public_key())
    if len(stanza.args) != 2:
        raise AgeError("an ssh-ed25519 stanza needs a tag and a share")
    tag, share = _b64(stanza.args[0]), _b64(stanza.args[1])
    if len(tag) != 4 or len(share) != 32:
        raise AgeError("an ssh-ed25519 stanza's tag or share has the wrong length")
    if len(stanza.body) != FILE_KEY_SIZE + TAG_SIZE:
        raise AgeError("an ssh-ed25519 stanza's body is not a wrapped file key")
    if tag != key_tag(public_raw):
        return None
    ours = _x25519_private(raw_private(identity))
    theirs = raw_public(ours.public_key())
    shared = _x25519(raw_private(ours), share)
    shared = _x25519(_hkdf(b"", ssh_wire_key(public_raw), ED25519_LABEL), shared)
    wrapping = _hkdf(shared, share + theirs, ED25519_LABEL)
    try:
        return _aead(wrapping).decrypt(bytes(12), stanza.body, None)
    except InvalidTag:
        return None  # a tag collision with another key: not ours after all


def check_recipient_types(header: Header) -> None:
    """Refuse a file with any stanza this agent does not speak (AgeError)."""
    for stanza in header.stanzas:
        if stanza.type != ED25519_TYPE:
            raise AgeError(f"recipient stanza type {stanza.type!r} is not supported (only "
                           f"{ED25519_TYPE})", reason="UnsupportedRecipient")


def decrypt(data: bytes, identity: Any) -> bytes:
    """The plaintext of binary age file ``data``, opened with ed25519 key ``identity``."""
    from cryptography.exceptions import InvalidTag

    header = parse(data)
    check_recipient_types(header)
    file_key = None
    for stanza in header.stanzas:
        file_key = _unwrap(stanza, identity)
        if file_key is not None:
            break
    if file_key is None:
        raise AgeError("this device's key is not among the secret's recipients",
                       reason="NotARecipient")
    if not hmac.compare_digest(_header_mac(file_key, header.mac_input), header.mac):
        raise AgeError("the header MAC does not match (the header was altered)",
                       reason="SecretCorrupt")
    payload = header.payload
    if len(payload) < NONCE_SIZE + TAG_SIZE:
        raise AgeError("the age payload is truncated", reason="SecretTruncated")
    aead = _aead(_hkdf(file_key, payload[:NONCE_SIZE], b"payload"))
    body = payload[NONCE_SIZE:]
    size = CHUNK + TAG_SIZE
    count = max(1, -(-len(body) // size))
    out = []
    for i in range(count):
        chunk = body[i * size:(i + 1) * size]
        last = i == count - 1
        if len(chunk) < TAG_SIZE:
            raise AgeError("the age payload is truncated", reason="SecretTruncated")
        try:
            plain = aead.decrypt(i.to_bytes(11, "big") + (b"\x01" if last else b"\x00"),
                                 chunk, None)
        except InvalidTag:
            raise AgeError(f"payload chunk {i} does not authenticate (truncated or altered)",
                           reason="SecretCorrupt") from None
        if last and not plain and i > 0:
            raise AgeError("the age payload ends with an empty chunk", reason="SecretCorrupt")
        out.append(plain)
    return b"".join(out)
