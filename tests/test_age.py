"""age files with ssh-ed25519 recipients: the real ``age`` tool is the oracle both ways.

What ``age -R key.pub`` writes, ``giter_agent.core.age`` opens with the private key; what
``giter_agent.core.age`` writes, ``age -d -i key`` opens. Every way a file can be unusable is a
typed ``AgeError`` with its own reason, and none of them quotes the plaintext.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from support.git import run, ssh_keygen

from giter_agent.core import age
from giter_agent.core.errors import ResourceError
from giter_agent.trust import devicekey, ssh_keyfile, sshsig

SECRET = b"correct horse battery staple"


def keypair(tmp: Path, name: str) -> tuple[object, sshsig.PublicKey, Path]:
    path = ssh_keygen(tmp / name)
    return (ssh_keyfile.load_private_key(path),
            sshsig.PublicKey.from_openssh(Path(f"{path}.pub").read_text()), path)


def age_encrypt(*recipient_files: Path, data: bytes = SECRET, armor: bool = True) -> bytes:
    args = ["age", *(["-a"] if armor else [])]
    for f in recipient_files:
        args += ["-R", f]
    return run(*args, input=data).stdout


def refused(data: bytes, key: object) -> age.AgeError:
    with pytest.raises(age.AgeError) as info:
        age.decrypt(data, key)
    assert SECRET.decode() not in str(info.value)
    return info.value


def test_what_the_age_tool_writes_the_device_opens(tmp_path):
    key, _, path = keypair(tmp_path, "dev")
    armored = age_encrypt(Path(f"{path}.pub"))
    assert armored.startswith(age.ARMOR_BEGIN.encode())
    assert age.decrypt(age.dearmor(armored), key) == SECRET
    assert age.decrypt(age_encrypt(Path(f"{path}.pub"), armor=False), key) == SECRET
    assert age.decrypt(age.dearmor(age_encrypt(Path(f"{path}.pub"), data=b"")), key) == b""


def test_the_agents_own_device_key_file_works_with_age_both_ways(tmp_path):
    key = devicekey.load_or_create(tmp_path / "device_key")
    pub = tmp_path / "device_key.pub"
    assert age.decrypt(age.dearmor(age_encrypt(pub)), key) == SECRET
    sealed = tmp_path / "sealed.age"
    sealed.write_text(age.armor(age.encrypt([sshsig.public_key_of(key)], SECRET)))
    assert run("age", "-d", "-i", tmp_path / "device_key", sealed).stdout == SECRET


def test_what_we_write_age_opens_for_each_recipient_and_no_one_else(tmp_path):
    _, pub_a, path_a = keypair(tmp_path, "a")
    _, pub_b, path_b = keypair(tmp_path, "b")
    key_c, _, path_c = keypair(tmp_path, "c")
    for size in (0, 1, 65535, age.MAX_PLAINTEXT_BYTES):
        data = os.urandom(size)
        sealed = tmp_path / f"s{size}.age"
        sealed.write_text(age.armor(age.encrypt([pub_a, pub_b], data)))
        for path in (path_a, path_b):
            assert run("age", "-d", "-i", path, sealed).stdout == data
    assert run("age", "-d", "-i", path_c, sealed, check=False).returncode != 0
    assert refused(age.dearmor(sealed.read_text()), key_c).reason == "NotARecipient"
    header = age.parse(age.dearmor(sealed.read_text()))
    assert header.tags() == [age.key_tag(pub_a.blob[-32:]), age.key_tag(pub_b.blob[-32:])]


def test_the_public_key_map_agrees_with_the_private_key_map(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    for _ in range(20):
        key = Ed25519PrivateKey.generate()
        raw = age.raw_public(key.public_key())
        assert age.ed25519_to_x25519_public(raw) == \
            age.raw_public(age._x25519_private(age.raw_private(key)).public_key())
    # y = 2 is not the y of any point on the curve; y = p is off the field.
    for bad in ((2).to_bytes(32, "little"), (2**255 - 19).to_bytes(32, "little")):
        with pytest.raises(age.AgeError) as info:
            age.encrypt([bad], SECRET)
        assert info.value.reason == "InvalidRecipient"


def test_every_unusable_file_is_refused_with_its_reason(tmp_path):
    key, pub, path = keypair(tmp_path, "dev")
    good = age.encrypt([pub], SECRET)
    header = age.parse(good)
    head_len = len(good) - len(header.payload)

    # A wrong MAC: one character of the MAC line changed.
    mac_at = good.index(b"\n--- ") + 5
    flipped = b"A" if good[mac_at:mac_at + 1] != b"A" else b"B"
    assert refused(good[:mac_at] + flipped + good[mac_at + 1:], key).reason in (
        "SecretCorrupt", "MalformedSecret")
    bad_mac = base64.b64encode(os.urandom(32)).rstrip(b"=")
    forged = good[:mac_at] + bad_mac + good[mac_at + 43:]
    assert refused(forged, key).reason == "SecretCorrupt"
    # Truncated: in the header, in the payload, and by a whole final chunk's tag.
    assert refused(good[:30], key).reason == "SecretTruncated"
    assert refused(good[:head_len + 10], key).reason == "SecretTruncated"
    assert refused(good[:-1], key).reason == "SecretCorrupt"
    assert refused(good[:-5] + bytes(5), key).reason == "SecretCorrupt"
    armored = age.armor(good)
    with pytest.raises(age.AgeError) as info:
        age.dearmor(armored.rsplit("\n", 2)[0])
    assert info.value.reason == "SecretTruncated"
    # An unknown stanza type, from the real tool: an X25519 recipient beside ours.
    identity = tmp_path / "x25519.txt"
    run("age-keygen", "-o", identity)
    x_recipient = run("age-keygen", "-y", identity).stdout.decode().strip()
    mixed = run("age", "-r", x_recipient, "-R", f"{path}.pub", input=SECRET).stdout
    assert refused(mixed, key).reason == "UnsupportedRecipient"
    # Oversized: the armour and the binary file are capped before any work.
    for big in (age.armor(bytes(age.MAX_FILE_BYTES + 1)), bytes(age.MAX_FILE_BYTES + 1)):
        with pytest.raises(age.AgeError) as info:
            age.decrypt(age.dearmor(big) if isinstance(big, str) else big, key)
        assert info.value.reason == "SecretTooLarge"
    with pytest.raises(age.AgeError) as info:
        age.encrypt([pub], bytes(age.MAX_PLAINTEXT_BYTES + 1))
    assert info.value.reason == "SecretTooLarge"
    # Headers that do not parse.
    for text in (b"not age at all\n", b"age-encryption.org/v1\n--- " + bad_mac + b"\n",
                 b"age-encryption.org/v1\n-> ssh-ed25519  x\n\n--- " + bad_mac + b"\n",
                 good.replace(b"-> ssh-ed25519", b"-> ssh-ed25519\x01", 1),
                 good[:head_len].replace(b"\n---", b"=\n---") + good[head_len:]):
        assert refused(text, key).reason == "MalformedSecret", text[:40]
    for text in ("hello", f"{age.ARMOR_BEGIN}\n!!!!\n{age.ARMOR_END}\n"):
        with pytest.raises(age.AgeError) as info:
            age.dearmor(text)
        assert info.value.reason == "MalformedSecret"
    # Every refusal is a ResourceError, so a resource holding it fails alone.
    assert issubclass(age.AgeError, ResourceError)
