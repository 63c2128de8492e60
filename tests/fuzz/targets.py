"""The fuzz targets: every parser that unsigned (or hostile signed) bytes reach.

Each target takes ``bytes`` and may raise only its ``allowed`` exceptions: the typed
refusals the product shows a user in one line. Seeds are deterministic (fixed keys,
fixed contents) so a seeded run is the same run everywhere.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from support import packcraft

from giter_agent.core.budget import Budget
from giter_agent.core.errors import ConfigError, GiterError, ResourceError, TrustError
from giter_agent.history import bundle
from giter_agent.transport.serial import frames as serial_frames
from giter_agent.transport.serial import link as serial_link
from giter_agent.trust import allowed_signers, signed_commit, sshsig

DOCS = Path(__file__).resolve().parents[2] / "docs"


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    allowed: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]]
    what: str


# -- keys and signed commits (fixed, so seeds are the same on every run) -------------

@cache
def _ed25519() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@cache
def _keys() -> tuple[sshsig.PublicKey, ...]:
    ecdsa = ec.derive_private_key(0x1234567, ec.SECP256R1())
    return (sshsig.public_key_of(_ed25519()), sshsig.public_key_of(ecdsa))


def _signed_commit(message: bytes = b"spec\n\nExpires: 2030-01-01T00:00:00Z\n") -> bytes:
    payload = (b"tree " + b"4b825dc642cb6eb9a060e54bf8d69288fbee4904" + b"\nparent "
               + b"1" * 40 + b"\nauthor " + packcraft.IDENT + b"\ncommitter " + packcraft.IDENT
               + b"\n\n" + message)
    armour = sshsig.sign(_ed25519(), payload)
    end = payload.index(b"\n\n") + 1
    return payload[:end] + b"gpgsig " + armour[:-1].replace(b"\n", b"\n ") + b"\n" + payload[end:]


# -- bundle header and pack scanner ------------------------------------------------------

def _small_bundles() -> list[bytes]:
    return [packcraft.stacked(64, 2).bundle, packcraft.chain(48, 3).bundle]


def bundle_header(data: bytes) -> None:
    header = bundle.read_header(io.BytesIO(data))
    bundle.format_header(header.refs, [(p, b"") for p in header.prerequisites],
                         header.version)


def _header_seeds() -> list[bytes]:
    good = b"1" * 40
    return [b.split(b"\n\n", 1)[0] + b"\n\n" for b in _small_bundles()] + [
        b"# v3 git bundle\n@object-format=sha1\n-" + good + b" subject\n" + good
        + b" refs/heads/main\n" + good + b" HEAD\n\n",
        b"# v2 git bundle\n-" + good + b"\n" + good + b" refs/heads/status/pi-01\n\n"]


def pack_scanner(data: bytes) -> None:
    scanner = bundle.PackScanner(max_objects=10_000, max_object_bytes=1 << 20)
    for i in range(0, len(data), 97):  # odd slices: every field split across feeds
        scanner.feed(data[i:i + 97])
    scanner.finish()


def _pack_seeds() -> list[bytes]:
    return [b.split(b"\n\n", 1)[1] for b in _small_bundles()]


# -- the whole import gate ---------------------------------------------------------------

@cache
def _history():  # type: ignore[no-untyped-def]
    from giter_agent.history.store import Caps, History

    where = Path(tempfile.mkdtemp(prefix="giter-fuzz-"))
    atexit.register(shutil.rmtree, where, True)
    caps = Caps(max_bundle_bytes=4 << 20, max_objects=2000, max_object_bytes=1 << 20,
                time_budget_s=10)
    return History(where / "repo.git", caps), where


def import_gate(data: bytes) -> None:
    """Raw bytes as a bundle file through quarantine; a bare pack gets a fixed header."""
    history, where = _history()
    if not data.startswith(b"#"):
        data = b"# v2 git bundle\n" + b"1" * 40 + b" refs/heads/main\n\n" + data
    path = where / "in.bundle"
    path.write_bytes(data)
    with history.quarantine(path, Budget(10)) as q:
        from giter_agent.trust.spec_rule import TrustRoot, verify_update

        tip = q.refs.get(b"refs/heads/main")
        if tip is not None:
            verify_update(q.object_store, None, tip, TrustRoot(_keys()), budget=Budget(10))


def _objects_from(data: bytes) -> bytes:
    """Structure-aware: fuzzed bytes become a valid pack of fuzzed objects, as a bundle.

    Segments (split on ``\\0\\0``) become objects by their first byte: a blob; a tree
    over the objects so far; a commit from a template with fuzzed fields (or raw); a
    delta on the previous object with fuzzed instructions. The last commit is the tip.
    """
    pack = packcraft.PackWriter()
    made: list[tuple[int, bytes, int]] = []  # (type, id, offset)
    tip = None
    for segment in data.split(b"\0\0")[:24]:
        choice, body = (segment[0] % 5, segment[1:]) if segment else (0, b"")
        if choice == 0:
            made.append((packcraft.BLOB, packcraft.oid(b"blob", body),
                         pack.whole(packcraft.BLOB, body)))
        elif choice == 1:
            names = [bytes([97 + i % 26]) * (1 + i // 26) for i in range(len(made))]
            raw = b"".join((b"40000 " if t == packcraft.TREE else b"100644 ") + n + b"\0" + o
                           for n, (t, o, _) in sorted(zip(names, made, strict=True))
                           if t in (packcraft.BLOB, packcraft.TREE)) + body[:64]
            made.append((packcraft.TREE, packcraft.oid(b"tree", raw),
                         pack.whole(packcraft.TREE, raw)))
        elif choice in (2, 3):
            trees = [o for t, o, _ in made if t == packcraft.TREE]
            commits = [o for t, o, _ in made if t == packcraft.COMMIT]
            if choice == 2 and trees:
                raw = (b"tree " + trees[-1].hex().encode() + b"\n"
                       + b"".join(b"parent " + c.hex().encode() + b"\n" for c in commits[-2:])
                       + b"author " + packcraft.IDENT + b"\ncommitter " + body + b"\n\nm\n")
            else:
                raw = body
            tip = packcraft.oid(b"commit", raw)
            made.append((packcraft.COMMIT, tip, pack.whole(packcraft.COMMIT, raw)))
        elif made:
            base_type, _, base_offset = made[-1]
            offset = pack.delta(base_offset, body)
            made.append((base_type, b"\0" * 20, offset))
    refs = {b"refs/heads/main": tip or (made[0][1] if made else b"\1" * 20)}
    return packcraft.bundle_of(pack, refs)


def import_gate_objects(data: bytes) -> None:
    import_gate(_objects_from(data))


def _objects_seeds() -> list[bytes]:
    return [b"\x00hello\0\0\x00world\0\0\x01\0\0\x02Fuzz <f@x> 1 +0000",
            b"\x00a\0\0\x01\0\0\x02Fuzz <f@x> 1 +0000\0\0\x01\0\0\x02Fuzz <f@x> 2 -0130",
            b"\x00" + b"x" * 40 + b"\0\0\x04\x28\x29\x90\x05\x01y\0\0\x01\0\0\x02F <f> 3 +0000"]


# -- commits and signatures -------------------------------------------------------------

def commit_parser(data: bytes) -> None:
    from giter_agent.trust import trailers as trust

    parts = signed_commit.parse(data, "fuzz")
    trust.expires_of(parts.message)
    if parts.signature is not None:
        sshsig.verify(parts.signature, parts.payload, _keys())


def _commit_seeds() -> list[bytes]:
    plain = _signed_commit(b"plain\n")
    return [_signed_commit(), plain, plain.replace(b"gpgsig", b"mergetag", 1),
            plain.split(b"gpgsig")[0] + b"encoding UTF-8\n\nmessage\n"]


def ssh_signature(data: bytes) -> None:
    for armoured in (data, sshsig.armor(data)):
        with contextlib.suppress(TrustError):
            sshsig.verify(armoured, b"payload", _keys())
    sshsig.signer_of(sshsig.armor(data))


def _signature_seeds() -> list[bytes]:
    armour = sshsig.sign(_ed25519(), b"payload")
    return [armour, sshsig.dearmor(armour)]


def ssh_public_key(data: bytes) -> None:
    with contextlib.suppress(TrustError):
        sshsig.PublicKey.from_blob(data)
    key = sshsig.PublicKey.from_openssh(data)
    assert sshsig.PublicKey.from_openssh(key.openssh()) == key


def _key_seeds() -> list[bytes]:
    return [k.openssh().encode() for k in _keys()] + [k.blob for k in _keys()]


def signers_file(data: bytes) -> None:
    allowed_signers.keys_for(allowed_signers.parse(data, "fuzz"))


def _signers_seeds() -> list[bytes]:
    lines = [f'a@fleet namespaces="git" {k.openssh()}' for k in _keys()]
    return ["\n".join(lines).encode(),
            f'"x,y" namespaces="git,!file",valid-after="20260101" {_keys()[0].openssh()} c'
            .encode(), f"# comment\n\nb@fleet {_keys()[1].openssh()}\n".encode()]


# -- resources and every kind's schema ----------------------------------------------------

@cache
def _kinds():  # type: ignore[no-untyped-def]
    from giter_agent.kinds import builtin_kinds

    return builtin_kinds()


def resources(data: bytes) -> None:
    from giter_agent.spec.resources import select

    specset = select([("devices/d1/r.yaml", data)])
    for res in specset.resources:
        kind = _kinds().get(res.kind)
        if kind is not None:
            kind.validate(dict(res.spec))


def _resource_seeds() -> list[bytes]:
    text = (DOCS / "kinds.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    return [b.encode() for b in blocks if "kind:" in b and "spec:" in b]


# -- serial frames and messages -----------------------------------------------------------

def serial_frames_target(data: bytes) -> None:
    decoder = serial_frames.FrameDecoder()
    for i in range(0, len(data), 61):
        for payload in decoder.feed(data[i:i + 61]):
            assert serial_frames.decode_frame(serial_frames.encode_frame(payload)[:-1]) == payload
    decoder.unframed()
    with contextlib.suppress(serial_frames.FrameError):
        serial_frames.decode_frame(data)


def serial_messages(data: bytes) -> None:
    message = serial_link.unpack(data)
    assert serial_link.unpack(serial_link.pack(message)) == message
    serial_link.request_key(message)


def _message_seeds() -> list[bytes]:
    link = serial_link
    return [link.pack(m) for m in (
        link.data(1, 2, b"chunk"), link.ack(1, 3, 5, 1), link.error("Busy", "later"),
        link.control(link.HELLO, proto=1, role="laptop", nonce=7),
        link.control(link.OFFER, x=1, kind="bundle", size=10),
        link.control(link.DONE, x=1, ok=True), link.control(link.END))]


def _frame_seeds() -> list[bytes]:
    return [b"".join(serial_frames.encode_frame(m) for m in _message_seeds()),
            serial_link.PREAMBLE + serial_frames.encode_frame(b"x" * 300)]


# -- the agent's config file --------------------------------------------------------------

def config_loader(data: bytes) -> None:
    from giter_agent.config.agent_toml import load

    _, where = _history()
    path = where / "agent.toml"
    path.write_bytes(data)
    load(path)


def _config_seeds() -> list[bytes]:
    return [b'device_id = "pi-01"\nstate_dir = "state"\nboard = "generic-mock"\n'
            b'allowed_signers = "signers"\ngroups = ["lobby"]\n[files]\nroots = ["/srv"]\n'
            b'[limits]\ntime_budget_s = 60\nmax_object_mib = 8\n',
            b'device_id = "pi-02"\nallowed_signers = "s"\ngenesis = "' + b"a" * 40 + b'"\n'
            b'[network]\nurl = "ssh://git@hub.example.org:2222/srv/git/fleet.git"\n'
            b'ssh_key = "k"\nknown_hosts = "h"\n[usb]\nroots = ["/media"]\n'
            b'[agent]\nresync_interval = 60\n']


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("bundle_header", bundle_header, (GiterError,), _header_seeds,
           "bundle header: read_header and format_header of what it read"),
    Target("pack_scanner", pack_scanner, (GiterError,), _pack_seeds,
           "PackScanner fed in odd slices"),
    Target("import_gate", import_gate, (GiterError,), lambda: _small_bundles() + _pack_seeds(),
           "raw bytes as a bundle through quarantine, then verify_update"),
    Target("import_gate_objects", import_gate_objects, (GiterError,), _objects_seeds,
           "valid packs of fuzzed commits, trees, blobs and deltas through the gate"),
    Target("commit_parser", commit_parser, (GiterError,), _commit_seeds,
           "signed_commit.parse, the Expires: trailer and the signature check"),
    Target("ssh_signature", ssh_signature, (GiterError,), _signature_seeds,
           "SSHSIG armour and blob parsing and verification"),
    Target("ssh_public_key", ssh_public_key, (GiterError,), _key_seeds,
           "public key lines and wire blobs"),
    Target("allowed_signers", signers_file, (GiterError,), _signers_seeds,
           "allowed_signers files"),
    Target("resources", resources, (ResourceError,), _resource_seeds,
           "resource YAML and each built-in kind's validate"),
    Target("serial_frames", serial_frames_target, (serial_frames.FrameError,), _frame_seeds,
           "COBS/CRC frame decoding, streamed and whole"),
    Target("serial_messages", serial_messages, (GiterError,), _message_seeds,
           "msgpack protocol messages"),
    Target("config", config_loader, (ConfigError,), _config_seeds,
           "the agent's TOML config loader"),
)}
