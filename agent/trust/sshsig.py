"""OpenSSH public keys and SSHSIG signatures (OpenSSH's PROTOCOL.sshsig), on ``cryptography``.

``trust.spec_rule`` and ``trust.status_rule`` call ``verify`` for every commit a device
takes in; ``trust.allowed_signers`` and ``trust.devicekey`` build ``PublicKey`` values;
``sign`` makes signatures that ``ssh-keygen -Y verify`` and ``git verify-commit`` accept
(device status commits, tests, the benchmark).

Parsing is strict on purpose: the armour must be laid out byte for byte as ``ssh-keygen``
writes it, every length-prefixed field must be consumed exactly, and mpints must be
canonical. Anything ``ssh-keygen`` would tolerate beyond that is a malleability we refuse.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ed25519

from giter_agent.core.named_tuple import NamedTuple
from giter_agent.trust import ed25519_keys

if TYPE_CHECKING:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

from giter_agent.core.errors import TrustError

MAGIC = b"SSHSIG"
VERSION = 1
BEGIN = b"-----BEGIN SSH SIGNATURE-----"
END = b"-----END SSH SIGNATURE-----"
ARMOUR_WIDTH = 70  # ssh-keygen's sshbuf_dtob64(..., wrap=1)

ED25519 = "ssh-ed25519"
ECDSA_P256 = "ecdsa-sha2-nistp256"
ECDSA_P384 = "ecdsa-sha2-nistp384"
RSA = "ssh-rsa"
# FIDO/U2F security keys (OpenSSH's PROTOCOL.u2f): the blob adds the application string,
# the signature adds the authenticator's flags and counter, which are signed too.
SK_ED25519 = "sk-ssh-ed25519@openssh.com"
SK_ECDSA_P256 = "sk-ecdsa-sha2-nistp256@openssh.com"
SK_KEY_TYPES = (SK_ED25519, SK_ECDSA_P256)
KEY_TYPES = (ED25519, ECDSA_P256, ECDSA_P384, RSA, *SK_KEY_TYPES)

# PROTOCOL.u2f signature flag: the user touched the key. Always required here (stricter
# than ``ssh-keygen -Y verify``, which does not look): a signature nobody touched for is
# one malware on the publisher's workstation could make unattended.
SK_USER_PRESENT = 0x01

# Below this an RSA key is not worth trusting, whatever OpenSSH still tolerates (1024).
RSA_MIN_BITS = 2048

_CURVES: dict[str, tuple[str, str, str]] = {
    # key type -> (curve identifier inside the blob, curve, hash RFC 5656 pairs with it),
    # by their names in cryptography: the ECDSA and RSA modules (with the hashes and
    # padding) load for such a key only, never for a history signed with ed25519.
    ECDSA_P256: ("nistp256", "SECP256R1", "SHA256"),
    ECDSA_P384: ("nistp384", "SECP384R1", "SHA384"),
    SK_ECDSA_P256: ("nistp256", "SECP256R1", "SHA256"),
}
# The order n of each curve's group. (r, s) and (r, n - s) both verify, so a signature
# is canonical only with s <= n/2 (low-s, as Bitcoin's BIP 62 and libsecp256k1 require):
# otherwise anyone could give a signed commit a twin with another id.
_ORDERS = {
    ECDSA_P256: 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    SK_ECDSA_P256: 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    ECDSA_P384: int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
                    "581A0DB248B0A77AECEC196ACCC52973", 16),
}

# The message digest SSHSIG wraps. md5, sha1 and anything else are refused outright.
_HASHES = {"sha512": hashlib.sha512, "sha256": hashlib.sha256}

# RSA signature algorithms we accept inside SSHSIG. Plain "ssh-rsa" means SHA-1: refused.
_RSA_SIG_HASHES: dict[str, str] = {
    "rsa-sha2-512": "SHA512",
    "rsa-sha2-256": "SHA256",
}


def _hash(name: str) -> hashes.HashAlgorithm:
    """cryptography's hash algorithm object named ``name`` (``SHA256``...)."""
    from cryptography.hazmat.primitives import hashes

    algorithm: hashes.HashAlgorithm = getattr(hashes, name)()
    return algorithm


def _ecdsa(keytype: str) -> tuple[ec.EllipticCurve, ec.ECDSA]:
    """The curve of an ECDSA key type and the signature algorithm over its hash."""
    from cryptography.hazmat.primitives.asymmetric import ec

    _, curve, hash_name = _CURVES[keytype]
    return getattr(ec, curve)(), ec.ECDSA(_hash(hash_name))


def _fail(reason: str, message: str) -> TrustError:
    return TrustError(message, reason=reason)


class WireReader:
    """Reads SSH wire-format fields (RFC 4251 §5) and refuses short or leftover data."""

    def __init__(self, data: bytes, what: str, reason: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what
        self._reason = reason

    def error(self, detail: str) -> TrustError:
        return _fail(self._reason, f"{self._what}: {detail}")

    def raw(self, n: int) -> bytes:
        if len(self._data) - self._pos < n:
            raise self.error("truncated")
        out = self._data[self._pos:self._pos + n]
        self._pos += n
        return out

    def u32(self) -> int:
        pos = self._pos
        if len(self._data) - pos < 4:
            raise self.error("truncated")
        self._pos = pos + 4
        return int.from_bytes(self._data[pos:pos + 4], "big")

    def string(self) -> bytes:
        # A u32 length, then that many bytes: in one step (every signature reads several).
        data, pos = self._data, self._pos
        if len(data) - pos < 4:
            raise self.error("truncated")
        n = int.from_bytes(data[pos:pos + 4], "big")
        pos += 4
        if len(data) - pos < n:
            raise self.error("truncated")
        self._pos = pos + n
        return data[pos:pos + n]

    def text(self) -> str:
        value = self.string()
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise self.error("non-ASCII name") from None

    def mpint(self) -> int:
        """A positive mpint in its one canonical encoding (no spare or missing 0x00)."""
        value = self.string()
        if not value:
            raise self.error("zero mpint")
        if value[0] & 0x80:
            raise self.error("negative mpint")
        if value[0] == 0 and (len(value) == 1 or not value[1] & 0x80):
            raise self.error("non-canonical mpint")
        return int.from_bytes(value, "big")

    @property
    def pos(self) -> int:
        """How many bytes have been read."""
        return self._pos

    def end(self) -> None:
        if self._pos != len(self._data):
            raise self.error("trailing data")


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _mpint(value: int) -> bytes:
    # One spare zero byte exactly when the top bit would otherwise read as a sign.
    if value == 0:
        return _string(b"")
    return _string(value.to_bytes(value.bit_length() // 8 + 1, "big"))


class PublicKey(NamedTuple):
    """An SSH public key, pinned by its exact wire blob (two keys are equal iff blobs are)."""

    keytype: str
    blob: bytes

    @classmethod
    def from_blob(cls, blob: bytes, *, reason: str = "MalformedKey") -> PublicKey:
        """Parse and check a wire-format key blob; malformed -> TrustError(``reason``)."""
        reader = WireReader(blob, "public key", reason)
        keytype = reader.text()
        if keytype not in KEY_TYPES:
            raise _fail("UnsupportedKeyType", f"key type {keytype!r} is not supported")
        key = cls(keytype, bytes(blob))
        key._load(reader)  # proves the blob describes a usable key
        return key

    @classmethod
    def from_openssh(cls, line: str | bytes, *, reason: str = "MalformedKey") -> PublicKey:
        """Parse ``"<type> <base64> [comment]"`` as in ``id_ed25519.pub``."""
        if isinstance(line, bytes):
            line = line.decode("ascii", errors="replace")
        fields = line.split()
        if len(fields) < 2:
            raise _fail(reason, "public key line needs '<type> <base64>'")
        blob = _b64decode_canonical(fields[1].encode("ascii", errors="replace"))
        if blob is None:
            raise _fail(reason, "public key is not valid base64")
        key = cls.from_blob(blob, reason=reason)
        if key.keytype != fields[0]:
            raise _fail(reason, f"key type {fields[0]!r} does not match its blob ({key.keytype})")
        return key

    @classmethod
    def from_cryptography(cls, public_key) -> PublicKey:
        """The ``PublicKey`` of a ``cryptography`` public key object."""
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            # A device's own key, at every status commit: no serialization package.
            raw = ed25519_keys.ed25519_raw_of(public_key)
            return cls.from_blob(_string(ED25519.encode()) + _string(raw))
        # Imported where used: the serialization package loads the SSH private-key
        # format and every cipher (about 15 ms), which verifying a signature never needs.
        from cryptography.hazmat.primitives import serialization

        line = public_key.public_bytes(serialization.Encoding.OpenSSH,
                                       serialization.PublicFormat.OpenSSH)
        return cls.from_openssh(line)

    @property
    def application(self) -> bytes | None:
        """The FIDO application string of a security key (``ssh:`` usually), else None."""
        if self.keytype not in SK_KEY_TYPES:
            return None
        reader = WireReader(self.blob, "public key", "MalformedKey")
        reader.text()
        if self.keytype == SK_ECDSA_P256:
            reader.text()
        reader.string()
        return reader.string()

    def fingerprint(self) -> str:
        """``SHA256:<base64, unpadded>``, the form ``ssh-keygen -l`` prints."""
        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")

    def openssh(self) -> str:
        """``"<type> <base64>"``: the key as a ``.pub`` or allowed_signers file holds it."""
        return f"{self.keytype} {base64.b64encode(self.blob).decode('ascii')}"

    def _load(self, reader: WireReader | None = None):
        """The ``cryptography`` public key object for this blob."""
        if reader is None:
            reader = WireReader(self.blob, "public key", "MalformedKey")
            reader.text()
        try:
            if self.keytype in (ED25519, SK_ED25519):
                raw = reader.string()
                if self.keytype == SK_ED25519:
                    reader.string()  # application
                reader.end()
                if len(raw) != 32:
                    raise reader.error("ed25519 key must be 32 bytes")
                return ed25519_keys.public_key(raw)
            if self.keytype in _CURVES:
                from cryptography.hazmat.primitives.asymmetric import ec

                curve_name = _CURVES[self.keytype][0]
                if reader.text() != curve_name:
                    raise reader.error("curve does not match key type")
                point = reader.string()
                if self.keytype == SK_ECDSA_P256:
                    reader.string()  # application
                reader.end()
                if not point or point[0] != 4:
                    raise reader.error("ecdsa point must be uncompressed")
                return ec.EllipticCurvePublicKey.from_encoded_point(_ecdsa(self.keytype)[0],
                                                                    point)
            from cryptography.hazmat.primitives.asymmetric import rsa

            e = reader.mpint()
            n = reader.mpint()
            reader.end()
            if n.bit_length() < RSA_MIN_BITS:
                raise _fail("UnsupportedKeyType",
                            f"RSA key of {n.bit_length()} bits (need {RSA_MIN_BITS})")
            return rsa.RSAPublicNumbers(e, n).public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise reader.error(f"not a valid {self.keytype} key ({exc})") from None

    def __str__(self) -> str:
        return f"{self.keytype} {self.fingerprint()}"


def _b64decode_canonical(data: bytes) -> bytes | None:
    """Decode base64 only if ``data`` is the one canonical encoding of its bytes."""
    try:
        decoded = base64.b64decode(data, validate=True)
    except ValueError:
        return None
    return decoded if base64.b64encode(decoded) == data else None


def armor(blob: bytes) -> bytes:
    """Armour an SSHSIG blob exactly as ``ssh-keygen -Y sign`` writes its ``.sig`` file."""
    encoded = base64.b64encode(blob)
    lines = [encoded[i:i + ARMOUR_WIDTH] for i in range(0, len(encoded), ARMOUR_WIDTH)]
    return b"\n".join([BEGIN, *lines, END]) + b"\n"


@functools.lru_cache(maxsize=4)
def dearmor(armored: bytes) -> bytes:
    """The SSHSIG blob inside ``armored``, which must be exactly what ``armor`` makes.

    Remembered for the last few signatures: ``signed_commit.parse`` checks a commit's
    armour and ``verify`` then reads the same armour (a refusal is never remembered).
    """
    if not armored.startswith(BEGIN + b"\n") or not armored.endswith(b"\n" + END + b"\n"):
        raise _fail("MalformedSignature", "signature armour lacks the exact BEGIN/END lines")
    body = armored[len(BEGIN) + 1:-(len(END) + 2)]
    blob = _b64decode_canonical(body.replace(b"\n", b""))
    if blob is None or armor(blob) != armored:
        raise _fail("MalformedSignature",
                    "signature armour is not laid out as ssh-keygen writes it")
    return blob


class _Sshsig(NamedTuple):
    key_blob: bytes
    namespace: bytes
    hash_alg: str
    signature: bytes


def _parse(blob: bytes) -> _Sshsig:
    reader = WireReader(blob, "signature", "MalformedSignature")
    if reader.raw(len(MAGIC)) != MAGIC:
        raise reader.error("missing SSHSIG preamble")
    version = reader.u32()
    if version != VERSION:
        raise reader.error(f"unsupported SSHSIG version {version}")
    key_blob = reader.string()
    namespace = reader.string()
    if reader.string():
        raise reader.error("reserved field is not empty")
    hash_alg = reader.text()
    signature = reader.string()
    reader.end()
    return _Sshsig(key_blob, namespace, hash_alg, signature)


def _signed_data(namespace: bytes, hash_alg: str, message: bytes) -> bytes:
    digest = _HASHES[hash_alg](message).digest()
    return (MAGIC + _string(namespace) + _string(b"") + _string(hash_alg.encode())
            + _string(digest))


def _sk_signed_data(key: PublicKey, reader: WireReader, data: bytes) -> bytes:
    """What a security key signed (PROTOCOL.u2f): its flags and counter are part of it.

    ``sha256(application) || flags || counter || sha256(data)``; a signature made without
    the user's touch is refused.
    """
    flags = reader.raw(1)[0]
    counter = reader.raw(4)
    if not flags & SK_USER_PRESENT:
        raise _fail("UserPresenceMissing",
                    f"signature by {key.fingerprint()} was made without touching the "
                    "security key (sign again and touch it when it blinks)")
    application = key.application or b""
    return (hashlib.sha256(application).digest() + bytes([flags]) + counter
            + hashlib.sha256(data).digest())


# cryptography's key objects by key blob: a history signed by a few keys loads each once.
_LOADED: dict[bytes, Any] = {}


def _loaded(key: PublicKey) -> Any:
    public = _LOADED.get(key.blob)
    if public is None:
        if len(_LOADED) >= 64:
            _LOADED.clear()
        public = _LOADED[key.blob] = key._load()
    return public


class PendingCheck:
    """A signature whose envelope, key and layout passed every check: what is left is
    the signature arithmetic, ``finish()``, which ``cryptography`` runs without holding
    the GIL (``trust.signature_pool`` runs it on a worker thread)."""

    __slots__ = ("_args", "_public", "key")

    def __init__(self, key: PublicKey, public: Any, args: tuple[Any, ...]) -> None:
        self.key = key
        self._public = public
        self._args = args

    def finish(self) -> PublicKey:
        """The key that made the signature; TrustError(BadSignature) if it does not match."""
        try:
            self._public.verify(*self._args)
        except InvalidSignature:
            raise _fail("BadSignature", f"signature by {self.key.fingerprint()} does not "
                        "match the signed data") from None
        return self.key


def _prepare(key: PublicKey, signature: bytes, data: bytes) -> PendingCheck:
    """Check the inner SSH signature blob (``string alg, string sig``) of ``key`` over
    ``data``, all but the arithmetic: a malformed or non-canonical blob refuses here."""
    reader = WireReader(signature, "signature blob", "MalformedSignature")
    alg = reader.text()
    raw = reader.string()
    if key.keytype in SK_KEY_TYPES:
        data = _sk_signed_data(key, reader, data)
    reader.end()
    public = _loaded(key)
    if key.keytype in (ED25519, SK_ED25519):
        if alg != key.keytype:
            raise reader.error(f"{alg!r} signature from an {key.keytype} key")
        if len(raw) != 64:
            raise reader.error("ed25519 signature must be 64 bytes")
        return PendingCheck(key, public, (raw, data))
    if key.keytype in _CURVES:
        if alg != key.keytype:
            raise reader.error(f"{alg!r} signature from an {key.keytype} key")
        inner = WireReader(raw, "ecdsa signature", "MalformedSignature")  # RFC 5656 §3.1.2
        r = inner.mpint()
        s = inner.mpint()
        inner.end()
        if s > _ORDERS[key.keytype] // 2:
            raise _fail("NonCanonicalSignature",
                        f"ecdsa signature by {key.fingerprint()} has a high s (> n/2): "
                        "the twin of a canonical signature; sign again (each ECDSA "
                        "signature is random), or use an ed25519 key")
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        return PendingCheck(key, public, (encode_dss_signature(r, s), data,
                                          _ecdsa(key.keytype)[1]))
    if alg == RSA:
        raise _fail("UnsupportedKeyType",
                    "ssh-rsa (SHA-1) signatures are refused; sign with rsa-sha2-512")
    if alg not in _RSA_SIG_HASHES:
        raise reader.error(f"{alg!r} signature from an {key.keytype} key")
    if len(raw) != (public.key_size + 7) // 8:
        raise reader.error("rsa signature is not modulus-sized")
    from cryptography.hazmat.primitives.asymmetric import padding

    return PendingCheck(key, public, (raw, data, padding.PKCS1v15(),
                                      _hash(_RSA_SIG_HASHES[alg])))


def verify(armored: bytes, message: bytes, keys: Iterable[PublicKey],
           namespace: str = "git") -> PublicKey:
    """Check an armoured SSHSIG over ``message``; return the trusted key that made it.

    The signature's embedded public key must equal one of ``keys`` byte for byte.
    Every failure is a ``TrustError`` whose ``reason`` says which check refused it.
    """
    return prepare(armored, message, keys, namespace).finish()


def prepare(armored: bytes, message: bytes, keys: Iterable[PublicKey],
            namespace: str = "git") -> PendingCheck:
    """``verify`` up to the signature arithmetic: every check that can refuse before it
    (armour, envelope, namespace, hash, trusted key, blob layout) is made here, in the
    order ``verify`` makes them; ``finish()`` on the result makes the last one."""
    sig = _parse(dearmor(armored))
    if sig.namespace != namespace.encode():
        raise _fail("WrongNamespace",
                    f"signature namespace {sig.namespace.decode(errors='replace')!r}, "
                    f"expected {namespace!r}")
    if sig.hash_alg not in _HASHES:
        raise _fail("UnsupportedHashAlgorithm",
                    f"hash algorithm {sig.hash_alg!r} is refused (use sha512)")
    trusted = {key.blob: key for key in keys}
    key = trusted.get(sig.key_blob)
    if key is None:
        claimed = PublicKey.from_blob(sig.key_blob, reason="MalformedSignature")
        raise _fail("UnknownSigner", f"signed by {claimed}, which is not a trusted key")
    return _prepare(key, sig.signature, _signed_data(sig.namespace, sig.hash_alg, message))


def ecdsa_high_s(armored: bytes) -> bool:
    """Whether an ECDSA signature has s > n/2, which ``verify`` refuses (others: False).

    ``ssh-keygen`` does not normalise s, so about half of its ECDSA signatures are
    high: tools use this to sign again before a device sees one.
    """
    sig = _parse(dearmor(armored))
    reader = WireReader(sig.signature, "signature blob", "MalformedSignature")
    alg = reader.text()
    raw = reader.string()
    if alg not in _ORDERS:
        return False
    inner = WireReader(raw, "ecdsa signature", "MalformedSignature")
    inner.mpint()
    return inner.mpint() > _ORDERS[alg] // 2


def signer_of(armored: bytes) -> PublicKey:
    """The public key a signature claims to be from (not verified: for messages only)."""
    return PublicKey.from_blob(_parse(dearmor(armored)).key_blob, reason="MalformedSignature")


@runtime_checkable
class Signer(Protocol):
    """Something that makes SSHSIG signatures without handing out a private key.

    ``giter_bundle.signing`` implements it over ``ssh-keygen -Y sign`` (ssh-agent,
    passphrase and FIDO keys); ``sign_with`` accepts it wherever a key file's key goes.
    """

    public: PublicKey

    def sign_sshsig(self, message: bytes, namespace: str) -> bytes:
        """The armoured SSHSIG over ``message``, as ``ssh-keygen -Y sign`` writes it."""
        ...


def public_key_of(private_key: PrivateKey | Signer) -> PublicKey:
    if isinstance(private_key, Signer):
        return private_key.public
    return PublicKey.from_cryptography(private_key.public_key())


def sign_with(key: PrivateKey | Signer, message: bytes, namespace: str = "git") -> bytes:
    """Armoured SSHSIG over ``message`` by an in-memory key or a ``Signer``."""
    if isinstance(key, Signer):
        return key.sign_sshsig(message, namespace)
    return sign(key, message, namespace)


def sign(private_key: PrivateKey, message: bytes, namespace: str = "git",
         hash_alg: str = "sha512") -> bytes:
    """Armoured SSHSIG over ``message``, laid out byte for byte as ``ssh-keygen -Y sign``."""
    if hash_alg not in _HASHES:
        raise ValueError(f"hash algorithm {hash_alg!r} is not supported")
    public = public_key_of(private_key)
    data = _signed_data(namespace.encode(), hash_alg, message)
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        inner = _string(ED25519.encode()) + _string(private_key.sign(data))
    else:
        inner = _sign_other(private_key, public, data)
    blob = (MAGIC + struct.pack(">I", VERSION) + _string(public.blob)
            + _string(namespace.encode()) + _string(b"") + _string(hash_alg.encode())
            + _string(inner))
    return armor(blob)


def _sign_other(private_key: Any, public: PublicKey, data: bytes) -> bytes:
    """The inner signature blob of an ECDSA or RSA key (their modules load here only)."""
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(private_key.sign(data, _ecdsa(public.keytype)[1]))
        order = _ORDERS[public.keytype]
        s = min(s, order - s)  # low-s: the one encoding verify() accepts
        return _string(public.keytype.encode()) + _string(_mpint(r) + _mpint(s))
    if isinstance(private_key, rsa.RSAPrivateKey):
        raw = private_key.sign(data, padding.PKCS1v15(), _hash("SHA512"))
        return _string(b"rsa-sha2-512") + _string(raw)
    raise TypeError(f"cannot sign with {type(private_key).__name__}")


def generate_ed25519() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()
