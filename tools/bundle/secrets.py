"""Secrets on the publisher's side: who must and who may read each one, sealing, re-keying.

A ``Secret`` resource's value is an age file made to the keys of the devices that apply
it (its *scope*: the device of ``devices/<id>/``, or the members of ``groups/<g>/``
that do not override it with their own, exactly as ``giter_agent.spec.resources.select`` picks)
and to every publisher *secrets key* listed in ``.giter/secrets/recipients``. The
publisher keys are what let ``secret rekey`` open and re-seal a secret after the fleet
changed: devices' keys cannot be used for that, the publisher holds only their public
halves. Recipients are read from the ciphertext itself (each ssh-ed25519 stanza carries
a 4-byte tag of its key), so nothing the publisher writes beside it can lie about them.

The recipients file holds one line per publisher secrets key::

    <name> ssh-ed25519 AAAA...

Called by ``giter-bundle lint`` (through ``giter_bundle.lint.lint_tree``, which ``commit``
and ``create`` run too), and by ``giter-bundle secret``.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from giter_agent.config.agent_toml import NAME_RE
from giter_agent.core.errors import GiterError
from giter_agent.trust.sshsig import ED25519, PublicKey
from giter_bundle.enrolment import DEVICES_DIR, EnrolledDevice
from giter_bundle.errors import PublisherError, UsageError

RECIPIENTS_FILE = ".giter/secrets/recipients"
DEFAULT_KEY = Path("~/.config/giter/secrets_ed25519")
KIND = "Secret"
_MAX_RECIPIENTS_BYTES = 64 * 1024

Folders = dict[str, list[tuple[str, bytes]]]


@dataclass(frozen=True)
class SecretFile:
    """One Secret resource file of a spec tree, with the key tags of its ciphertext."""

    path: str
    name: str
    spec: dict[str, Any]
    document: dict[str, Any]
    tags: frozenset[bytes]


@dataclass(frozen=True)
class Publisher:
    """A publisher secrets key: a recipient of every secret."""

    name: str
    key: PublicKey


@dataclass
class Check:
    """What is wrong with one secret's recipients (empty lists: nothing)."""

    path: str
    cannot: list[str] = field(default_factory=list)  # in scope, not a recipient
    extra: list[str] = field(default_factory=list)  # a recipient, not in scope
    recipients_field: str | None = None  # spec.recipients disagrees with the ciphertext


def tag_of(key: PublicKey) -> bytes:
    from giter_agent.core import age

    return age.key_tag(key.blob[-32:])


# -- the publisher recipients file ------------------------------------------------------------

def parse_recipients(data: bytes, path: str = RECIPIENTS_FILE) -> list[Publisher]:
    """``<name> ssh-ed25519 AAAA...`` lines; ``#`` comments and blank lines allowed."""
    if len(data) > _MAX_RECIPIENTS_BYTES:
        raise UsageError(f"{path}: over {_MAX_RECIPIENTS_BYTES} bytes", reason="InvalidRecipients")
    out: list[Publisher] = []
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 3 or not NAME_RE.fullmatch(fields[0]) or fields[1] != ED25519:
            raise UsageError(f"{path}:{n}: want '<name> ssh-ed25519 <base64>'",
                             reason="InvalidRecipients")
        try:
            key = PublicKey.from_openssh(" ".join(fields[1:3]))
        except GiterError as exc:
            raise UsageError(f"{path}:{n}: {exc}", reason="InvalidRecipients") from None
        if any(p.name == fields[0] or p.key == key for p in out):
            raise UsageError(f"{path}:{n}: {fields[0]} or its key is listed twice",
                             reason="InvalidRecipients")
        out.append(Publisher(fields[0], key))
    return out


def format_recipients(publishers: Iterable[Publisher]) -> bytes:
    head = ("# Publisher secrets keys: every Secret is also sealed to these, so that\n"
            "# `giter-bundle secret rekey` can re-seal it (docs/trust.md).\n")
    return (head + "".join(f"{p.name} {p.key.openssh()}\n" for p in publishers)).encode()


def read_publishers(store: Any, tree: bytes) -> list[Publisher]:
    from giter_agent.history.tree import read_file

    data = read_file(store, tree, RECIPIENTS_FILE)
    return [] if data is None else parse_recipients(data)


# -- the spec tree's secrets and their scopes -------------------------------------------------

def read_folders(store: Any, tree: bytes) -> Folders:
    """``devices/<x>``, ``fleet`` and ``groups/<x>`` folders -> their files (unreadable ones
    left out)."""
    import contextlib

    from giter_agent.core.errors import TreeError
    from giter_agent.core.layout import FLEET_FOLDER
    from giter_agent.history.tree import iter_files
    from giter_bundle.lint import MAX_FILE_BYTES

    out: Folders = {}
    with contextlib.suppress(TreeError):  # fleet/ is read whole: its selectors choose
        out[FLEET_FOLDER] = list(iter_files(store, tree, FLEET_FOLDER, MAX_FILE_BYTES))
    for top in ("devices", "groups"):
        try:
            mode, sha = store[tree][top.encode()]
        except KeyError:
            continue
        if not stat.S_ISDIR(mode):
            continue
        for name, entry_mode, _ in store[sha].iteritems():
            folder = f"{top}/{name.decode('utf-8', 'replace')}"
            if stat.S_ISDIR(entry_mode) and NAME_RE.fullmatch(folder.split("/")[1]):
                try:
                    out[folder] = list(iter_files(store, tree, folder, MAX_FILE_BYTES))
                except TreeError:
                    continue
    return out


def secret_file(path: str, data: bytes) -> SecretFile | None:
    """The Secret in resource file ``path``, or None if it is not a usable one."""
    from giter_agent.core import age
    from giter_agent.kinds.secret import read_ciphertext
    from giter_agent.spec.resources import parse_resource

    if not path.endswith((".yaml", ".yml")):
        return None
    try:
        res = parse_resource(path, data)
        if res.kind != KIND:
            return None
        tags = frozenset(age.parse(read_ciphertext(res.spec)).tags())
    except (GiterError, KeyError):
        return None  # lint reports it through the kind's schema
    return SecretFile(path, res.name, res.spec, res.document, tags)


def scopes(devices: dict[str, EnrolledDevice], folders: Folders) -> dict[str, set[str]]:
    """Secret file path -> the enrolled devices that apply it (as the agent selects)."""
    from giter_agent.core.layout import FLEET_FOLDER
    from giter_agent.spec.resources import prefixes, select

    out: dict[str, set[str]] = {}
    for files in folders.values():
        for path, data in files:
            if secret_file(path, data) is not None:
                out.setdefault(path, set())
    for device in devices.values():
        own, *groups = prefixes(device.id, device.groups)
        files = [f for p in (own, FLEET_FOLDER, *groups) for f in folders.get(p, [])]
        for res in select(files, device.label_map).resources:
            if res.path in out:
                out[res.path].add(device.id)
    return out


def check(devices: dict[str, EnrolledDevice], publishers: list[Publisher],
          folders: Folders, former: Callable[[], dict[bytes, set[str]]] | None = None
          ) -> list[Check]:
    """Every secret whose recipients do not match its scope and the publisher keys.

    ``former`` names keys that are no longer enrolled (``key_names`` over the history);
    it is called only when some secret has such a key.
    """
    by_tag: dict[bytes, str] = {tag_of(d.key): d.id for d in devices.values()}
    for p in publishers:
        by_tag.setdefault(tag_of(p.key), f"publisher key {p.name}")
    publisher_tags = {tag_of(p.key) for p in publishers}
    former_names: dict[int, dict[bytes, set[str]]] = {}  # filled on first need
    found = []
    scope = scopes(devices, folders)
    files = {path: data for fs in folders.values() for path, data in fs}
    for path, readers in sorted(scope.items()):
        secret = secret_file(path, files[path])
        assert secret is not None
        result = Check(path)
        for device_id in sorted(readers):
            if tag_of(devices[device_id].key) not in secret.tags:
                result.cannot.append(device_id)
        allowed = {tag_of(devices[d].key) for d in readers} | publisher_tags
        for tag in sorted(secret.tags - allowed):
            who = by_tag.get(tag)
            if who is None and former is not None:
                known = former_names.setdefault(0, former()).get(tag)
                who = f"{', '.join(sorted(known))}: a key no longer enrolled" if known \
                    else None
                if who is not None:
                    result.extra.append(who)
                    continue
            result.extra.append(f"{who} (not in its scope)" if who else
                                f"a key that is not enrolled (tag {tag.hex()})")
        result.extra.sort()
        listed = secret.spec.get("recipients")
        actual = sorted(by_tag[t] for t in secret.tags if by_tag.get(t) in devices)
        if listed is not None and sorted(map(str, listed)) != actual:
            result.recipients_field = (f"spec.recipients says {', '.join(map(str, listed))}"
                                       f" but the ciphertext opens for "
                                       f"{', '.join(actual) or 'no enrolled device'}")
        if result.cannot or result.extra or result.recipients_field:
            found.append(result)
    return found


def lint_findings(store: Any, tree: bytes, devices: dict[str, EnrolledDevice],
                  folders: Folders, former: Callable[[], dict[bytes, set[str]]] | None = None
                  ) -> list[Any]:
    """``check`` as lint findings (errors: a device would fail, or too many can read)."""
    from giter_bundle.lint import Finding

    try:
        publishers = read_publishers(store, tree)
    except GiterError as exc:
        return [Finding(RECIPIENTS_FILE, exc.reason, str(exc))]
    out = []
    for c in check(devices, publishers, folders, former):
        if c.cannot:
            out.append(Finding(c.path, "NotARecipient",
                               f"{', '.join(c.cannot)} cannot decrypt it (run giter-bundle "
                               "secret rekey)"))
        if c.extra:
            out.append(Finding(c.path, "ReadableOutsideScope",
                               f"still readable by {', '.join(c.extra)} (run giter-bundle "
                               "secret rekey, then rotate the value)"))
        if c.recipients_field:
            out.append(Finding(c.path, "RecipientsMismatch", c.recipients_field))
    return out


# -- writing a Secret document ----------------------------------------------------------------

def document(name: str, spec: dict[str, Any], generation: int, armored: str) -> bytes:
    """A Secret resource file: the fields as JSON scalars, the armour as a literal block."""
    lines = ["apiVersion: giter.dev/v1alpha1", f"kind: {KIND}", "metadata:",
             f"  name: {name}", f"  generation: {generation}", "spec:"]
    for field_name in ("path", "mode", "owner", "group", "prune", "dependsOn", "reconcile",
                       "recipients"):
        if field_name in spec:
            lines.append(f"  {field_name}: {json.dumps(spec[field_name])}")
    lines.append("  ciphertext: |")
    lines += [f"    {line}" for line in armored.strip().splitlines()]
    return ("\n".join(lines) + "\n").encode()


def seal(plaintext: bytes, devices: Iterable[EnrolledDevice],
         publishers: Iterable[Publisher]) -> str:
    """``plaintext`` as an armoured age file to the devices' and publishers' keys."""
    from giter_agent.core import age

    keys = [d.key for d in devices] + [p.key for p in publishers]
    for key in keys:
        if key.keytype != ED25519:
            raise PublisherError(f"a {key.keytype} key cannot receive secrets (only "
                                 f"{ED25519})", reason="InvalidRecipient")
    return age.armor(age.encrypt(keys, plaintext))


def load_secrets_key(path: Path, *, create: bool) -> Any:
    """The publisher's secrets key (an OpenSSH ed25519 key file), made 0600 if asked."""
    from giter_agent.core.errors import ConfigError, KeyFileError
    from giter_agent.trust.devicekey import load_or_create
    from giter_agent.trust.ssh_keyfile import load_private_key

    path = path.expanduser()
    if not path.exists():
        if not create:
            raise UsageError(f"{path}: no secrets key (giter-bundle secret set makes one)",
                             reason="NoSecretsKey")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            return load_or_create(path)
        except ConfigError as exc:
            raise UsageError(str(exc), reason="NoSecretsKey") from None
    if path.stat().st_mode & 0o077:
        raise UsageError(f"{path}: the secrets key is readable by others; chmod 600 it",
                         reason="NoSecretsKey")
    try:
        return load_private_key(path)
    except KeyFileError as exc:  # its message names the file and the check
        raise UsageError(str(exc), reason="NoSecretsKey") from None


# -- what a device that left could still read -------------------------------------------------

@dataclass
class Hint:
    """One secret file and the former readers it should be rotated for."""

    path: str
    readers: list[str]
    in_spec: bool


def history_index(store: Any, commits: Iterable[bytes]
                  ) -> tuple[dict[str, set[bytes]], dict[bytes, set[str]]]:
    """Over ``commits``: each Secret path -> every key tag any version was sealed to, and
    each key tag -> the enrolments and publisher keys that ever had that key.

    Walks every commit's ``devices/``, ``groups/``, ``.giter/devices/`` and the
    recipients file once per distinct tree and blob at each path, so a long history
    costs its number of distinct objects.
    """
    seen_trees: set[tuple[str, bytes]] = set()
    seen_blobs: set[tuple[str, bytes]] = set()
    tags_by_path: dict[str, set[bytes]] = {}
    names: dict[bytes, set[str]] = {}

    def walk(sha: bytes, prefix: str) -> None:
        if (prefix, sha) in seen_trees:
            return
        seen_trees.add((prefix, sha))
        for entry, mode, child in store[sha].iteritems():
            path = f"{prefix}/{entry.decode('utf-8', 'replace')}"
            if stat.S_ISDIR(mode):
                walk(child, path)
            elif stat.S_ISREG(mode) and (path, child) not in seen_blobs:
                seen_blobs.add((path, child))
                note_blob(path, store[child].data)

    def note_blob(path: str, data: bytes) -> None:
        if path.startswith(DEVICES_DIR + "/") and path.endswith(".pub"):
            device_id = path[len(DEVICES_DIR) + 1:-4]
            try:
                key = PublicKey.from_openssh(data.split(b'"git"', 1)[-1].strip())
            except GiterError:
                return
            names.setdefault(tag_of(key), set()).add(f"{device_id} ({key.fingerprint()})")
        elif path == RECIPIENTS_FILE:
            try:
                for p in parse_recipients(data):
                    names.setdefault(tag_of(p.key), set()).add(
                        f"publisher key {p.name} ({p.key.fingerprint()})")
            except GiterError:
                return
        else:
            secret = secret_file(path, data)
            if secret is not None:
                tags_by_path.setdefault(path, set()).update(secret.tags)

    for sha in commits:
        tree = store[store[sha].tree]
        for top in (b"devices", b"groups", b".giter"):
            try:
                mode, sub = tree[top]
            except KeyError:
                continue
            if stat.S_ISDIR(mode):
                walk(sub, top.decode())
    return tags_by_path, names


def former_keys(exchange: Any) -> Callable[[], dict[bytes, set[str]]]:
    """For lint: key tag -> who had that key, from the spec branch's whole history."""
    def names() -> dict[bytes, set[str]]:
        tip = exchange.tip
        return {} if tip is None else history_index(exchange.history.object_store,
                                                    exchange.ancestors(tip))[1]
    return names


def rotate_hints(store: Any, tip: bytes, commits: Iterable[bytes]) -> list[Hint]:
    """Secrets that some version in history sealed to a key that may not read it now,
    named from every enrolment the history ever held (``history_index``)."""
    from giter_bundle.enrolment import read_devices

    tags_by_path, names = history_index(store, commits)
    tip_tree = store[tip].tree
    devices, _ = read_devices(store, tip_tree)
    try:
        publishers = read_publishers(store, tip_tree)
    except GiterError:
        publishers = []
    folders = read_folders(store, tip_tree)
    scope = scopes(devices, folders)
    now_tags = {tag_of(p.key) for p in publishers}
    hints = []
    for path, tags in sorted(tags_by_path.items()):
        allowed = now_tags | {tag_of(devices[d].key) for d in scope.get(path, ())}
        stale = tags - allowed
        if stale:
            readers = sorted(", ".join(sorted(names[t])) if t in names
                             else f"an unknown key (tag {t.hex()})" for t in stale)
            hints.append(Hint(path, readers, path in scope))
    return hints
