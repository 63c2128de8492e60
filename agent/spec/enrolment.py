"""The signed ``Device`` document: what the publisher vouches for about one device.

``.giter/devices/<id>.yaml`` on the spec branch, beside the device's key::

    apiVersion: giter.dev/v1alpha1
    kind: Device
    metadata: {name: pi-kitchen-01}
    spec:
      groups: [kitchen]
      labels: {site: north, hw: pi4}

The device reads its labels from here, in the verified tree, to decide which ``fleet/``
resources and which label values apply to it; nothing in its local config can change
them. The publisher's ``giter-bundle`` writes and reads the same document through this
one parser (``giter_bundle.enrolment``). Called by ``spec.targeting`` and the publisher.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from giter_agent.config.agent_toml import NAME_RE
from giter_agent.core.errors import ResourceError
from giter_agent.core.named_tuple import NamedTuple
from giter_agent.core.yaml_policy import dump_yaml, load_yaml
from giter_agent.spec.selectors import check_labels

DEVICE_KIND = "Device"
API_VERSION = "giter.dev/v1alpha1"


class DeviceRecord(NamedTuple):
    """The groups and labels of one enrolled device."""

    device_id: str
    groups: tuple[str, ...] = ()
    labels: Mapping[str, str] = MappingProxyType({})

    def document(self) -> bytes:
        """The ``Device`` document; ``labels`` only when there are some, so an enrolment
        made before labels existed reads the same."""
        spec: dict[str, Any] = {"groups": list(self.groups)}
        if self.labels:
            spec["labels"] = dict(sorted(self.labels.items()))
        return dump_yaml({"apiVersion": API_VERSION, "kind": DEVICE_KIND,
                          "metadata": {"name": self.device_id}, "spec": spec})


def parse_device_record(device_id: str, data: bytes, path: str) -> DeviceRecord:
    """The ``Device`` document at ``path``, or ``ResourceError(InvalidEnrolment)``."""
    doc = load_yaml(data)
    want = {"apiVersion": API_VERSION, "kind": DEVICE_KIND, "metadata": {"name": device_id}}
    if (not isinstance(doc, dict) or set(doc) != {*want, "spec"}
            or any(doc.get(k) != v for k, v in want.items())
            or not isinstance(doc["spec"], dict) or set(doc["spec"]) - {"groups", "labels"}):
        raise ResourceError(f"{path}: must be one {DEVICE_KIND} document named {device_id} "
                            "with only spec.groups and spec.labels", reason="InvalidEnrolment")
    groups = doc["spec"].get("groups") or []
    if (not isinstance(groups, list) or not all(isinstance(g, str) for g in groups)
            or len(set(groups)) != len(groups)):
        raise ResourceError(f"{path}: spec.groups must be a list of distinct group names",
                            reason="InvalidEnrolment")
    for g in groups:
        if not NAME_RE.fullmatch(g):
            raise ResourceError(f"{path}: group {g!r} must match [a-z0-9][a-z0-9._-]* "
                                "(at most 63)", reason="InvalidEnrolment")
    try:
        labels = check_labels(doc["spec"].get("labels"), f"{path}: spec.labels")
    except ResourceError as exc:
        raise ResourceError(str(exc), reason="InvalidEnrolment") from None
    return DeviceRecord(device_id, tuple(groups), labels)
