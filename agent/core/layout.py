"""Where things live: the exchange repository and the USB stick, for device and publisher.

One definition of every path both sides must agree on (DESIGN.md, "The exchange
repository"); the device's sync and the publisher's ``giter-bundle`` import these names
rather than spelling the strings again.
"""

from __future__ import annotations

from pathlib import Path

# -- the exchange repository ---------------------------------------------------------------
TRUST_FILE = ".giter/trust/allowed_signers"  # publisher keys (git's allowed_signers format)
TRUST_FILE_PARTS = tuple(part.encode() for part in TRUST_FILE.split("/"))
POLICY_FILE = ".giter/trust/policy.toml"  # bind_branch = true: tips name their branch
POLICY_FILE_PARTS = tuple(part.encode() for part in POLICY_FILE.split("/"))
BRANCH_TRAILER = "Giter-Branch"  # the signed trailer naming the branch a commit is for
DEVICES_DIR = ".giter/devices"  # <id>.pub: an enrolled device's key; <id>.yaml: its record
STATUS_DIR = ".giter/status"  # <id>.yaml: a device's DeviceStatus summary, on its branch
DEVICE_FOLDER = "devices"  # devices/<id>/*.yaml: resources for one device
GROUP_FOLDER = "groups"  # groups/<group>/*.yaml: resources for a group's devices
ARTIFACTS_FOLDER = "artifacts"  # what a Release lays down: artifacts/<name>/...
STATUS_PREFIX = b"refs/heads/status/"  # + <id>: the device's signed status commits


def status_ref(device_id: str) -> bytes:
    """``refs/heads/status/<device_id>``: the only ref a device writes."""
    return STATUS_PREFIX + device_id.encode()


def summary_path(device_id: str) -> str:
    """The device's own DeviceStatus summary in its status commits."""
    return f"{STATUS_DIR}/{device_id}.yaml"


def resource_prefixes(device_id: str, groups: tuple[str, ...]) -> list[str]:
    """Tree folders addressed to a device, most specific first."""
    return [f"{DEVICE_FOLDER}/{device_id}"] + [f"{GROUP_FOLDER}/{g}" for g in groups]


# -- the USB stick -------------------------------------------------------------------------
INBOX = Path("giter/inbox")  # bundles for the fleet (one stick serves many devices)
OUTBOX = Path("giter/outbox")  # <id>.bundle and <id>.txt (the receipt) per device
HUB_STATUS = "hub-status.txt"  # in the inbox: what the hub holds of each status branch
