"""The Secret kind: decrypted in memory with the device's key, written only to its path.

A recipient writes the value (mode 0600 by default); a device that is not one, or a
ciphertext that is altered, truncated, oversized or of another recipient type, fails that
resource alone: the value written before stays and the rest of the spec applies. Status,
messages and drift notes never carry the value or a digest of it.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd

import pytest
from gpiozero.pins.mock import MockFactory
from support.kinds import doc, make_ctx, ready, specset

from giter_agent.core import age
from giter_agent.kinds import builtin_kinds
from giter_agent.reconcile.engine import reconcile
from giter_agent.reconcile.plan import plan
from giter_agent.state.records import ResourceRecord
from giter_agent.trust import sshsig

VALUE = b"wifi-psk: s3cret-Passw0rd\n"


@pytest.fixture
def keys():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


def sealed(value: bytes, *private_keys) -> str:
    return age.armor(age.encrypt([sshsig.public_key_of(k) for k in private_keys], value))


def secret_doc(name: str, path, ciphertext: str, **spec) -> bytes:
    return doc("Secret", name, {"path": str(path), "ciphertext": ciphertext, **spec})


def file_doc(path, text: str) -> bytes:
    return doc("File", "plain", {"path": str(path), "content": text})


def device_ctx(tmp_path, key):
    return make_ctx(tmp_path, MockFactory(), identity=lambda: key)


def no_plaintext_in(record: ResourceRecord) -> None:
    text = json.dumps(record.to_plain(), default=repr)
    for needle in (VALUE.decode().strip(), "s3cret", hashlib.sha256(VALUE).hexdigest()[:12]):
        assert needle not in text


def test_the_recipient_writes_the_value_mode_0600_and_reports_only_the_ciphertext(tmp_path,
                                                                                   keys):
    mine, other = keys
    ctx = device_ctx(tmp_path, mine)
    target = tmp_path / "root" / "wifi" / "psk"
    armored = sealed(VALUE, mine, other)
    result = reconcile(specset(secret_doc("psk", target, armored)), ctx, builtin_kinds(),
                       {}, "c1")
    rec = result.records["Secret/psk"]
    assert ready(rec) == (True, "Applied")
    assert target.read_bytes() == VALUE
    assert target.stat().st_mode & 0o777 == 0o600
    assert rec.status["observed"] == {
        "path": str(target), "mode": "0600",
        "ciphertext": hashlib.sha256(age.dearmor(armored)).hexdigest()}
    no_plaintext_in(rec)
    assert [p.name for p in target.parent.iterdir()] == ["psk"]  # no temp file left

    # A hand edit is drift: put right, and the note does not say what the value is.
    target.write_bytes(b"guessed\n")
    target.chmod(0o644)
    again = reconcile(specset(secret_doc("psk", target, armored)), ctx, builtin_kinds(),
                      result.records, "c1")
    drift = again.records["Secret/psk"].status["drift"]["changes"]
    assert target.read_bytes() == VALUE and target.stat().st_mode & 0o777 == 0o600
    assert drift == [f"{target} content is not the secret's value",
                     f"{target} mode 0644, want 0600"]
    no_plaintext_in(again.records["Secret/psk"])


def test_a_device_that_is_not_a_recipient_writes_nothing_and_the_rest_applies(tmp_path,
                                                                              keys):
    mine, other = keys
    ctx = device_ctx(tmp_path, other)
    target = tmp_path / "root" / "psk"
    plain = tmp_path / "root" / "motd"
    result = reconcile(specset(secret_doc("psk", target, sealed(VALUE, mine)),
                               file_doc(plain, "hi\n")), ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["Secret/psk"]) == (False, "NotARecipient")
    assert ready(result.records["File/plain"]) == (True, "Applied")
    assert not target.exists() and plain.read_text() == "hi\n"
    # Without a device key at all, the same: this resource fails, nothing is written.
    (tmp_path / "bare").mkdir()
    bare = make_ctx(tmp_path / "bare", MockFactory())
    result = reconcile(specset(secret_doc("psk", tmp_path / "bare/root/psk",
                                          sealed(VALUE, mine))), bare, builtin_kinds(), {}, "c1")
    assert ready(result.records["Secret/psk"]) == (False, "NoDeviceKey")


@pytest.mark.parametrize("spoil, reason", [
    ("not-a-recipient", "NotARecipient"),
    ("altered", "SecretCorrupt"),
    ("truncated", "SecretTruncated"),
    ("oversized", "SecretTooLarge"),
    ("garbage", "MalformedSecret"),
    ("x25519", "UnsupportedRecipient"),
])
def test_every_refusal_keeps_the_last_good_value_and_the_rest_of_the_spec(
        tmp_path, keys, spoil, reason):
    mine, other = keys
    ctx = device_ctx(tmp_path, mine)
    target = tmp_path / "root" / "psk"
    plain = tmp_path / "root" / "motd"
    first = reconcile(specset(secret_doc("psk", target, sealed(VALUE, mine)),
                              file_doc(plain, "one\n")), ctx, builtin_kinds(), {}, "c1")
    assert target.read_bytes() == VALUE

    binary = age.encrypt([sshsig.public_key_of(mine)], b"the new value\n")
    if spoil == "not-a-recipient":
        bad = sealed(b"the new value\n", other)
    elif spoil == "altered":
        bad = age.armor(binary[:-3] + bytes(3))
    elif spoil == "truncated":
        bad = age.armor(binary).rsplit("\n", 2)[0] + "\n"
    elif spoil == "oversized":
        bad = age.armor(bytes(age.MAX_FILE_BYTES + 1))
    elif spoil == "garbage":
        bad = age.armor(b"age-encryption.org/v1\n-> \n")
    else:
        bad = age.armor(binary.replace(b"-> ssh-ed25519 ", b"-> X25519 ", 1))
    second = reconcile(specset(secret_doc("psk", target, bad), file_doc(plain, "two\n")),
                       ctx, builtin_kinds(), first.records, "c2")
    rec = second.records["Secret/psk"]
    assert ready(rec) == (False, reason)
    assert target.read_bytes() == VALUE  # the last good value stays
    assert plain.read_text() == "two\n"  # the rest of the spec applied
    assert "Secret/psk" not in second.pruned
    no_plaintext_in(rec)
    assert "new value" not in json.dumps(rec.to_plain())


def test_plan_shows_a_secrets_change_without_its_value(tmp_path, keys):
    mine, _ = keys
    ctx = device_ctx(tmp_path, mine)
    target = tmp_path / "root" / "psk"
    armored = sealed(VALUE, mine)
    spec = specset(secret_doc("psk", target, armored))
    steps = plan(spec, ctx, builtin_kinds(), {})
    text = json.dumps([vars(s) if hasattr(s, "__dict__") else s for s in steps], default=repr)
    digest = hashlib.sha256(age.dearmor(armored)).hexdigest()[:12]
    assert f"would write the secret (ciphertext sha256 {digest}, value not shown)" in text
    assert "s3cret" not in text and not target.exists()
    reconcile(spec, ctx, builtin_kinds(), {}, "c1")
    target.write_bytes(b"other\n")
    text = json.dumps([vars(s) if hasattr(s, "__dict__") else s for s in
                       plan(spec, ctx, builtin_kinds(), {})], default=repr)
    assert "content is not the secret's value" in text and "other" not in text


def test_a_secret_that_leaves_the_spec_is_removed(tmp_path, keys):
    mine, _ = keys
    ctx = device_ctx(tmp_path, mine)
    target = tmp_path / "root" / "psk"
    first = reconcile(specset(secret_doc("psk", target, sealed(VALUE, mine))), ctx,
                      builtin_kinds(), {}, "c1")
    assert target.exists()
    second = reconcile(specset(), ctx, builtin_kinds(), first.records, "c2")
    assert second.pruned == ["Secret/psk"] and not target.exists()


def test_the_schema_names_what_is_wrong(tmp_path, keys):
    from giter_agent.core.errors import ResourceError

    kind = builtin_kinds()["Secret"]
    good = sealed(VALUE, keys[0])
    for spec, words in (({"path": "/srv/x"}, "missing field(s) ciphertext"),
                        ({"path": "rel", "ciphertext": good}, "absolute"),
                        ({"path": "/srv/x", "ciphertext": good, "mode": "4600"}, "setuid"),
                        ({"path": "/srv/x", "ciphertext": good, "recipients": "pi"},
                         "recipients"),
                        ({"path": "/srv/x", "ciphertext": 5}, "armoured age file"),
                        ({"path": "/srv/x", "ciphertext": good, "content": "x"}, "unknown")):
        with pytest.raises(ResourceError) as info:
            kind.validate(spec)
        assert words in str(info.value)
    assert kind.validate({"path": "/srv/x", "ciphertext": good, "mode": "0640"})["mode"] == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_owner_group_and_mode_as_for_file(tmp_path, keys):
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid)
    ctx = device_ctx(tmp_path, keys[0])
    target = tmp_path / "root" / "token"
    result = reconcile(specset(secret_doc("t", target, sealed(VALUE, keys[0]), owner="nobody",
                                          group=group.gr_name, mode="0640")),
                       ctx, builtin_kinds(), {}, "c1")
    rec = result.records["Secret/t"]
    assert ready(rec) == (True, "Applied")
    st = target.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (nobody.pw_uid, group.gr_gid, 0o640)
    assert rec.status["observed"]["owner"] == "nobody"


def test_the_value_is_written_only_to_a_temp_file_beside_the_target_mode_0600(
        tmp_path, keys, monkeypatch):
    real = os.open
    made: list[tuple[str, int]] = []

    def watching(path, flags, *args, dir_fd=None, **kwargs):
        fd = real(path, flags, *args, dir_fd=dir_fd, **kwargs)
        if flags & os.O_CREAT:  # the writer creates its temp file relative to the folder
            folder = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else ""
            made.append((os.path.join(folder, path), os.fstat(fd).st_mode & 0o777))
        return fd

    monkeypatch.setattr(os, "open", watching)
    ctx = device_ctx(tmp_path, keys[0])
    target = tmp_path / "root" / "deep" / "psk"
    result = reconcile(specset(secret_doc("psk", target, sealed(VALUE, keys[0]),
                                          mode="0644")), ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["Secret/psk"]) == (True, "Applied")
    assert [(os.path.dirname(name), mode) for name, mode in made] == [(str(target.parent),
                                                                       0o600)]
    assert target.stat().st_mode & 0o777 == 0o644 and not os.path.exists(made[0][0])
