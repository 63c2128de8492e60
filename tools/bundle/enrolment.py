"""Enrolled devices: ``.giter/devices/<id>.pub`` holds the key, ``<id>.yaml`` groups, labels.

The ``.pub`` file is one line of git's allowed_signers format, exactly as
``giter-agent key`` prints it (``<id> namespaces="git" ssh-ed25519 AAAA...``), so
``cat .giter/devices/*.pub`` is an ``allowedSignersFile`` with which plain
``git verify-commit`` checks every device's status commits. The groups sit beside it in
a small ``Device`` document, because the allowed_signers format has nowhere to put
them::

    apiVersion: giter.dev/v1alpha1
    kind: Device
    metadata: {name: pi-kitchen-01}
    spec: {groups: [kitchen], labels: {site: north}}

The groups recorded here are what the publisher vouches for: ``import`` accepts status
for ``groups/<g>/`` resources only from the devices enrolled in ``g``. The labels are
what the device itself reads to pick its ``fleet/`` resources and label values; the
document is parsed by the agent's own ``giter_agent.spec.enrolment``.

Called by ``Exchange.devices`` (import, create, status), ``enroll`` and ``lint``.
"""

from __future__ import annotations

from dataclasses import dataclass

from giter_agent.config.agent_toml import NAME_RE
from giter_agent.core.errors import GiterError, TreeError, TrustError
from giter_agent.core.layout import DEVICES_DIR
from giter_agent.spec.enrolment import DEVICE_KIND, DeviceRecord, parse_device_record
from giter_agent.trust import allowed_signers
from giter_agent.trust.sshsig import KEY_TYPES, PublicKey
from giter_bundle.errors import UsageError

__all__ = ["DEVICES_DIR", "DEVICE_KIND", "EnrolledDevice", "Problem", "check_name", "parse_key",
           "parse_label", "read_devices"]
# One key line and a short group list; anything bigger is not an enrolment.
_MAX_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class EnrolledDevice:
    """A device the publisher vouches for: its status-signing key, groups and labels."""

    id: str
    key: PublicKey
    groups: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()  # sorted (key, value) pairs: hashable

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def signer_line(self) -> str:
        """The device's allowed_signers entry (principal = device id, namespace git)."""
        return f'{self.id} namespaces="git" {self.key.openssh()}'

    def files(self) -> dict[str, bytes]:
        """The two files of this enrolment, by path in the repository."""
        record = DeviceRecord(self.id, self.groups, self.label_map)
        return {f"{DEVICES_DIR}/{self.id}.pub": (self.signer_line() + "\n").encode(),
                f"{DEVICES_DIR}/{self.id}.yaml": record.document()}


@dataclass(frozen=True)
class Problem:
    """Why an enrolment file was not taken (``lint`` reports these as errors)."""

    path: str
    reason: str
    message: str


def check_name(what: str, name: str) -> str:
    """A device id or group name, as the agent's config accepts it."""
    if not NAME_RE.fullmatch(name):
        raise UsageError(f"{what} {name!r} must match [a-z0-9][a-z0-9._-]* (at most 63)",
                         reason="InvalidName")
    return name


def parse_label(arg: str) -> tuple[str, str]:
    """``key=value`` as given on the command line (``--label``), checked as devices do."""
    from giter_agent.spec.selectors import check_label

    key, sep, value = arg.partition("=")
    if not sep:
        raise UsageError(f"label {arg!r} must read key=value", reason="InvalidLabels")
    try:
        return check_label(key, value, "--label")
    except GiterError as exc:
        raise UsageError(str(exc), reason="InvalidLabels") from None


def parse_key(text: str, device_id: str) -> PublicKey:
    """The key in what ``giter-agent key`` printed (or a plain ``.pub`` line).

    A principal that names another device is refused: it is the usual copy-paste slip,
    and enrolling it would let one device's key speak for another.
    """
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) != 1:
        raise UsageError(f"expected one key line, found {len(lines)}", reason="InvalidKey")
    line = lines[0]
    try:
        if line.split()[0] in KEY_TYPES:
            return PublicKey.from_openssh(line)
        entries = allowed_signers.parse(line, "key line")
    except TrustError as exc:
        raise UsageError(f"not a key line: {exc}", reason="InvalidKey") from None
    entry = entries[0]
    if device_id not in entry.principals:
        raise UsageError(f"the key line is for {','.join(entry.principals)}, not {device_id}",
                         reason="WrongDevice")
    if not entry.allows("git"):
        raise UsageError("the key line does not allow namespace git", reason="InvalidKey")
    return entry.key


def _parse_pub(device_id: str, data: bytes, path: str) -> PublicKey:
    entries = allowed_signers.parse(data, path)
    if len(entries) != 1:
        raise UsageError(f"{path}: expected one key line, found {len(entries)}",
                         reason="InvalidEnrolment")
    entry = entries[0]
    if entry.principals != (device_id,) or not entry.allows("git"):
        raise UsageError(f'{path}: the line must read {device_id} namespaces="git" <key>',
                         reason="InvalidEnrolment")
    return entry.key


def read_devices(object_store, tree: bytes) -> tuple[dict[str, EnrolledDevice], list[Problem]]:
    """Every valid enrolment in ``tree``, and a problem for each file that is not one.

    A key enrolled for two devices enrols neither: each could sign the other's status.
    """
    from giter_agent.history.tree import iter_files

    try:
        files = dict(iter_files(object_store, tree, DEVICES_DIR, _MAX_FILE_BYTES))
    except TreeError as exc:
        return {}, [Problem(DEVICES_DIR, exc.reason, str(exc))]
    problems: list[Problem] = []
    keys: dict[str, PublicKey] = {}
    for path, data in files.items():
        rel = path[len(DEVICES_DIR) + 1:]
        stem, _, suffix = rel.rpartition(".")
        if "/" in rel or suffix not in ("pub", "yaml") or not NAME_RE.fullmatch(stem):
            problems.append(Problem(path, "UnexpectedFile", "only <device-id>.pub and "
                                    "<device-id>.yaml belong in " + DEVICES_DIR))
        elif suffix == "pub":
            try:
                keys[stem] = _parse_pub(stem, data, path)
            except GiterError as exc:
                problems.append(Problem(path, exc.reason, str(exc)))
        elif f"{DEVICES_DIR}/{stem}.pub" not in files:
            problems.append(Problem(path, "InvalidEnrolment", f"no {stem}.pub beside it"))
    by_blob: dict[bytes, list[str]] = {}
    for device_id, key in keys.items():
        by_blob.setdefault(key.blob, []).append(device_id)
    devices: dict[str, EnrolledDevice] = {}
    for device_id, key in sorted(keys.items()):
        sharing = by_blob[key.blob]
        if len(sharing) > 1:
            problems.append(Problem(f"{DEVICES_DIR}/{device_id}.pub", "DuplicateKey",
                                    f"the same key is enrolled for {', '.join(sharing)}"))
            continue
        record = DeviceRecord(device_id)
        record_path = f"{DEVICES_DIR}/{device_id}.yaml"
        if record_path in files:
            try:
                record = parse_device_record(device_id, files[record_path], record_path)
            except GiterError as exc:
                problems.append(Problem(record_path, exc.reason, str(exc)))
                continue
        devices[device_id] = EnrolledDevice(device_id, key, record.groups,
                                             tuple(sorted(record.labels.items())))
    return devices, problems
