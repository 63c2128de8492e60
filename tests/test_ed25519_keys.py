"""giter_agent.trust.ed25519_keys: keys that sign and verify exactly as cryptography's,
and, on a cryptography without its Rust ed25519 (Debian 12's 38, run by the system's
python3 as the Debian package runs it), without importing the OpenSSL backend."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from giter_agent.trust import ed25519_keys

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"

# Run by the system's interpreter against its own (Debian's) cryptography: the keys made
# through the binding must do what the backend's do, byte for byte, and never import it
# until the reference keys are made at the end.
DIFFERENTIAL = r'''
import os, sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from giter_agent.trust import ed25519_keys as k

BACKEND = "cryptography.hazmat.backends.openssl.backend"
assert k._binding() is not None, "the binding is not used"
cases = []
for i in range(64):
    seed, message = os.urandom(32), os.urandom(i * 7)
    ours = k.private_key(seed)
    public = ours.public_key()
    raw = k.ed25519_raw_of(public)
    signature = ours.sign(message)
    verifier = k.public_key(raw)
    verifier.verify(signature, message)
    bad_sig = bytearray(signature); bad_sig[i % 64] ^= 1 << (i % 8)
    bad_msg = message + b"x"
    refused = []
    for sig, msg in ((bytes(bad_sig), message), (signature, bad_msg), (signature[:63], message),
                     (signature + b"\0", message), (b"", message), (bytes(64), message)):
        try:
            verifier.verify(sig, msg)
            refused.append(False)
        except InvalidSignature:
            refused.append(True)
    assert all(refused), refused
    assert ours.private_bytes_raw() == seed
    cases.append((seed, message, raw, signature))
assert BACKEND not in sys.modules, "the backend was imported"

for seed, message, raw, signature in cases:  # the backend's own keys, for reference
    reference = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    assert reference.sign(message) == signature
    assert k.ed25519_raw_of(reference.public_key()) == raw
    ed25519.Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
    assert isinstance(k.public_key(raw), ed25519.Ed25519PublicKey)
try:
    k.public_key(bytes(31))
    raise AssertionError("a 31-byte key was taken")
except ValueError:
    pass
print("ok", len(cases))
'''


def _system_cryptography_without_rust_ed25519() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    # Exit 0: cryptography is there and has no Rust ed25519 (its _rust has no openssl).
    probe = ("import importlib.util, sys\n"
             "if importlib.util.find_spec('cryptography') is None: sys.exit(1)\n"
             "try:\n    from cryptography.hazmat.bindings._rust import openssl\n"
             "except ImportError:\n    sys.exit(0)\n"
             "sys.exit(0 if not hasattr(openssl, 'ed25519') else 1)\n")
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0


@pytest.mark.skipif(not _system_cryptography_without_rust_ed25519(),
                    reason="needs /usr/bin/python3 with Debian 12's python3-cryptography "
                    "(scripts/test installs it)")
def test_keys_through_the_binding_are_the_backends_keys(tmp_path):
    private = tmp_path / "private"
    private.mkdir()
    (private / "giter_agent").symlink_to(ROOT / "agent")
    out = subprocess.run([SYSTEM_PYTHON, "-c", DIFFERENTIAL], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(private)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "64"]


def _rust_ed25519() -> bool:
    try:
        from cryptography.hazmat.bindings._rust import openssl
    except ImportError:
        return False
    return hasattr(openssl, "ed25519")


def test_keys_sign_and_verify_with_the_cryptography_at_hand():
    # pip's cryptography (the development environment) makes ed25519 keys in Rust: they
    # are its own. Debian's 38 (the emulated armhf board's suite) does not: they are ours.
    seed = bytes(range(32))
    key = ed25519_keys.private_key(seed)
    rust = _rust_ed25519()
    assert (ed25519_keys._binding() is None) == rust
    assert (type(key) is type(ed25519.Ed25519PrivateKey.from_private_bytes(seed))) == rust
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    public = ed25519_keys.public_key(ed25519_keys.ed25519_raw_of(key.public_key()))
    public.verify(key.sign(b"status"), b"status")
    with pytest.raises(InvalidSignature):
        public.verify(key.sign(b"status"), b"statuS")
