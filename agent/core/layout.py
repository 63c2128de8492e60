"""Where things live: the exchange repository, the USB stick, and release folders on a device.

One definition of every path both sides must agree on (DESIGN.md, "The exchange
repository"); the device's sync and the publisher's ``giter-bundle`` import these names
rather than spelling the strings again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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
ARTIFACTS_DIR = ARTIFACTS_FOLDER  # the same folder: large files a File lays down by path
# The one allowlist of names in a tree the agent reads (history.tree) and of artifacts.
SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
FLEET_FOLDER = "fleet"  # fleet/**/*.yaml: resources for the devices metadata.selector matches
VALUES_FOLDER = "values"  # per-device and per-label values for ${values.<key>} placeholders
DEFAULT_VALUES = f"{VALUES_FOLDER}/defaults.yaml"  # values every device gets, lowest first
ROLLOUT_FOLDER = "rollouts"  # <name>.yaml: a staged rollout of some resource files
# Every top-level folder of the spec tree a device reads (the publisher lints these).
SPEC_FOLDERS = (DEVICE_FOLDER, FLEET_FOLDER, GROUP_FOLDER, VALUES_FOLDER, ROLLOUT_FOLDER,
                ARTIFACTS_FOLDER, ".giter")
STATUS_PREFIX = b"refs/heads/status/"  # + <id>: the device's signed status commits


def status_ref(device_id: str) -> bytes:
    """``refs/heads/status/<device_id>``: the only ref a device writes."""
    return STATUS_PREFIX + device_id.encode()


def summary_path(device_id: str) -> str:
    """The device's own DeviceStatus summary in its status commits."""
    return f"{STATUS_DIR}/{device_id}.yaml"


def resource_prefixes(device_id: str, groups: tuple[str, ...]) -> list[str]:
    """Folders addressed to a device by name, most specific first.

    ``FLEET_FOLDER`` is read whole besides these: its resources reach the devices their
    ``metadata.selector`` matches (``spec.targeting``); precedence device > fleet > group.
    """
    return [f"{DEVICE_FOLDER}/{device_id}"] + [f"{GROUP_FOLDER}/{g}" for g in groups]


def artifact_path(path: Any) -> str:
    """``path`` if it names a file under ``artifacts/``, each component spelt as the tree
    allowlist wants (``SAFE_NAME``); ``ArtifactError(ArtifactNotAllowed)`` otherwise.
    The device (the ``File`` kind) and ``giter-bundle`` (lint, artifact add) share it."""
    from giter_agent.core.errors import ArtifactError, Reason

    if not isinstance(path, str):
        raise ArtifactError(f"an artifact path must be a string, got {path!r}",
                            reason=Reason.ArtifactNotAllowed)
    parts = path.split("/")
    if len(parts) < 2 or parts[0] != ARTIFACTS_DIR:
        raise ArtifactError(f"{path!r} is not under {ARTIFACTS_DIR}/ (artifacts come from "
                            f"the repository's {ARTIFACTS_DIR}/ folder only)",
                            reason=Reason.ArtifactNotAllowed)
    for part in parts[1:]:
        if not SAFE_NAME.fullmatch(part):
            raise ArtifactError(f"{path!r}: {part!r} is not an allowed name (lower-case "
                                "letters, digits, '.', '_' and '-', starting with a letter "
                                "or digit)", reason=Reason.ArtifactNotAllowed)
    return path
def device_record_path(device_id: str) -> str:
    """``.giter/devices/<id>.yaml``: the signed ``Device`` document (groups, labels)."""
    return f"{DEVICES_DIR}/{device_id}.yaml"


def device_values_path(device_id: str) -> str:
    """``values/devices/<id>.yaml``: values for one device (they win over every other)."""
    return f"{VALUES_FOLDER}/devices/{device_id}.yaml"


def label_values_path(key: str, value: str) -> str:
    """``values/labels/<key>/<value>.yaml``: values for the devices labelled key=value."""
    return f"{VALUES_FOLDER}/labels/{key}/{value}.yaml"


# -- the USB stick -------------------------------------------------------------------------
INBOX = Path("giter/inbox")  # bundles for the fleet (one stick serves many devices)
OUTBOX = Path("giter/outbox")  # <id>.bundle and <id>.txt (the receipt) per device
HUB_STATUS = "hub-status.txt"  # in the inbox: what the hub holds of each status branch


# -- a release root on the device (a Release; the agent's own environments) --------------------
RELEASES = "releases"  # <root>/releases/<name>/: one folder per release, laid down whole
CURRENT = "current"  # <root>/current -> releases/<name>: the one in use
AGENT_ENVS = "agent-envs"  # in the state directory: the agent's own releases (AgentUpdate)


def link_text(name: str) -> str:
    """What ``current`` holds for release ``name`` (relative: the root may move)."""
    return f"{RELEASES}/{name}"


def release_of(text: str | None) -> str | None:
    """The release name a ``current`` link's text points at, or None (foreign, absent)."""
    if text is None or not text.startswith(RELEASES + "/"):
        return None
    name = text[len(RELEASES) + 1:]
    return name if name and "/" not in name and name not in (".", "..") else None
