"""The records the state file keeps: one per resource, and one for the hub.

``ResourceRecord`` is what the last pass did with one resource: what it was (kind, name,
file), the spec in effect and its status document, and what the next pass needs
(backoff, fingerprint, the kind's memory). ``NetworkRecord`` is the hub as last seen
(``state.network``). Both are typed in memory and plain msgpack maps on disk:
``to_plain``/``from_plain`` are the only places that know the on-disk keys, which are
those the state file has always had (camelCase where they are shown to people), so a
state file written before these types loads unchanged (``state.store``).

The ``status`` of a resource stays a plain mapping: it is the Kubernetes-style status
document written into the signed status commit, whose fields kinds choose.
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import attrgetter
from typing import Any

from giter_agent.core.named_tuple import NamedTuple

# -- one resource -------------------------------------------------------------------------


class Backoff(NamedTuple):
    """A resource that asked to retry: how often in a row, and not before when (clock s)."""

    attempts: int
    not_before: float

    def to_plain(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "notBefore": self.not_before}

    @classmethod
    def from_plain(cls, raw: Mapping[str, Any]) -> Backoff:
        return cls(int(raw.get("attempts", 0)), float(raw.get("notBefore", 0.0)))


_RECORD_FIELDS = ("kind", "name", "path", "status", "spec", "document", "invalid",
                  "fingerprint", "memory", "backoff")
_record_fields = attrgetter(*_RECORD_FIELDS)


class ResourceRecord:
    """What the last pass did with one resource (the state file's ``resources[key]``).

    A value: a pass that changes a resource makes a new record and never changes one in
    place (nor its ``status``, ``spec``, ``document`` or ``memory``); setting an
    attribute raises ``AttributeError``. A pass keeps the records it did not visit as
    the very same objects, and the state store and the status writer rely on that: a
    record that is the same object as last pass's is known unchanged without looking
    inside it. Two records are equal when their fields are.

    A plain class, not a dataclass (made at every start of a sync: docs/decisions.md,
    "Records read on every start are NamedTuples") nor a NamedTuple: ``ready`` is worked
    out once when a record is made, and ``with_status`` makes it again.
    """

    __slots__ = (*_RECORD_FIELDS, "ready", "spec_commit")

    kind: str | None
    name: str | None
    path: str | None
    status: dict[str, Any]  # the status document
    spec: dict[str, Any] | None  # the spec in effect (None: none valid yet)
    document: dict[str, Any] | None  # the whole resource document it came from
    invalid: bool  # the file is invalid now (its last good spec may still apply)
    fingerprint: str | None  # of the validated spec, once it was in effect
    memory: dict[str, Any] | None  # what the kind asked to keep (Done.memory)
    backoff: Backoff | None
    # Is its ``Ready`` condition True, and the spec commit its status says it was made
    # under (``specCommit``)? Worked out once (the record is a value), as every pass asks
    # them of every record.
    ready: bool
    spec_commit: Any

    def __init__(self, kind: str | None, name: str | None, path: str | None,
                 status: dict[str, Any] | None = None, spec: dict[str, Any] | None = None,
                 document: dict[str, Any] | None = None, invalid: bool = False,
                 fingerprint: str | None = None, memory: dict[str, Any] | None = None,
                 backoff: Backoff | None = None) -> None:
        status = {} if status is None else status
        ready = False
        for cond in status.get("conditions", ()):
            if cond.get("type") == "Ready" and cond.get("status") == "True":
                ready = True
                break
        put = object.__setattr__
        put(self, "kind", kind)
        put(self, "name", name)
        put(self, "path", path)
        put(self, "status", status)
        put(self, "spec", spec)
        put(self, "document", document)
        put(self, "invalid", invalid)
        put(self, "fingerprint", fingerprint)
        put(self, "memory", memory)
        put(self, "backoff", backoff)
        put(self, "ready", ready)
        put(self, "spec_commit", status.get("specCommit"))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a ResourceRecord is a value: cannot set {name!r} "
                             "(make a new one)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a ResourceRecord is a value: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:  # unhashable, as a value holding dicts
        if not isinstance(other, ResourceRecord):
            return NotImplemented
        return _record_fields(self) == _record_fields(other)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _RECORD_FIELDS)
        return f"ResourceRecord({shown})"

    def with_status(self, status: dict[str, Any]) -> ResourceRecord:
        """The same record with another status document (``ready`` and ``spec_commit``
        worked out anew)."""
        return ResourceRecord(self.kind, self.name, self.path, status, self.spec,
                              self.document, self.invalid, self.fingerprint, self.memory,
                              self.backoff)

    @property
    def conditions(self) -> list[dict[str, Any]]:
        return list(self.status.get("conditions", []))

    def to_plain(self) -> dict[str, Any]:
        """The msgpack map the state file holds (absent fields are left out, as ever)."""
        out: dict[str, Any] = {"kind": self.kind, "name": self.name, "path": self.path}
        if self.spec is not None:
            out["spec"] = self.spec
        if self.document is not None:
            out["document"] = self.document
        if self.memory:
            out["memory"] = self.memory
        if self.backoff is not None:
            out["backoff"] = self.backoff.to_plain()
        if self.fingerprint is not None:
            out["fingerprint"] = self.fingerprint
        if self.invalid:
            out["invalid"] = True
        out["status"] = self.status
        return out

    @classmethod
    def from_plain(cls, raw: Mapping[str, Any]) -> ResourceRecord:
        backoff = raw.get("backoff")
        return cls(kind=raw.get("kind"), name=raw.get("name"), path=raw.get("path"),
                   status=dict(raw.get("status") or {}), spec=raw.get("spec"),
                   document=raw.get("document"), invalid=bool(raw.get("invalid")),
                   fingerprint=raw.get("fingerprint"), memory=raw.get("memory") or None,
                   backoff=Backoff.from_plain(backoff) if backoff else None)


# -- the hub ------------------------------------------------------------------------------

# Field -> the key the state file (and `giter-agent status --json`) has always used.
_NETWORK_KEYS = {"url": "url", "state": "state", "reason": "reason", "message": "message",
                 "since": "since", "failures": "failures", "last_attempt": "lastAttempt",
                 "last_contact": "lastContact", "hub_status": "hubStatus"}


class NetworkRecord(NamedTuple):
    """The hub as last seen (``state.network``; docs/network.md)."""

    url: str | None = None
    state: str | None = None  # online | offline | error | refused
    reason: str | None = None
    message: str | None = None
    since: str | None = None  # when this state began
    failures: int = 0  # failed tries in a row (the daemon's backoff)
    last_attempt: str | None = None
    last_contact: str | None = None  # the last time the hub answered
    hub_status: str | None = None  # the status commit the hub acknowledged

    def to_plain(self) -> dict[str, Any]:
        """The msgpack map the state file holds (and ``status --json`` shows)."""
        out: dict[str, Any] = {}
        for name, value in self._asdict().items():
            if value is not None:
                out[_NETWORK_KEYS[name]] = value
        return out

    @classmethod
    def from_plain(cls, raw: Mapping[str, Any]) -> NetworkRecord | None:
        """The record in ``raw``; None for an empty map (the hub was never tried)."""
        if not raw:
            return None
        known = {name: raw[key] for name, key in _NETWORK_KEYS.items() if key in raw}
        known["failures"] = int(known.get("failures") or 0)
        return cls(**known)
