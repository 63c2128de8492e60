"""SSHSIG keys and signatures, allowed_signers files and the device key, against ssh-keygen.

Every verdict our ``sshsig.verify`` gives is asked of ``ssh-keygen -Y verify`` too; the
rows where ssh-keygen says yes and we say no are the malleations we refuse on purpose.
"""

from __future__ import annotations

import base64
import os
import stat
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from support.git import craft_sshsig, pub_line, run, ssh_keygen, write_allowed_signers

from giter_agent.core.errors import ConfigError, TrustError
from giter_agent.trust import allowed_signers, devicekey, ssh_keyfile, sshsig
from giter_agent.trust.sshsig import PublicKey

MESSAGE = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nhello\n"
KEY_SPECS = {"ed25519": ("ed25519", None), "ecdsa256": ("ecdsa", 256),
             "ecdsa384": ("ecdsa", 384), "rsa2048": ("rsa", 2048)}


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    made = {name: ssh_keygen(folder / name, kind, bits) for name, (kind, bits)
            in KEY_SPECS.items()}
    made["other"] = ssh_keygen(folder / "other")
    made["rsa1024"] = ssh_keygen(folder / "rsa1024", "rsa", 1024)
    return made


def public(key: Path) -> PublicKey:
    return PublicKey.from_openssh(Path(f"{key}.pub").read_text())


def ssh_keygen_verify(tmp_path: Path, armour: bytes, key: Path, message: bytes = MESSAGE,
                      namespace: str = "git") -> bool:
    """``ssh-keygen -Y verify`` with only ``key`` trusted."""
    sig = tmp_path / "check.sig"
    sig.write_bytes(armour)
    signers = write_allowed_signers(tmp_path / "check.signers", pub_line(key), options="")
    return run("ssh-keygen", "-Y", "verify", "-f", signers, "-I", "signer0", "-n", namespace,
               "-s", sig, check=False, input=message).returncode == 0


def ssh_keygen_sign(tmp_path: Path, key: Path, message: bytes = MESSAGE, *opts: str) -> bytes:
    path = tmp_path / "message"
    path.write_bytes(message)
    Path(f"{path}.sig").unlink(missing_ok=True)
    run("ssh-keygen", "-Y", "sign", "-q", "-f", key, "-n", "git", *opts, path)
    return Path(f"{path}.sig").read_bytes()


# --- keys -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", KEY_SPECS)
def test_public_key_matches_ssh_keygen(keys, name):
    key = public(keys[name])
    printed = run("ssh-keygen", "-l", "-E", "sha256", "-f", f"{keys[name]}.pub").stdout.split()
    assert key.fingerprint() == printed[1].decode()
    assert key.openssh() == pub_line(keys[name])
    assert key == PublicKey.from_blob(key.blob)
    assert key == sshsig.public_key_of(ssh_keyfile.load_private_key(keys[name]))


BAD_KEYS = [
    ("type does not match blob", lambda k: "ecdsa-sha2-nistp256 " + k.split()[1], "MalformedKey"),
    ("not base64", lambda k: "ssh-ed25519 AAAA!!!!", "MalformedKey"),
    ("trailing data in blob", lambda k: "ssh-ed25519 " + base64.b64encode(
        base64.b64decode(k.split()[1]) + b"\0").decode(), "MalformedKey"),
    ("short ed25519 key", lambda k: "ssh-ed25519 " + base64.b64encode(
        b"\0\0\0\x0bssh-ed25519\0\0\0\x04abcd").decode(), "MalformedKey"),
    ("dsa", lambda k: "ssh-dss " + base64.b64encode(b"\0\0\0\x07ssh-dss").decode(),
     "UnsupportedKeyType"),
    ("one field", lambda k: k.split()[0], "MalformedKey"),
]


@pytest.mark.parametrize("edit,reason", [(e, r) for _, e, r in BAD_KEYS],
                         ids=[n for n, _, _ in BAD_KEYS])
def test_malformed_public_keys(keys, edit, reason):
    with pytest.raises(TrustError) as caught:
        PublicKey.from_openssh(edit(pub_line(keys["ed25519"])))
    assert caught.value.reason == reason


def test_non_canonical_base64_key_is_refused(keys):
    kind, b64 = pub_line(keys["ecdsa256"]).split()
    assert b64.endswith("=") and not b64.endswith("==")  # two spare bits in the last char
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    bumped = alphabet[alphabet.index(b64[-2]) + 1]
    assert base64.b64decode(b64[:-2] + bumped + "=") == base64.b64decode(b64)
    with pytest.raises(TrustError):
        PublicKey.from_openssh(f"{kind} {b64[:-2]}{bumped}=")


def test_small_rsa_and_compressed_ecdsa_are_refused(keys):
    with pytest.raises(TrustError) as caught:
        public(keys["rsa1024"])
    assert caught.value.reason == "UnsupportedKeyType"
    blob = public(keys["ecdsa256"]).blob
    point = blob[-65:]
    compressed = bytes([2 + (point[-1] & 1)]) + point[1:33]
    reblob = blob[:-69] + struct.pack(">I", 33) + compressed
    with pytest.raises(TrustError):
        PublicKey.from_blob(reblob)


# --- signatures: both directions with ssh-keygen ------------------------------------------

def ssh_keygen_sign_low_s(tmp_path: Path, key: Path, message: bytes = MESSAGE) -> bytes:
    """ssh-keygen's signature, drawn again until s is low (about half of them are)."""
    for _ in range(64):
        armour = ssh_keygen_sign(tmp_path, key, message)
        if not sshsig.ecdsa_high_s(armour):
            return armour
    raise AssertionError("64 high-s signatures in a row")


def _ecdsa_twin(armour: bytes, order: int) -> bytes:
    """The same ECDSA signature with s -> n - s: valid too, with other bytes."""
    fields = _fields(sshsig.dearmor(armour))
    inner = _fields(b"\0" * 10 + fields[-1])[2:]  # [alg, mpints]
    mp = _fields(b"\0" * 10 + inner[1])[2:]       # [r, s]
    s = order - int.from_bytes(mp[1], "big")
    twin_s = s.to_bytes(s.bit_length() // 8 + 1, "big")
    inner_blob = _pack([b"", b"", inner[0], _pack([b"", b"", mp[0], twin_s])])
    return sshsig.armor(_pack([*fields[:-1], inner_blob]))


@pytest.mark.parametrize("name,order", [
    ("ecdsa256", 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551),
    ("ecdsa384", int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
                     "581A0DB248B0A77AECEC196ACCC52973", 16))])
def test_ecdsa_twin_of_a_real_signature_is_refused(tmp_path, keys, name, order):
    """ssh-keygen takes both (r, s) and (r, n - s); we take only the low one."""
    armour = ssh_keygen_sign_low_s(tmp_path, keys[name])
    twin = _ecdsa_twin(armour, order)
    assert twin != armour and sshsig.ecdsa_high_s(twin)
    assert ssh_keygen_verify(tmp_path, armour, keys[name])
    assert ssh_keygen_verify(tmp_path, twin, keys[name])  # a second valid encoding
    assert sshsig.verify(armour, MESSAGE, [public(keys[name])]) == public(keys[name])
    with pytest.raises(TrustError) as caught:
        sshsig.verify(twin, MESSAGE, [public(keys[name])])
    assert caught.value.reason == "NonCanonicalSignature"


@pytest.mark.parametrize("name", ["ecdsa256", "ecdsa384"])
def test_our_ecdsa_signatures_are_low_s(keys, name):
    key = ssh_keyfile.load_private_key(keys[name])
    for i in range(24):  # a high s would turn up about every other time
        armour = sshsig.sign(key, MESSAGE + bytes([i]))
        assert not sshsig.ecdsa_high_s(armour)
        sshsig.verify(armour, MESSAGE + bytes([i]), [public(keys[name])])


@pytest.mark.parametrize("name", KEY_SPECS)
def test_ssh_keygen_signatures_verify(tmp_path, keys, name):
    armour = ssh_keygen_sign_low_s(tmp_path, keys[name])
    assert sshsig.verify(armour, MESSAGE, [public(keys["other"]), public(keys[name])]) == \
        public(keys[name])


@pytest.mark.parametrize("name", KEY_SPECS)
def test_our_signatures_verify_with_ssh_keygen(tmp_path, keys, name):
    armour = sshsig.sign(ssh_keyfile.load_private_key(keys[name]), MESSAGE)
    assert ssh_keygen_verify(tmp_path, armour, keys[name])
    assert sshsig.verify(armour, MESSAGE, [public(keys[name])]) == public(keys[name])


def test_ed25519_signature_is_byte_identical_to_ssh_keygen(tmp_path, keys):
    ours = sshsig.sign(ssh_keyfile.load_private_key(keys["ed25519"]), MESSAGE)
    assert ours == ssh_keygen_sign(tmp_path, keys["ed25519"])
    ours256 = sshsig.sign(ssh_keyfile.load_private_key(keys["ed25519"]), MESSAGE, hash_alg="sha256")
    assert ours256 == ssh_keygen_sign(tmp_path, keys["ed25519"], MESSAGE, "-O", "hashalg=sha256")


def test_armour_width_edge(keys):
    """A blob whose base64 is a whole number of lines gets no empty line, like ssh-keygen."""
    blob = b"x" * 105  # 140 base64 characters: exactly two lines of 70
    armour = sshsig.armor(blob)
    assert armour.split(b"\n")[1:4] == [base64.b64encode(blob)[:70],
                                         base64.b64encode(blob)[70:], sshsig.END]
    assert sshsig.dearmor(armour) == blob


def test_sign_refuses_unknown_hash(keys):
    with pytest.raises(ValueError):
        sshsig.sign(ssh_keyfile.load_private_key(keys["ed25519"]), MESSAGE, hash_alg="md5")


# --- the verdict table ------------------------------------------------------------------

def _fields(blob: bytes) -> list[bytes]:
    out, pos = [blob[:6], blob[6:10]], 10
    while pos < len(blob):
        (n,) = struct.unpack(">I", blob[pos:pos + 4])
        out.append(blob[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def _pack(fields: list[bytes]) -> bytes:
    return fields[0] + fields[1] + b"".join(struct.pack(">I", len(f)) + f for f in fields[2:])


def _ed(k):
    return ssh_keyfile.load_private_key(k["ed25519"])


def _rewrap(armour: bytes, width: int) -> bytes:
    b64 = base64.b64encode(sshsig.dearmor(armour))
    body = b"\n".join(b64[i:i + width] for i in range(0, len(b64), width))
    return sshsig.BEGIN + b"\n" + body + b"\n" + sshsig.END + b"\n"


def _non_canonical_b64(armour: bytes) -> bytes:
    lines = armour.split(b"\n")
    last = lines[-3].rstrip(b"=")
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    bumped = alphabet[alphabet.index(last[-1:]) + 1:alphabet.index(last[-1:]) + 2]
    lines[-3] = last[:-1] + bumped + lines[-3][len(last):]
    return b"\n".join(lines)


def _ecdsa_padded_r(k) -> bytes:
    fields = _fields(sshsig.dearmor(sshsig.sign(ssh_keyfile.load_private_key(k["ecdsa256"]),
                                                MESSAGE)))
    inner = _fields(b"\0" * 10 + fields[-1])[2:]  # [alg, mpints]
    mp = _fields(b"\0" * 10 + inner[1])[2:]       # [r, s]
    r = b"\0" + mp[0] if not mp[0][0] & 0x80 else b"\0\0" + mp[0][1:]
    inner_blob = _pack([b"", b"", inner[0], _pack([b"", b"", r, mp[1]])])
    return sshsig.armor(_pack([*fields[:-1], inner_blob]))


def _with_inner(armour: bytes, edit) -> bytes:
    fields = _fields(sshsig.dearmor(armour))
    return sshsig.armor(_pack([*fields[:-1], edit(fields[-1])]))


def _dsa_signer(armour: bytes) -> bytes:
    fields = _fields(sshsig.dearmor(armour))
    fields[2] = b"\0\0\0\x07ssh-dss" + b"\0" * 20
    return sshsig.armor(_pack(fields))


# (name, make armour from keys, key that must be trusted, reason or None, ssh-keygen verdict)
VERDICTS = [
    ("good", lambda k: sshsig.sign(_ed(k), MESSAGE), "ed25519", None, True),
    ("rsa-sha2-256", lambda k: craft_sshsig(ssh_keyfile.load_private_key(k["rsa2048"]), MESSAGE,
                                            sig_alg=b"rsa-sha2-256", rsa_hash=hashes.SHA256()),
     "rsa2048", None, True),
    ("wrong namespace", lambda k: sshsig.sign(_ed(k), MESSAGE, namespace="file"), "ed25519",
     "WrongNamespace", False),
    ("unknown signer", lambda k: sshsig.sign(ssh_keyfile.load_private_key(k["other"]), MESSAGE),
     "ed25519", "UnknownSigner", False),
    ("other message", lambda k: sshsig.sign(_ed(k), MESSAGE + b"!"), "ed25519",
     "BadSignature", False),
    ("hash md5", lambda k: craft_sshsig(_ed(k), MESSAGE, hash_alg=b"md5"), "ed25519",
     "UnsupportedHashAlgorithm", False),
    ("hash sha1", lambda k: craft_sshsig(_ed(k), MESSAGE, hash_alg=b"sha1"), "ed25519",
     "UnsupportedHashAlgorithm", False),
    ("hash sha384", lambda k: craft_sshsig(_ed(k), MESSAGE, hash_alg=b"sha384"), "ed25519",
     "UnsupportedHashAlgorithm", False),
    ("rsa with SHA-1 (ssh-rsa)", lambda k: craft_sshsig(
        ssh_keyfile.load_private_key(k["rsa2048"]), MESSAGE, sig_alg=b"ssh-rsa",
        rsa_hash=hashes.SHA1()), "rsa2048", "UnsupportedKeyType", False),
    ("dsa signer", lambda k: _dsa_signer(sshsig.sign(_ed(k), MESSAGE)), "ed25519",
     "UnsupportedKeyType", False),
    ("version 2", lambda k: craft_sshsig(_ed(k), MESSAGE, version=2), "ed25519",
     "MalformedSignature", False),
    ("reserved field used", lambda k: craft_sshsig(_ed(k), MESSAGE, reserved=b"x"), "ed25519",
     "MalformedSignature", False),
    ("signature type differs from key", lambda k: craft_sshsig(
        _ed(k), MESSAGE, sig_alg=b"ecdsa-sha2-nistp256"), "ed25519", "MalformedSignature",
     False),
    ("trailing bytes in blob", lambda k: sshsig.armor(
        sshsig.dearmor(sshsig.sign(_ed(k), MESSAGE)) + b"\0\0\0\0"), "ed25519",
     "MalformedSignature", False),
    ("trailing bytes in inner signature", lambda k: _with_inner(
        sshsig.sign(_ed(k), MESSAGE), lambda inner: inner + b"xx"), "ed25519",
     "MalformedSignature", False),
    ("truncated", lambda k: sshsig.armor(sshsig.dearmor(sshsig.sign(_ed(k), MESSAGE))[:-5]),
     "ed25519", "MalformedSignature", False),
    ("CRLF armour", lambda k: sshsig.sign(_ed(k), MESSAGE).replace(b"\n", b"\r\n"), "ed25519",
     "MalformedSignature", False),
    ("non-canonical base64", lambda k: _non_canonical_b64(sshsig.sign(_ed(k), MESSAGE)),
     "ed25519", "MalformedSignature", False),
    ("text before armour", lambda k: b"x\n" + sshsig.sign(_ed(k), MESSAGE), "ed25519",
     "MalformedSignature", False),
    # ssh-keygen accepts these: each is a second encoding of the same signature.
    ("text after armour", lambda k: sshsig.sign(_ed(k), MESSAGE) + b"junk\n", "ed25519",
     "MalformedSignature", True),
    ("re-wrapped at 64", lambda k: _rewrap(sshsig.sign(_ed(k), MESSAGE), 64), "ed25519",
     "MalformedSignature", True),
    ("one long line", lambda k: _rewrap(sshsig.sign(_ed(k), MESSAGE), 1000), "ed25519",
     "MalformedSignature", True),
    ("no final newline", lambda k: sshsig.sign(_ed(k), MESSAGE)[:-1], "ed25519",
     "MalformedSignature", True),
    ("ecdsa r with a spare zero byte", _ecdsa_padded_r, "ecdsa256", "MalformedSignature",
     True),
]


@pytest.mark.parametrize("make,trusted,reason,keygen_accepts",
                         [row[1:] for row in VERDICTS], ids=[row[0] for row in VERDICTS])
def test_verdicts_agree_with_ssh_keygen(tmp_path, keys, make, trusted, reason, keygen_accepts):
    armour = make(keys)
    assert ssh_keygen_verify(tmp_path, armour, keys[trusted]) is keygen_accepts
    if reason is None:
        assert sshsig.verify(armour, MESSAGE, [public(keys[trusted])]) == public(keys[trusted])
        return
    with pytest.raises(TrustError) as caught:
        sshsig.verify(armour, MESSAGE, [public(keys[trusted])])
    assert caught.value.reason == reason, caught.value


def test_no_trusted_keys_trusts_nothing(keys):
    with pytest.raises(TrustError) as caught:
        sshsig.verify(sshsig.sign(_ed(keys), MESSAGE), MESSAGE, [])
    assert caught.value.reason == "UnknownSigner"


# --- allowed_signers ----------------------------------------------------------------------

def test_allowed_signers_format(keys):
    ed, ec = pub_line(keys["ed25519"]), pub_line(keys["ecdsa256"])
    rsa_line, other = pub_line(keys["rsa2048"]), pub_line(keys["other"])
    text = (
        "# fleet signers\n"
        "\n"
        f"ops@example.invalid,ci@example.invalid {ed} laptop key\n"
        f'  "quoted principal" namespaces="git,file",valid-after="20240101" {ec}\n'
        f'backup namespaces="file" {rsa_line}\n'
        f'star namespaces="*,!file",valid-before=20200101Z {other}\n'
        f"ops@example.invalid {ed}\n"
    )
    entries = allowed_signers.parse(text)
    assert [e.line for e in entries] == [3, 4, 5, 6, 7]
    assert entries[0].principals == ("ops@example.invalid", "ci@example.invalid")
    assert entries[1].principals == ("quoted principal",)
    assert entries[1].namespaces == ("git", "file")
    git_keys = allowed_signers.keys_for(entries)
    # rsa is file-only; the duplicated ed25519 key counts once; expired "star" is still in.
    assert git_keys == (public(keys["ed25519"]), public(keys["ecdsa256"]),
                        public(keys["other"]))
    assert allowed_signers.keys_for(entries, "file") == (
        public(keys["ed25519"]), public(keys["ecdsa256"]), public(keys["rsa2048"]))


def test_allowed_signers_agree_with_ssh_keygen_on_namespaces(tmp_path, keys):
    armour = sshsig.sign(_ed(keys), MESSAGE)
    (tmp_path / "m.sig").write_bytes(armour)
    for options, trusted in [('namespaces="git"', True), ('namespaces="file"', False),
                             ('namespaces="*,!file"', True), ('namespaces="g?t"', True),
                             ('namespaces="*,!git"', False), ("", True)]:
        path = write_allowed_signers(tmp_path / "s", pub_line(keys["ed25519"]), options=options)
        ours = allowed_signers.load(path) == (public(keys["ed25519"]),)
        theirs = run("ssh-keygen", "-Y", "verify", "-f", path, "-I", "signer0", "-n", "git",
                     "-s", tmp_path / "m.sig", input=MESSAGE, check=False).returncode == 0
        assert ours is trusted is theirs, options


BAD_LINES = [
    ("principal only", "ops"),
    ("no key", "ops namespaces=\"git\""),
    ("bad base64", "ops ssh-ed25519 AAAA****"),
    ("type mismatch", "ops ecdsa-sha2-nistp256 {ed}"),
    ("cert-authority", "ops cert-authority {key}"),
    ("unknown option", "ops no-touch-required {key}"),
    ("unterminated quote", 'ops namespaces="git {key}'),
    ("empty namespaces", "ops namespaces=\"\" {key}"),
    ("duplicate option", 'ops namespaces="git",namespaces="file" {key}'),
    ("bad valid-before", "ops valid-before=yesterday {key}"),
    ("unsupported key type", "ops ssh-dss AAAAB3NzaC1kc3M="),
]


@pytest.mark.parametrize("line", [line for _, line in BAD_LINES],
                         ids=[name for name, _ in BAD_LINES])
def test_malformed_allowed_signers_lines(keys, line):
    key = pub_line(keys["ed25519"])
    text = f"# header\nok {key}\n" + line.format(key=key, ed=key.split()[1]) + "\n"
    with pytest.raises(TrustError) as caught:
        allowed_signers.parse(text, "signers")
    assert caught.value.reason == "InvalidTrustFile"
    assert "signers:3:" in str(caught.value)


def test_allowed_signers_file_limits(tmp_path):
    with pytest.raises(TrustError):
        allowed_signers.parse(b"\xff\xfe")
    with pytest.raises(TrustError):
        allowed_signers.parse(b"#" * (allowed_signers.MAX_TRUST_FILE_BYTES + 1))
    with pytest.raises(TrustError) as caught:
        allowed_signers.load(tmp_path / "absent")
    assert caught.value.reason == "InvalidTrustFile"


# --- the device key -----------------------------------------------------------------------

def test_device_key_is_created_once_with_mode_0600(tmp_path):
    path = tmp_path / "state" / "device_ed25519"
    key = devicekey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # private_bytes_raw() is cryptography >= 40; the floor (Debian's 38, armhf) has this.
    raw = (serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
           serialization.NoEncryption())
    assert devicekey.load_or_create(path).private_bytes(*raw) == key.private_bytes(*raw)
    assert sorted(p.name for p in path.parent.iterdir()) == ["device_ed25519",
                                                              "device_ed25519.pub"]
    derived = run("ssh-keygen", "-y", "-f", path).stdout.decode().split()[:2]
    assert path.with_name("device_ed25519.pub").read_text().split()[:2] == derived


def test_device_key_signs_what_ssh_keygen_accepts(tmp_path):
    key = devicekey.load_or_create(tmp_path / "k")
    line = devicekey.allowed_signers_line(key, "device-7")
    assert line.startswith('device-7 namespaces="git" ssh-ed25519 AAAA')
    signers = tmp_path / "signers"
    signers.write_text(line + "\n")
    (tmp_path / "m.sig").write_bytes(sshsig.sign(key, MESSAGE))
    run("ssh-keygen", "-Y", "verify", "-f", signers, "-I", "device-7", "-n", "git",
        "-s", tmp_path / "m.sig", input=MESSAGE)
    assert allowed_signers.load(signers) == (sshsig.public_key_of(key),)


def test_device_key_refusals(tmp_path, keys):
    key = devicekey.load_or_create(tmp_path / "k")
    with pytest.raises(ConfigError):
        devicekey.allowed_signers_line(key, "two words")
    os.chmod(tmp_path / "k", 0o644)
    with pytest.raises(ConfigError):
        devicekey.load_or_create(tmp_path / "k")
    with pytest.raises(ConfigError):
        devicekey.load_or_create(keys["ecdsa256"])  # not ed25519
    (tmp_path / "junk").write_text("junk")
    os.chmod(tmp_path / "junk", 0o600)
    with pytest.raises(ConfigError):
        devicekey.load_or_create(tmp_path / "junk")


def test_private_key_round_trip(tmp_path):
    key = sshsig.generate_ed25519()
    path = tmp_path / "id"
    path.write_bytes(ssh_keyfile.private_key_openssh_bytes(key))
    path.chmod(0o600)
    assert sshsig.public_key_of(ssh_keyfile.load_private_key(path)) == sshsig.public_key_of(key)
    assert run("ssh-keygen", "-y", "-f", path).stdout.decode().split()[:2] == \
        sshsig.public_key_of(key).openssh().split()
