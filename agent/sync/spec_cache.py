"""The applied commit's parsed spec, kept on disk so a new process need not parse YAML.

The daemon runs each pass in a short-lived worker, and every `giter-agent sync` is a new
process: without this file each would re-read and re-parse every resource file of the
same, already verified and applied, commit. ``SpecCache`` keeps the ``SpecSet`` that
``spec.targeting.read_device_spec`` made for one commit, device and group list in
``<state_dir>/spec-cache.msgpack`` (msgpack, written through ``core.durable`` with the
state file's permissions), and hands it back only when all of these and the format
version match.

It is never trusted for anything the import gate decides: it is read only for a commit
the state already names as accepted or applied, in place of parsing that commit's tree
again. Beside it, the commit's own facts a pass reads (``CommitFacts``: its committer
date and its ``Giter-Urgent:`` trailer, which steer maintenance windows), so that a
steady pass opens no object store at all. (Its tree id is not kept: whatever is read
from the tree, the spec or an artifact, is found from the commit in the store.)
Anything unreadable (a torn write, an older format, values of the wrong type) is a
miss: the caller parses as before and writes the file anew. A spec holding a value
msgpack does not give back exactly (a YAML timestamp, a set) is not cached at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from giter_agent.core.durable import atomic_write
from giter_agent.core.log import get_logger
from giter_agent.core.named_tuple import NamedTuple
from giter_agent.spec.resources import Invalid, Resource, SpecSet

FORMAT = 2  # 2: the commit's facts kept beside its spec
FILE = "spec-cache.msgpack"

log = get_logger("giter.sync")

_LEAVES = (str, int, float, bool, bytes, type(None))


def _exact(value: Any) -> bool:
    """Does msgpack give ``value`` back equal and of the same types (lists, not tuples)?"""
    if isinstance(value, _LEAVES):
        return type(value) in _LEAVES  # not a subclass (an enum, a YAML-made date)
    if type(value) is list:
        return all(_exact(v) for v in value)
    if type(value) is dict:
        return all(_exact(k) and _exact(v) for k, v in value.items())
    return False


def _resource_plain(r: Resource) -> list[Any]:
    return [r.path, r.kind, r.name, r.spec, r.generation, r.document, list(r.warnings),
            r.selector, list(r.overrides), r.held]


def _resource(raw: list[Any]) -> Resource:
    path, kind, name, spec, generation, document, warnings, selector, overrides, held = raw
    for text in (path, kind, name):
        _check(isinstance(text, str))
    _check(isinstance(spec, dict) and isinstance(document, dict))
    _check(generation is None or type(generation) is int)
    _check(isinstance(warnings, list) and all(isinstance(w, str) for w in warnings))
    _check(isinstance(overrides, list) and all(isinstance(o, str) for o in overrides))
    _check(selector is None or isinstance(selector, str))
    _check(held is None or isinstance(held, str))
    return Resource(path=path, kind=kind, name=name, spec=spec, generation=generation,
                    document=document, warnings=tuple(warnings), selector=selector,
                    overrides=tuple(overrides), held=held)


def _invalid_plain(i: Invalid) -> list[Any]:
    return [i.path, str(i.reason), i.message, i.kind, i.name]


def _invalid(raw: list[Any]) -> Invalid:
    path, reason, message, kind, name = raw
    _check(all(isinstance(t, str) for t in (path, reason, message)))
    _check(all(t is None or isinstance(t, str) for t in (kind, name)))
    return Invalid(path=path, reason=reason, message=message, kind=kind, name=name)


class CommitFacts(NamedTuple):
    """What a pass reads from the applied spec commit itself."""

    time: int  # committer date, seconds since the epoch (maintenance windows)
    urgent: str | None  # its Giter-Urgent: trailer (trust.trailers.urgent_of)


def _facts(raw: Any) -> CommitFacts | None:
    if raw is None:
        return None
    _check(isinstance(raw, list) and len(raw) == 2)
    time, urgent = raw
    _check(type(time) is int and (urgent is None or isinstance(urgent, str)))
    return CommitFacts(time, urgent)


def _check(ok: bool) -> None:
    if not ok:
        raise ValueError("unexpected value in the spec cache")


class SpecCache:
    """``<state_dir>/spec-cache.msgpack``: one commit's ``SpecSet`` for one device."""

    def __init__(self, state_dir: Path, device_id: str, groups: tuple[str, ...]) -> None:
        self.path = Path(state_dir) / FILE
        self.key = [FORMAT, device_id, list(groups)]
        self.loaded = 0  # times a SpecSet came from the file (tests count it)
        self.written = 0
        self._facts: tuple[str, CommitFacts] | None = None

    def facts(self, commit: str) -> CommitFacts | None:
        """``commit``'s facts, as the last ``load`` or ``remember`` of it gave them."""
        if self._facts is not None and self._facts[0] == commit:
            return self._facts[1]
        return None

    def remember(self, commit: str, facts: CommitFacts) -> None:
        """Hold ``commit``'s facts in memory (the next ``save`` of it writes them)."""
        self._facts = (commit, facts)

    def load(self, commit: str) -> SpecSet | None:
        """The cached ``SpecSet`` of ``commit``, or None when the file does not hold it
        (missing, torn, another commit, device, group list or format)."""
        try:
            data = self.path.read_bytes()
        except OSError:
            return None
        import msgpack

        try:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
            if (not isinstance(raw, dict) or raw.get("key") != self.key
                    or raw.get("commit") != commit):
                return None
            specset = SpecSet(resources=[_resource(r) for r in raw["resources"]],
                              invalid=[_invalid(i) for i in raw["invalid"]])
            facts = _facts(raw.get("facts"))
        except Exception as exc:  # a torn or foreign file is a miss, never an error
            log.debug("spec cache %s unreadable (%s); parsing the spec", self.path, exc)
            return None
        self.loaded += 1
        if facts is not None:
            self._facts = (commit, facts)
        return specset

    def save(self, commit: str, specset: SpecSet) -> None:
        """Keep ``specset`` as ``commit``'s; a spec msgpack cannot give back exactly
        is not kept (and an older file is removed: it names another commit anyway)."""
        import msgpack

        resources = [_resource_plain(r) for r in specset.resources]
        invalid = [_invalid_plain(i) for i in specset.invalid]
        if not _exact(resources) or not _exact(invalid):
            self.path.unlink(missing_ok=True)
            return
        facts = self.facts(commit)
        try:
            data = msgpack.packb({"key": self.key, "commit": commit, "resources": resources,
                                  "invalid": invalid,
                                  "facts": list(facts) if facts is not None else None},
                                 use_bin_type=True)
        except (OverflowError, ValueError, TypeError):
            self.path.unlink(missing_ok=True)
            return
        try:
            # Derived data, checked on every load (key, commit, shape) and rebuilt from
            # the verified commit on a miss: no fsync (core.durable.atomic_writer).
            atomic_write(self.path, data, mode=0o600, fsync=False)
        except OSError as exc:  # the next process parses the spec: slower, still right
            log.warning("could not keep the parsed spec in %s: %s", self.path, exc)
            return
        self.written += 1
