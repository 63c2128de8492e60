"""Reading OpenSSH private key files (``ssh_keyfile.load_private_key``), with ssh-keygen as oracle.

An unencrypted ed25519 key is read by the project's own strict reader of the
``openssh-key-v1`` format (no serialization package); ECDSA and RSA keys go through
``cryptography``'s loader. Every tampered file is a one-line ``KeyFileError`` that names
the check and never the key's bytes.
"""

from __future__ import annotations

import base64
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from support.git import run, ssh_keygen

from giter_agent.core.errors import ConfigError, KeyFileError
from giter_agent.trust import devicekey, ssh_keyfile, sshsig

BEGIN = b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
END = b"-----END OPENSSH PRIVATE KEY-----\n"
MESSAGE = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nstatus\n"


def _s(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _raw_public(seed: bytes) -> bytes:
    return sshsig.PublicKey.from_cryptography(
        ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()).blob[-32:]


def key_file(seed: bytes, *, comment: bytes = b"", checks: tuple[int, int] = (7, 7),
             public: bytes | None = None, inner_public: bytes | None = None,
             pair_public: bytes | None = None, padding: bytes | None = None,
             count: int = 1, kdf_options: bytes = b"", cipher: bytes = b"none") -> bytes:
    """An ``openssh-key-v1`` file laid out as ssh-keygen writes it, with one part swapped."""
    raw = _raw_public(seed)
    blob = _s(b"ssh-ed25519") + _s(public if public is not None else raw)
    private = (struct.pack(">II", *checks) + _s(b"ssh-ed25519")
               + _s(inner_public if inner_public is not None else raw)
               + _s(seed + (pair_public if pair_public is not None else raw)) + _s(comment))
    if padding is None:
        padding = bytes(range(1, 1 + (-len(private)) % 8))
    private += padding
    data = (b"openssh-key-v1\0" + _s(cipher) + _s(b"none") + _s(kdf_options)
            + struct.pack(">I", count) + _s(blob) + _s(private))
    text = base64.b64encode(data)
    return BEGIN + b"\n".join(text[i:i + 70] for i in range(0, len(text), 70)) + b"\n" + END


def keygen_y(path: Path) -> str:
    """The public key ``ssh-keygen -y`` derives from a private key file."""
    return " ".join(run("ssh-keygen", "-y", "-f", path).stdout.decode().split()[:2])


@pytest.mark.parametrize("comment", ["", "pi-01 device key", "ops@example.invalid"])
def test_keys_ssh_keygen_makes_are_read_by_the_strict_reader(tmp_path, comment):
    path = tmp_path / "id"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path)
    key = ssh_keyfile.read_openssh_ed25519(path.read_bytes())
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert sshsig.public_key_of(key).openssh() == keygen_y(path)
    assert sshsig.public_key_of(ssh_keyfile.load_private_key(path)).openssh() == keygen_y(path)
    # And it signs: ssh-keygen verifies what the key read here signed.
    signers = tmp_path / "signers"
    signers.write_text(f'dev namespaces="git" {keygen_y(path)}\n')
    (tmp_path / "m.sig").write_bytes(sshsig.sign(key, MESSAGE))
    run("ssh-keygen", "-Y", "verify", "-f", signers, "-I", "dev", "-n", "git",
        "-s", tmp_path / "m.sig", input=MESSAGE)


def test_keys_the_project_writes_are_read_back_and_by_ssh_keygen(tmp_path):
    for _ in range(4):  # the check-ints and the comment's padding vary with each key
        key = sshsig.generate_ed25519()
        data = ssh_keyfile.private_key_openssh_bytes(key)
        read = ssh_keyfile.read_openssh_ed25519(data)
        assert read is not None
        assert sshsig.public_key_of(read) == sshsig.public_key_of(key)
        path = tmp_path / "id"
        path.write_bytes(data)
        path.chmod(0o600)
        assert keygen_y(path) == sshsig.public_key_of(key).openssh()
    # The device key too: written once, its .pub what ssh-keygen derives.
    device = devicekey.load_or_create(tmp_path / "state" / "device_ed25519")
    assert keygen_y(tmp_path / "state" / "device_ed25519") == \
        sshsig.public_key_of(device).openssh()
    # And the test's own builder lays the file out as ssh-keygen reads it.
    seed = bytes(range(32))
    (tmp_path / "built").write_bytes(key_file(seed, comment=b"built"))
    (tmp_path / "built").chmod(0o600)
    assert keygen_y(tmp_path / "built").split()[1] == base64.b64encode(
        _s(b"ssh-ed25519") + _s(_raw_public(seed))).decode()


def test_other_key_types_still_load_through_cryptography(tmp_path):
    for kind, bits, cls in (("ecdsa", 256, ec.EllipticCurvePrivateKey),
                            ("rsa", 2048, rsa.RSAPrivateKey)):
        path = ssh_keygen(tmp_path / kind, kind, bits)
        assert ssh_keyfile.read_openssh_ed25519(path.read_bytes()) is None
        key = ssh_keyfile.load_private_key(path)
        assert isinstance(key, cls)
        assert sshsig.public_key_of(key).openssh() == keygen_y(path)
        with pytest.raises(KeyFileError, match="must be ed25519"):
            devicekey.load_or_create(path)


SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
OTHER = _raw_public(bytes(32))

TAMPERED: dict[str, Callable[[], bytes]] = {
    "check-ints differ": lambda: key_file(SEED, checks=(7, 8)),
    "wrong public half (outer)": lambda: key_file(SEED, public=OTHER),
    "wrong public half (inner)": lambda: key_file(SEED, inner_public=OTHER),
    "wrong public half (key pair)": lambda: key_file(SEED, pair_public=OTHER),
    # All three copies agree with each other, not with the seed: cryptography's loader
    # takes this file and signs with a key whose public half is not the one it shows.
    "consistent but not the seed's": lambda: key_file(
        SEED, public=OTHER, inner_public=OTHER, pair_public=OTHER),
    # Without a comment the private section is 131 bytes: 5 bytes of padding (or 13).
    "padding not 1,2,3": lambda: key_file(SEED, padding=b"\x01\x02\x03\x04\x06"),
    "a whole spare block of padding": lambda: key_file(SEED, padding=bytes(range(1, 14))),
    "not whole blocks": lambda: key_file(SEED, padding=b"\x01\x02"),
    "two keys": lambda: key_file(SEED, count=2),
    "kdf options without a kdf": lambda: key_file(SEED, kdf_options=b"salt"),
    "not base64": lambda: key_file(SEED).replace(b"AAAA", b"AA*A", 1),
    "not openssh-key-v1": lambda: BEGIN + base64.b64encode(b"openssh-key-v2\0" + 40 * b"x")
    + b"\n" + END,
    "truncated": lambda: (lambda t: t[:len(t) // 2] + b"\n" + END)(key_file(SEED)),
    "truncated, no end line": lambda: key_file(SEED)[:120],
    "unknown cipher": lambda: key_file(SEED, cipher=b"rot13"),
}


def _secret_forms(seed: bytes) -> list[bytes]:
    return [seed.hex().encode(), base64.b64encode(seed)[:20], base64.b64encode(seed[1:])[:20]]


@pytest.mark.parametrize("name", list(TAMPERED))
def test_a_tampered_key_file_is_a_one_line_error_without_key_material(tmp_path, name):
    path = tmp_path / "device_ed25519"
    data = TAMPERED[name]()
    path.write_bytes(data)
    path.chmod(0o600)
    for load in (ssh_keyfile.load_private_key, devicekey.load_or_create):
        with pytest.raises(KeyFileError) as caught:
            load(path)
        message = str(caught.value)
        assert isinstance(caught.value, ConfigError)
        assert caught.value.reason == "MalformedKeyFile"
        assert "\n" not in message and message.startswith(f"{path}: ")
        body = b"".join(data.splitlines()[1:-1])
        for secret in [*_secret_forms(SEED), *(body[i:i + 16] for i in range(0, len(body), 16))]:
            assert secret.decode(errors="replace") not in message, (name, message)
    assert path.read_bytes() == data  # a bad key is reported, never replaced


def test_encrypted_and_foreign_key_files_are_refused_as_device_keys(tmp_path):
    encrypted = tmp_path / "encrypted"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-C", "", "-f", encrypted)
    with pytest.raises(KeyFileError, match="password-protected") as caught:
        devicekey.load_or_create(encrypted)
    assert "\n" not in str(caught.value)
    pkcs8 = tmp_path / "pkcs8"  # an ed25519 key, in another file format
    pkcs8.write_bytes(sshsig.generate_ed25519().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    pkcs8.chmod(0o600)
    with pytest.raises(KeyFileError):
        devicekey.load_or_create(pkcs8)
    rsa_key = ssh_keygen(tmp_path / "rsa", "rsa", 2048)
    with pytest.raises(KeyFileError, match="must be ed25519"):
        devicekey.load_or_create(rsa_key)


def test_reading_a_device_key_loads_no_serialization_package(tmp_path):
    """The device key is read and its public half encoded without ``cryptography``'s
    serialization package (every key format and cipher: the bulk of a sync's key cost)."""
    if not hasattr(ed25519.Ed25519PublicKey, "public_bytes_raw"):
        pytest.skip("cryptography < 40 encodes a raw public key only through serialization")
    path = tmp_path / "k" / "device_ed25519"
    devicekey.load_or_create(path)
    script = ("import sys\nfrom pathlib import Path\n"
              "from giter_agent.trust import devicekey, sshsig\n"
              "key = devicekey.load_or_create(Path(sys.argv[1]))\n"
              "print(devicekey.allowed_signers_line(key, 'pi'))\n"
              "print(sorted(m for m in sys.modules if m.startswith('cryptography.hazmat."
              "primitives.serialization')))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script, str(path)], check=True,
                         capture_output=True, text=True, env=env).stdout.splitlines()
    assert out[0].split()[-1] == keygen_y(path).split()[1]
    assert out[1] == "[]"
