"""Ed25519 keys from their raw bytes, without cryptography 38's OpenSSL backend.

cryptography before its Rust ed25519 (Debian 12's python3-cryptography 38, which
Raspberry Pi OS bookworm boards and the Debian package run) makes every ed25519 key
through ``cryptography.hazmat.backends.openssl.backend``, and importing that module
imports X.509 and the rest of the library: 24 ms of a sync of new commits on the
measuring machine, a fifth of it (docs/performance.md, "Ed25519 keys on Debian's
cryptography"). Later releases (pip's wheels, Debian 13) make them in Rust and never
import it.

``public_key`` and ``private_key`` return keys of cryptography's own
``Ed25519PublicKey`` and ``Ed25519PrivateKey`` classes either way. With a Rust release
they are cryptography's. Before it, they make the very OpenSSL calls the backend's
ed25519 keys make (``EVP_PKEY_new_raw_public_key``/``_private_key``, ``EVP_DigestVerify``,
``EVP_DigestSign``), through the OpenSSL binding the backend itself is built on; what
else is asked of such a key (an encoding other than raw) goes to a backend key made of
the same bytes. Any failure of a verification - a bad signature, a key OpenSSL refuses,
any error - is ``InvalidSignature``, with OpenSSL's error queue emptied.
"""

from __future__ import annotations

from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

KEY_BYTES = 32
SIGNATURE_BYTES = 64

_openssl: Any = None  # the binding's (ffi, lib), once looked for; False: not used


def _binding() -> Any:
    """(ffi, lib) when this cryptography makes ed25519 keys in its OpenSSL backend and
    the backend would (OpenSSL has a working ed25519 and is not in FIPS mode); None when
    cryptography's own keys are to be used."""
    global _openssl
    if _openssl is None:
        _openssl = False
        try:
            from cryptography.hazmat.bindings._rust import openssl as rust_openssl

            rust = hasattr(rust_openssl, "ed25519")
        except ImportError:
            rust = False
        if not rust:
            from cryptography.hazmat.bindings.openssl.binding import Binding

            binding = Binding()
            lib = binding.lib
            # The backend's own test (``ed25519_supported``): OpenSSL 1.1.1b or later,
            # not in FIPS mode.
            if not lib.CRYPTOGRAPHY_OPENSSL_LESS_THAN_111B and not _fips(binding.ffi, lib):
                _openssl = (binding.ffi, lib)
    return _openssl or None


def _fips(ffi: Any, lib: Any) -> bool:
    """Is OpenSSL in FIPS mode? Asked as the backend asks (``_is_fips_enabled``)."""
    if getattr(lib, "Cryptography_HAS_300_FIPS", False):
        mode = lib.EVP_default_properties_is_fips_enabled(ffi.NULL)
    else:
        mode = getattr(lib, "FIPS_mode", lambda: 0)()
    lib.ERR_clear_error()
    return bool(mode)


def public_key(raw: bytes) -> ed25519.Ed25519PublicKey:
    """The public key of 32 raw bytes (``Ed25519PublicKey.from_public_bytes``)."""
    openssl = _binding()
    if openssl is None or not isinstance(raw, bytes) or len(raw) != KEY_BYTES:
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    ffi, lib = openssl
    pkey = lib.EVP_PKEY_new_raw_public_key(lib.NID_ED25519, ffi.NULL, raw, len(raw))
    if pkey == ffi.NULL:
        lib.ERR_clear_error()
        raise ValueError("OpenSSL refused the ed25519 public key")
    return _PublicKey(raw, ffi.gc(pkey, lib.EVP_PKEY_free), openssl)


def private_key(seed: bytes) -> ed25519.Ed25519PrivateKey:
    """The private key of a 32-byte seed (``Ed25519PrivateKey.from_private_bytes``)."""
    openssl = _binding()
    if openssl is None or not isinstance(seed, bytes) or len(seed) != KEY_BYTES:
        return ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    ffi, lib = openssl
    pkey = lib.EVP_PKEY_new_raw_private_key(lib.NID_ED25519, ffi.NULL, ffi.from_buffer(seed),
                                            len(seed))
    if pkey == ffi.NULL:
        lib.ERR_clear_error()
        raise ValueError("OpenSSL refused the ed25519 private key")
    return _PrivateKey(ffi.gc(pkey, lib.EVP_PKEY_free), openssl)


def _raw_of(pkey: Any, openssl: Any, getter: str) -> bytes:
    """A key's 32 raw bytes, by ``EVP_PKEY_get_raw_public_key`` or ``..._private_key``."""
    ffi, lib = openssl
    buf = ffi.new("unsigned char []", KEY_BYTES)
    size = ffi.new("size_t *", KEY_BYTES)
    if getattr(lib, getter)(pkey, buf, size) != 1 or size[0] != KEY_BYTES:
        lib.ERR_clear_error()
        raise RuntimeError(f"OpenSSL could not give the ed25519 key's bytes ({getter})")
    return bytes(ffi.buffer(buf, KEY_BYTES))


def _is_raw(*choices: Any) -> bool:
    """Are all of ``choices`` (an encoding, a format) ``Raw``?"""
    return all(getattr(choice, "name", None) == "Raw" for choice in choices)


class _PublicKey(ed25519.Ed25519PublicKey):
    """An ed25519 public key held by OpenSSL through the binding (see the module)."""

    def __init__(self, raw: bytes, pkey: Any, openssl: Any) -> None:
        self._raw = raw
        self._pkey = pkey
        self._openssl = openssl

    def public_bytes_raw(self) -> bytes:
        return self._raw

    def public_bytes(self, encoding: Any, format: Any) -> bytes:
        if _is_raw(encoding, format):
            return self._raw
        backend_key = ed25519.Ed25519PublicKey.from_public_bytes(self._raw)
        return backend_key.public_bytes(encoding, format)

    def verify(self, signature: Any, data: Any) -> None:
        ffi, lib = self._openssl
        ctx = lib.EVP_MD_CTX_new()
        if ctx == ffi.NULL:
            lib.ERR_clear_error()
            raise InvalidSignature
        ctx = ffi.gc(ctx, lib.EVP_MD_CTX_free)
        if lib.EVP_DigestVerifyInit(ctx, ffi.NULL, ffi.NULL, ffi.NULL, self._pkey) != 1 \
                or lib.EVP_DigestVerify(ctx, signature, len(signature), data, len(data)) != 1:
            lib.ERR_clear_error()
            raise InvalidSignature

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ed25519.Ed25519PublicKey):
            return NotImplemented
        return ed25519_raw_of(other) == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __copy__(self) -> _PublicKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _PublicKey:
        return self


class _PrivateKey(ed25519.Ed25519PrivateKey):
    """An ed25519 private key held by OpenSSL through the binding (see the module)."""

    def __init__(self, pkey: Any, openssl: Any) -> None:
        self._pkey = pkey
        self._openssl = openssl

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return public_key(_raw_of(self._pkey, self._openssl, "EVP_PKEY_get_raw_public_key"))

    def sign(self, data: Any) -> bytes:
        ffi, lib = self._openssl
        ctx = lib.EVP_MD_CTX_new()
        if ctx == ffi.NULL:
            lib.ERR_clear_error()
            raise RuntimeError("OpenSSL could not make a signing context")
        ctx = ffi.gc(ctx, lib.EVP_MD_CTX_free)
        buf = ffi.new("unsigned char[]", SIGNATURE_BYTES)
        size = ffi.new("size_t *", SIGNATURE_BYTES)
        if lib.EVP_DigestSignInit(ctx, ffi.NULL, ffi.NULL, ffi.NULL, self._pkey) != 1 \
                or lib.EVP_DigestSign(ctx, buf, size, data, len(data)) != 1 \
                or size[0] != SIGNATURE_BYTES:
            lib.ERR_clear_error()
            raise RuntimeError("OpenSSL could not make an ed25519 signature")
        return bytes(ffi.buffer(buf, SIGNATURE_BYTES))

    def private_bytes_raw(self) -> bytes:
        return _raw_of(self._pkey, self._openssl, "EVP_PKEY_get_raw_private_key")

    def private_bytes(self, encoding: Any, format: Any,
                      encryption_algorithm: Any) -> bytes:
        seed = self.private_bytes_raw()
        if _is_raw(encoding, format) and type(encryption_algorithm).__name__ == "NoEncryption":
            return seed
        backend_key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        return backend_key.private_bytes(encoding, format, encryption_algorithm)

    def __copy__(self) -> _PrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _PrivateKey:
        return self


def ed25519_raw_of(key: ed25519.Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of any ed25519 public key (``public_bytes_raw`` where the key has
    it: cryptography 40 and later, and the keys made here)."""
    raw = getattr(key, "public_bytes_raw", None)
    if raw is not None:
        return bytes(raw())
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
